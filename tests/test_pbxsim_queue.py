"""Call queues on the simulator over real TCP: serving order, agents, pauses, patience, the IVR's
queue transfer; and the agent model's draws."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dialer.cli import pbxsim as pbxsim_cli
from dialer.pbxsim import AgentModel, ConfigError
from dialer.pbxsim.agents import cli_args
from tests.support_pbx import Frame, PbxSim, RawAmi
from tests.test_pbxsim_calls import call_events, originate

WAITS = "+15550000002"  # answers, presses nothing, never hangs up on its own in a queue
PRESSES_KEY = "+15550000001"
RINGS_OUT = "Local/+15550000005@pstn-sim"  # a member who never answers


def is_event(name: str, **fields: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("Event") == name and all(f.get(k) == v for k, v in fields.items())


def join(client: RawAmi, call_id: str, number: str = WAITS, queue: str = "support") -> Frame:
    """Originate a callee straight into Queue(queue); its QueueCallerJoin."""
    sent = client.send(
        "Originate",
        ("Channel", f"PJSIP/{number}@MC"),
        ("Context", "dialer-queue"),
        ("Exten", queue),
        ("Priority", "1"),
        ("Async", "true"),
        ("ChannelId", call_id),
        ("Variable", f"custom_call_id={call_id}"),
        action_id=call_id,
    )
    assert client.response(sent)["Response"] == "Success"
    return client.wait_for(is_event("QueueCallerJoin", Uniqueid=call_id))


def add(client: RawAmi, interface: str, *headers: tuple[str, str]) -> None:
    reply = client.action("QueueAdd", ("Queue", "support"), ("Interface", interface), *headers)
    assert reply["Message"] == "Added interface to queue"


def summary(client: RawAmi, queue: str = "support") -> Frame:
    client.action("QueueSummary", ("Queue", queue))
    rows = client.collect(is_event("QueueSummaryComplete"))
    [row] = [f for f in rows if f.get("Event") == "QueueSummary"]
    return row


def members(client: RawAmi, queue: str = "support") -> dict[str, Frame]:
    client.action("QueueStatus", ("Queue", queue))
    rows = client.collect(is_event("QueueStatusComplete"))
    return {f["Location"]: f for f in rows if f.get("Event") == "QueueMember"}


def agents(**model: object) -> dict[str, object]:
    """pbx_sim options: speed 20, one agent, an agent model."""
    return {"speed": 20, "agent_count": 1, "agents": AgentModel(**model)}  # type: ignore[arg-type]


# -- serving ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pbx_sim", [{"speed": 20}], indirect=True)
def test_a_caller_waiting_with_no_free_member_is_connected_when_a_member_is_added(
    pbx_sim: PbxSim,
) -> None:
    with pbx_sim.connect() as client:
        join(client, "add-1")
        waiting = summary(client)
        add(client, "PJSIP/agent1", ("MemberName", "Agent 1"))
        called = client.wait_for(is_event("AgentCalled"))
        connect = client.wait_for(is_event("AgentConnect"))
    assert (waiting["Callers"], waiting["Available"]) == ("1", "0")
    assert (called["Uniqueid"], called["Interface"]) == ("add-1", "PJSIP/agent1")
    assert (connect["Uniqueid"], connect["MemberName"]) == ("add-1", "Agent 1")
    assert connect["DestChannel"].startswith("PJSIP/agent1-")


@pytest.mark.parametrize("pbx_sim", [{"speed": 40}], indirect=True)
def test_a_caller_waiting_for_a_member_in_wrapup_is_connected_when_the_wrapup_ends(
    pbx_sim: PbxSim,
) -> None:
    wrapup = 20  # simulated seconds; the member's call lasts ~6
    with pbx_sim.connect() as client:
        add(client, "PJSIP/agent1", ("Wrapuptime", str(wrapup)))
        join(client, "wrap-1")
        client.wait_for(is_event("AgentConnect", Uniqueid="wrap-1"))
        join(client, "wrap-2")
        complete = client.wait_for(is_event("AgentComplete", Uniqueid="wrap-1"))
        status = client.wait_for(is_event("QueueMemberStatus", Status="1"))
        connect = client.wait_for(is_event("AgentConnect", Uniqueid="wrap-2"), timeout=10)
    assert (complete["Reason"], status["CallsTaken"], status["InCall"]) == ("agent", "1", "0")
    # wrap-2 waited for the end of wrap-1's call, then for the whole wrap-up
    assert wrapup <= int(connect["HoldTime"]) < 3 * wrapup


@pytest.mark.parametrize("pbx_sim", [{"speed": 50}], indirect=True)
def test_waiting_callers_are_served_in_join_order(pbx_sim: PbxSim) -> None:
    ids = ["order-1", "order-2", "order-3"]
    with pbx_sim.connect() as client:
        positions = [join(client, call_id)["Position"] for call_id in ids]
        add(client, "PJSIP/agent1")
        connects = [client.wait_for(is_event("AgentConnect"), timeout=10) for _ in ids]
    assert positions == ["1", "2", "3"]
    assert [f["Uniqueid"] for f in connects] == ids


@pytest.mark.parametrize(
    "pbx_sim", [agents(answer=2, talk=60, seed=4) | {"agent_count": 2}], indirect=True
)
def test_several_callers_ring_different_members_at_once(pbx_sim: PbxSim) -> None:
    connected: dict[str, str] = {}

    def both(frame: Frame) -> bool:
        if frame.get("Event") == "AgentConnect":
            connected[frame["Uniqueid"]] = frame["Interface"]
        return len(connected) == 2

    with pbx_sim.connect() as client:
        join(client, "both-1")
        join(client, "both-2")
        frames = client.collect(both)
    # the second caller did not wait for the first one's call to end
    assert "AgentComplete" not in [f.get("Event") for f in frames]
    assert sorted(connected) == ["both-1", "both-2"]
    assert sorted(connected.values()) == ["PJSIP/agent1", "PJSIP/agent2"]


@pytest.mark.parametrize("pbx_sim", [{"speed": 50}], indirect=True)
def test_the_member_idle_longest_gets_the_next_call(pbx_sim: PbxSim) -> None:
    taken = []
    with pbx_sim.connect() as client:
        add(client, "PJSIP/alice")
        add(client, "PJSIP/bob")
        for call_id in ("idle-1", "idle-2", "idle-3"):
            join(client, call_id)
            connect = client.wait_for(is_event("AgentConnect", Uniqueid=call_id))
            client.wait_for(is_event("AgentComplete", Uniqueid=call_id))
            taken.append(connect["Interface"])
    # alice (first of two never called), bob (never called), alice (idle since before bob)
    assert taken == ["PJSIP/alice", "PJSIP/bob", "PJSIP/alice"]


@pytest.mark.parametrize("pbx_sim", [{"speed": 50}], indirect=True)
def test_an_unanswered_member_is_free_at_once_and_the_caller_rings_again(
    pbx_sim: PbxSim,
) -> None:
    with pbx_sim.connect() as client:
        add(client, RINGS_OUT, ("MemberName", "never"))
        join(client, "rna-1")
        client.wait_for(is_event("AgentCalled", Uniqueid="rna-1"))
        ringing = client.wait_for(is_event("QueueMemberStatus", Status="6"))
        missed = client.wait_for(is_event("AgentRingNoAnswer"), timeout=10)
        free = client.wait_for(is_event("QueueMemberStatus", Status="1"))
        again = client.wait_for(is_event("AgentCalled", Uniqueid="rna-1"), timeout=10)
        client.action("Hangup", ("Channel", "rna-1"))
        client.wait_for(is_event("Hangup", Uniqueid="rna-1"))
    assert (missed["Uniqueid"], missed["Linkedid"], missed["Queue"]) == (
        "rna-1",
        "rna-1",
        "support",
    )
    assert (missed["Interface"], missed["MemberName"]) == (RINGS_OUT, "never")
    assert missed["DestChannel"].startswith("Local/+15550000005@pstn-sim-")
    assert missed["RingTime"] == "30"  # the member's ring timeout, simulated seconds
    assert (ringing["Interface"], free["Interface"]) == (RINGS_OUT, RINGS_OUT)
    assert again["Interface"] == RINGS_OUT


# -- pausing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pbx_sim", [agents(answer=1, talk=5)], indirect=True)
def test_a_paused_member_gets_no_call_and_unpausing_serves_the_waiting_caller(
    pbx_sim: PbxSim,
) -> None:
    with pbx_sim.connect() as client:
        paused = client.action(
            "QueuePause", ("Interface", "PJSIP/agent1"), ("Paused", "true"), ("Reason", "lunch")
        )
        pause = client.wait_for(is_event("QueueMemberPause"))
        join(client, "pause-1")
        join(client, "pause-2")  # later than any serving pass pause-1's join started
        row = summary(client)
        unpaused = client.action(
            "QueuePause", ("Interface", "PJSIP/agent1"), ("Paused", "false"), ("Queue", "support")
        )
        frames = client.collect(is_event("AgentConnect"))
    assert paused["Message"] == "Interface paused successfully"
    assert (pause["Queue"], pause["MemberName"], pause["Interface"]) == (
        "support",
        "Agent 1",
        "PJSIP/agent1",
    )
    # The agents a simulator starts with have the model's mean wrap-up (5 s) as Wrapuptime.
    assert (pause["Paused"], pause["PausedReason"], pause["Wrapuptime"]) == ("1", "lunch", "5")
    assert (row["LoggedIn"], row["Available"], row["Callers"]) == ("1", "0", "2")
    assert unpaused["Message"] == "Interface unpaused successfully"
    unpause = next(f for f in frames if f.get("Event") == "QueueMemberPause")
    assert (unpause["Paused"], unpause["PausedReason"]) == ("0", "")
    called = [f for f in frames if f.get("Event") == "AgentCalled"]
    # nothing was rung while paused; then the first in line
    assert frames.index(called[0]) > frames.index(unpause)
    assert [f["Uniqueid"] for f in called] == ["pause-1"]
    assert frames[-1]["Uniqueid"] == "pause-1"


@pytest.mark.parametrize(
    "pbx_sim", [{"queues": ("support", "sales"), "agent_count": 1}], indirect=True
)
def test_queue_pause_answers_and_errors(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        add(client, "PJSIP/solo")
        need = "Need 'Interface' and 'Paused' parameters."
        assert client.action("QueuePause", ("Paused", "true"))["Message"] == need
        assert client.action("QueuePause", ("Interface", "PJSIP/agent1"))["Message"] == need
        for headers in (
            [("Interface", "PJSIP/nobody")],
            [("Interface", "PJSIP/solo"), ("Queue", "sales")],
            [("Interface", "PJSIP/agent1"), ("Queue", "nosuchqueue")],
        ):
            reply = client.action("QueuePause", *headers, ("Paused", "true"))
            assert (reply["Response"], reply["Message"]) == ("Error", "Interface not found")
        everywhere = client.action("QueuePause", ("Interface", "PJSIP/agent1"), ("Paused", "1"))
        events = [client.wait_for(is_event("QueueMemberPause")) for _ in range(2)]
        commands = client.action("ListCommands")
    assert (everywhere["Response"], everywhere["Message"]) == (
        "Success",
        "Interface paused successfully",
    )
    assert sorted(f["Queue"] for f in events) == ["sales", "support"]
    assert {f["Paused"] for f in events} == {"1"}
    assert commands["QueuePause"].endswith("(Priv: agent,all)")


@pytest.mark.parametrize("pbx_sim", [{"speed": 10}], indirect=True)
def test_queue_summary_counts_only_free_members_as_available(pbx_sim: PbxSim) -> None:
    wrapping = "PJSIP/wrapping"
    with pbx_sim.connect() as client:
        add(client, wrapping, ("Wrapuptime", "600"))
        join(client, "avail-1")
        client.wait_for(is_event("AgentComplete", Uniqueid="avail-1"))
        in_wrapup = summary(client)
        add(client, "PJSIP/paused", ("Paused", "true"))
        with_paused = summary(client)
        add(client, RINGS_OUT)
        join(client, "avail-2")
        client.wait_for(is_event("AgentCalled", Uniqueid="avail-2"))
        while_ringing, status = summary(client), members(client)
        client.action("Hangup", ("Channel", "avail-2"))
        client.wait_for(is_event("DialEnd", Uniqueid="avail-2", DialStatus="CANCEL"))
        client.wait_for(is_event("QueueMemberStatus", Interface=RINGS_OUT, Status="1"))
        after = summary(client)
    assert (in_wrapup["LoggedIn"], in_wrapup["Available"]) == ("1", "0")
    assert (with_paused["LoggedIn"], with_paused["Available"]) == ("2", "0")
    assert (while_ringing["LoggedIn"], while_ringing["Available"]) == ("3", "0")
    assert (status[RINGS_OUT]["Status"], status[wrapping]["Status"]) == ("6", "1")
    assert status[wrapping]["InCall"] == "0"
    assert (after["Available"], after["Callers"]) == ("1", "0")


# -- agents and patience -----------------------------------------------------------------------


@pytest.mark.parametrize("pbx_sim", [agents(answer=1, talk=4, seed=11)], indirect=True)
def test_an_agent_answers_talks_and_hangs_up_with_a_complete_agentcomplete(
    pbx_sim: PbxSim,
) -> None:
    draws = AgentModel(answer=1, talk=4, seed=11).draws()
    answer, talk = draws.answer(), draws.talk()
    with pbx_sim.connect() as client:
        join(client, "ac-1")
        events = call_events(client, "ac-1")
    names = [f.get("Event") for f in events]
    connect = events[names.index("AgentConnect")]
    complete = events[names.index("AgentComplete")]
    ringing = [f for f in events if is_event("DialState", DestChannel=connect["DestChannel"])(f)]
    assert [f["DialStatus"] for f in ringing] == ["RINGING"]
    assert (complete["Uniqueid"], complete["Linkedid"]) == ("ac-1", "ac-1")
    assert complete["Channel"] == connect["Channel"]
    assert complete["DestChannel"] == connect["DestChannel"]
    assert complete["DestLinkedid"] == "ac-1"
    assert (complete["Queue"], complete["Interface"], complete["MemberName"]) == (
        "support",
        "PJSIP/agent1",
        "Agent 1",
    )
    assert (complete["Reason"], complete["HoldTime"]) == ("agent", connect["HoldTime"])
    assert abs(int(connect["RingTime"]) - answer) <= 1
    assert abs(int(complete["TalkTime"]) - talk) <= 1
    hangups = [f for f in events if f.get("Event") == "Hangup"]
    assert hangups[0]["Channel"] == complete["DestChannel"]  # the agent hung up first
    assert (hangups[-1]["Uniqueid"], hangups[-1]["Cause"]) == ("ac-1", "16")


@pytest.mark.parametrize(
    "pbx_sim", [{"speed": 20, "agents": AgentModel(patience=10, seed=5)}], indirect=True
)
def test_a_callee_out_of_patience_abandons_the_queue_and_hangs_up(pbx_sim: PbxSim) -> None:
    patience = AgentModel(patience=10, seed=5).draws().patience()
    assert patience is not None
    with pbx_sim.connect() as client:
        join(client, "pat-1")
        frames = client.collect(is_event("Hangup", Uniqueid="pat-1"))
        row = summary(client)
    mine = [f["Event"] for f in frames if f.get("Uniqueid") == "pat-1"]
    assert mine[-3:] == ["QueueCallerAbandon", "QueueCallerLeave", "Hangup"]
    abandon = next(f for f in frames if f.get("Event") == "QueueCallerAbandon")
    assert (abandon["Position"], abandon["OriginalPosition"]) == ("1", "1")
    assert abs(int(abandon["HoldTime"]) - patience) <= 1
    assert (frames[-1]["Cause"], frames[-1]["Cause-txt"]) == ("16", "Normal Clearing")
    assert (row["Callers"], row["Available"]) == ("0", "0")


@pytest.mark.parametrize("pbx_sim", [agents(answer=1000, patience=5, seed=2)], indirect=True)
def test_a_callee_giving_up_while_an_agent_rings_cancels_the_ring(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        join(client, "gone-1")
        frames = client.collect(is_event("Hangup", Uniqueid="gone-1"))
        row = summary(client)
    names = [f.get("Event") for f in frames]
    cancel = next(f for f in frames if is_event("DialEnd", DialStatus="CANCEL")(f))
    free = next(f for f in frames if is_event("QueueMemberStatus", Status="1")(f))
    assert cancel["Uniqueid"] == "gone-1" and cancel["DestChannel"].startswith("PJSIP/agent1-")
    assert frames.index(cancel) < frames.index(free) < names.index("QueueCallerAbandon")
    assert names.index("QueueCallerAbandon") < len(names) - 1
    assert "AgentRingNoAnswer" not in names and "AgentConnect" not in names
    assert row["Available"] == "1"


@pytest.mark.parametrize(
    "pbx_sim",
    [{"speed": 20, "endpoints": frozenset({"MC"}), "agents": AgentModel(answer=1, talk=2)}],
    indirect=True,
)
def test_a_member_outside_the_endpoint_list_is_an_agent_that_answers(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        add(client, "PJSIP/agent7")
        join(client, "ep-1")
        connect = client.wait_for(is_event("AgentConnect", Uniqueid="ep-1"))
    assert connect["DestChannel"].startswith("PJSIP/agent7-")


# -- the IVR's queue transfer ------------------------------------------------------------------


def ivr_call(client: RawAmi, call_id: str, *variables: str) -> list[Frame]:
    """A press-key callee originated into DynamicIVR: every frame until its channel's Hangup."""
    headers = [("Variable", v) for v in ("press_key=1", "ivr_file=welcome", *variables)]
    originate(client, f"PJSIP/{PRESSES_KEY}@MC", call_id, variables=headers)
    return client.collect(is_event("Hangup", Uniqueid=call_id), timeout=15)


