"""Live call control must not hurt the call it acts on (issue #18): a destination is looked up
before anything is sent, a queue nobody can answer is warned about (or refused), a refused
action is reported with what manager.conf lacks, every leg of a call shows its call id,
external numbers leave through the call's trunk, and the attempt records what the operator
did. Pure decisions are table-tested; the commands run against the PBX simulator (with the
write privileges of a restricted AMI user where it matters) and a real Postgres."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dialer.control import plan as cc
from dialer.dialing.payload import TrunkRoute
from dialer.outcomes.listener import Listener
from dialer.pbxsim import actions as sim_actions
from tests import test_call_control as base
from tests.support_listener import add_attempts, add_campaign, wait_for
from tests.support_pbx import PbxSim
from tests.test_call_control import (
    IN_IVR,
    PRESSES_1,
    TARGET,
    Calls,
    attempt_row,
    control_events,
    sent,
)
from tests.test_listener_e2e import connected, fast_options

# The commands' fixtures: the simulator (options by indirect parametrisation), `dialer ...`
# against it and the test's database, and calls placed the way the worker places them.
sim = base.sim
dialer = base.dialer
calls = base.calls

# More callees who stay in the IVR (a contact's number is unique in its campaign).
ALSO_IN_IVR = "+12125550399"
THIRD_IN_IVR = "+12125550499"
# A human who stays up 5 s after the answer, then hangs up.
GIVES_UP = "+12125550142"
# The reference manager.conf's user: originate and reporting only.
REFERENCE_WRITE = frozenset({"originate", "reporting"})


def restricted(*privileges: str) -> Any:
    """The simulator with a user whose manager.conf `write` holds only `privileges`."""
    return pytest.mark.parametrize("sim", [{"write": frozenset(privileges)}], indirect=True)


def channel(name: str, uid: str, linked: str, **fields: Any) -> cc.LiveChannel:
    return cc.LiveChannel(
        name=name, uniqueid=uid, linkedid=linked, state=fields.pop("state", 6),
        state_desc=fields.pop("state_desc", "Up"), **fields,
    )  # fmt: skip


def still_in_ivr(calls: Calls, call_id: str) -> bool:
    return any(c.uniqueid == call_id and c.context == "DynamicIVR" for c in calls.channels())


def actions_sent(sim: PbxSim) -> list[str]:
    return [r["action"] for r in sim.records()]


# -- 3. the destination is looked up before anything is sent ---------------------------------------

EXTERNAL = cc.plan_destination(TARGET, queue=None, context=None)


def _listed(context: str, extension: str, priority: str, app: str = "Dial") -> dict[str, str]:
    return {
        "Event": "ListDialplan", "Context": context, "Extension": extension,
        "Priority": priority, "Application": app, "AppData": "", "Registrar": "pbx_config",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("events", "error", "exists", "words"),
    [
        ([_listed("dialer-transfer", "_+X.", "1", "NoOp"), _listed("dialer-transfer", "_+X.", "2")],
         None, True, "extension _+X., NoOp"),
        ([_listed("trunk-out", "_+X.", "1")], None, True, "(included from trunk-out)"),
        ([_listed("dialer-transfer", TARGET, "hint", "PJSIP/x")], None, False, "only a hint"),
        ([], "Did not find context dialer-transfer", False, "no dialplan context"),
        ([], f"Did not find extension {TARGET}@dialer-transfer", False, "no extension"),
        ([], "Failed to lock contexts", None, "did not say"),
    ],
)  # fmt: skip
def test_what_showdialplan_says_about_a_destination(
    events: list[dict[str, str]], error: str | None, exists: bool | None, words: str
) -> None:
    check = cc.judge_dialplan(EXTERNAL, events, error)
    assert check.exists is exists and words in check.text


@pytest.mark.parametrize("pbx_sim", [{"speed": 10}], indirect=True)
def test_the_simulator_answers_showdialplan_as_asterisk_does(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect(events="off") as client:
        client.send("ShowDialPlan", ("Context", "dialer-transfer"), ("Extension", TARGET),
                    action_id="sdp")  # fmt: skip
        frames = client.collect(lambda f: f.get("Event") == "ShowDialPlanComplete")
        assert frames[0].lines[:4] == [
            ("Response", "Success"), ("ActionID", "sdp"), ("EventList", "start"),
            ("Message", "DialPlan list will follow"),
        ]  # fmt: skip
        listed = [f for f in frames if f.get("Event") == "ListDialplan"]
        assert listed[0].lines[:4] == [
            ("Event", "ListDialplan"), ("ActionID", "sdp"), ("Context", "dialer-transfer"),
            ("Extension", "_+X."),
        ]  # fmt: skip
        assert [f["Priority"] for f in listed] == ["1", "2", "3"]
        assert "Dial" in [f["Application"] for f in listed]
        done = frames[-1]
        assert (done["EventList"], done["ListItems"], done["ListExtensions"]) == (
            "Complete", "3", "1",
        )  # fmt: skip
        assert (done["ListPriorities"], done["ListContexts"]) == ("3", "1")
        for headers, message in [
            ((("Context", "nowhere"), ("Extension", "s")), "Did not find context nowhere"),
            ((("Context", "dialer-transfer"), ("Extension", "2001")),
             "Did not find extension 2001@dialer-transfer"),
            ((("Extension", "-none"),), "Did not find extension -none in any context"),
        ]:  # fmt: skip
            reply = client.action("ShowDialPlan", *headers)
            assert (reply["Response"], reply["Message"]) == ("Error", message)
        # the queue context lists its pattern, like the reference dialplan's
        client.send("ShowDialPlan", ("Context", "dialer-queue"), ("Extension", "support"),
                    action_id="q")  # fmt: skip
        queue = client.collect(lambda f: f.get("Event") == "ShowDialPlanComplete")
        assert {f["Extension"] for f in queue if f.get("Event") == "ListDialplan"} == {
            "_[0-9A-Za-z]."
        }


@pytest.mark.parametrize("pbx_sim", [{"speed": 10}], indirect=True)
def test_the_simulator_drops_a_call_redirected_to_a_missing_extension(pbx_sim: PbxSim) -> None:
    # live_redirect: Asterisk says "Redirect successful", then hangs the channel up (cause 0)
    # where it was sent.
    with pbx_sim.connect() as client:
        client.send("Originate", ("Channel", "PJSIP/+15550000042@MC"), ("Context", "DynamicIVR"),
                    ("Exten", "s"), ("Priority", "1"), ("Async", "true"),
                    ("ChannelId", "rd-1"), action_id="rd-1")  # fmt: skip
        answer = client.wait_for(
            lambda f: f.get("Event") == "OriginateResponse" and f.get("ActionID") == "rd-1"
        )
        reply = client.action("Redirect", ("Channel", answer["Channel"]),
                              ("Context", "dialer-transfer"), ("Exten", "2001"),
                              ("Priority", "1"))  # fmt: skip
        assert (reply["Response"], reply["Message"]) == ("Success", "Redirect successful")
        gone = client.wait_for(lambda f: f.get("Event") == "Hangup" and f["Uniqueid"] == "rd-1")
    assert (gone["Context"], gone["Exten"], gone["Cause"]) == ("dialer-transfer", "2001", "0")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["2001", "--context", "no-such-context"],
         "the PBX has no dialplan context 'no-such-context'"),
        (["2001", "--context", "dialer-transfer"],
         "the PBX has no extension '2001' in context 'dialer-transfer'"),
    ],
)  # fmt: skip
def test_a_transfer_to_a_destination_that_does_not_exist_is_refused_before_anything_is_sent(
    dialer, calls: Calls, sim: PbxSim, engine: Engine, args: list[str], words: str
) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer("call", "transfer", attempt.custom_call_id, *args, code=1)
    assert words in result.output
    assert "would drop the call; nothing was sent" in result.output
    assert sent(sim, "ShowDialPlan")
    assert sent(sim, "Redirect") == [] and sent(sim, "Setvar") == []
    assert still_in_ivr(calls, attempt.custom_call_id)
    assert attempt_row(engine, attempt).transfer_requested_at is None


def test_a_bridged_call_is_not_blind_transferred_to_a_missing_extension(
    dialer, calls: Calls, sim: PbxSim
) -> None:
    attempt = calls.place(PRESSES_1)
    calls.bridged(attempt)
    result = dialer(
        "call", "transfer", attempt.custom_call_id, "2001", "--context", "dialer-transfer", code=1
    )
    assert "the PBX has no extension '2001'" in result.output
    assert sent(sim, "BlindTransfer") == []
    legs = [c for c in calls.channels() if c.linkedid == attempt.custom_call_id]
    assert len(legs) == 2 and len({c.bridge_id for c in legs}) == 1 and legs[0].bridge_id


def test_a_checked_transfer_says_what_it_found(dialer, calls: Calls, sim: PbxSim) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer("call", "transfer", attempt.custom_call_id, TARGET)
    lines = result.output.splitlines()
    assert lines[0] == f"ShowDialPlan: {TARGET}@dialer-transfer exists: extension _+X., NoOp"
    assert lines[1].startswith(f"Setvar DIALER_TRANSFER_DIAL=PJSIP/{TARGET}@MC on PJSIP/MC-")
    assert lines[2].startswith("Redirect: PJSIP/MC-") and lines[2].endswith(
        f"to dialer-transfer,{TARGET}: Redirect successful"
    )
    assert [a for a in actions_sent(sim) if a in ("ShowDialPlan", "Setvar", "Redirect")] == [
        "ShowDialPlan", "Setvar", "Redirect",
    ]  # fmt: skip
    [show] = sent(sim, "ShowDialPlan")
    assert (show["Context"], show["Extension"]) == ("dialer-transfer", TARGET)


@restricted("originate", "call", "system")  # CoreShowChannels through `system`; no `reporting`
def test_without_reporting_the_transfer_is_refused_unless_no_check(
    dialer, calls: Calls, sim: PbxSim
) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer("call", "transfer", attempt.custom_call_id, TARGET, code=1)
    assert "the AMI user 'dialer' may not send ShowDialPlan" in result.output
    assert "add `reporting` (or `config`) to `write` in the [dialer] section" in result.output
    assert "--no-check" in result.output
    assert sent(sim, "Redirect") == [] and sent(sim, "Setvar") == []
    assert still_in_ivr(calls, attempt.custom_call_id)
    # the operator's explicit choice: transfer without the check
    unchecked = dialer("call", "transfer", attempt.custom_call_id, TARGET, "--no-check")
    assert f"{TARGET} answered" in unchecked.output
    assert len(sent(sim, "ShowDialPlan")) == 1 and len(sent(sim, "Redirect")) == 1


# -- 7. a queue nobody can answer ------------------------------------------------------------------


def _member(status: str = "not in use", paused: bool = False) -> dict[str, Any]:
    return {"name": "a", "interface": "PJSIP/a", "status": status, "paused": paused}


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ([], "queue support has no members: the caller will wait until they hang up"),
        ([_member(paused=True)], "no available member (1 paused of 1)"),
        ([_member("unavailable"), _member("invalid"), _member(paused=True)],
         "no available member (1 paused, 2 unavailable of 3)"),
        ([_member("in use")], None),
        ([_member("unknown"), _member(paused=True)], None),
    ],
)  # fmt: skip
def test_queue_members_who_can_answer(members: list[dict[str, Any]], problem: str | None) -> None:
    found = cc.queue_agent_problem({"queue": "support", "members": members})
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


# At speed 1 the caller stays 5 s after the answer: time enough to be transferred first.
@pytest.mark.parametrize("sim", [{"speed": 1.0}], indirect=True)
def test_a_transfer_into_a_queue_without_members_warns_and_the_caller_gives_up(
    dialer, calls: Calls, sim: PbxSim, engine: Engine
) -> None:
    attempt = calls.place(GIVES_UP)
    uid = attempt.custom_call_id
    with sim.connect() as watcher:
        result = dialer("call", "transfer", uid, "--queue", "support")
        # nobody answers: the caller waits until they hang up, and leaves as abandoned first
        frames = watcher.collect(lambda f: f.get("Event") == "Hangup" and f["Uniqueid"] == uid)
    assert "warning: queue support has no members" in result.stderr
    assert "waiting in queue support (position 1)" in result.stdout
    assert "QueueStatus support: 0 of 0 member(s) available" in result.stdout
    names = [
        f["Event"]
        for f in frames
        if f.get("Uniqueid") == uid and f.get("Event", "").startswith(("Queue", "Hangup"))
    ]
    # app_queue sees the hang-up request, records the abandon, leaves; then the Hangup
    assert names == [
        "QueueCallerJoin", "HangupRequest", "QueueCallerAbandon", "QueueCallerLeave", "Hangup",
    ]  # fmt: skip
    status = json.loads(dialer("queue", "status", "support", "--json").output)
    assert (status[0]["abandoned"], status[0]["callers"]) == (1, [])
    [event] = control_events(engine, attempt, cc.TRANSFER_EVENT)
    assert event["Result"] == "ok"


def test_require_agent_refuses_a_queue_nobody_can_answer(
    dialer, calls: Calls, sim: PbxSim, engine: Engine
) -> None:
    dialer("queue", "add", "support", f"PJSIP/{TARGET}@MC", "--paused")
    attempt = calls.place(IN_IVR)
    result = dialer(
        "call", "transfer", attempt.custom_call_id, "--queue", "support", "--require-agent",
        code=1,
    )  # fmt: skip
    assert "queue support has no available member (1 paused of 1)" in result.output
    assert "not transferred (--require-agent)" in result.output
    assert sent(sim, "Redirect") == [] and sent(sim, "ShowDialPlan") == []
    assert still_in_ivr(calls, attempt.custom_call_id)
    assert control_events(engine, attempt, cc.TRANSFER_EVENT) == []
    # a member who can answer: no warning, and --require-agent lets it through
    dialer("queue", "add", "support", "PJSIP/+12125550198@MC")
    ok = dialer("call", "transfer", attempt.custom_call_id, "--queue", "support", "--require-agent")
    assert "warning" not in ok.output and "waiting in queue support" in ok.output
    assert (
        "--require-agent: only for a transfer into a --queue"
        in dialer(
            "call", "transfer", attempt.custom_call_id, TARGET, "--require-agent", code=2
        ).output
    )


# -- 8. refusals name the AMI user and the privilege -----------------------------------------------


@pytest.mark.parametrize(
    ("action", "grant"),
    [
        ("Redirect", "add `call` to `write`"),
        ("BlindTransfer", "add `call` to `write`"),
        ("Bridge", "add `call` to `write`"),
        ("Setvar", "add `call` to `write`"),
        ("Hangup", "add `call` (or `system`) to `write`"),
        ("MixMonitor", "add `system` to `write`"),
        ("StopMixMonitor", "add `system` (or `call`) to `write`"),
        ("ShowDialPlan", "add `reporting` (or `config`) to `write`"),
        ("QueueAdd", "add `agent` to `write`"),
        ("QueueRemove", "add `agent` to `write`"),
        ("Originate", "add `originate` to `write`"),
        ("Getvar", "add `call` (or `reporting`) to `write`"),
        ("CoreShowChannels", "add `reporting` (or `system`) to `write`"),
    ],
)
def test_permission_texts(action: str, grant: str) -> None:
    text_ = cc.permission_text(action, "ops")
    assert text_.startswith(f"the AMI user 'ops' may not send {action} (Asterisk: Permission")
    assert f"{grant} in the [ops] section of manager.conf" in text_
    response = {"Response": "Error", "Message": "Permission denied"}
    assert cc.refusal(response, action, "ops") == text_
    assert cc.refusal({"Response": "Success"}, action, "ops") is None
    assert cc.refusal({"Response": "Error", "Message": "No such channel"}, action, "ops") == (
        f"Asterisk refused the {action}: No such channel"
    )


def test_the_privileges_are_the_simulators_and_asterisks() -> None:
    # Both follow Asterisk 22's registrations (manager.c, features.c, pbx.c, app_mixmonitor.c,
    # app_queue.c): any one privilege of an action's list lets a user send it.
    table = {name: priv for name, _, priv in sim_actions.command_list()}
    for action, needed in cc.ACTION_PRIVILEGES.items():
        listed = {p for p in table[action].split(",") if p not in ("all", "<none>")}
        assert listed == set(needed), action


def test_the_simulator_refuses_an_action_the_user_may_not_send(pbx_sim_factory: Any) -> None:
    started = pbx_sim_factory(write=frozenset({"reporting"}))
    with started.connect() as client:
        reply = client.action("Redirect", ("Channel", "PJSIP/MC-0"), ("Context", "x"),
                              ("Exten", "s"), ("Priority", "1"))  # fmt: skip
        assert (reply["Response"], reply["Message"]) == ("Error", "Permission denied")
        event = client.wait_for(lambda f: f.get("Event") == "RequestNotAllowed")
        assert (event["AccountID"], event["RequestType"]) == ("dialer", "Action: Redirect")
        # what the user may do still works; a privilege-free action too
        assert client.action("ShowDialPlan", ("Context", "DynamicIVR"))["Response"] == "Success"
        assert client.action("QueueStatus")["Response"] == "Success"
        assert client.action("Ping")["Response"] == "Success"


@restricted(*REFERENCE_WRITE)
def test_a_refused_transfer_is_not_reported_as_done_and_says_what_is_missing(
    dialer, calls: Calls, sim: PbxSim, engine: Engine
) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer(
        "call", "transfer", attempt.custom_call_id, "2001", "--context", "transfer-sim", code=1
    )
    lines = result.output.splitlines()
    assert lines[0].startswith("ShowDialPlan: 2001@transfer-sim exists")
    assert not any(line.startswith("Redirect") for line in lines)
    assert lines[-1] == (
        "Error: the AMI user 'dialer' may not send Redirect (Asterisk: Permission denied): add "
        "`call` to `write` in the [dialer] section of manager.conf, then run "
        'asterisk -rx "manager reload"'
    )
    assert still_in_ivr(calls, attempt.custom_call_id)
    [event] = control_events(engine, attempt, cc.TRANSFER_EVENT)
    assert event["Result"] == "failed" and "`call`" in event["Detail"]
    assert attempt_row(engine, attempt).transfer_requested_at is None


@restricted(*REFERENCE_WRITE)
def test_refusals_of_every_command_name_the_privilege(dialer, calls: Calls, sim: PbxSim) -> None:
    attempt = calls.place(IN_IVR)
    call_id = attempt.custom_call_id
    for args, action, grant in [
        (["call", "hangup", call_id], "Hangup", "`call` (or `system`)"),
        (["call", "record", call_id], "MixMonitor", "`system`"),
        (["call", "transfer", call_id, TARGET, "--attended"], "Originate", None),
        (["queue", "add", "support", "PJSIP/agent1"], "QueueAdd", "`agent`"),
        (["queue", "remove", "support", "PJSIP/agent1"], "QueueRemove", "`agent`"),
    ]:
        result = dialer(*args, code=1)
        if grant is None:  # the user may originate: the consultation call is placed
            continue
        assert f"the AMI user 'dialer' may not send {action}" in result.output, args
        assert f"add {grant} to `write`" in result.output, args
    assert still_in_ivr(calls, call_id)


@restricted("call")  # no `reporting` nor `system`: not even the channel list
def test_a_refused_channel_listing_names_the_privilege(dialer) -> None:
    result = dialer("channels", code=1)
    assert "the AMI user 'dialer' may not send CoreShowChannels" in result.output
    assert "add `reporting` (or `system`) to `write`" in result.output
    assert "PBX:" not in result.output


@restricted("originate", "system")  # CoreShowChannels through `system`, Getvar needs more
def test_a_refused_getvar_and_a_refused_consultation(dialer, calls: Calls, sim: PbxSim) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer("call", "vars", attempt.custom_call_id, "AMDSTATUS", code=1)
    assert "may not send Getvar" in result.output
    assert "add `call` (or `reporting`) to `write`" in result.output
    # the consultation call is placed and answers; the Bridge is refused: no "bridged" step,
    # and the leg is hung up again (Hangup through `system`)
    attended = dialer("call", "transfer", attempt.custom_call_id, TARGET, "--attended", code=1)
    assert "may not send Bridge" in attended.output and "bridged" not in attended.output
    assert "consultation call hung up" in attended.output
    assert still_in_ivr(calls, attempt.custom_call_id)


# -- 9. every leg shows its call id ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("linkedid", "call_id"),
    [
        ("1700000000000_7", "1700000000000_7"),
        ("1700000000000_7-consult-1700000005000", "1700000000000_7"),
        ("1700000000000_7-consult-x", None),
        ("1700000001.5", None),
        ("", None),
    ],
)
def test_call_ids_of_linkedids(linkedid: str, call_id: str | None) -> None:
    assert cc.call_id_of(linkedid) == call_id


def test_the_consultation_legs_belong_to_the_call_but_are_not_its_callee() -> None:
    call = "1700000000000_7"
    consult = f"{call}-consult-5"
    callee = channel("PJSIP/MC-1", call, call, bridge_id="b")
    one = channel("Local/2099@transfer-sim-1;1", consult, call, bridge_id="b")
    two = channel("Local/2099@transfer-sim-1;2", f"{consult}-2", consult)
    listing = [one, two, callee]
    assert cc.call_channels(listing, call) == listing
    assert cc.originated_channel(listing, call) == callee
    assert [c.row()["call_id"] for c in listing] == [call] * 3


@pytest.mark.parametrize("pbx_sim", [{"speed": 10}], indirect=True)
def test_the_bridge_action_gives_the_joined_leg_the_calls_linkedid(pbx_sim: PbxSim) -> None:
    # bridge_basic.c push -> ast_bridge_channel_update_linkedids: the oldest Linkedid wins;
    # the other half of a Local leg is not in the bridge and keeps its own.
    with pbx_sim.connect() as client:
        client.send("Originate", ("Channel", "PJSIP/+15550000042@MC"), ("Context", "DynamicIVR"),
                    ("Exten", "s"), ("Priority", "1"), ("Async", "true"),
                    ("ChannelId", "ln-1"), action_id="ln-1")  # fmt: skip
        call = client.wait_for(
            lambda f: f.get("Event") == "OriginateResponse" and f.get("ActionID") == "ln-1"
        )
        client.send("Originate", ("Channel", "Local/2099@transfer-sim"), ("Application", "Wait"),
                    ("Data", "30"), ("Async", "true"), ("ChannelId", "ln-1-c"),
                    ("OtherChannelId", "ln-1-c-2"), action_id="ln-1-c")  # fmt: skip
        leg = client.wait_for(
            lambda f: f.get("Event") == "OriginateResponse" and f.get("ActionID") == "ln-1-c"
        )
        client.action("Bridge", ("Channel1", call["Channel"]), ("Channel2", leg["Channel"]))
        enter = client.wait_for(
            lambda f: f.get("Event") == "BridgeEnter" and f["Uniqueid"] == "ln-1-c"
        )
        assert enter["Linkedid"] == "ln-1"
        listing = client.send("CoreShowChannels", action_id="ls")
        rows = client.collect(lambda f: f.get("Event") == "CoreShowChannelsComplete")
        linked = {f["Uniqueid"]: f["Linkedid"] for f in rows if f.get("Event") == "CoreShowChannel"}
        assert listing == "ls"
    assert linked == {"ln-1": "ln-1", "ln-1-c": "ln-1", "ln-1-c-2": "ln-1-c"}


def test_channels_shows_the_call_id_on_both_halves_of_a_consultation_leg(
    dialer, calls: Calls
) -> None:
    attempt = calls.place(IN_IVR)
    call_id = attempt.custom_call_id
    dialer("call", "transfer", call_id, "2099", "--context", "transfer-sim", "--attended")
    rows = json.loads(dialer("channels", "--json").output)
    legs = {r["channel"]: r for r in rows if r["call_id"] == call_id}
    halves = sorted(name for name in legs if name.startswith("Local/2099@transfer-sim"))
    assert [name[-2:] for name in halves] == [";1", ";2"]
    assert legs[halves[1]]["linkedid"].startswith(f"{call_id}-consult-")
    assert {r["channel"] for r in rows if r["call_id"] is None} == set()
    table = dialer("channels", "--call", call_id).output
    assert all(name in table for name in halves)


# -- 4. external numbers leave through the call's trunk --------------------------------------------


def test_transfer_dial_strings() -> None:
    trunk = TrunkRoute("east", "PJSIP/{number}@carrier-{trunk}")
    assert cc.transfer_dial_string(EXTERNAL, trunk=trunk, transfer_prefix="9") == (
        f"PJSIP/9{TARGET}@carrier-east"
    )
    extension = cc.plan_destination("2001", queue=None, context=None)
    assert cc.transfer_dial_string(extension, trunk=trunk) is None
    with pytest.raises(cc.ControlError, match="trunk is unknown"):
        cc.transfer_dial_string(EXTERNAL, trunk=None)
    with pytest.raises(cc.ControlError, match="comma"):
        cc.transfer_dial_string(EXTERNAL, trunk=TrunkRoute("x", "PJSIP/{number}@x,b"))
    with pytest.raises(cc.ControlError, match="placeholder"):
        cc.transfer_dial_string(EXTERNAL, trunk=TrunkRoute("x", "PJSIP/1@x"))


def test_an_external_transfer_leaves_through_the_calls_trunk_and_prefix(
    dialer, sim: PbxSim, engine: Engine
) -> None:
    placed = Calls(engine, sim, transfer_prefix="9")
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE trunk_routes SET channel_template = 'PJSIP/{number}@carrier-{trunk}'")
            )
        attempt = placed.place(IN_IVR)
        result = dialer("call", "transfer", attempt.custom_call_id, TARGET)
        dial = f"PJSIP/9{TARGET}@carrier-MC"
        assert f"Setvar DIALER_TRANSFER_DIAL={dial} on PJSIP/MC-" in result.output
        assert f"{TARGET} answered" in result.output
        [setvar] = sent(sim, "Setvar")
        [redirect] = sent(sim, "Redirect")
        assert (setvar["Channel"], setvar["Variable"], setvar["Value"]) == (
            redirect["Channel"], "DIALER_TRANSFER_DIAL", dial,
        )  # fmt: skip
        names = actions_sent(sim)
        assert names.index("Setvar") < names.index("Redirect")
        begin = placed.wait(
            lambda f: f.get("Event") == "DialBegin" and f.get("Uniqueid") == attempt.custom_call_id
        )
        assert begin["DialString"] == f"9{TARGET}@carrier-MC"
    finally:
        placed.close()


def test_a_bridged_external_transfer_sets_the_dial_string_on_the_callee(
    dialer, calls: Calls, sim: PbxSim
) -> None:
    attempt = calls.place(PRESSES_1)
    calls.bridged(attempt)
    dialer("call", "transfer", attempt.custom_call_id, TARGET)
    [setvar] = sent(sim, "Setvar")
    [blind] = sent(sim, "BlindTransfer")
    callee = next(c for c in calls.channels() if c.uniqueid == attempt.custom_call_id)
    assert setvar["Channel"] == callee.name != blind["Channel"]


@restricted("reporting", "originate")
def test_a_refused_setvar_moves_nothing(dialer, calls: Calls, sim: PbxSim) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer("call", "transfer", attempt.custom_call_id, TARGET, code=1)
    assert "may not send Setvar" in result.output and "the call was not moved" in result.output
    assert "Setvar DIALER" not in result.output
    assert sent(sim, "Redirect") == []
    assert still_in_ivr(calls, attempt.custom_call_id)


# -- 1/5/6. what the operator did, on the attempt --------------------------------------------------


def test_operator_transfers_record_their_source_and_no_key_press(
    dialer, calls: Calls, engine: Engine
) -> None:
    blind = calls.place(IN_IVR)
    dialer("call", "transfer", blind.custom_call_id, TARGET)
    queued = calls.place(ALSO_IN_IVR)
    dialer("call", "transfer", queued.custom_call_id, "--queue", "support")
    attended = calls.place(THIRD_IN_IVR)
    dialer("call", "transfer", attended.custom_call_id, TARGET, "--attended")
    rows = {
        name: attempt_row(engine, placed)
        for name, placed in (("blind", blind), ("queue", queued), ("attended", attended))
    }
    assert {name: (r.transfer_source, r.transfer_queue) for name, r in rows.items()} == {
        "blind": ("operator", None),
        "queue": ("operator", "support"),
        "attended": ("operator", None),
    }
    assert {r.dtmf for r in rows.values()} == {None}
    assert all(r.transfer_requested_at is not None for r in rows.values())


def test_a_refused_transfer_records_no_transfer(dialer, calls: Calls, engine: Engine) -> None:
    attempt = calls.place(IN_IVR)
    dialer("call", "transfer", attempt.custom_call_id, "2001", "--context", "nowhere", code=1)
    row = attempt_row(engine, attempt)
    assert (row.transfer_source, row.transfer_requested_at) == (None, None)


def _hangup_sent_at(sim: PbxSim) -> float:
    [record] = [r for r in sim.records() if r["action"] == "Hangup"]
    return float(record["wall"])


@pytest.mark.parametrize("how", ["call_id", "attempt_id", "channel"])
def test_hangup_records_the_operator_before_sending_the_hangup(
    dialer, sim: PbxSim, engine: Engine, how: str
) -> None:
    placed = Calls(engine, sim)
    try:
        phone = IN_IVR
        attempt = placed.place(phone)
        ref = {"call_id": attempt.custom_call_id, "attempt_id": str(attempt.id)}.get(how)
        if ref is None:
            callee = next(c for c in placed.channels() if c.uniqueid == attempt.custom_call_id)
            ref = callee.name
        dialer("call", "hangup", ref)
        row = attempt_row(engine, attempt)
        assert row.operator_hangup_at is not None and row.operator_retry is False
        assert row.operator_hangup_at.timestamp() <= _hangup_sent_at(sim)
    finally:
        placed.close()


def test_hangup_of_the_local_half_of_the_call_is_the_operators(
    dialer, sim: PbxSim, engine: Engine
) -> None:
    with sim.connect() as client:
        [attempt] = add_attempts(engine, add_campaign(engine), [IN_IVR])
        call_id = attempt.custom_call_id
        client.send("Originate", ("Channel", f"Local/{IN_IVR}@pstn-sim"),
                    ("Context", "DynamicIVR"), ("Exten", "s"), ("Priority", "1"),
                    ("Async", "true"), ("ChannelId", call_id),
                    ("OtherChannelId", f"{call_id}-2"), action_id=call_id)  # fmt: skip
        answer = client.wait_for(
            lambda f: f.get("Event") == "OriginateResponse" and f.get("ActionID") == call_id
        )
        assert answer["Response"] == "Success"
        two = answer["Channel"][:-1] + "2"
        dialer("call", "hangup", two, "--retry")
    row = attempt_row(engine, attempt)
    assert row.operator_hangup_at is not None and row.operator_retry is True


def test_hangup_with_retry_and_of_a_transfer_leg(dialer, calls: Calls, engine: Engine) -> None:
    retried = calls.place(IN_IVR)
    result = dialer("call", "hangup", retried.custom_call_id, "--retry", "--json")
    assert json.loads(result.output)["retry"] is True
    assert attempt_row(engine, retried).operator_retry is True
    [event] = control_events(engine, retried, cc.HANGUP_EVENT)
    assert (event["Retry"], event["EndsCall"]) == ("yes", "yes")
    # a transfer leg is not the call: hanging it up records no operator hangup
    bridged = calls.place(PRESSES_1)
    calls.bridged(bridged)
    leg = next(
        c for c in calls.channels()
        if c.linkedid == bridged.custom_call_id and c.uniqueid != bridged.custom_call_id
    )  # fmt: skip
    refused = dialer("call", "hangup", leg.name, "--retry", code=1)
    assert "--retry is for hanging up the call itself" in refused.output
    dialer("call", "hangup", leg.name)
    row = attempt_row(engine, bridged)
    assert (row.operator_hangup_at, row.operator_retry) == (None, None)
    [event] = control_events(engine, bridged, cc.HANGUP_EVENT)
    assert event["EndsCall"] == "no"


@restricted(*REFERENCE_WRITE)
def test_a_refused_hangup_takes_the_mark_back(dialer, calls: Calls, engine: Engine) -> None:
    attempt = calls.place(IN_IVR)
    result = dialer("call", "hangup", attempt.custom_call_id, "--retry", code=1)
    assert "may not send Hangup" in result.output
    row = attempt_row(engine, attempt)
    assert (row.operator_hangup_at, row.operator_retry) == (None, None)
    assert still_in_ivr(calls, attempt.custom_call_id)


def test_the_listener_closes_an_operators_hangup_as_the_operators(
    dialer, sim: PbxSim, engine: Engine
) -> None:
    placed = Calls(engine, sim)
    listener = Listener(engine, sim.server, options=fast_options())

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(listener.run(stop))
        await connected(listener)
        attempt = await asyncio.to_thread(placed.place, IN_IVR)
        await asyncio.to_thread(dialer, "call", "hangup", attempt.custom_call_id)
        await asyncio.to_thread(
            wait_for,
            lambda: attempt_row(engine, attempt).status == "ended",
            10,
            what="the close",
        )
        stop.set()
        await asyncio.wait_for(task, 10)
        row = attempt_row(engine, attempt)
        assert (row.outcome, row.ended_by) == ("operator_hangup", "operator")

    try:
        asyncio.run(scenario())
    finally:
        placed.close()
