"""Live call control: `dialer call ...`, `dialer channels`, `dialer queue ...`, and recording
campaigns. The planning is table-tested; the commands run against the PBX simulator over real
TCP and a real Postgres database, with calls placed the way the worker places them."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from dialer.ami.wire import originate_frame
from dialer.cli import cli
from dialer.control import plan as cc
from dialer.dialing.payload import CallSettings, TrunkRoute, build_originate_payload
from dialer.outcomes.listener import Listener
from dialer.settings import get_settings
from tests.support_listener import Attempt, add_attempts, add_campaign, fetch, wait_for
from tests.support_pbx import Frame, PbxSim, RawAmi, make_sim
from tests.test_listener_e2e import connected, fast_options

# Slow enough that a call stays in the IVR for a few seconds (the prompt times out 17.3 s after
# the answer at speed 1), fast enough that a press-1 call is bridged 1.5 s after its answer.
SPEED = 3.0
# Numbers by their last two digits (the simulator's callee behaviours): 99 answers and stays
# (a minute at speed 1), 98 any human, 01 presses 1, 04 busy, 05 never answers.
IN_IVR = "+12125550299"
PRESSES_1 = "+12125550101"
TARGET = "+12125550199"
OTHER_TARGET = "+12125550198"
BUSY = "+12125550104"
NO_ANSWER = "+12125550105"


# -- planning (pure) ------------------------------------------------------------------------------


def channel(name: str, uid: str, linked: str, **fields: Any) -> cc.LiveChannel:
    return cc.LiveChannel(
        name=name, uniqueid=uid, linkedid=linked, state=fields.pop("state", 6),
        state_desc=fields.pop("state_desc", "Up"), **fields,
    )  # fmt: skip


CALLEE = channel("PJSIP/MC-00000001", "1700000000000_7", "1700000000000_7", context="DynamicIVR")
AGENT = channel("PJSIP/MC-00000002", "1700000001.5", "1700000000000_7", bridge_id="b1")
BRIDGED = channel("PJSIP/MC-00000001", "1700000000000_7", "1700000000000_7", bridge_id="b1")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("1700000000000_7", "call_id"),
        ("42", "attempt_id"),
        ("PJSIP/MC-0000002a", "channel"),
        ("Local/+15550000002@pstn-sim-00000040;1", "channel"),
    ],
)
def test_call_references(text: str, kind: str) -> None:
    assert cc.parse_call_ref(text) == cc.CallRef(kind, text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "1700_7\r\nAction: Hangup",
        "PJSIP/MC\n-1",
        "no such thing",
        "a/",
        "\u00b2",
        "\u0663",
        "1_\u00b2",
        "9" * 19,
    ],
)
def test_unusable_call_references_are_refused(text: str) -> None:
    with pytest.raises(cc.InputError):
        cc.parse_call_ref(text)


@pytest.mark.parametrize(
    ("target", "queue", "context", "expected"),
    [
        (TARGET, None, None, cc.Destination("external", "dialer-transfer", TARGET, TARGET)),
        ("+1 212 555 0199", None, None, cc.Destination("external", "dialer-transfer", TARGET, TARGET)),
        ("2001", None, None, cc.Destination("extension", "from-internal", "2001", "2001")),
        ("2001", None, "agents", cc.Destination("extension", "agents", "2001", "2001")),
        (None, "support", None, cc.Destination("queue", "dialer-queue", "support", "support")),
        (None, "support", "q-ctx", cc.Destination("queue", "q-ctx", "support", "support")),
    ],
)  # fmt: skip
def test_destinations(
    target: str | None, queue: str | None, context: str | None, expected: cc.Destination
) -> None:
    assert cc.plan_destination(target, queue=queue, context=context) == expected


@pytest.mark.parametrize(
    ("target", "queue", "context", "field"),
    [
        (None, None, None, "TARGET"),
        ("2001", "support", None, "TARGET"),
        ("+1234", None, None, "TARGET"),  # not a valid number
        ("+15551234567", None, None, "TARGET"),  # no such NANP area code
        ("2001\r\nAction: Originate", None, None, "TARGET"),
        ("20 01", None, None, "TARGET"),
        ("2001", None, "from-internal\nx", "--context"),
        ("2001", None, "bad context", "--context"),
        (None, "sup port", None, "--queue"),
        (None, "support\r\n", None, "--queue"),
    ],
)
def test_bad_destinations_are_refused(
    target: str | None, queue: str | None, context: str | None, field: str
) -> None:
    with pytest.raises(cc.InputError) as caught:
        cc.plan_destination(target, queue=queue, context=context)
    assert caught.value.field == field


def test_the_callee_is_the_channel_the_originate_named() -> None:
    local_one = channel("Local/x@c-1;1", "1700000000000_7", "1700000000000_7")
    local_two = channel("Local/x@c-1;2", "1700000000000_7-2", "1700000000000_7")
    other = channel("PJSIP/MC-9", "1700000002.1", "1700000002.1")
    assert cc.originated_channel([other, local_two, local_one], "1700000000000_7") == local_one
    # Asterisk did not take the ChannelId: the channel the listener recorded, else the first
    renamed = channel("PJSIP/MC-3", "1700000003.1", "1700000000000_7")
    leg = channel("PJSIP/MC-4", "1700000003.2", "1700000000000_7")
    assert cc.originated_channel([leg, renamed], "1700000000000_7", "PJSIP/MC-3") == renamed
    assert cc.originated_channel([other], "1700000000000_7") is None


@pytest.mark.parametrize(
    ("channels", "callee", "method", "sent_for"),
    [
        ([CALLEE], CALLEE, "Redirect", CALLEE.name),  # in the IVR: moved itself
        ([BRIDGED, AGENT], BRIDGED, "BlindTransfer", AGENT.name),  # bridged: sent for its peer
        ([BRIDGED], BRIDGED, "Redirect", BRIDGED.name),  # alone in a bridge: no peer to use
    ],
)
def test_blind_transfer_plans(
    channels: list[cc.LiveChannel], callee: cc.LiveChannel, method: str, sent_for: str
) -> None:
    destination = cc.plan_destination(TARGET, queue=None, context=None)
    plan = cc.plan_blind_transfer(channels, callee, destination)
    headers = dict(plan.headers)
    assert (plan.method, headers["Action"], headers["Channel"]) == (method, method, sent_for)
    assert (headers["Context"], headers["Exten"]) == ("dialer-transfer", TARGET)
    assert ("Priority" in headers) == (method == "Redirect")


def test_a_ringing_call_is_not_transferred() -> None:
    ringing = channel("PJSIP/MC-1", "1_1", "1_1", state=5, state_desc="Ringing")
    destination = cc.plan_destination(TARGET, queue=None, context=None)
    with pytest.raises(cc.ControlError, match="not answered"):
        cc.plan_blind_transfer([ringing], ringing, destination)


AT = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


def _event(name: str, **fields: str) -> dict[str, str]:
    return {"Event": name, **fields}


UID = CALLEE.uniqueid


@pytest.mark.parametrize(
    ("events", "ok", "words", "facts"),
    [
        (
            [_event("DialBegin", Uniqueid=UID, DestChannel="PJSIP/MC-3", DestUniqueid="n"),
             _event("DialEnd", Uniqueid=UID, DestUniqueid="n", DialStatus="ANSWER",
                    DestChannel="PJSIP/MC-3")],
            True, "answered", {"transfer_status": "ANSWER", "transfer_answered_at": AT},
        ),
        (
            [_event("DialEnd", Uniqueid=UID, DestUniqueid="n", DialStatus="BUSY")],
            False, "did not answer (BUSY)", {"transfer_status": "BUSY"},
        ),
        (
            [_event("Hangup", Uniqueid=UID, Cause="0", Context="nowhere", Exten="s")],
            False, "dropped at once in nowhere,s (cause 0, no cause)", {},
        ),
        (
            [_event("DialBegin", Uniqueid=UID, DestChannel="PJSIP/MC-3"),
             _event("Hangup", Uniqueid=UID, Cause="16")],
            False, "ended while", {},
        ),
        (
            [_event("QueueCallerJoin", Uniqueid=UID, Queue="support", Position="2")],
            True, "waiting in queue support (position 2)", {},
        ),
        (
            # the Dial the transfer interrupted is torn down (CANCEL), the new one answers
            [_event("DialEnd", Uniqueid=UID, DestUniqueid="old", DialStatus="CANCEL"),
             _event("DialEnd", Uniqueid=UID, DestUniqueid="old", DialStatus="ANSWER"),
             _event("DialEnd", Uniqueid=UID, DestUniqueid="n", DialStatus="NOANSWER")],
            False, "did not answer (NOANSWER)", {"transfer_status": "NOANSWER"},
        ),
        (
            # other calls' events say nothing
            [_event("Hangup", Uniqueid="someone-else", Cause="16"),
             _event("DialEnd", Uniqueid="someone-else", DestUniqueid="n", DialStatus="BUSY")],
            None, "", {},
        ),
    ],
)  # fmt: skip
def test_transfer_verdicts(
    events: list[dict[str, str]], ok: bool | None, words: str, facts: dict[str, Any]
) -> None:
    destination = cc.plan_destination(TARGET, queue=None, context=None)
    plan = cc.plan_blind_transfer([CALLEE], CALLEE, destination)
    watch = cc.TransferWatch(plan, AT, existing=["old"])
    for event in events:
        watch.feed(event, AT)
    if ok is None:
        assert watch.verdict is None
        return
    assert watch.verdict is not None
    assert watch.verdict.ok is ok and words in watch.verdict.text
    assert watch.verdict.facts == {"transfer_requested_at": AT, **facts}


def test_a_refused_blind_transfer_event_fails_without_facts() -> None:
    destination = cc.plan_destination(TARGET, queue=None, context=None)
    plan = cc.plan_blind_transfer([BRIDGED, AGENT], BRIDGED, destination)
    watch = cc.TransferWatch(plan, AT)
    watch.feed(_event("BlindTransfer", TransfererUniqueid=AGENT.uniqueid, Result="Fail"), AT)
    assert watch.verdict == cc.Verdict(False, "Asterisk did not transfer the call (Fail)")


@pytest.mark.parametrize(
    ("now", "ok", "words"),
    [
        ([], False, "the call is gone"),
        ([CALLEE], False, "did not move"),
        ([channel(CALLEE.name, UID, UID, context="agents", exten="2001", application="Playback")],
         True, "now in agents,2001 (Playback)"),
        ([channel(CALLEE.name, UID, UID, context="q", application="Queue", data="support")],
         True, "waiting in queue"),
        ([channel(CALLEE.name, UID, UID, context="x", application="Dial", data="PJSIP/1@MC")],
         None, ""),
    ],
)  # fmt: skip
def test_transfer_judged_from_a_listing_when_events_say_nothing(
    now: list[cc.LiveChannel], ok: bool | None, words: str
) -> None:
    destination = cc.plan_destination(TARGET, queue=None, context=None)
    watch = cc.TransferWatch(cc.plan_blind_transfer([CALLEE], CALLEE, destination), AT)
    watch.settle(now)
    if ok is None:  # still dialling: the command waits for the answer, then reports ringing
        assert watch.verdict is None
        watch.timed_out(10)
        assert watch.verdict is not None and "still ringing" in watch.verdict.text
        return
    assert watch.verdict is not None
    assert watch.verdict.ok is ok and words in watch.verdict.text


def test_consultation_plan_and_verdicts() -> None:
    external = cc.plan_destination(TARGET, queue=None, context=None)
    trunk = TrunkRoute("MC", "PJSIP/{number}@{trunk}")
    dial = cc.consult_dial_string(external, trunk=trunk, transfer_prefix="9")
    assert dial == f"PJSIP/9{TARGET}@MC"
    assert cc.consult_dial_string(
        cc.plan_destination("2001", queue=None, context="agents"), trunk=None
    ) == ("Local/2001@agents")
    with pytest.raises(cc.InputError):
        cc.consult_dial_string(cc.plan_destination(None, queue="q", context=None), trunk=trunk)
    with pytest.raises(cc.ControlError):
        cc.consult_dial_string(external, trunk=None)
    plan = cc.plan_consult(
        external, base_id=UID, epoch_ms=5, dial_string=dial, ring_timeout_s=20, caller_id="x <1>"
    )
    headers = dict(plan.headers)
    assert plan.consult_id == f"{UID}-consult-5"
    assert not cc.CALL_ID.match(plan.consult_id)  # the listener never takes it for a call
    assert (headers["Action"], headers["Application"], headers["Timeout"]) == (
        "Originate", "Wait", "20000",
    )  # fmt: skip
    assert headers["ActionID"] == headers["ChannelId"] == plan.consult_id
    assert "OtherChannelId" not in headers

    busy = cc.ConsultWatch(plan, CALLEE)
    busy.feed(_event("Hangup", Uniqueid=plan.consult_id, Cause="17"), AT)
    busy.feed(_event("OriginateResponse", ActionID=plan.consult_id, Response="Failure",
                     Reason="0"), AT)  # fmt: skip
    assert busy.failure == f"{TARGET} did not answer (cause 17, busy)"
    unanswered = cc.ConsultWatch(plan, CALLEE)
    unanswered.feed(_event("OriginateResponse", ActionID=plan.consult_id, Response="Failure",
                           Reason="3"), AT)  # fmt: skip
    assert unanswered.waiting_for_cause and not unanswered.done
    unanswered.conclude()  # no Hangup came: the Reason is all there is
    assert unanswered.failure == f"{TARGET} did not answer (no answer)"
    late = cc.ConsultWatch(plan, CALLEE)
    late.feed(_event("OriginateResponse", ActionID=plan.consult_id, Response="Failure",
                     Reason="3"), AT)  # fmt: skip
    late.feed(_event("Hangup", Uniqueid=plan.consult_id, Cause="19"), AT)
    assert late.failure == f"{TARGET} did not answer (cause 19, no answer)"
    gone = cc.ConsultWatch(plan, CALLEE)
    gone.feed(_event("Hangup", Uniqueid=UID, Cause="16"), AT)
    assert gone.callee_gone and gone.done
    answered = cc.ConsultWatch(plan, CALLEE)
    answered.feed(_event("OriginateResponse", ActionID="other", Response="Success"), AT)
    assert not answered.done
    answered.feed(_event("OriginateResponse", ActionID=plan.consult_id, Response="Success",
                         Channel="PJSIP/MC-9"), AT)  # fmt: skip
    assert (answered.answered_channel, answered.answered_at) == ("PJSIP/MC-9", AT)


def test_small_plans() -> None:
    assert cc.hangup_headers(CALLEE, 21)[-1] == ("Cause", "21")
    with pytest.raises(cc.InputError):
        cc.hangup_headers(CALLEE, 0)
    assert cc.recording_file("1700000000000_7") == "1700000000000_7.wav"
    assert cc.recording_file("a/b;2") == "a_b_2.wav"
    assert dict(cc.mixmonitor_headers(CALLEE, "f.wav"))["Options"] == "a"
    assert cc.variable_names(["AMDSTATUS", "CHANNEL(state)"]) == ["AMDSTATUS", "CHANNEL(state)"]
    for bad in (["A\r\nAction: Hangup"], ["A B"], ["A(b)(c)"], []):
        with pytest.raises(cc.InputError):
            cc.variable_names(bad)
    assert cc.interface_name("Local/2001@agents/n") == "Local/2001@agents/n"
    for bad in ("agent1", "PJSIP/a b", "PJSIP/a,b", "PJSIP/a\nb"):
        with pytest.raises(cc.InputError):
            cc.interface_name(bad)
    with pytest.raises(cc.InputError):
        cc.queue_add_headers("q", "PJSIP/a", member_name="x\ny", penalty=0, paused=False)
    started = {"event": cc.RECORDING_EVENT, "data": {"State": "started", "Response": "Success"}}
    stopped = {"event": cc.RECORDING_EVENT, "data": {"State": "stopped", "Response": "Success"}}
    refused = {"event": cc.RECORDING_EVENT, "data": {"State": "stopped", "Response": "Error"}}
    assert cc.recording_active([started]) and cc.recording_active([started, refused])
    assert not cc.recording_active([started, stopped]) and not cc.recording_active([])
    assert cc.recording_active([{"event": "DialerRecording", "data": {}}])
    assert cc.timeline_event("X", A=1, B=None, C=["a", "b"]) == {
        "Event": "X",
        "A": "1",
        "C": "a; b",
    }


def test_queue_status_parsing() -> None:
    rows = [
        _event("QueueParams", Queue="support", Strategy="ringall", Calls="1", Completed="2",
               Abandoned="0", Holdtime="3", TalkTime="4"),
        _event("QueueMember", Queue="support", Name="agent", Location="PJSIP/a", Status="1",
               Paused="0", InCall="0", Penalty="2", CallsTaken="5"),
        _event("QueueEntry", Queue="support", Position="1", Channel="PJSIP/MC-1",
               Uniqueid="u", CallerIDNum="+1", Wait="7"),
    ]  # fmt: skip
    [queue] = cc.parse_queue_status(rows)
    assert (queue["queue"], queue["calls"], queue["completed"]) == ("support", 1, 2)
    assert queue["members"] == [
        {"name": "agent", "interface": "PJSIP/a", "status": "not in use", "paused": False,
         "in_call": False, "penalty": 2, "calls_taken": 5},
    ]  # fmt: skip
    assert queue["callers"][0]["channel"] == "PJSIP/MC-1"
    assert cc.parse_queue_status([]) == []


# -- the commands, against the simulator and Postgres ---------------------------------------------


@pytest.fixture
def sim(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PbxSim]:
    """The simulator at SPEED; options (e.g. `write`) by indirect parametrisation."""
    options = {"speed": SPEED, **(getattr(request, "param", None) or {})}
    started = make_sim(tmp_path / "pbx-actions.jsonl", **options)
    try:
        yield started
    finally:
        started.stop()
    assert started.errors_seen == []


@pytest.fixture
def dialer(database_url: str, sim: PbxSim, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Run `dialer ...` against this test's database and simulator; `code` is the exit status
    expected."""
    for name, value in {
        "DIALER_DATABASE_URL": database_url,
        "DIALER_LOG_LEVEL": "WARNING",
        "DIALER_AMI_HOST": sim.host,
        "DIALER_AMI_PORT": str(sim.port),
        "DIALER_AMI_USERNAME": sim.username,
        "DIALER_AMI_SECRET": sim.secret,
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    yield run
    get_settings.cache_clear()


class Calls:
    """Places calls the way the worker does (the payload's own frame), on a running campaign."""

    def __init__(self, engine: Engine, sim: PbxSim, **campaign: Any) -> None:
        self.engine = engine
        self.sim = sim
        self.campaign = add_campaign(engine, caller_id_number="+12125550100", **campaign)
        self.ami: RawAmi = sim.connect()

    def place(
        self, phone: str, *, transfer_number: str = TARGET, answers: bool | None = True
    ) -> Attempt:
        """answers: wait for the answer (True), the failure (False), or only the ringing."""
        [attempt] = add_attempts(self.engine, self.campaign, [phone])
        payload = build_originate_payload(
            call_id=attempt.custom_call_id,
            to_number=phone,
            from_number="+12125550100",
            settings=CallSettings(ivr_file="welcome", transfer_number=transfer_number),
            trunk=TrunkRoute("MC", "PJSIP/{number}@{trunk}"),
        )
        self.ami.send_raw(originate_frame(payload))
        assert self.ami.response(attempt.custom_call_id)["Response"] == "Success"
        if answers is None:
            self.wait(
                lambda f: (
                    f.get("Event") == "DialState"
                    and f.get("DestUniqueid") == attempt.custom_call_id
                )
            )
            return attempt
        answer = self.wait(
            lambda f: (
                f.get("Event") == "OriginateResponse"
                and f.get("ActionID") == attempt.custom_call_id
            )
        )
        assert answer["Response"] == ("Success" if answers else "Failure")
        return attempt

    def wait(self, predicate: Any, timeout: float = 10.0) -> Frame:
        return self.ami.peek_for(predicate, timeout)

    def bridged(self, attempt: Attempt) -> Frame:
        """A press-1 call is bridged with the IVR's transfer leg: the callee's BridgeEnter."""
        return self.wait(
            lambda f: (
                f.get("Event") == "BridgeEnter" and f.get("Uniqueid") == attempt.custom_call_id
            )
        )

    def hangup_of(self, uniqueid: str, timeout: float = 10.0) -> Frame:
        return self.wait(
            lambda f: f.get("Event") == "Hangup" and f.get("Uniqueid") == uniqueid, timeout
        )

    def channels(self) -> list[cc.LiveChannel]:
        with self.sim.connect() as client:
            client.send("CoreShowChannels", action_id="list")
            frames = client.collect(lambda f: f.get("Event") == "CoreShowChannelsComplete")
        return cc.parse_channels({k: v for k, v in f.lines} for f in frames)

    def close(self) -> None:
        self.ami.close()


@pytest.fixture
def calls(engine: Engine, sim: PbxSim) -> Iterator[Calls]:
    placed = Calls(engine, sim)
    try:
        yield placed
    finally:
        placed.close()


def sent(sim: PbxSim, action: str) -> list[dict[str, str]]:
    """The headers of every `action` the simulator received."""
    return [
        dict(tuple(h) for h in r["headers"])
        for r in sim.records()
        if (r["action"] or "").lower() == action.lower()
    ]


def control_events(engine: Engine, attempt: Attempt, name: str) -> list[dict[str, Any]]:
    rows = fetch(
        engine,
        "SELECT data FROM call_events WHERE call_attempt_id = :id AND event = :e ORDER BY id",
        id=attempt.id,
        e=name,
    )
    return [r.data for r in rows]


def attempt_row(engine: Engine, attempt: Attempt) -> Any:
    return fetch(engine, "SELECT * FROM call_attempts WHERE id = :id", id=attempt.id)[0]


# transfers


def test_blind_transfer_of_a_call_in_the_ivr_redirects_it_and_follows_it(
    dialer, calls: Calls, sim: PbxSim, engine: Engine
) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer("call", "transfer", attempt.custom_call_id, TARGET)
    assert f"{TARGET} answered" in result.output
    [redirect] = sent(sim, "Redirect")
    assert (redirect["Context"], redirect["Exten"], redirect["Priority"]) == (
        "dialer-transfer", TARGET, "1",
    )  # fmt: skip
    # the callee itself, through the call's own trunk
    begin = calls.wait(
        lambda f: f.get("Event") == "DialBegin" and f.get("Uniqueid") == attempt.custom_call_id
    )
    assert begin["DialString"] == f"{TARGET}@MC"
    [event] = control_events(engine, attempt, cc.TRANSFER_EVENT)
    assert (event["Method"], event["Target"], event["Result"], event["By"]) == (
        "Redirect", TARGET, "ok", "operator",
    )  # fmt: skip
    row = attempt_row(engine, attempt)
    assert row.transfer_status == "ANSWER"
    assert row.transfer_requested_at <= row.transfer_answered_at
    shown = dialer("calls", "show", attempt.custom_call_id)
    assert "ControlTransfer" in shown.output and "Method=Redirect" in shown.output
    report = fetch(
        engine, "SELECT transfer_status, transfer_requested_at FROM call_attempts_report "
        "WHERE call_id = :c", c=attempt.custom_call_id,
    )[0]  # fmt: skip
    assert report.transfer_status == "ANSWER" and report.transfer_requested_at is not None


def test_blind_transfer_of_a_bridged_call_moves_the_callee_not_the_agent(
    dialer, calls: Calls, sim: PbxSim, engine: Engine
) -> None:
    attempt = calls.place(PRESSES_1)
    calls.bridged(attempt)
    agent = next(
        c for c in calls.channels()
        if c.linkedid == attempt.custom_call_id and c.uniqueid != attempt.custom_call_id
    )  # fmt: skip
    result = dialer("call", "transfer", attempt.custom_call_id, OTHER_TARGET, "--json")
    data = json.loads(result.output)
    assert data["ok"] is True and data["method"] == "BlindTransfer"
    [blind] = sent(sim, "BlindTransfer")
    assert (blind["Channel"], blind["Exten"]) == (agent.name, OTHER_TARGET)
    assert calls.hangup_of(agent.uniqueid)["Cause"] == "16"  # the agent leg hung up
    now = [c for c in calls.channels() if c.uniqueid == attempt.custom_call_id]
    assert now and now[0].context == "dialer-transfer" and now[0].bridge_id
    [event] = control_events(engine, attempt, cc.TRANSFER_EVENT)
    assert (event["Method"], event["Result"]) == ("BlindTransfer", "ok")


def test_a_transfer_unchecked_to_a_destination_that_does_not_exist_is_reported(
    dialer, calls: Calls, sim: PbxSim, engine: Engine
) -> None:
    # Checked first, this is refused before anything is sent (test_call_control_safety);
    # --no-check sends it, and the drop that follows is what the command reports.
    attempt = calls.place(IN_IVR)
    result = dialer(
        "call", "transfer", attempt.custom_call_id, "2001", "--context", "no-such-context",
        "--no-check", code=1,
    )  # fmt: skip
    assert "the call was dropped at once in no-such-context,2001" in result.output
    assert sent(sim, "Redirect")  # Asterisk said Success...
    assert calls.hangup_of(attempt.custom_call_id)["Cause"] == "0"  # ...and dropped the call
    [event] = control_events(engine, attempt, cc.TRANSFER_EVENT)
    assert event["Result"] == "failed" and "no-such-context" in event["Detail"]
    # the call is gone now: a second try finds nothing to act on
    again = dialer("call", "transfer", attempt.custom_call_id, TARGET, code=1)
    assert f"call {attempt.custom_call_id} is already gone" in again.output
    assert len(sent(sim, "Redirect")) == 1


def test_a_bridged_call_sent_nowhere_is_refused_and_stays_bridged(
    dialer, calls: Calls, sim: PbxSim, engine: Engine
) -> None:
    attempt = calls.place(PRESSES_1)
    calls.bridged(attempt)
    result = dialer(
        "call", "transfer", attempt.custom_call_id, "2001", "--context", "no-such-context",
        "--no-check", code=1,
    )  # fmt: skip
    assert "Asterisk refused the BlindTransfer: Transfer invalid" in result.output
    legs = [c for c in calls.channels() if c.linkedid == attempt.custom_call_id]
    assert len(legs) == 2 and len({c.bridge_id for c in legs}) == 1 and legs[0].bridge_id
    [event] = control_events(engine, attempt, cc.TRANSFER_EVENT)
    assert (event["Method"], event["Result"]) == ("BlindTransfer", "failed")
    assert attempt_row(engine, attempt).transfer_requested_at is None


def test_a_call_still_ringing_is_not_transferred(dialer, calls: Calls, sim: PbxSim) -> None:
    attempt = calls.place(NO_ANSWER, answers=None)
    result = dialer("call", "transfer", attempt.custom_call_id, TARGET, code=1)
    assert "is not answered (Ringing); nothing to do yet" in result.output
    assert sent(sim, "Redirect") == [] and sent(sim, "BlindTransfer") == []


def test_a_transfer_to_a_busy_number_fails(dialer, calls: Calls, engine: Engine) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer("call", "transfer", attempt.custom_call_id, BUSY, "--json", code=1)
    data = json.loads(result.output)
    assert (data["ok"], data["summary"]) == (False, f"{BUSY} did not answer (BUSY)")
    assert (data["call_id"], data["method"]) == (attempt.custom_call_id, "Redirect")
    assert attempt_row(engine, attempt).transfer_status == "BUSY"


def test_a_blind_transfer_still_ringing_is_reported_as_handed_over(dialer, calls: Calls) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer("call", "transfer", attempt.custom_call_id, NO_ANSWER, "--timeout", "2")
    assert f"{NO_ANSWER} still ringing after 2s" in result.output


def test_a_transfer_into_a_queue(dialer, calls: Calls, sim: PbxSim, engine: Engine) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer("call", "transfer", attempt.custom_call_id, "--queue", "support")
    assert "waiting in queue support (position 1)" in result.output
    [redirect] = sent(sim, "Redirect")
    assert (redirect["Context"], redirect["Exten"]) == ("dialer-queue", "support")
    status = json.loads(dialer("queue", "status", "support", "--json").output)
    assert [c["uniqueid"] for c in status[0]["callers"]] == [attempt.custom_call_id]


def test_a_transfer_into_a_missing_queue_touches_nothing(dialer, calls: Calls, sim: PbxSim) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer("call", "transfer", attempt.custom_call_id, "--queue", "nosuchqueue", code=1)
    assert "no such queue: nosuchqueue" in result.output
    assert sent(sim, "Redirect") == [] and sent(sim, "BlindTransfer") == []
    assert any(c.uniqueid == attempt.custom_call_id for c in calls.channels())


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["+1234"], "is not a valid phone number"),
        (["2001\r\nAction: Originate"], "CR, LF or NUL"),
        (["2001", "--context", "ctx\nAction: Hangup"], "CR, LF or NUL"),
        ([], "give either a TARGET or --queue NAME"),
        (["--queue", "support", "--attended"], "a queue cannot be consulted"),
    ],
)
def test_bad_transfer_input_is_refused_before_anything_is_sent(
    dialer, calls: Calls, sim: PbxSim, args: list[str], words: str
) -> None:
    attempt = calls.place(IN_IVR)
    before = len(sim.records())
    result = dialer("call", "transfer", attempt.custom_call_id, *args, code=2)
    assert words in result.output
    assert len(sim.records()) == before  # not even a login


