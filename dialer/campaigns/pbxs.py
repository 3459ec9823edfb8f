"""PBXs: the Asterisk servers calls are sent through, their limits and their live state.

Every host shares the `pbxs` rows; how to reach a PBX (host, port, AMI user and secret) is in
each host's settings (`dialer.settings`, `DIALER_PBXS`). A PBX is registered by `dialer pbx
set`, by a route to it when this host's settings name it, and by its listener when it starts.

Limits: originates per second (`max_cps`, paced like a trunk's CPS; back-pressure may allow
only `rate` of it, see `dialer.dialing.backpressure`) and calls up at once (`max_channels`:
the open attempts sent through it). A trunk's own limits hold across all its PBXs together.

State, as reported (`state`, with `state_since`, `state_at` and `state_reason`):
- its listener (`dialer listen`) writes `up` when its AMI connection is made, `down` when it
  is lost, `shutting_down` on the PBX's `Shutdown` event, and beats (`heartbeat_at`) every
  `HEARTBEAT_INTERVAL_S` whether connected or not;
- a worker that could not use the PBX writes `down` (no AMI connection), `shutting_down`
  (Originate refused: "Asterisk is shutting down") or `refusing` (any other refusal).

What the dispatcher and the workers go by is the state in effect (`effective_state_sql`):
- a `down`, `shutting_down` or `refusing` report holds at least `REPORT_HOLD_S`; while the
  listener is connected, its next beat after that puts the PBX back `up` (the next worker
  that fails reports it again), so one worker's failure stops calls for seconds, not for good;
- otherwise the reported state holds while the listener beats (at most `HEARTBEAT_STALE_S`
  since its last beat): `up` needs a live listener;
- otherwise (no listener, or one that died) the state is `unknown`: nothing says the PBX is
  down, nothing says it is up. An `unknown` PBX takes calls only for trunks none of whose PBXs
  is `up` (a deployment without listeners dials as before; a worker that cannot reach it
  reports it `down`).
A disabled PBX takes no new calls whatever its state.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from dialer.campaigns import validation
from dialer.campaigns.validation import NotFound
from dialer.models import OPEN_ATTEMPT_STATUSES, Pbx
from dialer.settings import DEFAULT_PBX

# The listener's beat, and how old its last beat may be for its reports to hold.
HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_STALE_S = 10.0
# A report that the PBX cannot take calls holds at least this long.
REPORT_HOLD_S = 10.0
UP = "up"
UNKNOWN = "unknown"
BAD_STATES = ("down", "shutting_down", "refusing")
# States a call may be sent in (`unknown` only where no PBX of the trunk is up).
USABLE_STATES = (UP, UNKNOWN)


def _list(values: Collection[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def effective_state_sql(alias: str = "p") -> str:
    """SQL for the state in effect of the PBX row `alias` (see the module doc); the row's
    `enabled` is not part of it."""
    p = alias
    return (
        f"(CASE WHEN {p}.state IN ({_list(BAD_STATES)})"
        f" AND {p}.state_at > now() - interval '{REPORT_HOLD_S:g} seconds' THEN {p}.state"
        f" WHEN {p}.heartbeat_at > now() - interval '{HEARTBEAT_STALE_S:g} seconds'"
        f" THEN {p}.state ELSE '{UNKNOWN}' END)"
    )


def current_rate_sql(alias: str = "p") -> str:
    """SQL for the originates per second PBX `alias` may be sent now."""
    return f"least(coalesce({alias}.rate, {alias}.max_cps), {alias}.max_cps)"


# -- reports of the state (psycopg `%(name)s` parameters: workers run them on their own
# connection, the listener through SQLAlchemy's `exec_driver_sql`) ------------------------------

REGISTER_SQL = "INSERT INTO pbxs (name) VALUES (%(name)s) ON CONFLICT (name) DO NOTHING"

# A state reported by a worker (listener false) or the listener (which beats with it).
RECORD_STATE_SQL = """
    UPDATE pbxs SET state = %(state)s,
           state_since = CASE WHEN state = %(state)s THEN state_since ELSE now() END,
           state_at = now(), state_reason = %(reason)s,
           heartbeat_at = CASE WHEN %(listener)s THEN now() ELSE heartbeat_at END
     WHERE name = %(name)s
"""


def _beat_state() -> str:
    hold = f"interval '{REPORT_HOLD_S:g} seconds'"
    return f"""(CASE WHEN %(connected)s THEN
                     CASE WHEN state = '{UP}' THEN '{UP}'
                          WHEN state = '{UNKNOWN}' OR state_at < now() - {hold} THEN '{UP}'
                          ELSE state END
                WHEN state IN ('{UP}', '{UNKNOWN}') THEN 'down'
                ELSE state END)"""


# The listener's beat: it is alive; connected or not, as it sees the PBX. A report older than
# REPORT_HOLD_S gives way to a connected listener's view.
HEARTBEAT_SQL = f"""
    UPDATE pbxs SET heartbeat_at = now(),
           state_since = CASE WHEN {_beat_state()} = state THEN state_since ELSE now() END,
           state_at = CASE WHEN {_beat_state()} = state THEN state_at ELSE now() END,
           state_reason = CASE WHEN {_beat_state()} = state THEN state_reason
                               ELSE %(reason)s END,
           state = {_beat_state()}
     WHERE name = %(name)s
