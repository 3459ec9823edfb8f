"""The health of a deployment, part by part: the database and its schema, the broker, the
workers, every PBX this host is configured for, their listeners, and calls left open past the
time reconciliation should have closed them.

Each part gives a `Check`; the deployment's level is the worst of them:
- `ok` (exit 0);
- `degraded` (exit 1): calls are made, something needs a look: one PBX of several cannot be
  reached, a PBX's listener does not beat (its calls' events are not being recorded; the
  listener catches up when it returns), calls left open past their bound;
- `down` (exit 2): no call can be made: the database or the broker cannot be reached, the
  schema is not the code's, no worker answers, no PBX can be reached.
So `dialer status` serves as a container health check.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from dialer.ami.client import AmiClient, AmiError
from dialer.campaigns import pbxs
from dialer.migrate import alembic_config
from dialer.models import OPEN_ATTEMPT_STATUSES
from dialer.outcomes.listener import ListenerOptions
from dialer.settings import AmiServer, Settings, redact_url

# How long a PBX has to answer the checks (connect, login, CoreSettings, FullyBooted).
PBX_TIMEOUT_S = 3.0
WORKER_PING_TIMEOUT_S = 1.5


class Level(enum.IntEnum):
    OK = 0
    DEGRADED = 1
    DOWN = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Check:
    component: str  # "database", "broker", "workers", "pbx east", "listener east", "calls"
    level: Level
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"component": self.component, "status": str(self.level), "detail": self.detail}


def overall(checks: Iterable[Check]) -> Level:
    """The deployment's level: the worst of its parts'."""
    return max((c.level for c in checks), default=Level.OK)


def pbx_checks(found: Sequence[Check]) -> list[Check]:
    """Each PBX's own check counts as degraded while another PBX can take calls; with none
    reachable, the deployment is down."""
    if any(c.level is Level.OK for c in found):
        return [c if c.level is Level.OK else _as(c, Level.DEGRADED) for c in found]
    return list(found)


def _as(check: Check, level: Level) -> Check:
    return Check(check.component, level, check.detail)


# -- the parts -----------------------------------------------------------------------------


def check_database(engine: Engine, database_url: str) -> Check:
    """Reachable, and migrated to the code's head revision."""
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:  # any failure to reach it is the finding
        return Check("database", Level.DOWN, f"{redact_url(database_url)}: {_first_line(exc)}")
    if current != head:
        return Check(
            "database", Level.DOWN,
            f"schema at {current or 'no revision'}, the code needs {head}: run `dialer db upgrade`",
        )  # fmt: skip
    return Check("database", Level.OK, f"schema at {head}")


def check_broker(app: Any) -> Check:
    """The broker accepts a connection."""
    url = redact_url(app.conf.broker_url)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=PBX_TIMEOUT_S)
    except Exception as exc:
        return Check("broker", Level.DOWN, f"{url}: {_first_line(exc)}")
    return Check("broker", Level.OK, url)


def check_workers(app: Any) -> Check:
    """At least one worker of this deployment answers a ping."""
    try:
        replies = app.control.ping(timeout=WORKER_PING_TIMEOUT_S)
    except Exception as exc:
        return Check("workers", Level.DOWN, f"no ping: {_first_line(exc)}")
    if not replies:
        return Check("workers", Level.DOWN, "no worker answered: nothing sends calls")
    names = sorted(name for reply in replies for name in reply)
    return Check("workers", Level.OK, f"{len(names)} answered ({', '.join(names)})")


