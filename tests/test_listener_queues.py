"""The listener keeps the PBX's queue members in `queue_members` (real simulator over TCP, real
Postgres): member events as they come, and a QueueStatus snapshot after each connect."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import Engine

from dialer.outcomes.listener import Listener
from tests.support_listener import fetch
from tests.test_listener_e2e import connected, fast_options


def members(engine: Engine) -> dict[str, Any]:
    rows = fetch(engine, "SELECT * FROM queue_members WHERE queue = 'support' ORDER BY interface")
    return {r.interface: r for r in rows}


async def until(predicate: Any, timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.05)


def gauge(state: str) -> float | None:
    labels = {"pbx": "default", "queue": "support", "state": state}
    return REGISTRY.get_sample_value("dialer_queue_members", labels)


def status_reads(pbx_sim: Any) -> int:
    return sum(1 for r in pbx_sim.records() if r["action"] == "QueueStatus")


def test_members_follow_the_pbx_and_a_reconnect_rereads_them(engine: Engine, pbx_sim: Any) -> None:
    listener = Listener(engine, pbx_sim.server, options=fast_options())

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(listener.run(stop))
        await connected(listener)
        await until(lambda: status_reads(pbx_sim) == 1, what="the first QueueStatus")
        ami = await asyncio.to_thread(pbx_sim.connect)
        for n in (1, 2):
            reply = ami.action(
                "QueueAdd",
                ("Queue", "support"),
                ("Interface", f"PJSIP/agent{n}"),
                ("MemberName", f"Agent {n}"),
                ("Wrapuptime", "7"),
            )
            assert reply["Response"] == "Success"
        added = await until(lambda: len(members(engine)) == 2 and members(engine), what="two")
        assert added["PJSIP/agent1"].member_name == "Agent 1"
        assert added["PJSIP/agent1"].wrapup_s == 7
        assert added["PJSIP/agent1"].pbx == "default"
        await until(lambda: gauge("free") == 2, what="the gauge of free members")
        ami.action("QueuePause", ("Interface", "PJSIP/agent2"), ("Paused", "true"))
        await until(lambda: gauge("paused") == 1 and gauge("free") == 1, what="one paused")
        ami.action("QueueRemove", ("Queue", "support"), ("Interface", "PJSIP/agent2"))
        await until(lambda: set(members(engine)) == {"PJSIP/agent1"}, what="agent2 removed")
        await until(lambda: gauge("paused") == 0, what="no member paused")
        ami.close()

        # The PBX restarts: its queues come back empty, and no event says agent1 left.
        await asyncio.to_thread(pbx_sim.restart)
        await until(lambda: status_reads(pbx_sim) >= 2, what="QueueStatus after reconnect")
        await until(lambda: members(engine) == {}, what="the snapshot's empty queue")
        ami = await asyncio.to_thread(pbx_sim.connect)
        ami.action("QueueAdd", ("Queue", "support"), ("Interface", "PJSIP/agent3"))
        await until(lambda: set(members(engine)) == {"PJSIP/agent3"}, what="agent3")
        ami.close()
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    # Agent time was counted for the queue while members were logged in.
    [minutes] = fetch(
        engine, "SELECT sum(staffed_s) AS staffed FROM queue_agent_minutes WHERE queue = 'support'"
    )
    assert minutes.staffed > 0
