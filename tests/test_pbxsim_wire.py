"""The simulator's pure parts: AMI parsing as manager.c does it, and the behaviour policy."""

from __future__ import annotations

import pytest

from dialer.pbxsim.behaviour import (
    Callee,
    DialTarget,
    Timings,
    amd_result,
    callee_for,
    digit_pressed,
    parse_callerid,
    parse_dial_string,
    user_event_fields,
)
from dialer.pbxsim.codes import ALL_CATEGORIES, CALL, SECURITY, USER, event_mask
from dialer.pbxsim.config import ConfigError, SimConfig
from dialer.pbxsim.dialplan import Dialplan
from dialer.pbxsim.filters import FilterError, FilterSet, parse_filter
from dialer.pbxsim.wire import (
    LINE_TOO_LONG,
    TOO_MANY_LINES,
    LineReader,
    Message,
    originate_variables,
    parse_variable_header,
    separate_args,
)

# -- Variable values: what variable_comma_crlf showed real Asterisk doing -------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("comma_plain=a,b", [("comma_plain", "a")]),  # 'b' has no '=': dropped
        ('comma_quoted="a,b"', [("comma_quoted", "a,b")]),
        ("comma_escaped=a\\,b", [("comma_escaped", "a,b")]),
        ("two_in_one=x1=1,x2=2", [("two_in_one", "x1=1"), ("x2", "2")]),
        ("custom_call_id=cid-comma,part2", [("custom_call_id", "cid-comma")]),
        ("custom_call_id=cid-esc\\,part2", [("custom_call_id", "cid-esc,part2")]),
        ("transfer_prefix=", [("transfer_prefix", "")]),
        ("=value", []),
        ("  spaced=1", [("spaced", "1")]),
        ("fn=CUT(a,b)", [("fn", "CUT(a,b)")]),  # parentheses nest: no split inside
    ],
)
def test_variable_header_is_split_like_asterisk(header: str, expected: list) -> None:
    assert parse_variable_header(header) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("a", ["a"]),
        ("a,", ["a", ""]),
        (",a", ["", "a"]),
        ('"x,y",z', ["x,y", "z"]),
        ("a\\\\b", ["a\\b"]),
        ("[a,b],c", ["[a,b]", "c"]),
    ],
)
def test_separate_args(text: str, expected: list[str]) -> None:
    assert separate_args(text) == expected


def test_separate_args_keeps_the_remainder_past_the_argument_limit_raw() -> None:
    args = separate_args(",".join(f'"v{i}"' for i in range(70)))
    assert len(args) == 64
    assert args[62] == "v62"
    assert args[63].startswith('"v63"') and args[63].endswith('"v69"')


def test_first_occurrence_of_a_variable_wins() -> None:
    message = Message(["Action: Originate", "Variable: a=1", "Variable: a=2,b=3"])
    assert originate_variables(message) == {"a": "1", "b": "3"}


def test_headers_are_found_without_case_and_the_first_wins() -> None:
    message = Message(["action: Ping", "ActionID:   x1", "ACTIONID: x2", "Odd line"])
    assert message.get("Action") == "Ping"
    assert message.get("ActionID") == "x1"
    assert message.get("Missing") == ""
    assert message.get_all("actionid") == ["x1", "x2"]
    assert message.pairs()[-1] == ("Odd line", "")


# -- line reading -----------------------------------------------------------------------------


def test_actions_split_on_blank_lines_and_bare_lf_ends_a_line() -> None:
    reader = LineReader()
    messages = reader.feed(
        b"Action: Originate\r\nVariable: lf_only=before\nVariable: lf_injected=LF\r\n"
        b"Variable: a=1\r\n\r\nAction: Ping\r\nActionID: injected-ping\r\n\r\n"
    )
    assert [m.get("Action") for m in messages] == ["Originate", "Ping"]
    assert originate_variables(messages[0]) == {"lf_only": "before", "lf_injected": "LF", "a": "1"}