def test_unknown_calls_and_channels(dialer, calls: Calls, sim: PbxSim) -> None:
    result = dialer("call", "transfer", "1700000000000_999999", TARGET, code=1)
    assert "no such call: 1700000000000_999999" in result.output
    assert "no such call: 999999" in dialer("call", "hangup", "999999", code=1).output
    nowhere = dialer("call", "hangup", "PJSIP/MC-deadbeef", code=1)
    assert "no such channel on the PBX: PJSIP/MC-deadbeef" in nowhere.output
    assert sent(sim, "Hangup") == []
    bad = dialer("call", "hangup", "not a call", code=2)
    assert "neither a call id" in bad.output


# attended


def test_attended_transfer_rings_the_target_then_bridges_the_call(
    dialer, calls: Calls, sim: PbxSim, engine: Engine
) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer("call", "transfer", attempt.custom_call_id, TARGET, "--attended")
    lines = result.output.splitlines()
    assert lines[0] == f"calling {TARGET} on PJSIP/{TARGET}@MC"
    assert lines[1].startswith(f"{TARGET} answered (PJSIP/MC-")
    assert lines[2].startswith("bridged PJSIP/MC-")
    assert lines[-1] == f"transferred to {TARGET} after it answered"
    [originate] = [o for o in sent(sim, "Originate") if o.get("Application") == "Wait"]
    [bridge] = sent(sim, "Bridge")
    consult_id = originate["ChannelId"]
    assert consult_id.startswith(f"{attempt.custom_call_id}-consult-")
    assert originate["CallerID"] == f'"Transfer {IN_IVR}" <+12125550100>'
    live = {c.uniqueid: c for c in calls.channels()}
    assert live[attempt.custom_call_id].bridge_id == live[consult_id].bridge_id != ""
    assert bridge["Channel1"] == live[attempt.custom_call_id].name
    row = attempt_row(engine, attempt)
    assert row.transfer_status == "ANSWER"
    assert row.transfer_requested_at <= row.transfer_answered_at
    [event] = control_events(engine, attempt, cc.TRANSFER_EVENT)
    assert (event["Kind"], event["Result"]) == ("attended", "ok")
    assert "answered" in event["Steps"] and "bridged" in event["Steps"]


