"""Frames, correlation and facts; every shared transcript replayed to its facts and outcome."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dialer.ami.events import (
    USED_EVENTS,
    CallFacts,
    Correlator,
    encode,
    extract,
    fingerprint,
    iter_frames,
    parse_frame,
)
from dialer.outcomes.rules import Outcome, decide
from tests.support_listener import originate_call_ids, received_events

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CID = "1795392951000_42"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# -- frames -------------------------------------------------------------------------------------


def test_parse_frame_folds_channel_variables_and_keeps_values_verbatim() -> None:
    event = parse_frame(
        "Event: DialEnd\r\nPrivilege: call,all\r\nDestChannel: PJSIP/MC-00000001\r\n"
        "DestUniqueid: 1_2\r\nDestChanVariable: custom_call_id=1_2\r\n"
        "DestChanVariable: CUSTOM_CALL_ID=\r\nAccountCode: \r\nDialStatus: ANSWER\r\n"
        "Message: a: b: c\r\n"
    )
    assert event == {
        "Event": "DialEnd",
        "Privilege": "call,all",
        "DestChannel": "PJSIP/MC-00000001",
        "DestUniqueid": "1_2",
        "DestChanVariable": {"custom_call_id": "1_2", "CUSTOM_CALL_ID": ""},
        "AccountCode": "",
        "DialStatus": "ANSWER",
        "Message": "a: b: c",
    }


def test_parse_frame_folds_originate_response_channel_variables() -> None:
    event = parse_frame(
        "Event: OriginateResponse\nActionID: 1_2\n"
        "ChanVariable(PJSIP/MC-00000001): custom_call_id=1_2\nOutput: a\nOutput: b\n"
    )
    assert event["ChanVariable"] == {"custom_call_id": "1_2"}
    assert event["Output"] == "a\nb"


def test_iter_frames_splits_on_blank_lines() -> None:
    text = "Event: A\r\nX: 1\r\n\r\nEvent: B\r\n\r\n\r\n"
    assert [e["Event"] for e in iter_frames(text)] == ["A", "B"]


def test_fingerprint_is_stable_and_distinguishes_events() -> None:
    frame = "Event: Hangup\r\nUniqueid: 1_2\r\nChanVariable: x=1\r\nChanVariable: y=2\r\n"
    a, b = parse_frame(frame), parse_frame(frame)
    assert encode(a) == '{"Event":"Hangup","Uniqueid":"1_2","ChanVariable":{"x":"1","y":"2"}}'
    assert fingerprint(encode(a)) == fingerprint(encode(b))
    assert fingerprint(encode(a)) != fingerprint(encode({**a, "Cause": "16"}))


# -- correlation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "key"),
    [
        ({"Event": "OriginateResponse", "ActionID": CID, "Uniqueid": "<unknown>"}, CID),
        ({"Event": "OriginateResponse", "Uniqueid": "<unknown>"}, None),
        ({"Event": "Hangup", "Uniqueid": f"{CID}-2", "Linkedid": CID}, CID),
        # Linkedid wins over the channel variable.
        (
            {"Event": "Hangup", "Linkedid": CID, "ChanVariable": {"custom_call_id": "9_9"}},
            CID,
        ),
        # The Originate's own dial: only Dest headers.
        ({"Event": "DialEnd", "DestUniqueid": CID, "DestLinkedid": CID}, CID),
        # Linkedid not a call id (ChannelId not honoured): the channel variable.
        (
            {"Event": "Hangup", "Linkedid": "17953.78", "ChanVariable": {"custom_call_id": CID}},
            CID,
        ),
        (
            {
                "Event": "DialEnd",
                "DestLinkedid": "17953.78",
                "DestChanVariable": {"custom_call_id": CID},
            },
            CID,
        ),
        (
            {
                "Event": "UserEvent",
                "Linkedid": "17953.78",
                "ChanVariable": {"custom_call_id": ""},
                "custom_call_id": CID,
            },
            CID,
        ),
        ({"Event": "Hangup", "Linkedid": "17953.78", "ChanVariable": {"custom_call_id": ""}}, None),
        ({"Event": "Hangup"}, None),
    ],
)
def test_correlation_key(event: dict[str, Any], key: str | None) -> None:
    assert Correlator().key(event) == key


def test_correlator_learns_linkedid_for_legs_without_the_variable() -> None:
    correlator = Correlator()
    leg = {"Event": "Hangup", "Linkedid": "17953.78", "ChanVariable": {"custom_call_id": ""}}
    assert correlator.key(leg) is None
    correlator.key(
        {"Event": "Hangup", "Linkedid": "17953.78", "ChanVariable": {"custom_call_id": CID}}
    )
    assert correlator.key(leg) == CID


def test_correlator_aliases_are_bounded() -> None:
    correlator = Correlator(max_aliases=2)
    for n in range(3):
        correlator.alias(f"a{n}", f"{n}_1")
    assert correlator.key({"Event": "OriginateResponse", "ActionID": "a0"}) == "a0"
    assert correlator.key({"Event": "OriginateResponse", "ActionID": "a2"}) == "2_1"


def leg_of(linkedid: str) -> dict[str, Any]:
    """An event of a call's leg that carries no custom_call_id: found by its Linkedid alone."""
    return {"Event": "Hangup", "Linkedid": linkedid, "ChanVariable": {"custom_call_id": ""}}


