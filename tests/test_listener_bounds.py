"""The listener's memory is bounded by construction: a database that stops taking writes
pauses the reading of events (the writers' buffers, then the AMI client's queue, then TCP),
and once it takes them again every event is written; nothing is dropped."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from dialer.outcomes.listener import Listener, ListenerOptions
from tests.test_ami_adapter import FaultPeer, Frame, wire

CALLS, PER_CALL = 400, 5
MAX_BUFFERED, MAX_QUEUED, MAX_BATCH = 200, 100, 50


def test_a_stalled_database_pauses_reading_and_loses_nothing(engine) -> None:
    total = CALLS * PER_CALL

    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        if frame.get("Action") != "CoreShowChannels":
            return False
        action_id = frame["ActionID"]
        writer.write(wire("Response: Success", f"ActionID: {action_id}", "EventList: start"))
        writer.write(wire("Event: CoreShowChannelsComplete", f"ActionID: {action_id}",
                          "EventList: Complete", "ListItems: 0"))  # fmt: skip
        if conn == 0:  # the first connection: a flood of events of the dialer's calls
            writer.write(
                b"".join(
                    wire(
                        "Event: UserEvent",
                        "UserEvent: DialerDTMF",
                        f"Linkedid: 1704067200000_{n}",
                        f"Digit: {d}",
                    )  # fmt: skip
                    for n in range(CALLS)
                    for d in range(PER_CALL)
                )
            )
        await writer.drain()
        return True

    async def scenario(blocker: Any) -> dict[str, Any]:
        peer = await FaultPeer(behaviour=behaviour).start()
        options = ListenerOptions(
            max_buffered=MAX_BUFFERED, max_queued_events=MAX_QUEUED, filter_events=False,
            snapshot_settle=0.0, max_batch=MAX_BATCH,
        )  # fmt: skip
        listener = Listener(engine, peer.ami(), options=options)
        stop = asyncio.Event()
        task = asyncio.create_task(listener.run(stop))
        seen: dict[str, Any] = {"max_buffered": 0, "max_queued": 0}
        # The database holds every write back: the listener must stop reading, not grow.
        deadline = asyncio.get_running_loop().time() + 10
        while listener.stats.paused == 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for _ in range(20):
            seen["max_buffered"] = max(seen["max_buffered"], listener.buffered)
            client = listener._client
            seen["max_queued"] = max(seen["max_queued"], client.queued_events if client else 0)
            await asyncio.sleep(0.05)
        seen["read_while_stalled"] = listener.stats.events
        await asyncio.to_thread(blocker.rollback)  # the database takes writes again
        deadline = asyncio.get_running_loop().time() + 30
        while listener.stats.used < total and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await listener.flush()
        stop.set()
        await asyncio.wait_for(task, 10)
        await peer.stop()
        seen["stats"] = listener.stats
        return seen

    with engine.connect() as blocker:
        blocker.execute(text("LOCK TABLE call_attempts IN ACCESS EXCLUSIVE MODE"))
        seen = asyncio.run(asyncio.wait_for(scenario(blocker), 60))
    stats = seen["stats"]
    assert stats.paused >= 1
    # Bounded: the writers' buffers (plus one batch) and the client's queue, not the flood.
    assert seen["max_buffered"] <= MAX_BUFFERED + MAX_BATCH, seen
    assert seen["max_queued"] <= MAX_QUEUED, seen
    assert seen["read_while_stalled"] < total / 2, seen
    # Nothing lost: every event of the flood was taken and written (for calls the database
    # does not know: counted as unknown, as the listener does for any such event).
    assert stats.used == total and stats.stored + stats.unknown == total, stats.summary()
    assert stats.write_errors == 0