@pytest.mark.parametrize(
    ("target", "words"),
    [
        (NO_ANSWER, "did not answer (cause 19, no answer)"),
        (BUSY, "did not answer (cause 17, busy)"),
    ],
)
def test_attended_transfer_to_a_target_that_does_not_answer_leaves_the_call_alone(
    dialer, calls: Calls, sim: PbxSim, engine: Engine, target: str, words: str
) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer(
        "call", "transfer", attempt.custom_call_id, target, "--attended", "--ring-timeout", "3",
        code=1,
    )  # fmt: skip
    assert f"{target} {words}" in result.output and "left as it was" in result.output
    assert sent(sim, "Bridge") == []
    live = [c for c in calls.channels() if c.linkedid.startswith(attempt.custom_call_id)]
    assert [(c.uniqueid, c.context, c.bridge_id) for c in live] == [
        (attempt.custom_call_id, "DynamicIVR", "")
    ]
    row = attempt_row(engine, attempt)
    assert row.transfer_requested_at is None and row.transfer_status is None
    [event] = control_events(engine, attempt, cc.TRANSFER_EVENT)
    assert (event["Kind"], event["Result"]) == ("attended", "failed")


def test_attended_transfer_cancels_when_the_call_ends_while_the_target_rings(
    dialer, calls: Calls, sim: PbxSim, engine: Engine
) -> None:
    # The callee stays in the IVR 5.8 s at this speed; the target would ring 10 s.
    attempt = calls.place(IN_IVR)
    result = dialer("call", "transfer", attempt.custom_call_id, NO_ANSWER, "--attended", code=1)
    assert f"the call ended while {NO_ANSWER} rang" in result.output
    assert "consultation call hung up" in result.output
    assert not [c for c in calls.channels() if c.uniqueid.startswith(attempt.custom_call_id)]
    [event] = control_events(engine, attempt, cc.TRANSFER_EVENT)
    assert "consultation call hung up" in event["Steps"]