def test_an_open_calls_aliases_outlive_any_number_of_closed_calls() -> None:
    correlator = Correlator(max_aliases=100, max_closed=10)
    correlator.alias("open.1", "1_1")
    for n in range(2, 1000):
        correlator.alias(f"closed.{n}", f"{n}_1")
        correlator.closed(f"{n}_1")
    assert correlator.key(leg_of("open.1")) == "1_1"
    assert len(correlator) == 1 + 10  # the open call's alias and the last ten closed


@pytest.mark.parametrize(
    "closed_after, found",
    [
        (0, "0_1"),  # closed last: its late events still find it
        (9, "0_1"),  # nine calls closed since: still among the last ten
        (10, None),  # ten closed since: forgotten, as any call closed long ago
    ],
)
def test_a_closed_calls_aliases_are_kept_for_the_calls_closed_last(
    closed_after: int, found: str | None
) -> None:
    correlator = Correlator(max_closed=10)
    correlator.alias("leg.0", "0_1")
    correlator.closed("0_1")
    for n in range(1, closed_after + 1):
        correlator.alias(f"leg.{n}", f"{n}_1")
        correlator.closed(f"{n}_1")
    assert correlator.key(leg_of("leg.0")) == found


def test_a_late_event_of_a_closed_call_does_not_make_it_open_again() -> None:
    correlator = Correlator(max_aliases=100, max_closed=10)
    correlator.alias("leg.0", "0_1")
    correlator.closed("0_1")
    late = {"Event": "Hangup", "Linkedid": "leg.0", "ChanVariable": {"custom_call_id": "0_1"}}
    assert correlator.key(late) == "0_1"
    for n in range(1, 11):  # ten calls closed since: the late event did not pin it
        correlator.alias(f"leg.{n}", f"{n}_1")
        correlator.closed(f"{n}_1")
    assert correlator.key(leg_of("leg.0")) is None
    assert len(correlator) == 10


# -- facts --------------------------------------------------------------------------------------


def _chan(uniqueid: str, channel: str, **extra: Any) -> dict[str, Any]:
    return {"Channel": channel, "Uniqueid": uniqueid, "Linkedid": CID, **extra}


@pytest.mark.parametrize(
    ("event", "values", "final", "failed"),
    [
        (
            {"Event": "OriginateResponse", "Response": "Success", "Reason": "4",
             "Uniqueid": CID, "Channel": "PJSIP/MC-00000001"},
            {"originate_response": "Success", "originate_reason": 4, "answered_at": at(1),
             "uniqueid": CID, "channel": "PJSIP/MC-00000001", "originate_response_at": at(1)},
            False, False,
        ),
        (
            {"Event": "OriginateResponse", "Response": "Failure", "Reason": "0",
             "Uniqueid": "<unknown>", "Channel": "PJSIP/+15550000004@MC"},
            {"originate_response": "Failure", "originate_reason": 0,
             "originate_response_at": at(1)},
            False, True,
        ),
        (
            {"Event": "Hangup", **_chan(CID, "PJSIP/MC-00000001"), "Cause": "17",
             "Cause-txt": "User busy"},
            {"hangup_cause": 17, "hangup_cause_txt": "User busy", "hangup_at": at(1),
             "channel": "PJSIP/MC-00000001", "uniqueid": CID},
            True, False,
        ),
        (
            {"Event": "DialEnd", "DestUniqueid": CID, "DestLinkedid": CID, "DialStatus": "ANSWER"},
            {"dial_status": "ANSWER", "answered_at": at(1)},
            False, False,
        ),
        (
            {"Event": "DialEnd", "DestUniqueid": CID, "DestLinkedid": CID, "DialStatus": "BUSY"},
            {"dial_status": "BUSY"},
            False, False,
        ),
        (
            # The originated channel dials the transfer target.
            {"Event": "DialEnd", **_chan(CID, "PJSIP/MC-00000001"), "DestUniqueid": "17.5",
             "DestLinkedid": CID, "DialStatus": "ANSWER"},
            {"transfer_status": "ANSWER", "transfer_answered_at": at(1)},
            False, False,
        ),
        (
            {"Event": "UserEvent", "UserEvent": "DialerAMD", "AMDSTATUS": "HUMAN",
             "AMDCAUSE": "HUMAN-808-800", **_chan(CID, "PJSIP/MC-00000001")},
            {"amd_status": "HUMAN", "amd_cause": "HUMAN-808-800"},
            False, False,
        ),
        (
            {"Event": "UserEvent", "UserEvent": "DialerDTMF", "DTMF": "", "READSTATUS": "TIMEOUT"},
            {"dtmf": None, "read_status": "TIMEOUT"},
            False, False,
        ),
        (
            {"Event": "UserEvent", "UserEvent": "DialerDTMF", "DTMF": "9", "READSTATUS": "OK"},
            {"dtmf": "9", "read_status": "OK"},
            False, False,
        ),
        (
            {"Event": "UserEvent", "UserEvent": "DialerVoicemail", "WAITSTATUS": "SILENCE"},
            {"voicemail_left": True},
            False, False,
        ),
        (
            {"Event": "UserEvent", "UserEvent": "DialerTransfer", "TRANSFER_NUMBER": "+1555"},
            {"transfer_requested_at": at(1), "transfer_source": "ivr"},
            False, False,
        ),
        (
            {"Event": "UserEvent", "UserEvent": "DialerTransferResult", "DIALSTATUS": "BUSY",
             "ANSWEREDTIME": "0"},
            {"transfer_status": "BUSY", "transfer_ended_at": at(1)},
            False, False,
        ),
        (
            {"Event": "UserEvent", "UserEvent": "DialerRecording", "RECORDING_FILE": "x.wav"},
            {"recording_file": "x.wav"},
            False, False,
        ),
    ],
)  # fmt: skip
def test_extract(event: dict[str, Any], values: dict[str, Any], final: bool, failed: bool) -> None:
    facts = extract(event, CID, at(1))
    assert facts is not None
    assert facts.values == values
    assert (facts.final, facts.originate_failed) == (final, failed)


