"""The simulator's capacity: past it a PBX behaves as a CPU-bound Asterisk does.

Originates are still answered `successfully queued` at once, but their calls (events and
OriginateResponse) start late, later the further over; beyond `capacity_wait` seconds of backlog,
or with every channel taken, new Originates fail at once (Reason 0, the channel hung up with
cause 34). Measured from the client's side, as the dialer sees it: times here are wall-clock
seconds, and the bounds leave room for a loaded machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dialer.ami.blocking import SyncAmiClient
from dialer.ami.client import CONNECTED_EVENT, AmiClient
from dialer.cli.pbxsim import read_capacity_file
from dialer.dialing.payload import CallSettings, TrunkRoute, build_originate_payload
from dialer.pbxsim import ConfigError, SimConfig
from dialer.settings import AmiServer
from tests.support_pbx import PbxSim, TlsFiles

BUSY = "+15550000004"  # refused by the callee at once: the OriginateResponse follows at once
NO_ANSWER = "+15550000005"  # rings until the Originate's Timeout: a channel kept busy


@dataclass
class Call:
    sent: float = 0.0
    newchannel: float | None = None  # first Newchannel of the call (its channel is created)
    response: float | None = None  # OriginateResponse
    result: tuple[str, str] | None = None  # (Response, Reason)
    causes: list[str] = field(default_factory=list)  # Hangup causes of its channels

    @property
    def latency(self) -> float:
        assert self.response is not None
        return self.response - self.sent

    @property
    def refused(self) -> bool:
        return self.result == ("Failure", "0") and "34" in self.causes


class Dialer:
    """One AMI session that sends Originates and times the events of each call."""

    def __init__(self, server: AmiServer) -> None:
        self.ami = AmiClient(server, events=True, action_timeout=5.0)
        self.calls: dict[str, Call] = {}
        self._count = 0
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Dialer:
        await self.ami.connect()
        events = self.ami.events()
        assert (await anext(events))["Event"] == CONNECTED_EVENT
        self._reader = asyncio.create_task(self._read(events))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._reader is not None
        self._reader.cancel()
        await self.ami.close()

    async def _read(self, events: Any) -> None:
        async for event in events:
            now = time.monotonic()
            name = event.get("Event")
            if name == "OriginateResponse":
                call = self.calls.get(event.get("ActionID", ""))
                if call is not None:
                    call.response = now
                    call.result = (event["Response"], event["Reason"])
                continue
            call = self.calls.get(event.get("Linkedid", ""))
            if call is None:
                continue
            if name == "Newchannel" and call.newchannel is None:
                call.newchannel = now
            elif name == "Hangup":
                call.causes.append(event["Cause"])

    async def dial(self, number: str, *, timeout_ms: int | None = None) -> str:
        self._count += 1
        call_id = f"1704067200000_{self._count}"
        payload = build_originate_payload(
            call_id=call_id,
            to_number=number,
            from_number="+15559990000",
            settings=CallSettings(ivr_file="welcome_message", timeout_ms=timeout_ms or 30000),
            trunk=TrunkRoute(),
        )
        self.calls[call_id] = Call(sent=time.monotonic())
        await self.ami.originate(payload)  # "successfully queued", whatever the capacity
        return call_id

    async def burst(self, count: int, number: str = BUSY, **options: Any) -> list[str]:
        return [await self.dial(number, **options) for _ in range(count)]

    async def settle(self, call_ids: list[str], timeout: float = 10.0) -> list[Call]:
        """Until every call has its OriginateResponse."""
        deadline = time.monotonic() + timeout
        calls = [self.calls[c] for c in call_ids]
        while any(c.response is None for c in calls):
            if time.monotonic() > deadline:
                missing = [c for c in call_ids if self.calls[c].response is None]
                raise AssertionError(f"no OriginateResponse for {missing}")
            await asyncio.sleep(0.01)
        return calls


def run(coro: Any, timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_no_capacity_set_changes_nothing(pbx_sim: PbxSim) -> None:
    async def scenario() -> list[Call]:
        async with Dialer(pbx_sim.server) as dialer:
            return await dialer.settle(await dialer.burst(60))

    calls = run(scenario())
    assert max(c.latency for c in calls) < 0.5
    assert not any(c.refused for c in calls)
    assert pbx_sim.capacity() == {
        "cps": None, "channels": None, "max_wait": 2.0,
        "queued": 0, "late": 0, "refused": 0, "max_delay": 0.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    "pbx_sim", [{"capacity_cps": 20, "capacity_wait": 1.0, "speed": 50}], indirect=True
)
def test_over_cps_calls_come_later_the_further_over_then_are_refused(pbx_sim: PbxSim) -> None:
    async def scenario() -> tuple[list[Call], list[Call]]:
        async with Dialer(pbx_sim.server) as dialer:
            burst = await dialer.settle(await dialer.burst(40))
            await asyncio.sleep(1.2)  # the backlog is gone: 3 calls at 10/s are on time
            after = []
            for _ in range(3):
                after.append(await dialer.dial(BUSY))
                await asyncio.sleep(0.1)
            return burst, await dialer.settle(after)

    burst, after = run(scenario())
    placed = [c for c in burst if not c.refused]
    refused = [c for c in burst if c.refused]
    # One placed at once, then one every 1/20 s for 1 s; the rest would wait longer.
    assert 17 <= len(placed) <= 28, [round(c.latency, 2) for c in burst]
    assert refused, [round(c.latency, 2) for c in burst]
    first = burst.index(refused[0])
    assert first >= 17, "refusals start past the bound"
    # The queue is first come, first placed: once it is full, what arrives is refused, unless
    # a slot freed meanwhile (the burst takes a few ms to arrive, more on a loaded machine).
    placed_after = [c for c in burst[first:] if not c.refused]
    assert len(placed_after) <= 2, [(c.refused, round(c.latency, 2)) for c in burst]
    latencies = [c.latency for c in placed]
    assert latencies[0] < 0.3
    assert latencies[-1] > 0.7, latencies  # the tail waited close to the bound
    # Later the further over: each placed call no earlier than the one before.
    assert all(b >= a - 0.02 for a, b in zip(latencies, latencies[1:], strict=False)), latencies
    # The whole call is late, not only its OriginateResponse: its channel appears late too.
    last = placed[-1]
    assert last.newchannel is not None and last.newchannel - last.sent > 0.6
    assert last.causes == ["17"] and last.result == ("Failure", "0")  # a PJSIP busy, on time
    # Refused at once, as an overloaded trunk: Reason 0, channel hung up with cause 34.
    assert all(c.latency < 0.5 for c in refused), [c.latency for c in refused]
    # Back to normal once the load is under capacity.
    assert all(c.latency < 0.3 and not c.refused for c in after), [c.latency for c in after]
    stats = pbx_sim.capacity()
    assert stats["refused"] == len(refused) and stats["queued"] == 0
    assert stats["late"] >= len(placed) - 2 and 0.7 < stats["max_delay"] <= 1.2


def test_capacity_changed_at_run_time(pbx_sim: PbxSim) -> None:
    async def scenario() -> tuple[list[Call], list[Call], float, list[Call]]:
        async with Dialer(pbx_sim.server) as dialer:
            unlimited = await dialer.settle(await dialer.burst(20))
            # From the test's thread, as a benchmark drops one PBX's capacity mid-run.
            now = await asyncio.to_thread(pbx_sim.set_capacity, cps=5, max_wait=3.0)
            assert (now["cps"], now["channels"], now["max_wait"]) == (5, None, 3.0)
            slow = await dialer.settle(await dialer.burst(6))
            queued = await dialer.burst(10)  # 2 s of backlog at 5/s
            await asyncio.sleep(0.3)
            lifted = time.monotonic()
            await asyncio.to_thread(pbx_sim.set_capacity, cps=None)
            return unlimited, slow, lifted, await dialer.settle(queued)

    unlimited, slow, lifted, released = run(scenario())
    assert max(c.latency for c in unlimited) < 0.5
    assert not any(c.refused for c in slow)
    assert slow[-1].latency > 0.7, [round(c.latency, 2) for c in slow]  # 5 ahead of it at 5/s
    # Lifting the limit places every waiting Originate at once.
    assert not any(c.refused for c in released)
    late = [c for c in released if c.response is not None and c.response > lifted]
    assert len(late) >= 6, [round(c.latency, 2) for c in released]
    assert all(c.response is not None and c.response - lifted < 0.5 for c in late)
    with pytest.raises(ValueError, match="capacity_cps"):
        pbx_sim.set_capacity(cps=0)
    with pytest.raises(ValueError, match="capacity_channels"):
        pbx_sim.set_capacity(channels=0)
    assert pbx_sim.capacity()["cps"] is None


@pytest.mark.parametrize(
    "pbx_sim", [{"capacity_channels": 10, "capacity_wait": 1.0, "speed": 1}], indirect=True
)
def test_channels_near_full_start_late_and_full_refuse(pbx_sim: PbxSim) -> None:
    async def scenario() -> tuple[list[Call], Call]:
        async with Dialer(pbx_sim.server) as dialer:
            ringing = await dialer.burst(11, NO_ANSWER, timeout_ms=20000)
            await dialer.settle(ringing[-1:])  # the 11th: refused
            await asyncio.sleep(0.8)  # the 10th has started by now
            calls = [dialer.calls[c] for c in ringing]
            # Calls end: channels free again, and a new call starts on time.
            for channel in await dialer.ami.action_list({"Action": "CoreShowChannels"}):
                await dialer.ami.action({"Action": "Hangup", "Channel": channel["Channel"]})
            await asyncio.sleep(0.3)
            again = await dialer.settle(await dialer.burst(1), timeout=5.0)
            return calls, again[0]

    calls, again = run(scenario())
    started = [c.newchannel - c.sent for c in calls[:10] if c.newchannel is not None]
    assert len(started) == 10
    # Up to 80% of the channels: on time. The 10th (load 9 of 10): half of capacity_wait late.
    assert max(started[:9]) < 0.3, started
    assert 0.3 < started[9] < 0.9, started
    assert calls[10].refused and calls[10].latency < 0.3
    assert again.latency < 0.3 and again.causes == ["17"]
    assert pbx_sim.capacity()["refused"] == 1


@pytest.mark.parametrize("pbx_sim", [{"capacity_cps": 2, "speed": 50}], indirect=True)
def test_a_restart_fails_the_originates_still_waiting(pbx_sim: PbxSim) -> None:
    async def scenario() -> list[Call]:
        async with Dialer(pbx_sim.server) as dialer:
            call_ids = await dialer.burst(4)
            await asyncio.to_thread(pbx_sim.core_restart, 0.3)
            return await dialer.settle(call_ids, timeout=5.0)

    calls = run(scenario())
    waiting = calls[1:]  # the first was placed at once
    assert all(c.result == ("Failure", "0") and c.newchannel is None for c in waiting)
    assert all(c.latency < 0.5 for c in waiting)
    assert pbx_sim.capacity()["queued"] == 0


def test_two_simulators_side_by_side(pbx_sim_factory: Callable[..., PbxSim]) -> None:
    fast = pbx_sim_factory()
    slow = pbx_sim_factory(capacity_cps=4, capacity_wait=5.0)
    assert fast.port != slow.port

    async def scenario() -> tuple[list[Call], list[Call]]:
        async with Dialer(fast.server) as a, Dialer(slow.server) as b:
            sent_a, sent_b = await a.burst(8), await b.burst(8)
            return await a.settle(sent_a), await b.settle(sent_b)

    on_fast, on_slow = run(scenario())
    assert max(c.latency for c in on_fast) < 0.5
    assert on_slow[-1].latency > 1.2  # 7 ahead of it at 4/s
    assert fast.capacity()["late"] == 0 and slow.capacity()["late"] >= 6


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"capacity_cps": 0}, "capacity_cps"),
        ({"capacity_cps": -1.5}, "capacity_cps"),
        ({"capacity_channels": 0}, "capacity_channels"),
        ({"capacity_wait": 0}, "capacity_wait"),
        ({"tls_cert": Path("/etc/hostname")}, "tls_cert and tls_key"),
        ({"tls_cert": Path("/nonexistent.pem"), "tls_key": Path("/nonexistent.key")}, "tls_cert"),
    ],
)
def test_bad_capacity_and_tls_options_are_named(options: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        SimConfig(**options)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"cps": 20}', {"cps": 20}),
        (
            '{"cps": null, "channels": 50, "wait": 1.5}',
            {"cps": None, "channels": 50, "max_wait": 1.5},
        ),
        ('{"cps": "fast"}', None),
        ('{"channels": 2.5}', None),
        ('{"wait": null}', None),
        ('{"speed": 3}', None),
        ("[20]", None),
        ("not json", None),
    ],
)
def test_capacity_file(tmp_path: Path, text: str, expected: dict[str, Any] | None) -> None:
    path = tmp_path / "capacity.json"
    path.write_text(text)
    if expected is None:
        with pytest.raises(ConfigError, match="capacity-file"):
            read_capacity_file(path)
    else:
        assert read_capacity_file(path) == expected


def test_pbx_sim_command_serves_tls_with_a_capacity_changed_on_sighup(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    capacity = tmp_path / "capacity.json"
    capacity.write_text('{"channels": 40}')
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialer", "pbx-sim", "--port", "0", "--json", "--speed", "50",
         "--secret", "sim-secret", "--tls-cert", str(tls_files.cert),
         "--tls-key", str(tls_files.key), "--capacity-cps", "25", "--capacity-file", str(capacity)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "DIALER_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["tls"] is True
        assert ready["capacity"] == {"cps": 25.0, "channels": 40, "max_wait": 2.0}
        server = AmiServer(
            "east", "127.0.0.1", ready["port"], "dialer", "sim-secret",
            tls=True, tls_ca=str(tls_files.ca), auth="md5",
        )  # fmt: skip
        client = SyncAmiClient(server)
        assert client.action({"Action": "Ping"})["Ping"] == "Pong"
        client.close()
        capacity.write_text('{"cps": null, "wait": 4}')
        proc.send_signal(signal.SIGHUP)
        line = proc.stdout.readline()
        assert "capacity cps None, channels 40, max_wait 4" in line, line
    finally:
        proc.terminate()
        proc.wait(10)