# hangup, record, vars, channels


def test_hangup_with_a_cause(dialer, calls: Calls, sim: PbxSim, engine: Engine) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer("call", "hangup", attempt.custom_call_id, "--cause", "21")
    assert "(cause 21, rejected)" in result.output
    assert calls.hangup_of(attempt.custom_call_id)["Cause"] == "21"
    [event] = control_events(engine, attempt, cc.HANGUP_EVENT)
    assert (event["Cause"], event["By"]) == ("21", "operator")
    gone = dialer("call", "hangup", attempt.custom_call_id, code=1)
    assert "already gone" in gone.output
    assert dialer("call", "hangup", attempt.custom_call_id, "--cause", "200", code=2)


def test_a_call_addressed_by_its_channel_is_recorded_on_its_attempt(
    dialer, calls: Calls, engine: Engine
) -> None:
    attempt = calls.place(IN_IVR)
    [callee] = [c for c in calls.channels() if c.uniqueid == attempt.custom_call_id]
    dialer("call", "hangup", callee.name)
    assert calls.hangup_of(attempt.custom_call_id)["Cause"] == "16"
    assert len(control_events(engine, attempt, cc.HANGUP_EVENT)) == 1


def test_recording_starts_once_and_stops(dialer, calls: Calls, sim: PbxSim, engine: Engine) -> None:
    attempt = calls.place(IN_IVR)
    file_name = f"{attempt.custom_call_id}.wav"
    started = dialer("call", "record", attempt.custom_call_id)
    assert "recording PJSIP/MC-" in started.output and file_name in started.output
    [mix] = sent(sim, "MixMonitor")
    assert (mix["File"], mix["Options"]) == (file_name, "a")
    assert attempt_row(engine, attempt).recording_file == file_name
    again = dialer("call", "record", attempt.custom_call_id)
    assert "already recording" in again.output and len(sent(sim, "MixMonitor")) == 1
    assert "stopped recording" in dialer("call", "record", attempt.custom_call_id, "--stop").output
    refused = dialer("call", "record", attempt.custom_call_id, "--stop", code=1)
    assert "is not being recorded (Could not stop monitoring channel)" in refused.output
    states = [
        (e["State"], e["Response"]) for e in control_events(engine, attempt, cc.RECORDING_EVENT)
    ]
    assert states == [("started", "Success"), ("stopped", "Success"), ("stopped", "Error")]
    # after a stop, recording again goes on in the same file
    dialer("call", "record", attempt.custom_call_id)
    assert [m["File"] for m in sent(sim, "MixMonitor")] == [file_name, file_name]