def user_events(events: list[Frame]) -> list[Frame]:
    return [f for f in events if f.get("Event") == "UserEvent"]


@pytest.mark.parametrize("pbx_sim", [agents(answer=1, talk=5)], indirect=True)
def test_a_press_key_callee_is_queued_talks_to_an_agent_and_the_end_is_reported(
    pbx_sim: PbxSim,
) -> None:
    with pbx_sim.connect() as client:
        events = ivr_call(client, "ivq-1", "transfer_queue=support", "transfer_number=+15551234567")
    steps = [
        f
        for f in events
        if f.get("Event") in ("UserEvent", "QueueCallerJoin", "AgentConnect", "AgentComplete")
        or (f.get("Event") == "Hangup" and f["Uniqueid"] == "ivq-1")
    ]
    assert [f.get("UserEvent") or f["Event"] for f in steps[-6:]] == [
        "DialerTransfer", "QueueCallerJoin", "AgentConnect", "AgentComplete",
        "DialerTransferResult", "Hangup",
    ]  # fmt: skip
    assert {f["Linkedid"] for f in steps} == {"ivq-1"}
    transfer, result = user_events(events)[-2:]
    assert (transfer["custom_call_id"], transfer["TRANSFER_QUEUE"]) == ("ivq-1", "support")
    assert "TRANSFER_NUMBER" not in transfer and "TRANSFER_CHANNEL" not in transfer
    assert (result["custom_call_id"], result["QUEUESTATUS"]) == ("ivq-1", "")
    assert "DIALSTATUS" not in result
    complete = next(f for f in events if f.get("Event") == "AgentComplete")
    assert complete["Reason"] == "agent"
    # the queue wins over the number: nothing dialled it
    assert not [f for f in events if "15551234567" in f.get("DialString", "")]
    assert events[-1]["Cause"] == "16"