def test_bytes_may_arrive_in_any_pieces() -> None:
    data = b"Action: Ping\r\nActionID: p\xc3\xa9\r\n\r\n"
    reader = LineReader()
    messages = []
    for byte in data:
        messages += reader.feed(bytes([byte]))
    assert len(messages) == 1 and messages[0].get("ActionID") == "p\u00e9"


@pytest.mark.parametrize("content", [1022, 1100])
def test_a_line_must_fit_the_1024_byte_buffer(content: int) -> None:
    line = b"Variable: v=" + b"L" * (content - len(b"Variable: v="))
    reader = LineReader()
    messages = reader.feed(b"Action: Originate\r\nActionID: long\r\n" + line + b"\r\n\r\n")
    assert len(messages) == 1
    assert messages[0].get("ActionID") == "long"
    assert messages[0].error == (LINE_TOO_LONG if content > 1022 else None)
    # the next action is parsed normally again
    assert reader.feed(b"Action: Ping\r\n\r\n")[0].error is None


def test_a_line_one_byte_too_long_leaves_its_crlf_as_an_empty_action() -> None:
    # manager.c keeps the buffer's last byte (the CR) when it discards a full buffer, so the
    # LF completes an empty line that ends the action, and the real blank line then arrives
    # as an action of its own (answered "Missing action in request").
    line = b"Variable: v=" + b"L" * (1023 - len(b"Variable: v="))
    messages = LineReader().feed(b"Action: Originate\r\n" + line + b"\r\n\r\n")
    assert [(m.lines, m.error) for m in messages] == [
        (["Action: Originate"], LINE_TOO_LONG),
        ([], None),
    ]


def test_more_than_128_lines_is_refused() -> None:
    reader = LineReader()
    body = b"".join(b"Variable: v%d=1\r\n" % i for i in range(130))
    (message,) = reader.feed(b"Action: Originate\r\n" + body + b"\r\n")
    assert message.error == TOO_MANY_LINES


def test_nul_ends_a_line() -> None:
    (message,) = LineReader().feed(b"Action: Ping\0garbage\r\n\r\n")
    assert message.get("Action") == "Ping"


# -- event masks and filters --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mask"),
    [
        ("on", ALL_CATEGORIES),
        ("yes", ALL_CATEGORIES),
        ("off", 0),
        ("", None),
        ("call,user", CALL | USER),
        ("security", SECURITY),
        ("2", 2),
    ],
)
def test_event_mask(text: str, mask: int | None) -> None:
    assert event_mask(text) == mask


HANGUP = "Event: Hangup\r\nPrivilege: call,all\r\nChannel: PJSIP/MC-00000001\r\nCause: 17\r\n"
NEWSTATE = "Event: Newstate\r\nPrivilege: call,all\r\nChannel: PJSIP/MC-00000001\r\n"


def test_legacy_filters_include_and_exclude_by_regex() -> None:
    filters = FilterSet()
    filters.add(parse_filter("", "Event: (Hangup|Newstate)"))
    assert filters.allows(HANGUP) and filters.allows(NEWSTATE)
    filters.add(parse_filter("", "!Event: Newstate"))
    assert filters.allows(HANGUP) and not filters.allows(NEWSTATE)


def test_advanced_filters_by_name_and_header() -> None:
    filters = FilterSet()
    filters.add(parse_filter("name(Hangup),header(Cause),method(exact)", "17"))
    assert filters.allows(HANGUP)
    assert not filters.allows(HANGUP.replace("Cause: 17", "Cause: 16"))
    assert not filters.allows(NEWSTATE)