def test_channel_variables(dialer, calls: Calls) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer(
        "call", "vars", attempt.custom_call_id, "custom_call_id", "TRUNK", "CHANNEL(state)",
        "--json",
    )  # fmt: skip
    assert json.loads(result.output)["variables"] == {
        "custom_call_id": attempt.custom_call_id, "TRUNK": "MC", "CHANNEL(state)": "Up",
    }  # fmt: skip
    plain = dialer("call", "vars", attempt.custom_call_id, "TO_NUMBER")
    assert plain.output.split() == ["TO_NUMBER", IN_IVR]
    assert (
        "not a variable name"
        in dialer("call", "vars", attempt.custom_call_id, "A B", code=2).output
    )


def test_channels_lists_the_calls_legs(dialer, calls: Calls) -> None:
    attempt = calls.place(PRESSES_1)
    calls.bridged(attempt)
    table = dialer("channels").output.splitlines()
    assert table[0].split()[:3] == ["CHANNEL", "STATE", "CALL_ID"]
    assert sum(attempt.custom_call_id in line for line in table) == 2
    rows = json.loads(dialer("channels", "--call", attempt.custom_call_id, "--json").output)
    assert {r["uniqueid"] == attempt.custom_call_id for r in rows} == {True, False}
    assert len({r["bridge"] for r in rows}) == 1 and rows[0]["bridge"]
    assert json.loads(dialer("channels", "--call", "1_1", "--json").output) == []


