"""Replay real Asterisk 22 sessions against the simulator and compare what comes back.

For each scenario the exact bytes the recording client sent are sent again over TCP, at the
recorded moments divided by the speed. The simulator must give the same responses, the same
events (types, channels, states, Uniqueid/Linkedid relations, causes, dial statuses, UserEvent
fields) and the same order of the events that matter (OriginateResponse, UserEvents, DTMF,
bridge enter/leave, hangups). Channel-name suffixes, Uniqueids and bridge ids are compared by
order of first appearance, since they are the PBX's to choose.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from dialer.pbxsim import PbxSimulator, SimConfig
from tests.support_pbx import Frame, Transcript, load_transcript, parse_frame, require_transcripts

SPEED = 50.0
# An action sent this soon (recorded seconds) after an event was a reaction to that event.
REACTION = 0.005

# Scenario -> simulator options. The recording PBX had no chan_pjsip loaded, so a PJSIP
# endpoint other than the configured trunk does not exist.
SCENARIOS: dict[str, dict[str, Any]] = {
    "busy": {},
    "no_answer": {},
    "congestion": {},
    "human_press1_transfer": {},
    "machine_voicemail": {},
    "answer_then_hangup": {},
    "originate_bad_channel": {"endpoints": frozenset({"MC"})},
    "login_failed": {},
    "human_no_press": {},
    "human_wrong_key": {},
    "silent_answer": {},
    "originate_channelid": {},
}

# Events the simulator produces (the recording had read=all: VarSet, Newexten, NewCallerid,
# DeviceStateChange... are Asterisk internals a dialer does not use).
SIMULATED = {
    "FullyBooted",
    "SuccessfulAuth",
    "Newchannel",
    "Newstate",
    "LocalBridge",
    "DialBegin",
    "DialState",
    "DialEnd",
    "OriginateResponse",
    "UserEvent",
    "DTMFBegin",
    "DTMFEnd",
    "BridgeCreate",
    "BridgeEnter",
    "BridgeLeave",
    "BridgeDestroy",
    "SoftHangupRequest",
    "HangupRequest",
    "Hangup",
}
# Their relative order is what a dialer relies on; other events may interleave differently
# (Asterisk itself varies, e.g. OriginateResponse before or after DialEnd).
ORDERED = {
    "OriginateResponse",
    "UserEvent",
    "DTMFBegin",
    "DTMFEnd",
    "BridgeEnter",
    "BridgeLeave",
    "Hangup",
}
# The project's dialplan reports the transfer's outcome; the recording dialplan did not.
PROJECT_ONLY_USEREVENTS = {"DialerTransferResult"}

COMPARED_FIELDS = (
    "Channel",
    "ChannelStateDesc",
    "Uniqueid",
    "Linkedid",
    "DestChannel",
    "DestChannelStateDesc",
    "DestUniqueid",
    "DestLinkedid",
    "DialString",
    "DialStatus",
    "Cause",
    "Cause-txt",
    "ActionID",
    "Response",
    "Reason",
    "Context",
    "Exten",
    "CallerIDNum",
    "CallerIDName",
    "BridgeUniqueid",
    "BridgeNumChannels",
    "UserEvent",
    "custom_call_id",
    "AMDSTATUS",
    "AMDCAUSE",
    "DTMF",
    "READSTATUS",
    "TRANSFER_NUMBER",
    "TRANSFER_CHANNEL",
    "IVR_VM_FILE",
    "WAITSTATUS",
    "Digit",
    "DurationMs",
)
# Where a channel is in the dialplan differs with the dialplan; OriginateResponse's Context and
# Exten are the Originate's own and are compared.
PLACE_FIELDS = {"Context", "Exten"}


class Normalizer:
    """Replaces PBX-chosen identifiers by their order of first appearance."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def _ordinal(self, kind: str, value: str) -> str:
        key = f"{kind}:{value}"
        if key not in self.ids:
            count = sum(1 for k in self.ids if k.startswith(kind + ":"))
            self.ids[key] = f"<{kind}{count + 1}>"
        return self.ids[key]

    def value(self, field: str, value: str) -> str:
        if field in ("Channel", "DestChannel"):
            return re.sub(
                r"-([0-9a-f]{8})(?=;[12]$|$)",
                lambda m: "-" + self._ordinal("chan", m.group(1)),
                value,
            )
        if (
            field in ("Uniqueid", "Linkedid", "DestUniqueid", "DestLinkedid")
            and value != "<unknown>"
        ):
            return self._ordinal("uid", value)
        if field == "BridgeUniqueid":
            return self._ordinal("bridge", value)
        return value

    def event(self, frame: Frame) -> tuple[tuple[str, str], ...]:
        name = frame["Event"]
        out = [("Event", name)]
        if name in ("FullyBooted", "SuccessfulAuth", "LocalBridge"):
            return tuple(out)
        for field in COMPARED_FIELDS:
            if field in PLACE_FIELDS and name != "OriginateResponse":
                continue
            value = frame.get(field)
            if value is not None:
                out.append((field, self.value(field, value)))
        return tuple(out)


def _is_project_only(frame: Frame) -> bool:
    return frame.get("Event") == "UserEvent" and frame.get("UserEvent") in PROJECT_ONLY_USEREVENTS


