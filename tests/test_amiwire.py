"""AMI frames: header order, comma escaping, and refusal of anything that could inject."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialer.ami.wire import (
    MAX_LINE_BYTES,
    VARIABLE_ORDER,
    UnsafeHeaderValue,
    describe,
    encode_action,
    escape_variable_value,
    originate_frame,
    originate_headers,
    unescape_variable_value,
)
from dialer.dialing.payload import CallSettings, TrunkRoute, build_originate_payload


def _payload(template: str = "PJSIP/{number}@{trunk}", **settings: object) -> dict:
    return build_originate_payload(
        call_id="1704067200000_12345",
        to_number="+15550000001",
        from_number="+15559990000",
        settings=CallSettings(**{"ivr_file": "welcome_message", **settings}),  # type: ignore[arg-type]
        trunk=TrunkRoute(channel_template=template),
    )


def test_originate_frame_layout() -> None:
    frame = originate_frame(_payload()).decode()
    assert frame.endswith("\r\n\r\n") and frame.count("\r\n\r\n") == 1
    lines = frame.split("\r\n")[:-2]
    assert lines[:9] == [
        "Action: Originate",
        "ActionID: 1704067200000_12345",
        "Channel: PJSIP/+15550000001@MC",
        "Context: DynamicIVR",
        "Exten: s",
        "Priority: 1",
        'CallerID: "+15559990000" <+15559990000>',
        "Timeout: 30000",
        "Async: true",
    ]
    variables = [line.removeprefix("Variable: ") for line in lines if line.startswith("Variable:")]
    assert [v.split("=", 1)[0] for v in variables] == list(VARIABLE_ORDER)
    assert lines[-1] == "ChannelId: 1704067200000_12345"
    assert not any(line.startswith("OtherChannelId") for line in lines)


def test_local_channels_get_other_channel_id() -> None:
    headers = originate_headers(_payload("Local/{number}@pstn-sim"))
    assert headers[-2:] == [
        ("ChannelId", "1704067200000_12345"),
        ("OtherChannelId", "1704067200000_12345-2"),
    ]


def test_variable_order_survives_a_reordered_payload() -> None:
    payload = _payload()
    names = list(payload["variable"])
    random.Random(7).shuffle(names)
    shuffled = {**payload, "variable": {n: payload["variable"][n] for n in names}}
    shuffled["variable"]["extra_b"] = "2"
    assert originate_frame(dict(reversed(shuffled.items()))) == originate_frame(
        {**payload, "variable": {**payload["variable"], "extra_b": "2"}}
    )


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        # As measured: `cid-esc\,part2` arrives as `cid-esc,part2`; a bare comma truncates.
        ("cid-esc,part2", r"cid-esc\,part2"),
        ('say "hi"', r"say \"hi\""),
        (r"C:\path", r"C:\\path"),
        ("f(x)[1]", r"f\(x\)\[1\]"),
        ("x1=1", "x1=1"),
        ("plain_file", "plain_file"),
    ],
)
def test_variable_values_are_escaped_for_asterisks_argument_splitter(value: str, wire: str) -> None:
    assert escape_variable_value(value) == wire
    assert unescape_variable_value(wire) == value
    frame = originate_frame(_payload(ivr_file=value)).decode()
    assert f"\r\nVariable: ivr_file={wire}\r\n" in frame


@given(st.text(alphabet=st.characters(blacklist_characters="\r\n\x00"), max_size=60))
def test_escaping_round_trips(value: str) -> None:
    assert unescape_variable_value(escape_variable_value(value)) == value


INJECTIONS = {
    "CR": "welcome\rVariable: x=1",
    "LF": "welcome\nVariable: x=1",
    "CRLF": "welcome\r\nVariable: injected=1",
    "CRLFCRLF": "welcome\r\n\r\nAction: Hangup\r\nChannel: PJSIP/MC-00000001",
    "NUL": "welcome\x00",
    "overlong": "L" * 1100,
}


@pytest.mark.parametrize("value", INJECTIONS.values(), ids=INJECTIONS.keys())
def test_unsafe_variable_values_are_refused(value: str) -> None:
    with pytest.raises(UnsafeHeaderValue):
        originate_frame(_payload(ivr_file=value))


@pytest.mark.parametrize("value", INJECTIONS.values(), ids=INJECTIONS.keys())
def test_unsafe_values_are_refused_in_any_action(value: str) -> None:
    with pytest.raises(UnsafeHeaderValue):
        encode_action({"Action": "Hangup", "Channel": value})
    with pytest.raises(UnsafeHeaderValue):
        originate_frame({**_payload(), "callerid": value})


def test_line_limit_is_asterisks_buffer() -> None:
    prefix = "Channel: "
    fits = "x" * (MAX_LINE_BYTES - len(prefix) - 2)
    assert len(encode_action({"Action": "Hangup", "Channel": fits}).split(b"\r\n")[1]) == 1022
    with pytest.raises(UnsafeHeaderValue, match="1025 bytes"):
        encode_action({"Action": "Hangup", "Channel": fits + "x"})
    # Bytes, not characters: a multi-byte character counts for its encoding.
    with pytest.raises(UnsafeHeaderValue):
        encode_action({"Action": "Hangup", "Channel": fits[:-1] + "é"})


@pytest.mark.parametrize("name", ["Bad Name", "X:Y", "X\r\nAction", "", "1abc"])
def test_header_names_must_be_tokens(name: str) -> None:
    with pytest.raises(UnsafeHeaderValue):
        encode_action({"Action": "Ping", name: "v"})


@pytest.mark.parametrize("name", ["a=b", "a,b", "a b", "", "x\n"])
def test_variable_names_must_be_identifiers(name: str) -> None:
    payload = _payload()
    payload["variable"] = {**payload["variable"], name: "v"}
    with pytest.raises(UnsafeHeaderValue):
        originate_frame(payload)


def test_encode_action_values() -> None:
    frame = encode_action(
        [("Action", "Setvar"), ("ActionID", "a1"), ("Async", True), ("Priority", 3)]
    )
    assert frame == b"Action: Setvar\r\nActionID: a1\r\nAsync: true\r\nPriority: 3\r\n\r\n"
    assert encode_action({"Action": "X", "Variable": ["a=1", "b=2"]}).count(b"Variable: ") == 2
    with pytest.raises(UnsafeHeaderValue):
        encode_action({"Action": "X", "Variable": {"a": "1"}})  # type: ignore[dict-item]
    with pytest.raises(UnsafeHeaderValue):
        encode_action({"Channel": "x"})


def test_payload_contract_checks() -> None:
    with pytest.raises(ValueError, match="async"):
        originate_frame({**_payload(), "async": False})
    with pytest.raises(ValueError, match="custom_call_id"):
        originate_frame({**_payload(), "actionid": "1_2"})
    with pytest.raises(ValueError, match="channel"):
        originate_frame({k: v for k, v in _payload().items() if k != "channel"})


def test_describe_hides_secrets() -> None:
    text = describe({"Action": "Login", "Username": "dialer", "Secret": "s3cr3t"})
    assert "s3cr3t" not in text and "Username=dialer" in text