"""


def state_params(name: str, state: str, reason: str, *, listener: bool) -> dict[str, Any]:
    return {"name": name, "state": state, "reason": reason[:500], "listener": listener}


def beat_params(name: str, connected: bool) -> dict[str, Any]:
    reason = "listener connected" if connected else "listener not connected to its AMI"
    return {"name": name, "connected": connected, "reason": reason}


# -- admin -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PbxChanges:
    """Settings to apply to a PBX; None leaves a setting as it is."""

    cps: float | str | None = None
    max_channels: int | str | None = None
    latency_threshold_ms: int | str | None = None
    enabled: bool | None = None

    def validated(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self.cps is not None:
            values["max_cps"] = validation.positive_number(self.cps, "cps")
        if self.max_channels is not None:
            values["max_channels"] = validation.positive_int(self.max_channels, "max_channels")
        if self.latency_threshold_ms is not None:
            values["latency_threshold_ms"] = validation.positive_int(
                self.latency_threshold_ms, "latency_threshold"
            )
        if self.enabled is not None:
            values["enabled"] = self.enabled
        return values


def get(session: Session, name: str) -> Pbx:
    row = session.get(Pbx, name)
    if row is None:
        raise NotFound(f"no PBX named {name!r}")
    return row


def not_configured_warning(name: str, configured: Collection[str]) -> str | None:
    """The warning for a PBX this host has no AMI settings for, or None."""
    if name in configured:
        return None
    return (
        f"PBX {name!r} is not configured on this host (DIALER_PBXS): only workers on hosts "
        "that configure it can send its calls, and `dialer listen` must follow it somewhere"
    )


def ensure_known(
    session: Session, name: str, configured: Collection[str], *, field: str = "pbx"
) -> tuple[Pbx, list[str]]:
    """The PBX `name` for a route: registered already, or configured on this host (then it is
    registered now, with the default limits). Returns it and the warnings to show."""
    name = validation.pbx_name(name, field)
    row = session.get(Pbx, name)
    if row is None:
        if name not in configured:
            raise NotFound(
                f"unknown PBX {name!r}: neither registered (`dialer pbx list`) nor configured "
                f"on this host (known here: {', '.join(sorted(configured)) or 'none'}); "
                f"register it with `dialer pbx set {name} --cps N --max-channels N`"
            )
        row = register(session, name)
    warning = not_configured_warning(name, configured)
    return row, [warning] if warning else []


def register(session: Session, name: str) -> Pbx:
    """The PBX's row, created with the default limits if missing."""
    session.connection().exec_driver_sql(REGISTER_SQL, {"name": validation.pbx_name(name)})
    session.expire_all()
    return get(session, name)


def set_pbx(
    session: Session, name: str, changes: PbxChanges, configured: Collection[str]
) -> tuple[Pbx, list[str]]:
    """Change a PBX's settings (registering it first if it is new); returns it and warnings."""
    name = validation.pbx_name(name, "name")
    values = changes.validated()
    if not values:
        raise validation.SettingError("settings", "nothing to change")
    if session.get(Pbx, name) is None:
        register(session, name)
    row = session.get(Pbx, name, with_for_update=True, populate_existing=True)
    assert row is not None
    warning = not_configured_warning(name, configured)
    warnings = [warning] if warning else []
    for column, value in values.items():
        setattr(row, column, value)
    if "max_cps" in values and row.rate is not None and row.rate >= values["max_cps"]:
        # Back-pressure's reduction no longer holds anything back.
        row.rate, row.rate_reason = None, None
    session.flush()
    return row, warnings


_LIST = f"""
    SELECT p.*, {effective_state_sql("p")} AS effective_state,
           {current_rate_sql("p")} AS current_rate,
           coalesce(o.n, 0) AS calls_up,
           coalesce(r.trunks, ARRAY[]::text[]) AS trunks,
           extract(epoch FROM now() - p.heartbeat_at)::float8 AS heartbeat_age_s
      FROM pbxs p
      LEFT JOIN (SELECT pbx, count(*) AS n FROM call_attempts
                  WHERE status IN ({_list(OPEN_ATTEMPT_STATUSES)}) GROUP BY pbx) o
        ON o.pbx = p.name
      LEFT JOIN (SELECT r.pbx, array_agg(t.name ORDER BY t.name) AS trunks
                   FROM trunk_routes r JOIN trunks t ON t.id = r.trunk_id GROUP BY r.pbx) r
        ON r.pbx = p.name
     WHERE CAST(:name AS text) IS NULL OR p.name = CAST(:name AS text)
     ORDER BY p.name
"""


def list_pbxs(
    session: Session, configured: Collection[str] = (DEFAULT_PBX,), name: str | None = None
) -> list[dict[str, Any]]:
    """Every PBX (or the one named) with its limits, rate, latency, state, calls and trunks."""
    rows = session.execute(text(_LIST), {"name": name}).all()
    return [describe_row(row, configured) for row in rows]


def describe_row(row: Any, configured: Collection[str]) -> dict[str, Any]:
    return {
        "name": row.name,
        "enabled": row.enabled,
        "state": row.effective_state if row.enabled else "disabled",
        "state_reason": row.state_reason,
        "reported_state": row.state,
        "state_since": row.state_since,
        "listener_seen_s_ago": None
        if row.heartbeat_age_s is None
        else round(row.heartbeat_age_s, 1),
        "max_cps": row.max_cps,
        "rate": round(float(row.current_rate), 3),
        "rate_reason": row.rate_reason,
        "latency_ms": None if row.latency_ms is None else round(row.latency_ms, 1),
        "latency_samples": row.latency_samples,
        "latency_threshold_ms": row.latency_threshold_ms,
        "calls_up": int(row.calls_up),
        "max_channels": row.max_channels,
        "trunks": list(row.trunks),
        "configured_here": row.name in configured,
    }


def describe(session: Session, name: str, configured: Collection[str]) -> dict[str, Any]:
    found = list_pbxs(session, configured, name)
    if not found:
        raise NotFound(f"no PBX named {name!r}")
    return found[0]