def _triggers(transcript: Transcript, connection: str) -> list[tuple[str, int] | None]:
    """For each action sent: the event (name, how many so far) the recording client had just
    received and acted on, when it was sent within a few milliseconds of one; else None."""
    counts: Counter[str] = Counter()
    triggers: list[tuple[str, int] | None] = []
    previous: tuple[float, str | None] | None = None
    for entry in transcript.entries:
        if entry.connection != connection:
            continue
        if entry.direction == "recv":
            for raw in entry.frames:
                name = parse_frame(raw.decode()).get("Event")
                if name in SIMULATED:
                    counts[name] += 1
                previous = (entry.at, name)
            continue
        if previous is not None and previous[1] in SIMULATED and entry.at - previous[0] < REACTION:
            triggers.append((previous[1], counts[previous[1]]))
        else:
            triggers.append(None)
    return triggers


async def _replay_connection(
    sim: PbxSimulator, transcript: Transcript, connection: str
) -> list[Frame]:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(sim.host, sim.port)
    greeting = await reader.readline()
    assert greeting == b"Asterisk Call Manager/11.0.0\r\n"
    frames: list[Frame] = []
    arrived = asyncio.Event()

    async def pump() -> None:
        buffer = b""
        while chunk := await reader.read(1 << 16):
            buffer += chunk
            *complete, buffer = buffer.split(b"\r\n\r\n")
            frames.extend(parse_frame(c.decode("utf-8", "surrogateescape")) for c in complete)
            arrived.set()

    async def seen(name: str, count: int) -> None:
        while sum(1 for f in frames if f.get("Event") == name) < count:
            arrived.clear()
            await arrived.wait()

    received = asyncio.create_task(pump())
    start, began = transcript.start_of(connection), loop.time()
    for entry, trigger in zip(
        transcript.sent(connection), _triggers(transcript, connection), strict=True
    ):
        if trigger is not None:
            await asyncio.wait_for(seen(*trigger), timeout=10)
        else:
            due = began + (entry.at - start) / SPEED
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            # What the PBX had done by then in the recording it must have done here too,
            # however late this loop runs.
            while (step := sim.engine.next_deadline()) is not None and step <= due:
                await asyncio.sleep(0.001)
        for raw in entry.frames:
            writer.write(raw)
        await writer.drain()
    await asyncio.wait_for(received, timeout=10)  # Logoff or a refused login closes it
    writer.close()
    return frames


async def _replay(transcript: Transcript, config: SimConfig) -> dict[str, list[Frame]]:
    async with PbxSimulator(config) as sim:
        frames = {c: await _replay_connection(sim, transcript, c) for c in transcript.connections()}
        assert sim.errors == []
        return frames


def _responses(frames: list[Frame]) -> list[tuple[str | None, ...]]:
    return [
        (f.get("ActionID"), f.get("Response"), f.get("Message"), f.get("EventList"))
        for f in frames
        if "Response" in f and "Event" not in f
    ]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_replay_matches_real_asterisk(scenario: str) -> None:
    require_transcripts()
    transcript = load_transcript(scenario)
    config = replace(SimConfig(port=0, speed=SPEED), **SCENARIOS[scenario])
    got_by_connection = asyncio.run(_replay(transcript, config))

    for connection in transcript.connections():
        expected = transcript.received(connection)
        got = got_by_connection[connection]

        assert _responses(got) == _responses(expected)

        want_events = [f for f in expected if f.get("Event") in SIMULATED]
        got_events = [f for f in got if f.get("Event") in SIMULATED and not _is_project_only(f)]
        want_norm, got_norm = Normalizer(), Normalizer()
        # First-appearance order of identifiers follows the channel creation order, which the
        # ordered milestones and Newchannel events fix in both.
        want_ordered = [
            want_norm.event(f)
            for f in want_events
            if f["Event"] in ORDERED or f["Event"] == "Newchannel"
        ]
        got_ordered = [
            got_norm.event(f)
            for f in got_events
            if f["Event"] in ORDERED or f["Event"] == "Newchannel"
        ]
        assert got_ordered == want_ordered

        want_all = Counter(want_norm.event(f) for f in want_events)
        got_all = Counter(got_norm.event(f) for f in got_events)
        assert got_all == want_all, (
            f"missing: {list((want_all - got_all).elements())}\n"
            f"extra: {list((got_all - want_all).elements())}"
        )


def test_press1_transfer_reports_the_transfer_result_before_the_ivr_hangs_up() -> None:
    require_transcripts()
    transcript = load_transcript("human_press1_transfer")
    got = asyncio.run(_replay(transcript, SimConfig(port=0, speed=SPEED)))["c1"]
    events = [f for f in got if f.is_event]
    names = [(f["Event"], f.get("UserEvent"), f.get("Channel")) for f in events]
    result_at = next(
        i for i, f in enumerate(events) if f.get("UserEvent") == "DialerTransferResult"
    )
    result = events[result_at]
    ivr_channel = result["Channel"]
    assert result["DIALSTATUS"] == "ANSWER"
    # the target stays 5.9 s (simulated time) before hanging up
    assert result["ANSWEREDTIME"] == "5"
    assert names[result_at - 2][0] == "BridgeLeave" and names[result_at - 2][2] == ivr_channel
    assert ("Hangup", None, ivr_channel) in names[result_at:]