@pytest.mark.parametrize(
    "event",
    [
        # The callee half of a Local originate, with ChannelId/OtherChannelId.
        {"Event": "Hangup", **_chan(f"{CID}-2", "Local/+1555@sim-00000001;2"), "Cause": "17"},
        # A transfer leg of the call (its own Uniqueid, the call's Linkedid).
        {"Event": "Hangup", **_chan("17953.5", "Local/+1555@sim-00000002;1"), "Cause": "16"},
        # A dial by some other channel of the call.
        {"Event": "DialEnd", **_chan("17953.5", "Local/x;2"), "DestUniqueid": "17953.6",
         "DialStatus": "ANSWER"},
        {"Event": "UserEvent", "UserEvent": "SomethingElse"},
        {"Event": "Newstate", **_chan(CID, "PJSIP/MC-00000001")},
    ],
)  # fmt: skip
def test_extract_ignores_events_that_say_nothing_about_the_call(event: dict[str, Any]) -> None:
    assert extract(event, CID, T0) is None


def test_facts_merge_keeps_first_values_and_earliest_times_in_any_order() -> None:
    updates = [
        {"answered_at": at(2), "dial_status": "ANSWER"},
        {"answered_at": at(1), "originate_response": "Success"},
        {"dial_status": "BUSY", "answered_at": None},
    ]
    forward = CallFacts()
    for values in updates:
        forward = forward.merge(values)
    assert forward.answered_at == at(1)
    assert forward.dial_status == "ANSWER"
    assert forward.originate_response == "Success"


# -- transcripts --------------------------------------------------------------------------------

HUMAN = {"amd_status": "HUMAN", "amd_cause": "HUMAN-808-800"}