@pytest.mark.parametrize(("criteria", "pattern"), [("", ""), ("", "("), ("method(fuzzy)", "x")])
def test_bad_filters_are_refused(criteria: str, pattern: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(criteria, pattern)


# -- behaviour policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "callee"),
    [
        ("+15550000001", Callee.PRESSES_KEY),
        ("+15550000002", Callee.NO_PRESS),
        ("+15550000003", Callee.MACHINE),
        ("+15550000004", Callee.BUSY),
        ("+15550000005", Callee.NO_ANSWER),
        ("+15550000006", Callee.CONGESTION),
        ("+15550000007", Callee.ANSWERS_THEN_HANGS_UP),
        ("+15550000008", Callee.PRESSES_2),
        ("+15550000009", Callee.SILENT),
        ("+15550000010", Callee.HUMAN),
        ("+15551234567", Callee.HUMAN),
        ("", Callee.HUMAN),
    ],
)
def test_callee_by_last_two_digits(number: str, callee: Callee) -> None:
    assert callee_for(number) is callee


def test_amd_and_keys_per_callee() -> None:
    assert amd_result(Callee.MACHINE) == ("MACHINE", "LONGGREETING-1500-1500")
    assert amd_result(Callee.SILENT) == ("MACHINE", "INITIALSILENCE-2500-2500")
    assert amd_result(Callee.NO_PRESS) == ("HUMAN", "HUMAN-808-800")
    assert amd_result(Callee.ANSWERS_THEN_HANGS_UP) is None
    assert digit_pressed(Callee.PRESSES_KEY, "5") == "5"
    assert digit_pressed(Callee.PRESSES_2, "1") == "2"
    assert digit_pressed(Callee.NO_PRESS, "1") is None


@pytest.mark.parametrize(
    ("channel", "target"),
    [
        (
            "PJSIP/+15550000001@MC",
            DialTarget("PJSIP", "+15550000001@MC", "+15550000001", endpoint="MC"),
        ),
        ("pjsip/MC", DialTarget("PJSIP", "MC", "", endpoint="MC")),
        (
            "Local/+1555@pstn-sim",
            DialTarget("Local", "+1555@pstn-sim", "+1555", context="pstn-sim"),
        ),
        (
            "Local/+1555@pstn-sim/n",
            DialTarget("Local", "+1555@pstn-sim/n", "+1555", context="pstn-sim"),
        ),
        ("Local/100", DialTarget("Local", "100", "100", context="default")),
        ("Foo/bar", DialTarget("Foo", "bar", "")),
        ("nodash", None),
    ],
)
def test_dial_strings(channel: str, target: DialTarget | None) -> None:
    assert parse_dial_string(channel) == target


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ('"+19876543210" <+19876543210>', ("+19876543210", "+19876543210")),
        ("Alice <(555) 123-4567>", ("Alice", "5551234567")),
        ("+15551234567", ("", "+15551234567")),
        ("Alice", ("Alice", "")),
        ("", ("", "")),
    ],
)
def test_callerid(text: str, parsed: tuple[str, str]) -> None:
    assert parse_callerid(text) == parsed


def test_user_event_values_are_cut_at_a_comma_like_the_dialplan_does() -> None:
    fields = user_event_fields([("custom_call_id", "cid-esc,part2"), ("DTMF", "2")])
    assert fields == [("custom_call_id", "cid-esc"), ("DTMF", "2")]
    assert user_event_fields([("DTMF", "")]) == [("DTMF", "")]


def test_timings_scale_with_speed() -> None:
    assert Timings().scaled(10).ring == pytest.approx(0.1)
    with pytest.raises(ValueError):
        Timings().scaled(0)


def test_default_dialplan() -> None:
    dialplan = Dialplan()
    assert dialplan.exists("DynamicIVR", "s")
    assert not dialplan.exists("DynamicIVR", "t")
    assert dialplan.exists("transfer-sim", "+15551234567")
    assert not dialplan.exists("transfer-sim", "nosuchexten")
    assert not dialplan.exists("NoSuchContext", "s")
    assert dialplan.exists("harness-queue", "support", frozenset({"support"}))


@pytest.mark.parametrize(
    "options", [{"speed": 0}, {"max_channels": -1}, {"port": 70000}, {"queues": ("a,b",)}]
)
def test_bad_options_are_refused(options: dict) -> None:
    with pytest.raises(ConfigError):
        SimConfig(**options)