def test_an_unreachable_pbx_is_one_clear_error(dialer, calls: Calls, monkeypatch) -> None:
    attempt = calls.place(IN_IVR)
    monkeypatch.setenv("DIALER_AMI_PORT", "1")
    get_settings.cache_clear()
    result = dialer("call", "hangup", attempt.custom_call_id, code=1)
    assert "PBX: cannot reach AMI default" in result.output
    assert "Traceback" not in result.output


# queues


def test_queue_membership_commands(dialer, sim: PbxSim) -> None:
    member = f"PJSIP/{TARGET}@MC"
    added = dialer("queue", "add", "support", member, "--member-name", "Agent 1", "--penalty", "2")
    assert added.output.strip() == f"added {member} to queue support"
    [add] = sent(sim, "QueueAdd")
    assert (add["MemberName"], add["Penalty"], add["Paused"]) == ("Agent 1", "2", "false")
    shown = dialer("queue", "status", "support").output
    assert "Agent 1" in shown and member in shown
    [queue] = json.loads(dialer("queue", "status", "--json").output)
    assert [m["name"] for m in queue["members"]] == ["Agent 1"]
    twice = dialer("queue", "add", "support", member, code=1)
    assert f"{member} is already a member of support" in twice.output
    nowhere = dialer("queue", "add", "nosuchqueue", member, code=1)
    assert "no such queue: nosuchqueue" in nowhere.output
    assert "no such queue: nosuchqueue" in dialer("queue", "status", "nosuchqueue", code=1).output
    assert dialer("queue", "remove", "support", member).output.strip() == (
        f"removed {member} from queue support"
    )
    gone = dialer("queue", "remove", "support", member, code=1)
    assert f"{member} is not a member of support" in gone.output
    assert "not a channel interface" in dialer("queue", "add", "support", "agent1", code=2).output
    assert "CR, LF or NUL" in dialer("queue", "add", "support\r\nX: y", member, code=2).output
    assert len(sent(sim, "QueueAdd")) == 3 and len(sent(sim, "QueueRemove")) == 2