async def check_pbx(server: AmiServer, timeout: float = PBX_TIMEOUT_S) -> Check:
    """Login, the Asterisk version, and the FullyBooted event a booted Asterisk sends at login
    (to users with `system` in `read`)."""
    component = f"pbx {server.name}"
    client = AmiClient(
        server, events=True, connect_timeout=timeout, login_timeout=timeout,
        action_timeout=timeout, ping_interval=3600,
    )  # fmt: skip
    try:
        await client.connect()
        settings = await client.action({"Action": "CoreSettings"}, timeout=timeout)
        booted = await _fully_booted(client, timeout)
    except (AmiError, OSError) as exc:
        return Check(component, Level.DOWN, f"{server.host}:{server.port}: {_first_line(exc)}")
    finally:
        await client.close()
    if settings.get("Response") == "Success":
        version = settings.get("AsteriskVersion", "?")
    else:  # the AMI user lacks `system` or `reporting` in `write`
        version = f"? (CoreSettings refused: {settings.get('Message', '')})"
    if not booted:
        return Check(component, Level.DOWN, f"Asterisk {version}, not fully booted")
    return Check(component, Level.OK, f"Asterisk {version}, fully booted")


async def _fully_booted(client: AmiClient, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        event = await client.next_event(left)
        if event is None:
            return False
        if event.get("Event") == "FullyBooted":
            return True
    return False


def check_pbxs(servers: Iterable[AmiServer]) -> list[Check]:
    async def all_of_them() -> list[Check]:
        return list(await asyncio.gather(*(check_pbx(s) for s in servers)))

    return pbx_checks(asyncio.run(all_of_them()))


_LISTENERS = """
    SELECT name, extract(epoch FROM now() - heartbeat_at)::float8 AS age, state
      FROM pbxs WHERE name = ANY(:names) AND enabled
"""


def check_listeners(engine: Engine, names: Sequence[str]) -> list[Check]:
    """Each PBX's listener beats (`dialer listen` writes its PBX's row every 2 s)."""
    with engine.connect() as conn:
        rows = {r.name: r for r in conn.execute(text(_LISTENERS), {"names": list(names)})}
    checks = []
    for name in names:
        row = rows.get(name)
        component = f"listener {name}"
        if row is None or row.age is None:
            checks.append(
                Check(component, Level.DEGRADED, "no listener has reported: run `dialer listen`")
            )
        elif row.age > pbxs.HEARTBEAT_STALE_S:
            checks.append(
                Check(
                    component,
                    Level.DEGRADED,
                    f"last beat {row.age:.0f} s ago: is `dialer listen` running?",
                )
            )
        else:
            checks.append(Check(component, Level.OK, f"beat {row.age:.1f} s ago, PBX {row.state}"))
    return checks


_OVERDUE = f"""
    SELECT count(*) AS n,
           max(extract(epoch FROM now() - coalesce(a.sent_at, a.queued_at)))::float8 AS oldest
      FROM call_attempts a JOIN campaigns c ON c.id = a.campaign_id
     WHERE a.status IN ({", ".join(f"'{s}'" for s in OPEN_ATTEMPT_STATUSES)})
       AND coalesce(a.sent_at, a.queued_at)
           + make_interval(secs => c.originate_timeout_ms / 1000.0 + :bound) < now()
"""


def check_open_calls(engine: Engine, options: ListenerOptions | None = None) -> Check:
    """Calls open past their Originate timeout plus what reconciliation needs to close them
    (its grace and one interval): a listener that is not catching up, or calls lost track of."""
    options = options or ListenerOptions()
    bound = options.reconcile.grace_s + options.reconcile_interval
    with engine.connect() as conn:
        row = conn.execute(text(_OVERDUE), {"bound": bound}).one()
    if row.n:
        return Check(
            "calls", Level.DEGRADED,
            f"{row.n} open past their reconciliation bound (the oldest {row.oldest:.0f} s)",
        )  # fmt: skip
    return Check("calls", Level.OK, "none open past their reconciliation bound")


def run_checks(settings: Settings, app: Any, engine: Engine) -> list[Check]:
    """Every part's check, in the order they depend on each other."""
    database = check_database(engine, settings.database_url)
    broker = check_broker(app)
    checks = [database, broker]
    if broker.level is Level.OK:
        checks.append(check_workers(app))
    else:
        checks.append(Check("workers", Level.DOWN, "not asked: the broker cannot be reached"))
    checks.extend(check_pbxs(settings.ami_servers.values()))
    if database.level is Level.OK:
        checks.extend(check_listeners(engine, list(settings.ami_servers)))
        checks.append(check_open_calls(engine))
    return checks


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
