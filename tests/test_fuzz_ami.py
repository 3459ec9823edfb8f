"""Fuzzing the AMI parsers: arbitrary bytes in, only the documented outcomes out.

- `dialer.ami.client.parse_frame` (what the adapter yields) and `dialer.ami.events.parse_frame` (replays):
  None or a dict of str, where only `*ChanVariable` headers are dicts of str; nothing Postgres
  cannot store (a NUL); never an exception, whatever the bytes (split UTF-8, missing colons,
  huge values, duplicate headers).
- The listener's path for those events (`Correlator.key`, `extract`, `CallFacts.merge`,
  `event_time`, `encode`): never raises, and every fact has its column's type and range.
- The stream: `AmiClient` over a real loopback socket yields the same events whatever the TCP
  chunking; the simulator's `LineReader` gives the same messages whatever the chunking, and
  reads back exactly the frame `dialer.ami.wire.encode_action` built (no injected header or
  action).

DIALER_FUZZ_EXAMPLES=5000 runs a longer hunt.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from panoramisk.message import Message
from sqlalchemy import Engine

from dialer.ami import wire as amiwire
from dialer.ami.client import CONNECTED_EVENT, DISCONNECTED_EVENT, AmiClient, parse_frame
from dialer.ami.events import (
    DIALER_USER_EVENTS,
    FACT_NAMES,
    QUEUE_CALLER_EVENTS,
    QUEUE_MEMBER_EVENTS,
    USED_EVENTS,
    CallFacts,
    Correlator,
    EventFacts,
    encode,
    event_time,
    extract,
    fingerprint,
    iter_frames,
)
from dialer.ami.events import parse_frame as parse_text_frame
from dialer.outcomes.callstore import CallStore
from dialer.outcomes.listener import observe
from dialer.pbxsim.wire import (
    INPUT_BUFFER,
    LINE_TOO_LONG,
    MAX_HEADERS,
    TOO_MANY_LINES,
    LineReader,
    originate_variables,
    separate_args,
    skip_blanks,
)
from dialer.settings import AmiServer
from tests.support_listener import add_attempts, add_campaign, fetch

EXAMPLES = int(os.environ.get("DIALER_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None)
# Each example of the socket test opens a connection: fewer of them.
FUZZ_SOCKET = settings(
    max_examples=max(10, EXAMPLES // 5),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
AT = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
CALL_ID = "1704067200000_42"
INT4 = (-(2**31), 2**31 - 1)
INT_FACTS = frozenset({"originate_reason", "hangup_cause", "queue_wait_s"})
TIME_FACTS = frozenset(name for name in FACT_NAMES if name.endswith("_at"))

# -- frames that look like AMI ------------------------------------------------------------------

HEADER_NAMES = [
    "Event",
    "Response",
    "ActionID",
    "Message",
    "Privilege",
    "Channel",
    "Uniqueid",
    "Linkedid",
    "DestChannel",
    "DestUniqueid",
    "DestLinkedid",
    "ChanVariable",
    "DestChanVariable",
    "ChanVariable(PJSIP/MC-00000001)",
    "Cause",
    "Cause-txt",
    "Reason",
    "DialStatus",
    "UserEvent",
    "AMDSTATUS",
    "AMDCAUSE",
    "DTMF",
    "READSTATUS",
    "DIALSTATUS",
    "RECORDING_FILE",
    "custom_call_id",
    "Timestamp",
    "Output",
    "HoldTime",
    "Queue",
    "Interface",
    "MemberName",
    "QUEUESTATUS",
    "EventList",
    "content",
    "Content",
    "event",
    "",
]
HEADER_VALUES = [
    "OriginateResponse",
    "Hangup",
    "DialEnd",
    "UserEvent",
    "DialerAMD",
    "DialerDTMF",
    "DialerVoicemail",
    "DialerTransfer",
    "DialerTransferResult",
    "DialerRecording",
    "QueueCallerJoin",
    "QueueCallerAbandon",
    "AgentConnect",
    "AgentComplete",
    "Success",
    "Failure",
    "Follows",
    "Error",
    CALL_ID,
    f"{CALL_ID}-2",
    "<unknown>",
    "PJSIP/MC-00000001",
    "Local/1@x;2",
    "16",
    "0",
    "-1",
    "99999999999",
    "1e309",
    "nan",
    "1704067200.123",
    "١٦",  # digits of another script: int() reads them
    "1",
    "*#",
    "ANSWER",
    "HUMAN",
    f"custom_call_id={CALL_ID}",
    "a=b",
    "=",
    "noequals",
    "",
    "x" * 5000,
]
values = st.one_of(st.sampled_from(HEADER_VALUES), st.text(max_size=20))
separators = st.sampled_from([": ", ":", ": ", " : ", "", ":  ", ":\t"])
line_ends = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r"])
noise = st.sampled_from([b"\x00", b"\xff", b"\xc3", b"\xe2\x82", "é".encode(), b"", b"\r\n"])


@st.composite
def header_frames(draw: st.DrawFn) -> bytes:
    """A frame of `Name: value` lines, well-formed or not, ending with a blank line or not."""
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        name = draw(st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=8)))
        line = (name + draw(separators) + draw(values)).encode("utf-8", "surrogatepass")
        if draw(st.integers(0, 4)) == 0:
            at = draw(st.integers(0, len(line)))
            line = line[:at] + draw(noise) + line[at:]
        lines.append(line + draw(line_ends))
    end = draw(st.sampled_from([b"\r\n", b"", b"\n"]))
    return b"".join(lines) + end


int_texts = st.one_of(
    st.integers().map(str),
    st.sampled_from(["99999999999", "-2147483649", " 16 ", "١٦", "1e3", "", "x"]),
)


@st.composite
def call_event_frames(draw: st.DrawFn) -> bytes:
    """Events of the kinds the listener uses, correlated to a call, with any other headers."""
    name = draw(st.sampled_from(sorted(USED_EVENTS)))
    lines = [("Event", name)]
    prefix = "Dest" if name == "DialEnd" and draw(st.booleans()) else ""
    for header in ("Uniqueid", "Linkedid"):
        if draw(st.integers(0, 3)):
            lines.append((prefix + header, CALL_ID))
    if name == "OriginateResponse":
        lines += [
            ("ActionID", CALL_ID),
            ("Response", draw(st.sampled_from(["Success", "Failure"]))),
        ]
        lines.append(("Reason", draw(int_texts)))
    elif name == "Hangup":
        lines.append(("Cause", draw(int_texts)))
    elif name == "DialEnd":
        lines.append(("DialStatus", draw(st.sampled_from(["ANSWER", "BUSY", "NOANSWER", ""]))))
    elif name in QUEUE_CALLER_EVENTS or name in QUEUE_MEMBER_EVENTS:
        lines += [("Queue", draw(values)), ("HoldTime", draw(int_texts))]
        for header in ("MemberName", "Interface", "Channel"):
            if draw(st.booleans()):
                lines.append((header, draw(values)))
    else:
        lines.append(("UserEvent", draw(st.sampled_from(sorted(DIALER_USER_EVENTS)))))
        for header in ("AMDSTATUS", "DTMF", "DIALSTATUS", "RECORDING_FILE"):
            if draw(st.booleans()):
                lines.append((header, draw(values)))
    lines += draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), values), max_size=8))
    lines = draw(st.permutations(lines))
    return ("".join(f"{k}: {v}\r\n" for k, v in lines) + "\r\n").encode()


frames_or_bytes = st.one_of(header_frames(), call_event_frames(), st.binary(max_size=300))


def assert_well_typed(frame: dict[str, Any]) -> None:
    """The documented shape, and nothing Postgres refuses (NUL) in it."""
    for name, value in frame.items():
        assert isinstance(name, str) and "\x00" not in name
        if isinstance(value, dict):
            assert name.endswith("ChanVariable"), name
            for var, var_value in value.items():
                assert isinstance(var, str) and isinstance(var_value, str)
                assert "\x00" not in var + var_value
        else:
            assert isinstance(value, str), (name, value)
            assert "\x00" not in value
    # What the listener stores in call_events.data must load back as the same JSON.
    encoded = encode(frame)
    assert json.loads(encoded) == frame and "\\u0000" not in encoded
    assert len(fingerprint(encoded)) == 32


def assert_facts_fit_their_columns(facts: EventFacts) -> None:
    assert set(facts.values) <= set(FACT_NAMES)
    for name, value in facts.values.items():
        if value is None:
            continue
        if name in INT_FACTS:
            assert isinstance(value, int) and INT4[0] <= value <= INT4[1], (name, value)
        elif name in TIME_FACTS:
            assert isinstance(value, dt.datetime) and value.tzinfo is not None
        elif name == "voicemail_left":
            assert value is True
        else:
            assert isinstance(value, str) and "\x00" not in value, (name, value)
    if facts.values.get("dtmf") is not None:
        assert re.fullmatch(r"[0-9*#]+", facts.values["dtmf"])
    merged = CallFacts().merge(facts.values).merge(facts.values)
    assert isinstance(merged.answered, bool) and isinstance(merged.ended, bool)


def follow_listener_path(frame: dict[str, Any]) -> None:
    """Correlate, extract and merge as the listener does; nothing may raise."""
    key = Correlator().key(frame)
    assert key is None or isinstance(key, str)
    assert event_time(frame, AT).tzinfo is not None
    for call_id in {key, CALL_ID} - {None}:
        facts = extract(frame, call_id, AT)
        if facts is not None:
            event("facts extracted")
            assert_facts_fit_their_columns(facts)
        observed = observe(frame, call_id, AT.timestamp())
        assert observed is None or observed.call_id == call_id


@FUZZ
@given(raw=frames_or_bytes)
def test_adapter_parse_frame_gives_only_documented_outcomes(raw: bytes) -> None:
    frame = parse_frame(raw)
    event("parsed" if frame is not None else "not a response or event")
    if frame is None:
        return
    assert_well_typed(frame)
    follow_listener_path(frame)


@FUZZ
@given(raw=frames_or_bytes)
def test_replay_parse_frame_gives_only_documented_outcomes(raw: bytes) -> None:
    text = raw.decode("utf-8", "replace")
    frame = parse_text_frame(text)
    assert_well_typed(frame)
    follow_listener_path(frame)
    for each in iter_frames(text):
        assert_well_typed(each)


event_names = st.sampled_from(["Hangup", "DialEnd", "UserEvent", "OriginateResponse", "Newstate"])
plain_values = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=30)


first_lines = st.one_of(
    st.tuples(st.just("Event"), event_names),
    # panoramisk keeps the last line of these apart as a body.
    st.tuples(st.just("Response"), st.sampled_from(["Follows", "Fail", "Success"])),
)


@FUZZ
@given(
    first=first_lines,
    headers=st.lists(
        st.tuples(st.sampled_from(["Channel", "Output", "Cause", "AMDCAUSE", "Foo"]), plain_values),
        max_size=8,
    ),
    variables=st.lists(st.tuples(st.sampled_from(["a", "b", "custom_call_id"]), plain_values)),
)
def test_headers_arrive_as_sent_and_repeats_are_joined(
    first: tuple[str, str], headers: list[tuple[str, str]], variables: list[tuple[str, str]]
) -> None:
    chan_variables = [("ChanVariable", f"{k}={v}") for k, v in variables]
    lines = [first, ("ActionID", "7"), *headers, *chan_variables]
    raw = ("".join(f"{k}: {v}\r\n" for k, v in lines) + "\r\n").encode()
    frame = parse_frame(raw)
    assert frame is not None and frame[first[0]] == first[1]
    for header in {k for k, _ in headers}:
        assert frame[header] == "\n".join(v for k, v in headers if k == header)
    if variables:
        assert frame["ChanVariable"] == dict(variables)
    assert_well_typed(frame)


def panoramisk_reference(raw: bytes) -> dict[str, Any] | None:
    """The adapter's parse as it was built on panoramisk's `Message.from_line` (the oracle)."""
    message = Message.from_line(raw.decode("utf-8", errors="replace").strip("\r\n"))
    if message is None:
        return None
    event: dict[str, Any] = {}
    for name, values in message.items():
        if name.lower() == "content":  # the Follows/Fail body slot, empty for events
            continue
        for value in values if isinstance(values, list) else [values]:
            folded = "ChanVariable" if name.startswith("ChanVariable(") else name
            if folded.endswith("ChanVariable"):
                key, _, val = value.partition("=")
                event.setdefault(folded, {})[key] = val
            elif name in event:
                event[name] = f"{event[name]}\n{value}"
            else:
                event[name] = value
    return event


# Names that differ in more than case: panoramisk's headers are case-insensitive.
REFERENCE_NAMES = [
    "Channel", "Uniqueid", "Linkedid", "ChanVariable", "DestChanVariable",
    "ChanVariable(PJSIP/MC-00000001)", "Cause", "DTMF", "Output", "custom_call_id", "ActionID",
]  # fmt: skip


@FUZZ
@given(
    name=event_names,
    lines=st.lists(
        st.one_of(
            st.tuples(st.sampled_from(REFERENCE_NAMES), plain_values),
            st.tuples(st.just(""), plain_values),  # a line without a header: skipped by both
        ),
        max_size=10,
    ),
)
def test_parse_frame_agrees_with_panoramisk_on_event_frames(
    name: str, lines: list[tuple[str, str]]
) -> None:
    text = f"Event: {name}\r\n" + "".join(
        f"{k}: {v}\r\n" if k else f"{v.replace(': ', ' ')}\r\n" for k, v in lines
    )
    raw = (text + "\r\n").encode()
    assert parse_frame(raw) == panoramisk_reference(raw)


# -- the stream: same events whatever the TCP chunking ------------------------------------------

GREETING = b"Asterisk Call Manager/11.0.0\r\n"
stream_values = st.text(
    st.characters(codec="utf-8", exclude_characters="\r\n\x00"), min_size=0, max_size=40
)


@st.composite
def event_frames(draw: st.DrawFn) -> bytes:
    headers = [("Event", draw(event_names))]
    headers += draw(
        st.lists(
            st.tuples(st.sampled_from(["Channel", "Linkedid", "Foo", "Output"]), stream_values),
            max_size=6,
        )
    )
    return ("".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode()


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def _action_id_line(frame: bytes) -> bytes:
    found = re.search(rb"ActionID: [^\r]*\r\n", frame)
    assert found is not None, frame
    return found.group(0)


async def _receive(greeting: list[bytes], stream: list[bytes], expected: int) -> list[Any]:
    """Events an AmiClient yields from a peer that writes `stream` piece by piece."""

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in greeting:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.001)
        login = await reader.readuntil(b"\r\n\r\n")
        response = b"Response: Success\r\n" + _action_id_line(login)
        writer.write(response + b"Message: Authentication accepted\r\n\r\n")
        for piece in stream:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.001)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            logoff = await reader.readuntil(b"\r\n\r\n")
            writer.write(b"Response: Goodbye\r\n" + _action_id_line(logoff) + b"\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = AmiClient(
        AmiServer("fuzz", "127.0.0.1", port, "dialer", "secret"),
        events=True,
        connect_timeout=2.0,
        login_timeout=2.0,
        ping_interval=60.0,
    )
    received: list[Any] = []
    try:
        await client.connect()
        events = client.events()
        while len(received) < expected:
            item = await asyncio.wait_for(anext(events), 5.0)
            assert item.get("Event") != DISCONNECTED_EVENT, received
            if item.get("Event") != CONNECTED_EVENT:
                received.append(item)
    finally:
        await client.close()
        server.close()
    return received


@FUZZ_SOCKET
@given(frames=st.lists(event_frames(), min_size=1, max_size=8), data=st.data())
def test_client_reassembles_frames_whatever_the_tcp_chunking(
    frames: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(frames)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    pieces = _cut(stream, cuts)
    greeting = _cut(GREETING, data.draw(st.lists(st.integers(0, len(GREETING)), max_size=3)))
    # Pieces are sent one by one (TCP_NODELAY): a cut inside a character splits it on the wire.
    if any(p and (p[0] & 0xC0) == 0x80 for p in pieces[1:]):
        event("a UTF-8 character split across writes")
    expected = [parse_frame(f) for f in frames]
    received = asyncio.run(asyncio.wait_for(_receive(greeting, pieces, len(frames)), 20))
    assert received == expected


# -- the simulator's reader ---------------------------------------------------------------------

WIRE_TOKENS = [
    b"Action: Ping\r\n",
    b"ActionID: 1\r\n",
    b"Variable: a=b,c\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b":",
    b" ",
    b"x" * (INPUT_BUFFER - 2),
    b"x" * INPUT_BUFFER,
    b"y" * 3000,
    b"\xff",
    b"\xc3",
    b"Header: " * 20,
    b"L: v\r\n" * (MAX_HEADERS + 2),
]
wire_bytes = st.lists(st.one_of(st.sampled_from(WIRE_TOKENS), st.binary(max_size=10)), max_size=40)


def _messages(reader: LineReader, pieces: list[bytes]) -> list[tuple[list[str], str | None]]:
    return [(m.lines, m.error) for piece in pieces for m in reader.feed(piece)]


@FUZZ
@given(tokens=wire_bytes, data=st.data())
def test_simulator_reader_gives_the_same_messages_whatever_the_chunking(
    tokens: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(tokens)
    whole = _messages(LineReader(), [stream])
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    assert _messages(LineReader(), _cut(stream, cuts)) == whole
    # One byte at a time is the worst chunking there is.
    if len(stream) < 5000:
        assert _messages(LineReader(), [bytes([b]) for b in stream]) == whole


@FUZZ
@given(tokens=wire_bytes)
def test_simulator_reader_messages_are_well_formed(tokens: list[bytes]) -> None:
    for message in LineReader().feed(b"".join(tokens)):
        assert message.error in (None, LINE_TOO_LONG, TOO_MANY_LINES)
        assert len(message.lines) <= MAX_HEADERS
        for line in message.lines:
            assert line and "\n" not in line and "\x00" not in line
        # The simulator's accessors on whatever arrived: no exception.
        message.get("Action")
        message.pairs()
        message.get_all("Variable")
        originate_variables(message)


@FUZZ
@given(text=st.text(max_size=80), delim=st.sampled_from([",", "|", '"']))
def test_dialplan_argument_splitting_never_fails(text: str, delim: str) -> None:
    args = separate_args(text, delim)
    assert len(args) <= 64 and all(isinstance(a, str) for a in args)


header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,12}", fullmatch=True)
header_values = st.one_of(
    st.text(max_size=40),
    st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(250, 1100)),
)


@FUZZ
@given(headers=st.lists(st.tuples(header_names, header_values), max_size=30))
def test_encoded_actions_reach_the_simulator_exactly_as_built(
    headers: list[tuple[str, str]],
) -> None:
    """No value can add a header or an action: Asterisk reads back exactly what was built."""
    lines = [("Action", "Ping"), *headers]
    try:
        frame = amiwire.encode_action(lines)
    except amiwire.UnsafeHeaderValue:
        event("refused")
        return
    [message] = LineReader().feed(frame)
    assert message.error is None
    assert message.pairs() == [(name, skip_blanks(value)) for name, value in lines]


# -- what the fuzzing found ---------------------------------------------------------------------


def test_a_nul_never_reaches_an_event() -> None:
    raw = b"Event: Hangup\r\nUniqueid: 1_2\r\nCause-txt: Nor\x00mal\r\n\r\n"
    assert parse_frame(raw) == {"Event": "Hangup", "Uniqueid": "1_2", "Cause-txt": "Nor\ufffdmal"}
    assert parse_text_frame(raw.decode())["Cause-txt"] == "Nor\ufffdmal"


def test_numbers_out_of_their_columns_range_are_no_facts() -> None:
    hangup = {"Event": "Hangup", "Uniqueid": CALL_ID, "Linkedid": CALL_ID, "Cause": "99999999999"}
    facts = extract(hangup, CALL_ID, AT)
    assert facts is not None and facts.final and facts.values["hangup_cause"] == 0
    response = {"Event": "OriginateResponse", "ActionID": CALL_ID, "Response": "Failure"}
    failed = extract({**response, "Reason": str(2**31)}, CALL_ID, AT)
    assert failed is not None and failed.values["originate_reason"] is None


def test_the_last_line_of_a_follows_response_is_a_header_like_the_others() -> None:
    # panoramisk keeps that line apart: a repeated header lost it, a ChanVariable became text.
    output = parse_frame(b"Response: Follows\r\nActionID: 1\r\nOutput: a\r\nOutput: b\r\n\r\n")
    assert output == {"Response": "Follows", "ActionID": "1", "Output": "a\nb"}
    body = parse_frame(b"Response: Follows\r\nActionID: 2\r\nOutput: a\r\n--END COMMAND--\r\n\r\n")
    assert body is not None and body["Output"] == "a\n--END COMMAND--"
    variable = parse_frame(b"Response: Follows\r\nActionID: 3\r\nChanVariable: x=1\r\n\r\n")
    assert variable is not None and variable["ChanVariable"] == {"x": "1"}


def test_a_hostile_event_cannot_wedge_the_listeners_batches(engine: Engine) -> None:
    # Such an event failed its whole batch, which the listener retries first, forever.
    campaign = add_campaign(engine)
    [attempt] = add_attempts(engine, campaign, ["+15550000101"])
    cid = attempt.custom_call_id
    raw = (
        f"Event: Hangup\r\nChannel: PJSIP/MC-1\r\nUniqueid: {cid}\r\nLinkedid: {cid}\r\n"
        "Cause: 99999999999\r\nCause-txt: Nor\x00mal\r\nCallerIDName: \x00\r\n\r\n"
    ).encode()
    frame = parse_frame(raw)
    assert frame is not None
    key = Correlator().key(frame)
    assert key == cid
    observed = observe(frame, key, AT.timestamp())
    assert observed is not None
    result = CallStore(engine).apply([observed])
    assert result.stored == 1 and len(result.closed) == 1
    [row] = fetch(
        engine, "SELECT status, hangup_cause, hangup_cause_txt FROM call_attempts WHERE id = :id",
        id=attempt.id,
    )  # fmt: skip
    assert tuple(row) == ("ended", 0, "Nor\ufffdmal")