@pytest.mark.parametrize("pbx_sim", [{"speed": 20}], indirect=True)
def test_a_press_key_transfer_into_a_queue_that_does_not_exist_ends_at_once(
    pbx_sim: PbxSim,
) -> None:
    with pbx_sim.connect() as client:
        # the uppercase variable wins over the lowercase one
        events = ivr_call(client, "ivq-2", "TRANSFER_QUEUE=nosuchqueue", "transfer_queue=support")
    transfer, result = user_events(events)[-2:]
    assert (transfer["UserEvent"], transfer["TRANSFER_QUEUE"]) == ("DialerTransfer", "nosuchqueue")
    assert (result["UserEvent"], result["QUEUESTATUS"]) == ("DialerTransferResult", "")
    assert "QueueCallerJoin" not in [f.get("Event") for f in events]
    assert {transfer["Linkedid"], result["Linkedid"]} == {"ivq-2"}
    assert (events[-1]["Event"], events[-1]["Uniqueid"], events[-1]["Cause"]) == (
        "Hangup",
        "ivq-2",
        "16",
    )


@pytest.mark.parametrize("pbx_sim", [agents(answer=1, talk=600)], indirect=True)
def test_a_press_key_callee_hanging_up_on_the_agent_is_reported_before_its_hangup(
    pbx_sim: PbxSim,
) -> None:
    with pbx_sim.connect() as client:
        headers = [("Variable", v) for v in ("press_key=1", "TRANSFER_QUEUE=support")]
        originate(client, f"PJSIP/{PRESSES_KEY}@MC", "ivq-4", variables=headers)
        client.wait_for(is_event("AgentConnect", Uniqueid="ivq-4"), timeout=10)
        client.action("Hangup", ("Channel", "ivq-4"))
        frames = client.collect(is_event("Hangup", Uniqueid="ivq-4"))
    steps = [
        f.get("UserEvent") or f["Event"]
        for f in frames
        if f.get("Uniqueid") == "ivq-4" and f["Event"] in ("AgentComplete", "UserEvent", "Hangup")
    ]
    assert steps[-3:] == ["AgentComplete", "DialerTransferResult", "Hangup"]
    complete = next(f for f in frames if f.get("Event") == "AgentComplete")
    assert (complete["Reason"], complete["Linkedid"]) == ("caller", "ivq-4")
    assert user_events(frames)[-1]["QUEUESTATUS"] == ""


