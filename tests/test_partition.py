"""Peers that stop answering without closing the connection (a network partition, a hung
proxy, played by a black-holing TCP proxy). A PBX: the listener notices within its Ping
deadline, reports the PBX down, and when the path returns it reconnects, reports it up and
reconciles. Postgres: the round trips left waiting are cut at their deadline, and workers and
listener dial on when the path returns."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

from celery.signals import task_failure
from sqlalchemy.engine import make_url

from dialer import dbwatch
from dialer.ami.client import AmiClient
from dialer.db import make_engine
from dialer.outcomes.listener import Listener, ListenerOptions
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
from tests.support_proxy import BlackHoleProxy
from tests.test_db_recovery import originates
from tests.test_dialing_e2e import running_listener

PING_INTERVAL, PING_TIMEOUT = 1.0, 1.0


def pbx_state(session_factory) -> tuple[str, str | None]:
    row = rows(session_factory, "SELECT state, state_reason FROM pbxs WHERE name = 'default'")
    return (row[0].state, row[0].state_reason) if row else ("", None)


async def until(predicate: Any, timeout: float) -> float:
    """Seconds until `predicate()` held (checked off the loop); raises if it never did."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await asyncio.to_thread(predicate):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def test_a_black_holed_pbx_is_noticed_and_the_listener_recovers(
    engine, session_factory, pbx_sim
) -> None:
    proxy = BlackHoleProxy(pbx_sim.host, pbx_sim.port).start()
    server = AmiServer("default", proxy.host, proxy.port, pbx_sim.username, pbx_sim.secret)

    def client(s: AmiServer) -> AmiClient:
        return AmiClient(
            s, events=True, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT,
            connect_timeout=1.0, login_timeout=1.0, reconnect_initial=0.1, reconnect_max=0.5,
        )  # fmt: skip

    listener = Listener(engine, server, options=ListenerOptions(), client_factory=client)
    found: dict[str, float] = {}

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(listener.run(stop))
        await until(lambda: pbx_state(session_factory)[0] == "up", 10)
        proxy.black_hole()
        found["noticed"] = await until(lambda: pbx_state(session_factory)[0] == "down", 10)
        await asyncio.sleep(2.0)  # reconnect attempts meet the same silence
        proxy.black_hole(False)
        found["back"] = await until(lambda: pbx_state(session_factory)[0] == "up", 10)
        stop.set()
        await asyncio.wait_for(task, 10)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        proxy.stop()
    # The watchdog's deadline (a Ping every second, answered within one), plus the report.
    assert found["noticed"] <= PING_INTERVAL + PING_TIMEOUT + 1.0, found
    assert found["back"] <= 3.0, found  # the next reconnect attempt gets through
    assert proxy.accepted >= 3  # reconnect attempts were made during the partition
    records = pbx_sim.records()
    assert sum(1 for r in records if r["action"] == "CoreShowChannels") >= 2  # reconciled again


DEADLINE_S = 2.0  # the round-trip deadline under test (dialer.db.ROUND_TRIP_DEADLINE_S: 35 s)
HOLE_S = 8.0


def test_a_black_holed_postgres_is_cut_and_the_campaign_dials_on(
    settings, session_factory, make_app, pbx_sim, caplog
) -> None:
    """Postgres stops answering without closing, for every connection of the worker and the
    listener (a hung proxy or pooler): the commands left waiting are cut at the round-trip
    deadline instead of hanging, dialing resumes within 5 s of the path's return, and the
    campaign completes with every call sent once and ended; no task fails."""
    caplog.set_level(logging.WARNING)
    caplog.set_level(logging.DEBUG, logger="dialer.outcomes.listener")
    target = make_url(settings.database_url)
    proxy = BlackHoleProxy(target.host or "127.0.0.1", target.port or 5432).start()
    via_proxy = target.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
    server = AmiServer("default", pbx_sim.host, pbx_sim.port, pbx_sim.username, pbx_sim.secret)
    app_settings = Settings(
        database_url=via_proxy,
        broker_url=settings.broker_url,
        log_level="INFO",
        ami_servers={"default": server},
    )
    trunk = add_trunk(session_factory, "MC", cps=10.0, max_channels=100)
    campaign = add_campaign(session_factory, trunk, max_attempts=1)
    add_contacts(session_factory, campaign, simulator_numbers(150, ending="04"))  # busy
    listener_engine = make_engine(
        via_proxy, service=True, role="dialer listener", round_trip_deadline_s=DEADLINE_S
    )
    app = make_app(app_settings, round_trip_deadline_s=DEADLINE_S)
    watchdog = dbwatch.watchdog(DEADLINE_S)
    cuts_before = watchdog.cuts
    failures: list[str] = []

    def failed(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
        failures.append(f"{getattr(sender, 'name', sender)}: {exception!r}")

    task_failure.connect(failed, weak=False)
    try:
        with running_listener(listener_engine, server), in_process_worker(app, beat=True):
            wait_until(lambda: len(originates(pbx_sim)) >= 30, 30, message="the first calls")
            proxy.black_hole()
            time.sleep(HOLE_S)
            cut_during_hole = watchdog.cuts - cuts_before
            proxy.black_hole(False)
            healed = time.time()
            wait_until(
                lambda: scalar(session_factory, "SELECT status FROM campaigns") == "completed",
                90,
                message="the campaign to complete",
            )
            held = len(app.runtime._connections)
    finally:
        task_failure.disconnect(failed)
        proxy.stop()
        listener_engine.dispose()
    assert cut_during_hole >= 1, "no hung round trip was cut"
    sent = sorted(r["wall"] for r in originates(pbx_sim))
    resumed = [t for t in sent if t > healed]
    assert resumed and resumed[0] - healed <= 5.0, "nothing sent within 5 s of the return"
    print(f"{cut_during_hole} round trips cut; dialing resumed {resumed[0] - healed:.1f} s after")
    counts = collections.Counter(r["action_id"] for r in originates(pbx_sim))
    assert set(counts.values()) == {1}, "a call was sent twice"
    attempts = rows(session_factory, "SELECT status, outcome FROM call_attempts")
    assert {a.status for a in attempts} <= {"ended", "not_sent"}
    assert all(a.outcome for a in attempts if a.status == "ended")
    assert scalar(session_factory, "SELECT count(*) FROM contacts WHERE status = 'dialing'") == 0
    assert held <= 4, held
    assert failures == []
    unexpected = [r for r in caplog.records if "raised unexpected" in r.getMessage()]
    assert unexpected == [], [r.getMessage() for r in unexpected]
    # The listener's batches failed while the path was cut: one line per writer, no traceback,
    # the later tries at DEBUG, and a line when they go through again.
    not_written = [r for r in caplog.records if "events not written" in r.getMessage()]
    assert not_written, "the listener wrote nothing during the partition"
    assert [r.exc_info for r in not_written] == [None] * len(not_written)
    warned = [r for r in not_written if r.levelno >= logging.WARNING]
    assert 1 <= len(warned) <= 2, [r.getMessage() for r in warned]  # its two writers
    assert any("written again" in r.getMessage() for r in caplog.records)
    print(f"listener: {len(not_written)} failed batches, {len(warned)} warnings")