# transcript -> {custom_call_id variable: (outcome, facts that must hold)}
TRANSCRIPT_EXPECTATIONS: dict[str, dict[str, tuple[Outcome, dict[str, Any]]]] = {
    "busy": {
        "cid-busy": (
            Outcome.BUSY,
            {"originate_response": "Failure", "originate_reason": 5, "dial_status": "BUSY",
             "hangup_cause": 0, "answered_at": None},
        )
    },
    "congestion": {
        "cid-congestion": (
            Outcome.CONGESTION,
            {"originate_reason": 8, "dial_status": "CONGESTION", "hangup_cause": 0},
        )
    },
    "no_answer": {
        "cid-no_answer": (
            Outcome.NO_ANSWER,
            {"originate_reason": 3, "hangup_cause": 19, "dial_status": None},
        )
    },
    "human_press1_transfer": {
        "cid-human_press1_transfer": (
            Outcome.TRANSFERRED,
            {**HUMAN, "originate_response": "Success", "dial_status": "ANSWER", "dtmf": "1",
             "read_status": "OK", "transfer_status": "ANSWER", "hangup_cause": 16,
             "voicemail_left": None},
        )
    },
    "human_no_press": {
        "cid-human_no_press": (
            Outcome.HUMAN_NO_PRESS,
            {**HUMAN, "dtmf": None, "read_status": "TIMEOUT", "hangup_cause": 16},
        )
    },
    "human_wrong_key": {
        "cid-human_wrong_key": (
            Outcome.HUMAN_OTHER_KEY,
            {**HUMAN, "dtmf": "2", "read_status": "OK", "transfer_requested_at": None},
        )
    },
    "machine_voicemail": {
        "cid-machine_voicemail": (
            Outcome.VOICEMAIL_LEFT,
            {"amd_status": "MACHINE", "amd_cause": "LONGGREETING-1500-1500",
             "voicemail_left": True, "hangup_cause": 16},
        )
    },
    "silent_answer": {
        "cid-silent_answer": (
            Outcome.VOICEMAIL_LEFT,
            {"amd_status": "MACHINE", "amd_cause": "INITIALSILENCE-2500-2500",
             "voicemail_left": True},
        )
    },
    "answer_then_hangup": {
        "cid-answer_then_hangup": (
            Outcome.ABANDONED,
            {"originate_response": "Success", "amd_status": None, "read_status": None,
             "hangup_cause": 16},
        )
    },
    "originate_bad_channel": {
        # Four originates shared this variable; every one failed before any answer.
        "cid-originate_bad_channel-+1234": (
            Outcome.FAILED,
            {"originate_response": "Failure", "originate_reason": 0, "answered_at": None},
        )
    },
    "originate_channelid": {
        "cid-chanid-ok": (Outcome.ABANDONED, {"originate_reason": 4, "hangup_cause": 16}),
        "cid-chanid-busy": (Outcome.BUSY, {"originate_reason": 5, "dial_status": "BUSY"}),
        # Answered; the duplicate send's Failure must not hide that. The recording ended it
        # with an AMI Hangup without a cause (cause 0): the PBX's doing, not the callee's.
        "cid-chanid-dup1": (Outcome.INTERRUPTED, {"originate_response": "Success",
                                                  "hangup_cause": 0}),
        "cid-chanid-dup2": (Outcome.FAILED, {"originate_reason": 0, "hangup_cause": None}),
    },
}  # fmt: skip


def replay(name: str, *, filtered: bool) -> tuple[dict[str, CallFacts], set[str], set[str]]:
    """Facts per call, calls whose end was seen, calls whose Originate failed."""
    correlator = Correlator()
    for action_id, call_id in originate_call_ids(name).items():
        correlator.alias(action_id, call_id)
    facts: dict[str, CallFacts] = {}
    ended: set[str] = set()
    failed: set[str] = set()
    for frame in received_events(name):
        event = frame.headers
        if filtered and not _passes_listener_filter(event):
            continue
        key = correlator.key(event)
        if key is None:
            continue
        found = extract(event, key, frame.at)
        if found is None:
            continue
        facts[key] = facts.get(key, CallFacts()).merge(found.values)
        if found.final:
            ended.add(key)
        if found.originate_failed:
            failed.add(key)
    return facts, ended, failed


def _passes_listener_filter(event: dict[str, Any]) -> bool:
    name = event["Event"]
    if name == "UserEvent":
        return str(event.get("UserEvent", "")).startswith("Dialer")
    return name in USED_EVENTS


@pytest.mark.parametrize("filtered", [False, True], ids=["all-events", "filtered"])
@pytest.mark.parametrize("name", sorted(TRANSCRIPT_EXPECTATIONS))
def test_transcript_replay_yields_facts_and_outcome(name: str, filtered: bool) -> None:
    facts, ended, failed = replay(name, filtered=filtered)
    expected = TRANSCRIPT_EXPECTATIONS[name]
    assert set(facts) == set(expected)
    for call_id, (outcome, subset) in expected.items():
        got = facts[call_id]
        assert {k: getattr(got, k) for k in subset} == subset, call_id
        # Every call's end is observable: a Hangup of its own channel or a failed Originate.
        assert call_id in ended or call_id in failed, call_id
        assert decide(got, press_key="1", opt_out_key=None).outcome is outcome, call_id


def test_transfer_transcript_times_follow_the_call() -> None:
    facts, _, _ = replay("human_press1_transfer", filtered=True)
    got = facts["cid-human_press1_transfer"]
    assert got.answered_at is not None and got.transfer_requested_at is not None
    assert got.transfer_answered_at is not None and got.hangup_at is not None
    assert got.answered_at < got.transfer_requested_at < got.transfer_answered_at < got.hangup_at
    # The transfer leg's own Hangup did not end the call: the originated channel's did.
    assert (got.hangup_at - got.transfer_answered_at).total_seconds() == pytest.approx(5.9, abs=0.1)