@pytest.mark.parametrize(
    "pbx_sim", [{"speed": 20, "agents": AgentModel(patience=8, seed=1)}], indirect=True
)
def test_a_queued_press_key_callee_who_gives_up_is_reported_before_its_hangup(
    pbx_sim: PbxSim,
) -> None:
    with pbx_sim.connect() as client:
        events = ivr_call(client, "ivq-3", "transfer_queue=support")
    mine = [
        f.get("UserEvent") or f["Event"]
        for f in events
        if f.get("Uniqueid") == "ivq-3"
        and (f.get("Event") in ("UserEvent", "Hangup") or f["Event"].startswith("QueueCaller"))
    ]
    assert mine[-6:] == [
        "DialerTransfer", "QueueCallerJoin", "QueueCallerAbandon", "QueueCallerLeave",
        "DialerTransferResult", "Hangup",
    ]  # fmt: skip
    assert user_events(events)[-1]["QUEUESTATUS"] == ""
    assert events[-1]["Cause"] == "16"


# -- the agent model ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "mean", "cv"),
    [("answer", 3.0, 0.5), ("talk", 90.0, 0.5), ("wrapup", 7.0, 0.5), ("patience", 40.0, 0.6)],
)
def test_agent_model_draws_are_reproducible_and_near_their_means(
    kind: str, mean: float, cv: float
) -> None:
    model = AgentModel(**{kind: mean}, seed=42)  # type: ignore[arg-type]
    first = [getattr(model.draws(), kind)() for _ in range(3)]
    draws = model.draws()
    values = [getattr(draws, kind)() for _ in range(4000)]
    again = model.draws()
    assert [getattr(again, kind)() for _ in range(4000)] == values
    other = AgentModel(**{kind: mean}, seed=43).draws()  # type: ignore[arg-type]
    assert [getattr(other, kind)() for _ in range(10)] != values[:10]
    assert len(set(first)) == 1  # each fresh sequence starts alike
    assert min(values) >= 0
    assert statistics.fmean(values) == pytest.approx(mean, rel=0.05)
    assert statistics.stdev(values) / statistics.fmean(values) == pytest.approx(cv, abs=0.1)


