"""What the dispatch tick does for the PBXs around its own work, each in a short transaction.

- `control`: back-pressure, about once a second. Per enabled PBX, one indexed query over its
  failed OriginateResponses of the last window (`ix_call_attempts_pbx_failures`) to calls sent
  since its last cut: the p90 latency of those answered when the call was placed (refusals
  and ringing left out), the median of those of the last second and of the second before
  (the trend), how many were refusals; then `dialer.dialing.backpressure` decides its rate,
  written with the latency and the reason (`pbxs.rate`, `latency_ms`,
  `rate_reason`...). An advisory lock and a compare-and-set on `measured_at` make overlapping
  ticks harmless.
- `close_calls_on_dead_pbxs`: the attempts still open (originating or up) on a PBX `down` or
  `shutting_down` in effect (`dialer.campaigns.pbxs`) since longer than the bound are closed as its listener's
  reconciliation would (`dialer.outcomes.facts.close_attempts`), with the fact `pbx_down_at`
  (since when the PBX was down): `unknown`, ended by the PBX, unless their facts settle the
  outcome; retried per the campaign's policy. A PBX that comes back in time has its calls
  reconciled by its listener instead (closed when gone, kept when still up).

Neither runs inside the tick's own transaction: the PBX rows they update are the ones every
worker locks for a pacing slot, and must not stay locked for a whole tick.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from dialer.campaigns.pbxs import current_rate_sql, effective_state_sql
from dialer.dialing import backpressure
from dialer.outcomes.facts import CloseReason, CloseRequest, close_attempts

log = logging.getLogger(__name__)

# Arbitrary constant naming the back-pressure lock ("dialpbx" in ASCII).
CONTROL_LOCK_KEY = 0x6469616C706278
# The controller runs when its last run is at least this old.
CONTROL_EVERY_S = 0.9
# Attempts closed per tick on dead PBXs (the rest at the next ticks).
CLOSE_BATCH = 1000


def run_guarded(step: Callable[..., Any], sessions: sessionmaker[Session], *args: Any) -> Any:
    """Run `step(sessions, *args)`; a failure is logged, not raised: dialing goes on with the
    rates it had, and the next tick tries again."""
    try:
        return step(sessions, *args)
    except Exception:
        log.exception("%s failed; trying again at the next tick", step.__name__)
        return None


# Answers that came when the call was placed (refusals come at once, ringing later).
_TIMED = (
    "a.originate_reason IS DISTINCT FROM 3"
    " AND NOT (a.originate_reason = 0 AND a.hangup_cause IS NOT DISTINCT FROM 34)"
)
# Fewer answers than this in one second say nothing of the trend.
TREND_SAMPLES = 3


def _median_of(when: str) -> str:
    """The median latency of the timed answers `when`; NULL if fewer than TREND_SAMPLES."""
    latency = "extract(epoch FROM a.originate_response_at - a.sent_at)"
    return (
        f"CASE WHEN count(*) FILTER (WHERE {_TIMED} AND {when}) >= {TREND_SAMPLES} THEN"
        f" percentile_cont(0.5) WITHIN GROUP (ORDER BY {latency})"
        f" FILTER (WHERE {_TIMED} AND {when}) END"
    )


_MEASURE = text(
    """
    SELECT p.name, p.max_cps, {rate} AS rate, p.latency_threshold_ms, p.decreased_at,
           p.measured_at, p.rate_reason, now() AS now,
           p.next_slot_at < now() - make_interval(secs => :window) AS idle,
           m.p90, coalesce(m.samples, 0) AS samples, coalesce(m.refusals, 0) AS refusals,
           m.newest, m.before
      FROM pbxs p
      LEFT JOIN LATERAL (
          SELECT percentile_cont(0.9) WITHIN GROUP (
                     ORDER BY extract(epoch FROM a.originate_response_at - a.sent_at))
                     FILTER (WHERE {timed}) AS p90,
                 count(*) FILTER (WHERE {timed}) AS samples,
                 {newest} AS newest,
                 {before} AS before,
                 count(*) FILTER (WHERE a.originate_reason = 0 AND a.hangup_cause = 34)
                     AS refusals
            FROM call_attempts a
           WHERE a.pbx = p.name AND a.originate_response = 'Failure'
             AND a.originate_response_at >= now() - make_interval(secs => :window)
             AND a.sent_at >= coalesce(p.decreased_at, '-infinity')
      ) m ON true
     WHERE p.enabled
       AND (p.measured_at IS NULL OR p.measured_at <= now() - make_interval(secs => :every))
     ORDER BY p.name
    """.format(
        rate=current_rate_sql("p"),
        timed=_TIMED,
        newest=_median_of("a.originate_response_at >= now() - interval '1 second'"),
        before=_median_of(
            "a.originate_response_at < now() - interval '1 second'"
            " AND a.originate_response_at >= now() - interval '2 seconds'"
        ),
    )
)

_APPLY = text(
    """
    UPDATE pbxs p SET
           rate = CASE WHEN v.rate >= p.max_cps THEN NULL ELSE v.rate END,
           rate_reason = v.reason,
           decreased_at = CASE WHEN v.cut THEN now() ELSE p.decreased_at END,
           latency_ms = v.latency_ms, latency_samples = v.samples, measured_at = now()
      FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
           name text, rate float8, reason text, cut boolean, latency_ms float8, samples integer,
           measured_at timestamptz)
     WHERE p.name = v.name AND p.measured_at IS NOT DISTINCT FROM v.measured_at
    """
)


def control(
    sessions: sessionmaker[Session], policy: backpressure.Policy = backpressure.DEFAULT_POLICY
) -> list[dict[str, Any]]:
    """Measure every enabled PBX due and set its rate; returns what was written (per PBX)."""
    with sessions() as session, session.begin():
        connection = session.connection()
        if not connection.execute(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": CONTROL_LOCK_KEY}
        ).scalar_one():
            return []
        rows = connection.execute(
            _MEASURE, {"window": policy.window_s, "every": CONTROL_EVERY_S}
        ).all()
        written = [_decide(row, policy) for row in rows]
        if written:
            connection.execute(_APPLY, {"rows": json.dumps(written, default=str)})
    for entry in written:
        if entry["cut"]:
            log.warning("PBX %s: rate lowered to %g/s: %s", entry["name"], entry["rate"],
                        entry["reason"])  # fmt: skip
    return written


def _decide(row: Any, policy: backpressure.Policy) -> dict[str, Any]:
    measure = backpressure.Measure(
        rate=float(row.rate),
        max_cps=float(row.max_cps),
        threshold_s=row.latency_threshold_ms / 1000,
        p90_s=None if row.p90 is None else float(row.p90),
        samples=row.samples,
        refusals=row.refusals,
        idle=bool(row.idle),
        newest_s=None if row.newest is None else float(row.newest),
        before_s=None if row.before is None else float(row.before),
        last_cut_at=row.decreased_at,
        last_run_at=row.measured_at,
        now=row.now,
        reason=row.rate_reason,
    )
    decision = backpressure.decide(measure, policy)
    return {
        "name": row.name,
        "rate": decision.rate,
        "reason": decision.reason,
        "cut": decision.cut,
        "latency_ms": None if row.p90 is None else round(float(row.p90) * 1000, 3),
        "samples": row.samples,
        "measured_at": None if row.measured_at is None else row.measured_at.isoformat(),
    }


# Down in effect (its listener alive and saying so, or a worker's report still holding), and
# down since long enough: a report left by a worker whose later sends went through does not
# count once it has stopped holding.
_DEAD = text(
    f"""
    SELECT a.id, p.name AS pbx, p.state_since
      FROM pbxs p
      JOIN call_attempts a ON a.pbx = p.name AND a.status IN ('originating', 'up')
     WHERE {effective_state_sql("p")} IN ('down', 'shutting_down')
       AND p.state_since < now() - make_interval(secs => :after)
     ORDER BY a.id
     LIMIT :limit
    """
)


def close_calls_on_dead_pbxs(sessions: sessionmaker[Session], after_s: float) -> int:
    """Close the calls open on PBXs down longer than `after_s` (see the module doc); returns
    how many were closed."""
    with sessions() as session, session.begin():
        connection = session.connection()
        rows = connection.execute(_DEAD, {"after": after_s, "limit": CLOSE_BATCH}).all()
        if not rows:
            return 0
        now = dt.datetime.now(dt.UTC)
        requests = [CloseRequest(r.id, CloseReason.PBX_DOWN, now) for r in rows]
        pending = {r.id: {"pbx_down_at": r.state_since} for r in rows}
        closed, _ = close_attempts(connection, requests, now, pending)
    by_pbx: dict[str, int] = {}
    for row in rows:
        by_pbx[row.pbx] = by_pbx.get(row.pbx, 0) + 1
    log.warning(
        "closed %d calls left open on PBXs down for over %g s: %s",
        len(closed), after_s, ", ".join(f"{k} {v}" for k, v in sorted(by_pbx.items())),
    )  # fmt: skip
    return len(closed)