def test_queue_pause_commands(dialer, sim: PbxSim) -> None:
    member = "PJSIP/agent7"
    dialer("queue", "add", "support", member, "--wrapuptime", "15")
    [add] = sent(sim, "QueueAdd")
    assert add["Wrapuptime"] == "15"
    paused = dialer("queue", "pause", member, "--reason", "lunch")
    assert paused.output.strip() == f"paused {member} in its queues"
    [pause] = sent(sim, "QueuePause")
    assert (pause["Interface"], pause["Paused"], pause["Reason"]) == (member, "true", "lunch")
    assert "Queue" not in pause
    [queue] = json.loads(dialer("queue", "status", "support", "--json").output)
    assert [m["paused"] for m in queue["members"]] == [True]
    back = dialer("queue", "pause", member, "--queue", "support", "--unpause", "--json").output
    assert json.loads(back)["paused"] is False
    assert sent(sim, "QueuePause")[-1]["Queue"] == "support"
    missing = dialer("queue", "pause", "PJSIP/nobody", code=1)
    assert "PJSIP/nobody is not a member of any queue" in missing.output
    assert "CR, LF or NUL" in dialer("queue", "pause", member, "--reason", "a\nb", code=2).output


def test_a_queue_transfer_reaches_a_member(dialer, calls: Calls, engine: Engine) -> None:
    dialer("queue", "add", "support", f"PJSIP/{TARGET}@MC", "--member-name", "agent99")
    attempt = calls.place(IN_IVR)
    result = dialer("call", "transfer", attempt.custom_call_id, "--queue", "support")
    assert "waiting in queue support" in result.output
    connect = calls.wait(lambda f: f.get("Event") == "AgentConnect")
    assert (connect["Uniqueid"], connect["MemberName"]) == (attempt.custom_call_id, "agent99")