def test_agent_model_without_patience_draws_none_and_zero_means_draw_zero() -> None:
    draws = AgentModel(answer=0, wrapup=0).draws()
    assert (draws.patience(), draws.answer(), draws.wrapup()) == (None, 0.0, 0.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("answer", -1), ("talk", 0), ("wrapup", float("nan")), ("patience", 0), ("seed", 1.5)],
)
def test_agent_model_refuses_values_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"agents.{field}"):
        AgentModel(**{field: value})  # type: ignore[arg-type]


def test_the_cli_options_give_the_same_model() -> None:
    model = AgentModel(answer=1.5, talk=42.25, wrapup=0, patience=30, seed=9)
    context = pbxsim_cli.pbx_sim.make_context("pbx-sim", cli_args(model, 3))
    params = context.params
    assert params["agent_count"] == 3
    assert (
        pbxsim_cli.agent_model(
            params["agent_answer"],
            params["agent_talk"],
            params["agent_wrapup"],
            params["caller_patience"],
            params["agent_seed"],
        )
        == model
    )
    assert pbxsim_cli.agent_model(None, None, None, None, None) is None
    assert pbxsim_cli.agent_model(None, None, None, 20, None) == AgentModel(patience=20)


def test_the_cli_starts_with_agents_in_every_queue(tmp_path: Path) -> None:
    executable = Path(sys.executable).parent / "dialer"
    command = [str(executable), "pbx-sim", "--port", "0", "--json", "--speed", "50"]
    command += ["--queue", "support", "--queue", "sales", "--endpoint", "MC"]
    command += cli_args(AgentModel(answer=1, talk=3, seed=8), 2)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DIALER_AMI_USERNAME": "dialer", "DIALER_AMI_SECRET": "s"},
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        with RawAmi(ready["host"], ready["port"]) as client:
            client.login("dialer", "s")
            listed = {queue: members(client, queue) for queue in ("support", "sales")}
            join(client, "cli-1", queue="sales")
            connect = client.wait_for(is_event("AgentConnect", Uniqueid="cli-1"))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert (ready["agents"], ready["agent_model"]["talk"]) == (2, 3.0)
    for rows in listed.values():
        assert {k: f["Name"] for k, f in rows.items()} == {
            "PJSIP/agent1": "Agent 1",
            "PJSIP/agent2": "Agent 2",
        }
    assert connect["DestChannel"].startswith("PJSIP/agent1-")
