"""A PBX that stops answering without closing the connection (a network partition, played by
a black-holing TCP proxy): the listener notices within its Ping deadline, reports the PBX down,
and when the path returns it reconnects, reports it up and reconciles."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dialer.ami.client import AmiClient
from dialer.outcomes.listener import Listener, ListenerOptions
from dialer.settings import AmiServer
from tests.support_celery import rows
from tests.support_proxy import BlackHoleProxy

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