# recording campaigns


def test_a_recording_campaign_records_every_answered_call(engine: Engine, sim: PbxSim) -> None:
    recording = Calls(engine, sim, record_calls=True)
    plain = Calls(engine, sim)
    listener = Listener(engine, sim.server, options=fast_options())
    try:

        async def scenario() -> tuple[Attempt, Attempt, Attempt]:
            stop = asyncio.Event()
            task = asyncio.create_task(listener.run(stop))
            await connected(listener)
            placed = await asyncio.to_thread(
                lambda: (
                    recording.place(IN_IVR),
                    plain.place(IN_IVR),
                    recording.place(BUSY, answers=False),
                )
            )
            await asyncio.to_thread(
                wait_for,
                lambda: control_events(engine, placed[0], cc.RECORDING_EVENT),
                10,
                what="the recording",
            )
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.wait_for(task, 10)
            return placed

        recorded, not_recorded, busy = asyncio.run(scenario())
    finally:
        recording.close()
        plain.close()
    [mix] = sent(sim, "MixMonitor")
    assert (
        mix["Channel"].startswith("PJSIP/MC-") and mix["File"] == f"{recorded.custom_call_id}.wav"
    )
    [event] = control_events(engine, recorded, cc.RECORDING_EVENT)
    assert (event["State"], event["Response"], event["By"]) == ("started", "Success", "campaign")
    assert attempt_row(engine, recorded).recording_file == f"{recorded.custom_call_id}.wav"
    for other in (not_recorded, busy):
        assert control_events(engine, other, cc.RECORDING_EVENT) == []
        assert attempt_row(engine, other).recording_file is None
    assert listener.stats.recordings == 1
    # the Originate is the seed's payload, recording or not
    variables = {
        r["channel_id"]: list(r["variables"]) for r in sim.records() if r["action"] == "Originate"
    }
    assert variables[recorded.custom_call_id] == variables[not_recorded.custom_call_id]
    assert not any("record" in name.lower() for name in variables[recorded.custom_call_id])
