"""Engine and session factories, and how every Postgres connection is made. Nothing connects
until a session is used.

Every connection the dialer opens, through SQLAlchemy or psycopg, takes its libpq parameters
from `connect_args` (one place):
- `connect_timeout`: a server that does not answer a connection attempt is given up on after
  `CONNECT_TIMEOUT_S`;
- TCP keepalives and `tcp_user_timeout`: a peer that vanishes without closing the connection
  (network partition, host down) is noticed within about `TCP_USER_TIMEOUT_MS` of unacknowledged
  data, or `keepalives_idle + keepalives_interval * keepalives_count` seconds idle, instead of
  the kernel's two hours;
- for the long-running processes (`service=True`: workers, the listener) also server-side
  timeouts: a statement that runs longer than `STATEMENT_TIMEOUT_MS`, a lock waited for longer
  than `LOCK_TIMEOUT_MS`, or a transaction left idle longer than `IDLE_IN_TRANSACTION_TIMEOUT_MS`
  is ended by the server, and the process's retry takes over. The dialer's own statements run
  in milliseconds and its longest lock wait is a send transaction's (at most the tick's
  lookahead plus a slot); admin commands, reports and migrations are not limited, as an
  index build or a year's report may rightly take minutes;
- for the long-running processes, a client-side deadline on every round trip
  (`ROUND_TRIP_DEADLINE_S`, `dialer.dbwatch`): a command left unanswered that long by a path
  that acknowledges but never answers (a hung pooler or proxy) has its connection cut, so
  the process recovers instead of waiting for ever.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from dialer import dbwatch

CONNECT_TIMEOUT_S = 5
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
TCP_USER_TIMEOUT_MS = 10_000
STATEMENT_TIMEOUT_MS = 30_000
LOCK_TIMEOUT_MS = 10_000
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
# Past the statement timeout, which a healthy server enforces and reports, by this margin.
ROUND_TRIP_DEADLINE_S = STATEMENT_TIMEOUT_MS / 1000 + 5.0


def connect_args(*, service: bool = False, role: str = "dialer") -> dict[str, Any]:
    """libpq parameters for every connection (see the module doc); `role` names the process
    in `pg_stat_activity.application_name` (`dialer worker`, `dialer listener`...)."""
    args: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        **KEEPALIVES,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        "application_name": role,
    }
    if service:
        args["options"] = (
            f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS}"
            f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
        )
    return args


def make_engine(
    database_url: str,
    *,
    service: bool = False,
    role: str = "dialer",
    round_trip_deadline_s: float = ROUND_TRIP_DEADLINE_S,
    **kwargs: Any,
) -> Engine:
    """An engine whose connections carry `connect_args`; a service engine's are also watched
    for round trips left unanswered past `round_trip_deadline_s` (`dialer.dbwatch`)."""
    kwargs.setdefault("pool_pre_ping", True)
    kwargs["connect_args"] = {
        **connect_args(service=service, role=role),
        **kwargs.get("connect_args", {}),
    }
    engine = create_engine(database_url, **kwargs)
    if service:
        watchdog = dbwatch.watchdog(round_trip_deadline_s)

        @event.listens_for(engine, "connect")
        def _watch(dbapi_connection: Any, _record: Any) -> None:
            watchdog.watch(dbapi_connection)

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session
