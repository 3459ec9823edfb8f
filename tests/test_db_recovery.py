"""Postgres sessions ended under a running campaign (a restart, a failover,
`pg_terminate_backend`): the workers and the listener heal their connections and dial on
within seconds; nothing is sent twice, nothing is lost, no connection is leaked."""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

from celery.signals import task_failure
from sqlalchemy import text

from dialer.db import CONNECT_TIMEOUT_S, TCP_USER_TIMEOUT_MS, connect_args, make_engine
from dialer.dialing.celery_app import DB_ROLE
from dialer.settings import AmiServer, Settings
from tests.support_celery import (
    add_campaign,
    add_contacts,
    add_trunk,
    in_process_worker,
    rows,
    scalar,
    simulator_numbers,
    wait_until,
)
from tests.test_dialing_e2e import running_listener

CPS = 10.0


def sessions_of_this_database(engine, role: str | None = None) -> list[int]:
    """Other sessions of the database (`role`: only those of that application_name)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                    " AND (CAST(:role AS text) IS NULL OR application_name = :role)"
                ),
                {"role": role},
            ).scalars()
        )


def terminate_all(admin) -> int:
    """End every other session of the test's database, as a Postgres restart does."""
    pids = sessions_of_this_database(admin)
    with admin.connect() as conn:
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        conn.commit()
    return len(pids)


def test_every_connection_has_its_timeouts() -> None:
    args = connect_args()
    assert args["connect_timeout"] == CONNECT_TIMEOUT_S
    assert args["tcp_user_timeout"] == TCP_USER_TIMEOUT_MS and args["keepalives"] == 1
    assert "options" not in args  # admin commands, reports and migrations: no statement limit
    assert args["application_name"] == "dialer"
    service = connect_args(service=True)["options"]
    assert "statement_timeout=" in service and "lock_timeout=" in service


def test_a_service_connection_carries_its_server_timeouts(database_url) -> None:
    engine = make_engine(database_url, service=True)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
            ).one()
        assert found == ("30s", "10s")
    finally:
        engine.dispose()


def test_three_rounds_of_ended_sessions_cost_seconds_not_a_minute(
    settings, session_factory, engine, make_app, pbx_sim, caplog
) -> None:
    """Three rounds of every session of the database ended mid-campaign: no task fails, the
    dialing resumes within 5 s of each round (not after the tick's one-minute requeue), the
    campaign completes with every call sent once and ended, and the database sees no session of
    the worker but those it holds: one per thread and its engine's pool."""
    caplog.set_level(logging.ERROR)
    server = AmiServer("default", pbx_sim.host, pbx_sim.port, pbx_sim.username, pbx_sim.secret)
    app_settings = Settings(
        database_url=settings.database_url,
        broker_url=settings.broker_url,
        log_level="INFO",
        ami_servers={"default": server},
    )
    trunk = add_trunk(session_factory, "MC", cps=CPS, max_channels=100)
    campaign = add_campaign(session_factory, trunk, max_attempts=1)
    add_contacts(session_factory, campaign, simulator_numbers(200, ending="04"))  # busy
    admin = make_engine(settings.database_url)
    app = make_app(app_settings)
    rounds: list[float] = []
    failures: list[str] = []

    def failed(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
        failures.append(f"{getattr(sender, 'name', sender)}: {exception!r}")

    task_failure.connect(failed, weak=False)
    try:
        with running_listener(engine, server), in_process_worker(app, beat=True):
            # Warmed up: every worker thread has made its calls and its connection.
            wait_until(lambda: len(originates(pbx_sim)) >= 40, 20, message="the first calls")
            before = len(sessions_of_this_database(admin, DB_ROLE))
            for _ in range(3):
                assert terminate_all(admin) > 0
                rounds.append(time.time())
                time.sleep(4.0)
            wait_until(
                lambda: scalar(session_factory, "SELECT status FROM campaigns") == "completed",
                60,
                message="the campaign to complete",
            )
            time.sleep(1.0)
            after = len(sessions_of_this_database(admin, DB_ROLE))
            held = len(app.runtime._connections)
            pool = app.runtime.engine.pool
            pooled = pool.checkedin() + pool.checkedout()
    finally:
        task_failure.disconnect(failed)
        admin.dispose()
    sent = sorted(r["wall"] for r in originates(pbx_sim))
    for at in rounds:
        resumed = [t for t in sent if t > at]
        assert resumed and resumed[0] - at <= 5.0, f"nothing sent within 5 s of {at}"
    gaps = [b - a for a, b in zip(sent, sent[1:], strict=False)]
    assert max(gaps) < 5.0, max(gaps)
    counts = collections.Counter(r["action_id"] for r in originates(pbx_sim))
    assert set(counts.values()) == {1}, "a call was sent twice"
    attempts = rows(session_factory, "SELECT status, outcome FROM call_attempts")
    assert {a.status for a in attempts} <= {"ended", "not_sent"}
    assert all(a.outcome for a in attempts if a.status == "ended")
    assert scalar(session_factory, "SELECT count(*) FROM contacts WHERE status = 'dialing'") == 0
    # No connection leaked: the worker keeps one per thread for the hot path, and the database
    # sees no session of the worker but those and its engine's pool (which may have grown
    # since `before`, up to its size, when tasks needed it at once).
    assert held <= 4 and pooled <= 4, (held, pooled)
    assert 0 < after <= held + pooled, (held, pooled, before, after)
    assert failures == []  # no task raised
    unexpected = [r for r in caplog.records if "raised unexpected" in r.getMessage()]
    assert unexpected == [], [r.getMessage() for r in unexpected]


def originates(sim) -> list[dict]:
    return [r for r in sim.records() if r["action"] == "Originate"]
