"""The simulator's Bridge action and the reference dialplan's operator-transfer contexts, over
real TCP (what `dialer call transfer` relies on)."""

from __future__ import annotations

import pytest

from tests.support_pbx import Frame, PbxSim, RawAmi
from tests.test_pbxsim_actions import answered, bridged_press1_call
from tests.test_pbxsim_calls import call_events


def consult_leg(client: RawAmi, channel: str, leg_id: str) -> Frame:
    """An application Originate (Wait) to `channel`, as a consultation leg; its answer."""
    reply = client.action(
        "Originate",
        ("Channel", channel),
        ("Application", "Wait"),
        ("Data", "30"),
        ("Async", "true"),
        ("Timeout", "30000"),
        ("ChannelId", leg_id),
    )
    assert reply["Message"] == "Originate successfully queued"
    return client.wait_for(
        lambda f: f.get("Event") == "OriginateResponse" and f.get("Uniqueid") == leg_id
    )


def bridge_enters(frames: list[Frame]) -> dict[str, str]:
    return {f["Uniqueid"]: f["BridgeUniqueid"] for f in frames if f.get("Event") == "BridgeEnter"}


@pytest.mark.parametrize("pbx_sim", [{"speed": 10}], indirect=True)
def test_bridge_joins_a_call_in_the_ivr_with_an_answered_leg(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        call = answered(client, "PJSIP/+15550000002@MC", "br-1")
        leg = consult_leg(client, "PJSIP/+15551234599@MC", "br-1-consult")
        assert leg["Response"] == "Success"
        reply = client.action(
            "Bridge", ("Channel1", call["Channel"]), ("Channel2", leg["Channel"]), ("Tone", "no")
        )
        assert (reply["Response"], reply["Message"]) == ("Success", "Channels have been bridged")
        frames = client.collect(
            lambda f: f.get("Event") == "BridgeEnter" and f["Uniqueid"] == "br-1-consult"
        )
        enters = bridge_enters(frames)
        assert enters["br-1"] == enters["br-1-consult"]
        # the IVR was left: no prompt result follows while the two talk
        assert "DialerDTMF" not in [f.get("UserEvent") for f in client.drain(0.3)]
        # the consulted party hangs up: the call goes on to its next step, a Hangup()
        client.action("Hangup", ("Channel", leg["Channel"]))
        gone = client.wait_for(lambda f: f.get("Event") == "Hangup" and f["Uniqueid"] == "br-1")
    assert gone["Cause"] == "16"
    assert not pbx_sim.active_calls()


@pytest.mark.parametrize("pbx_sim", [{"speed": 10}], indirect=True)
def test_bridge_pulls_a_bridged_call_away_and_its_old_peer_hangs_up(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        ivr, first = bridged_press1_call(client, "br-2")
        leg = consult_leg(client, "Local/+15551234599@pstn-sim", "br-2-consult")
        reply = client.action("Bridge", ("Channel1", ivr), ("Channel2", leg["Channel"]))
        assert reply["Message"] == "Channels have been bridged"
        frames = client.collect(
            lambda f: f.get("Event") == "BridgeEnter" and f["Uniqueid"] == "br-2-consult"
        )
        frames += client.drain(0.3)
    leaves = [f["Channel"] for f in frames if f.get("Event") == "BridgeLeave"]
    assert leaves[0] == ivr
    hangups = [f["Channel"] for f in frames if f.get("Event") == "Hangup"]
    # the transfer target the IVR had dialled was left alone and hung up (both Local halves)
    assert [h.rsplit("-", 1)[0] for h in hangups] == ["Local/+15551234599@pstn-sim"] * 2
    assert ivr not in hangups
    destroyed = [f["BridgeUniqueid"] for f in frames if f.get("Event") == "BridgeDestroy"]
    assert destroyed == [first["BridgeUniqueid"]]
    enters = bridge_enters(frames)
    assert enters["br-2"] == enters["br-2-consult"] != first["BridgeUniqueid"]


def test_bridge_refusals(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        assert client.action("Bridge", ("Channel1", "x"))["Message"] == (
            "Missing channel parameter in request"
        )
        call = answered(client, "PJSIP/+15550000002@MC", "br-3")
        nowhere = client.action("Bridge", ("Channel1", "PJSIP/none-1"), ("Channel2", "br-3"))
        assert nowhere["Message"] == "Channel1 does not exist: PJSIP/none-1"
        other = client.action("Bridge", ("Channel1", "br-3"), ("Channel2", "PJSIP/none-1"))
        assert other["Message"] == "Channel2 does not exist: PJSIP/none-1"
        # a leg still ringing (05 never answers) cannot be bridged yet
        client.action(
            "Originate",
            ("Channel", "PJSIP/+15551234505@MC"),
            ("Application", "Wait"),
            ("Async", "true"),
            ("ChannelId", "br-3-ringing"),
        )
        client.wait_for(
            lambda f: f.get("Event") == "DialState" and f.get("DestUniqueid") == "br-3-ringing"
        )
        ringing = client.action(
            "Bridge", ("Channel1", call["Channel"]), ("Channel2", "br-3-ringing")
        )
        assert ringing["Response"] == "Error"
        assert ringing["Message"].startswith("Unable to add Channel2 to bridge: PJSIP/MC-")
        client.action("Hangup", ("Channel", "br-3-ringing"))
        client.action("Hangup", ("Channel", "br-3"))
    assert "Bridge" in client_commands(pbx_sim)


def client_commands(pbx_sim: PbxSim) -> str:
    with pbx_sim.connect() as client:
        listing = client.action("ListCommands")
    return listing.get("Bridge") or ""


@pytest.mark.parametrize(
    ("context", "exten"), [("no-such-context", "s"), ("dialer-transfer", "nosuchexten")]
)
def test_a_call_redirected_nowhere_hangs_up_where_it_was_sent(
    pbx_sim: PbxSim, context: str, exten: str
) -> None:
    with pbx_sim.connect() as client:
        call = answered(client, "PJSIP/+15550000002@MC", "rn-1")
        reply = client.action(
            "Redirect",
            ("Channel", call["Channel"]),
            ("Context", context),
            ("Exten", exten),
            ("Priority", "1"),
        )
        assert reply["Message"] == "Redirect successful"
        gone = client.wait_for(lambda f: f.get("Event") == "Hangup" and f["Uniqueid"] == "rn-1")
    assert (gone["Context"], gone["Exten"], gone["Cause"]) == (context, exten, "0")


@pytest.mark.parametrize("pbx_sim", [{"speed": 10}], indirect=True)
def test_dialer_transfer_dials_the_number_through_the_calls_trunk(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        call = answered(client, "PJSIP/+15550000002@MC", "dt-1")
        reply = client.action(
            "Redirect",
            ("Channel", call["Channel"]),
            ("Context", "dialer-transfer"),
            ("Exten", "+15551234567"),
            ("Priority", "1"),
        )
        assert reply["Message"] == "Redirect successful"
        events = call_events(client, "dt-1")
    begin = next(f for f in events if f.get("Event") == "DialBegin" and f.get("Uniqueid"))
    assert (begin["Uniqueid"], begin["DialString"]) == ("dt-1", "+15551234567@MC")
    assert begin["DestChannel"].startswith("PJSIP/MC-")
    end = next(f for f in events if f.get("Event") == "DialEnd" and f.get("Uniqueid") == "dt-1")
    assert end["DialStatus"] == "ANSWER"


@pytest.mark.parametrize("pbx_sim", [{"speed": 10}], indirect=True)
def test_dialer_queue_queues_the_call_and_refuses_unknown_queues(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        call = answered(client, "PJSIP/+15550000002@MC", "dq-1")
        reply = client.action(
            "Redirect",
            ("Channel", call["Channel"]),
            ("Context", "dialer-queue"),
            ("Exten", "support"),
            ("Priority", "1"),
        )
        assert reply["Message"] == "Redirect successful"
        joined = client.wait_for(lambda f: f.get("Event") == "QueueCallerJoin")
        client.action("Hangup", ("Channel", call["Channel"]))
        other = answered(client, "PJSIP/+15550000002@MC", "dq-2")
        client.action(
            "Redirect",
            ("Channel", other["Channel"]),
            ("Context", "dialer-queue"),
            ("Exten", "nosuchqueue"),
            ("Priority", "1"),
        )
        gone = client.wait_for(lambda f: f.get("Event") == "Hangup" and f["Uniqueid"] == "dq-2")
    assert (joined["Uniqueid"], joined["Queue"], joined["Position"]) == ("dq-1", "support", "1")
    assert (gone["Context"], gone["Exten"], gone["Cause"]) == ("dialer-queue", "nosuchqueue", "0")
