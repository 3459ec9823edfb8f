"""Session and live-call actions, checked against what the live_* and login transcripts show."""

from __future__ import annotations

import time

import pytest

from tests.support_pbx import Frame, PbxSim, RawAmi, load_transcript, require_transcripts
from tests.test_pbxsim_calls import call_events, originate


def answered(client: RawAmi, channel: str, call_id: str) -> Frame:
    """Originate and wait for the answer; the OriginateResponse is returned."""
    originate(client, channel, call_id)
    result = client.peek_for(
        lambda f: f.get("Event") == "OriginateResponse" and f.get("ActionID") == call_id
    )
    assert result["Response"] == "Success"
    return result


def sequence(events: list[Frame], *names: str) -> list[tuple[str, str, str]]:
    return [
        (f["Event"], f.get("Channel", ""), f.get("Cause", ""))
        for f in events
        if f.get("Event") in names
    ]


# -- login and session ----------------------------------------------------------------------------


def test_actions_before_login_are_denied_and_a_wrong_secret_is_refused_then_closed(
    pbx_sim: PbxSim,
) -> None:
    client = pbx_sim.connect(login=False)
    assert client.greeting == "Asterisk Call Manager/11.0.0"
    denied = client.action("Ping")
    assert (denied["Response"], denied["Message"]) == ("Error", "Permission denied")
    started = time.monotonic()
    refused = client.action("Login", ("Username", "dialer"), ("Secret", "wrong-secret"))
    assert (refused["Response"], refused["Message"]) == ("Error", "Authentication failed")
    assert time.monotonic() - started >= 1.0 / pbx_sim.speed * 0.9  # Asterisk waits a second
    with pytest.raises(ConnectionError):
        client._recv(timeout=2)
    client.close()
    other = pbx_sim.connect(login=False)
    unknown = other.action("Login", ("Username", "nosuchuser"), ("Secret", pbx_sim.secret))
    assert unknown["Message"] == "Authentication failed"
    other.close()


def test_login_greets_with_fully_booted_and_logoff_says_goodbye(pbx_sim: PbxSim) -> None:
    client = pbx_sim.connect(login=False)
    accepted = client.action(
        "Login", ("Username", pbx_sim.username), ("Secret", pbx_sim.secret), ("Events", "on")
    )
    assert accepted["Message"] == "Authentication accepted"
    booted = client.wait_for(lambda f: f.get("Event") == "FullyBooted")
    assert (booted["Privilege"], booted["Status"]) == ("system,all", "Fully Booted")
    auth = client.wait_for(lambda f: f.get("Event") == "SuccessfulAuth")
    assert (auth["Privilege"], auth["AccountID"], auth["Service"]) == (
        "security,all",
        pbx_sim.username,
        "AMI",
    )
    again = client.action("Login", ("Username", pbx_sim.username), ("Secret", pbx_sim.secret))
    assert (again["Response"], again["Message"]) == ("Success", "Already authenticated")
    pong = client.action("Ping")
    assert pong["Ping"] == "Pong" and "." in pong["Timestamp"]
    bye = client.action("Logoff")
    assert (bye["Response"], bye["Message"]) == ("Goodbye", "Thanks for all the fish.")
    with pytest.raises(ConnectionError):
        client._recv(timeout=2)
    client.close()


def test_events_off_login_gets_no_fully_booted(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect(events="off") as client:
        assert client.action("Ping")["Response"] == "Success"
        assert client.drain(0.05) == []


def test_unknown_and_removed_actions(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        for action in ("Monitor", "StopMonitor", "PauseMonitor", "Transfer"):
            reply = client.action(action, ("Channel", "x"))
            assert reply["Message"] == (
                f"Invalid/unknown command: {action}. "
                "Use Action: ListCommands to show available commands."
            )
        client.send_raw(b"ActionID: no-action\r\n\r\n")
        missing = client.response("no-action")
        assert missing["Message"] == "Missing action in request"
        commands = client.action("ListCommands")
        assert "Originate" in commands and "Monitor" not in commands


def test_a_too_long_line_fails_the_action_and_the_session_goes_on(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        client.send_raw(
            b"Action: Originate\r\nActionID: long\r\nChannel: Local/+15550000007@pstn-sim\r\n"
            b"Variable: long_var=" + b"L" * 1100 + b"\r\n\r\n"
        )
        reply = client.response("long")
        assert (reply["Response"], reply["Message"]) == (
            "Error",
            "Failed to parse message: line too long",
        )
        assert client.action("Ping")["Ping"] == "Pong"


def test_events_action_switches_events_off_and_on(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        off = client.action("Events", ("EventMask", "off"))
        assert (off["Response"], off["Events"]) == ("Success", "Off")
        originate(client, "PJSIP/+15550000007@MC", "ev-1")
        assert [f for f in client.drain(0.1) if f.is_event] == []
        on = client.action("Events", ("EventMask", "on"))
        assert on["Events"] == "On"
        originate(client, "PJSIP/+15550000007@MC", "ev-2")
        assert (
            client.wait_for(lambda f: f.get("Event") == "OriginateResponse")["ActionID"] == "ev-2"
        )
        bad = client.action("Events")
        assert bad["Message"] == "Invalid event mask"


def test_filter_limits_the_events_a_session_gets(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        reply = client.action(
            "Filter", ("Operation", "Add"), ("Filter", "Event: (OriginateResponse|Hangup)[^A-Za-z]")
        )
        assert (reply["Response"], reply["Message"]) == ("Success", "Success")
        originate(client, "Local/+15550000007@pstn-sim", "flt-1")
        frames = client.collect(lambda f: f.get("Event") == "Hangup" and f["Uniqueid"] == "flt-1")
        frames += client.drain(0.1)
        events = [(f["Event"], f.get("Uniqueid")) for f in frames if f.is_event]
        # the answered call's OriginateResponse and its two Hangups, nothing else (HangupRequest
        # and SoftHangupRequest do not match)
        assert sorted(events) == [
            ("Hangup", "flt-1"),
            ("Hangup", "flt-1-2"),
            ("OriginateResponse", "flt-1"),
        ]
        assert client.action("Filter", ("Operation", "Remove"))["Message"] == "Unknown operation"
        bad = client.action("Filter", ("Operation", "Add"), ("Filter", "("))
        assert bad["Message"] == "Filter did not compile.  Check the syntax of the filter given."


# -- live call actions (live_hangup, live_getvar, live_coreshowchannels...) ----------------------


@pytest.mark.parametrize(
    ("cause_header", "cause", "text"),
    [(None, "0", "Unknown"), ("21", "21", "Call Rejected"), ("bogus", "0", "Unknown")],
)
def test_hangup_action_causes(
    pbx_sim: PbxSim, cause_header: str | None, cause: str, text: str
) -> None:
    with pbx_sim.connect() as client:
        result = answered(client, "Local/+15550000002@pstn-sim", "hup-1")
        extra = [("Cause", cause_header)] if cause_header else []
        reply = client.action("Hangup", ("Channel", result["Channel"]), *extra)
        assert (reply["Response"], reply["Message"]) == ("Success", "Channel Hungup")
        events = call_events(client, "hup-1")
    ivr, callee = result["Channel"], result["Channel"][:-1] + "2"
    assert sequence(events, "SoftHangupRequest", "HangupRequest", "Hangup") == [
        ("SoftHangupRequest", ivr, "16"),
        ("HangupRequest", callee, cause),
        ("Hangup", ivr, cause),
        ("SoftHangupRequest", callee, "16"),
        ("Hangup", callee, cause),
    ]
    assert next(f for f in events if f.get("Event") == "Hangup")["Cause-txt"] == text


def test_hangup_finds_channels_by_uniqueid_and_refuses_unknown_ones(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        missing = client.action("Hangup", ("Channel", "Local/+15550000002@pstn-sim-deadbeef;1"))
        assert (missing["Response"], missing["Message"]) == ("Error", "No such channel")
        assert client.action("Hangup")["Message"] == "No channel specified"
        answered(client, "PJSIP/+15550000002@MC", "hup-uid")
        assert client.action("Hangup", ("Channel", "hup-uid"))["Message"] == "Channel Hungup"
        events = call_events(client, "hup-uid")
    assert sequence(events, "SoftHangupRequest", "Hangup")[-1][2] == "0"


def test_hangup_by_regex_lists_the_channels(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        result = answered(client, "Local/+15550000002@pstn-sim", "rx-1")
        listed = client.action("Hangup", ("Channel", r"/^Local\/\+15550000002@pstn-sim-.*;1$/"))
        assert (listed["EventList"], listed["Message"]) == ("start", "Channels hung up will follow")
        hung = client.wait_for(lambda f: f.get("Event") == "ChannelHungup")
        done = client.wait_for(lambda f: f.get("Event") == "ChannelsHungupListComplete")
        call_events(client, "rx-1")
    assert hung["Channel"] == result["Channel"] and done["ListItems"] == "1"


def test_getvar_and_setvar(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        result = answered(client, "Local/+15550000002@pstn-sim", "gv-1")
        channel = result["Channel"]
        client.wait_for(lambda f: f.get("UserEvent") == "DialerAMD")

        def getvar(variable: str, on: str | None = channel) -> str | None:
            headers = [("Variable", variable)] + ([("Channel", on)] if on else [])
            reply = client.action("Getvar", *headers)
            assert reply["Variable"] == variable
            return reply["Value"]

        assert getvar("custom_call_id") == "gv-1"
        assert getvar("CUSTOM_CALL_ID") == ""
        assert getvar("press_key") == "1"
        assert getvar("AMDSTATUS") == "HUMAN"
        assert getvar("AMDCAUSE") == "HUMAN-808-800"
        assert getvar("NO_SUCH_VAR") == ""
        assert getvar("CHANNEL(state)") == "Up"
        assert getvar("CHANNEL(linkedid)") == "gv-1"
        assert getvar("UNIQUEID") == "gv-1"
        assert getvar("BRIDGEPEER") == ""
        assert getvar("NO_SUCH_GLOBAL", on=None) == ""
        missing = client.action(
            "Getvar", ("Channel", "Local/nonexistent@pstn-sim-00000000;1"), ("Variable", "x")
        )
        assert missing["Message"] == "No such channel"
        assert client.action("Getvar", ("Channel", channel))["Message"] == "No variable specified"
        set_reply = client.action(
            "Setvar", ("Channel", channel), ("Variable", "custom_call_id"), ("Value", "renamed")
        )
        assert set_reply["Message"] == "Variable Set"
        assert getvar("custom_call_id") == "renamed"
        client.action("Setvar", ("Variable", "GLOBAL_ONE"), ("Value", "g"))
        assert getvar("GLOBAL_ONE", on=None) == "g"
        assert getvar("GLOBAL_ONE") == "g"
        hangup = client.action("Hangup", ("Channel", channel))
        assert hangup["Message"] == "Channel Hungup"
        last = client.wait_for(lambda f: f.get("Event") == "Hangup" and f["Channel"] == channel)
    # channelvars show the new value on the channel's events
    assert last.chanvars()["custom_call_id"] == "renamed"


def test_variables_with_commas_reach_the_channel_as_on_real_asterisk(pbx_sim: PbxSim) -> None:
    """The variable_comma_crlf Originate, byte for byte; Getvar must read back what the
    recorded Asterisk's Getvar answered."""
    require_transcripts()
    transcript = load_transcript("variable_comma_crlf")
    originate_entry = transcript.sent()[1]
    recorded = [
        f for f in transcript.received() if "Variable" in f and "Value" in f and "Event" not in f
    ]
    with pbx_sim.connect() as client:
        for raw in originate_entry.frames:
            client.send_raw(raw)
        assert client.response("variable_comma_crlf-c1-0002")["Message"] == (
            "Originate successfully queued"
        )
        assert client.response("injected-ping")["Ping"] == "Pong"
        result = client.wait_for(lambda f: f.get("Event") == "OriginateResponse")
        values = {
            f["Variable"]: client.action(
                "Getvar", ("Channel", result["Channel"]), ("Variable", f["Variable"])
            )["Value"]
            for f in recorded
        }
        dtmf = client.wait_for(lambda f: f.get("UserEvent") == "DialerDTMF")
    assert values == {f["Variable"]: f["Value"] for f in recorded}
    assert values["comma_plain"] == "a" and values["comma_escaped"] == "a,b"
    assert dtmf["custom_call_id"] == "cid-comma"


def test_coreshowchannels_and_status(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        result = answered(client, "Local/+15550000002@pstn-sim", "csc-1")
        listing = client.action("CoreShowChannels")
        assert (listing["EventList"], listing["Message"]) == ("start", "Channels will follow")
        rows = client.collect(lambda f: f.get("Event") == "CoreShowChannelsComplete")
        channels = [f for f in rows if f.get("Event") == "CoreShowChannel"]
        assert rows[-1]["ListItems"] == "2"
        assert {f["Channel"] for f in channels} == {result["Channel"], result["Channel"][:-1] + "2"}
        assert all(f["ActionID"] == listing["ActionID"] and "Privilege" not in f for f in channels)
        assert all(
            f["Linkedid"] == "csc-1" and "Duration" in f and "BridgeId" in f for f in channels
        )

        status = client.action(
            "Status", ("Channel", result["Channel"]), ("Variables", "custom_call_id")
        )
        assert status["Message"] == "Channel status will follow"
        rows = client.collect(lambda f: f.get("Event") == "StatusComplete")
        (row,) = [f for f in rows if f.get("Event") == "Status"]
        assert (row["Uniqueid"], row["Type"], row["Variable"]) == (
            "csc-1",
            "Local",
            "custom_call_id=csc-1",
        )
        assert (rows[-1]["ListItems"], rows[-1]["Items"]) == ("1", "1")
        missing = client.action("Status", ("Channel", "Local/none@pstn-sim-00000000;1"))
        assert missing["Message"] == "No such channel"

        client.action("Hangup", ("Channel", result["Channel"]))
        client.wait_for(lambda f: f.get("Event") == "Hangup" and f["Uniqueid"] == "csc-1-2")
        client.action("CoreShowChannels")
        done = client.wait_for(lambda f: f.get("Event") == "CoreShowChannelsComplete")
        assert done["ListItems"] == "0"


def test_mixmonitor_start_stop(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        result = answered(client, "Local/+15550000002@pstn-sim", "mm-1")
        channel = result["Channel"]
        started = client.action(
            "MixMonitor", ("Channel", channel), ("File", "mm-1.wav"), ("Options", "")
        )
        assert started["Response"] == "Success" and "Message" not in started
        assert client.wait_for(lambda f: f.get("Event") == "MixMonitorStart")["Channel"] == channel
        stopped = client.action("StopMixMonitor", ("Channel", channel))
        assert stopped["Response"] == "Success"
        assert client.wait_for(lambda f: f.get("Event") == "MixMonitorStop")["Channel"] == channel
        again = client.action("StopMixMonitor", ("Channel", channel))
        assert again["Message"] == "Could not stop monitoring channel"
        nowhere = client.action(
            "MixMonitor", ("Channel", "Local/x@pstn-sim-deadbeef;1"), ("File", "x.wav")
        )
        assert nowhere["Message"] == "No such channel"


def test_recording_flag_reports_the_recording_file(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        originate(client, "PJSIP/+15550000007@MC", "rc-1", ("Variable", "RECORD_CALLS=true"))
        events = call_events(client, "rc-1")
    recording = [f for f in events if f.get("UserEvent") == "DialerRecording"]
    assert [f["RECORDING_FILE"] for f in recording] == ["rc-1.wav"]
    assert "MixMonitorStart" in [f.get("Event") for f in events]


# -- redirect and transfers (live_redirect, live_blindtransfer, live_atxfer) ----------------------


@pytest.mark.parametrize("pbx_sim", [{"speed": 20}], indirect=True)
def test_redirect_to_a_transfer_context_dials_and_bridges(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        result = answered(client, "Local/+15550000002@pstn-sim", "rd-1")
        reply = client.action(
            "Redirect",
            ("Channel", result["Channel"]),
            ("Context", "transfer-sim"),
            ("Exten", "+15551234567"),
            ("Priority", "1"),
        )
        assert reply["Message"] == "Redirect successful"
        events = call_events(client, "rd-1")
    legs = [
        f
        for f in events
        if f.get("Event") == "Newchannel" and f["Uniqueid"] not in ("rd-1", "rd-1-2")
    ]
    assert [f["Channel"].rsplit("-", 1)[0] for f in legs] == ["Local/+15551234567@pstn-sim"] * 2
    assert all(f["Linkedid"] == "rd-1" for f in legs)
    enters = [f["Channel"] for f in events if f.get("Event") == "BridgeEnter"]
    assert enters == [legs[0]["Channel"], result["Channel"]]
    assert "DialerTransferResult" not in [f.get("UserEvent") for f in events]
    assert [f["Cause"] for f in events if f.get("Event") == "Hangup"] == ["16"] * 4


@pytest.mark.parametrize(
    ("context", "exten"), [("no-such-context", "s"), ("transfer-sim", "nosuchexten")]
)
def test_redirect_nowhere_succeeds_then_drops_the_call(
    pbx_sim: PbxSim, context: str, exten: str
) -> None:
    with pbx_sim.connect() as client:
        result = answered(client, "Local/+15550000002@pstn-sim", "rdx")
        reply = client.action(
            "Redirect",
            ("Channel", result["Channel"]),
            ("Context", context),
            ("Exten", exten),
            ("Priority", "1"),
        )
        assert reply["Message"] == "Redirect successful"
        events = call_events(client, "rdx")
        gone = client.action("Hangup", ("Channel", result["Channel"]))
    assert sequence(events, "SoftHangupRequest", "HangupRequest", "Hangup")[:3] == [
        ("SoftHangupRequest", result["Channel"], "16"),
        ("HangupRequest", result["Channel"][:-1] + "2", "0"),
        ("Hangup", result["Channel"], "0"),
    ]
    assert gone["Message"] == "No such channel"


def test_redirect_refusals(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        missing = client.action(
            "Redirect",
            ("Channel", "Local/x@pstn-sim-deadbeef;1"),
            ("Context", "transfer-sim"),
            ("Exten", "+1"),
            ("Priority", "1"),
        )
        assert missing["Message"] == "Channel does not exist: Local/x@pstn-sim-deadbeef;1"
        no_priority = client.action("Redirect", ("Channel", "x"), ("Context", "c"), ("Exten", "e"))
        assert no_priority["Message"] == "Priority not specified"


def test_blindtransfer_of_an_unbridged_channel_is_invalid(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        result = answered(client, "Local/+15550000002@pstn-sim", "bt-0")
        reply = client.action(
            "BlindTransfer",
            ("Channel", result["Channel"]),
            ("Context", "transfer-sim"),
            ("Exten", "+15551234567"),
        )
        assert (reply["Response"], reply["Message"]) == ("Error", "Transfer invalid")
        event = client.wait_for(lambda f: f.get("Event") == "BlindTransfer")
        nowhere = client.action("BlindTransfer", ("Channel", "nope"), ("Exten", "1"))
    assert (event["Result"], event["TransfererChannel"]) == ("Invalid", result["Channel"])
    assert (event["Context"], event["Extension"]) == ("transfer-sim", "+15551234567")
    assert nowhere["Message"] == "Channel specified does not exist"


LONG_TARGET = [("Variable", "transfer_number=+15551234599"), ("Variable", "press_key=1")]


def bridged_press1_call(client: RawAmi, call_id: str) -> tuple[str, Frame]:
    """A press-1 call bridged to a long-lived transfer target (a number ending in 99)."""
    originate(client, "Local/+15550000001@pstn-sim", call_id, variables=LONG_TARGET)
    result = client.wait_for(lambda f: f.get("Event") == "OriginateResponse")
    ivr = result["Channel"]
    frames = client.collect(
        lambda f: f.get("Event") == "BridgeEnter" and f["Channel"] == ivr, timeout=5
    )
    return ivr, frames[-1]


@pytest.mark.parametrize("pbx_sim", [{"speed": 20}], indirect=True)
def test_blindtransfer_sends_the_bridge_peer_to_the_new_target(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        ivr, bridged = bridged_press1_call(client, "bt-1")
        reply = client.action(
            "BlindTransfer",
            ("Channel", ivr),
            ("Context", "transfer-sim"),
            ("Exten", "+15551234567"),
        )
        assert reply["Message"] == "Transfer succeeded"
        event = client.wait_for(lambda f: f.get("Event") == "BlindTransfer")
        ivr_gone = client.wait_for(lambda f: f.get("Event") == "Hangup" and f["Channel"] == ivr)
        target = client.wait_for(
            lambda f: (
                f.get("Event") == "Newchannel"
                and f["Channel"].startswith("Local/+15551234567@pstn-sim")
            )
        )
        rebridged = client.wait_for(
            lambda f: f.get("Event") == "BridgeEnter" and f["Channel"] == event["TransfereeChannel"]
        )
    assert event["Result"] == "Success"
    assert event["BridgeUniqueid"] == bridged["BridgeUniqueid"]
    assert event["TransfereeChannel"].startswith("Local/+15551234599@pstn-sim")
    assert ivr_gone["Cause"] == "16"
    assert target["Linkedid"] == "bt-1"
    assert rebridged["BridgeUniqueid"] != bridged["BridgeUniqueid"]


@pytest.mark.parametrize("pbx_sim", [{"speed": 20}], indirect=True)
def test_atxfer_on_a_bridged_call_consults_then_completes_on_hangup(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        ivr, bridged = bridged_press1_call(client, "ax-1")
        reply = client.action(
            "Atxfer", ("Channel", ivr), ("Context", "transfer-sim"), ("Exten", "+15551234567")
        )
        assert reply["Message"] == "Atxfer successfully queued"
        consulting = client.collect(
            lambda f: f.get("Event") == "BridgeEnter" and f["Channel"] == ivr, timeout=5
        )
        hangup = client.action("Hangup", ("Channel", ivr))
        assert hangup["Message"] == "Channel Hungup"
        transfer = client.wait_for(lambda f: f.get("Event") == "AttendedTransfer")
        ivr_gone = client.wait_for(lambda f: f.get("Event") == "Hangup" and f["Channel"] == ivr)
    # the feature code, then the extension as sent ('+' included), all as DTMF on the IVR leg
    digits = [f["Digit"] for f in consulting if f.get("Event") == "DTMFEnd"]
    assert "".join(digits) == "*2+15551234567"
    assert [f["Channel"] for f in consulting if f.get("Event") == "Hold"] == [ivr]
    consult = consulting[-1]
    assert consult["BridgeUniqueid"] != bridged["BridgeUniqueid"]
    assert transfer["Result"] == "Success"
    assert transfer["OrigTransfererChannel"] == ivr
    assert transfer["OrigBridgeUniqueid"] == bridged["BridgeUniqueid"]
    assert transfer["SecondBridgeUniqueid"] == consult["BridgeUniqueid"]
    assert transfer["TransfereeChannel"].startswith("Local/+15551234599@pstn-sim")
    # Atxfer drops the leading '+': the target is dialled by digits only
    assert transfer["TransferTargetChannel"].startswith("Local/15551234567@transfer-sim")
    assert ivr_gone["Cause"] == "16"


@pytest.mark.parametrize("pbx_sim", [{"speed": 20}], indirect=True)
def test_atxfer_on_an_unbridged_call_reaches_the_ivr_read_as_a_keypress(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        result = answered(client, "Local/+15550000002@pstn-sim", "ax-0")
        client.wait_for(lambda f: f.get("UserEvent") == "DialerAMD")
        reply = client.action(
            "Atxfer",
            ("Channel", result["Channel"]),
            ("Context", "transfer-sim"),
            ("Exten", "+1555"),
        )
        assert reply["Message"] == "Atxfer successfully queued"
        events = call_events(client, "ax-0")
        missing = client.action("Atxfer", ("Channel", "nope"), ("Exten", "1"))
    assert [f["Digit"] for f in events if f.get("Event") == "DTMFEnd"] == ["*"]
    dtmf = next(f for f in events if f.get("UserEvent") == "DialerDTMF")
    assert (dtmf["DTMF"], dtmf["READSTATUS"]) == ("*", "OK")
    assert missing["Message"] == "Channel specified does not exist"


# -- queues (live_queue) --------------------------------------------------------------------------


def test_queue_membership(pbx_sim: PbxSim) -> None:
    member = "Local/+15551234599@pstn-sim"
    with pbx_sim.connect() as client:
        added = client.action(
            "QueueAdd",
            ("Queue", "support"),
            ("Interface", member),
            ("MemberName", "agent99"),
            ("Penalty", "0"),
            ("Paused", "false"),
        )
        assert added["Message"] == "Added interface to queue"
        event = client.wait_for(lambda f: f.get("Event") == "QueueMemberAdded")
        assert (event["MemberName"], event["Interface"], event["Status"]) == (
            "agent99",
            member,
            "1",
        )
        twice = client.action("QueueAdd", ("Queue", "support"), ("Interface", member))
        assert twice["Message"] == "Unable to add interface: Already there"
        nowhere = client.action("QueueAdd", ("Queue", "nosuchqueue"), ("Interface", member))
        assert nowhere["Message"] == "Unable to add interface to queue: No such queue"

        status = client.action("QueueStatus", ("Queue", "support"))
        assert status["Message"] == "Queue status will follow"
        rows = client.collect(lambda f: f.get("Event") == "QueueStatusComplete")
        assert [f["Event"] for f in rows] == ["QueueParams", "QueueMember", "QueueStatusComplete"]
        assert (rows[1]["Name"], rows[1]["Location"]) == ("agent99", member)
        assert rows[-1]["ListItems"] == "2"

        removed = client.action("QueueRemove", ("Queue", "support"), ("Interface", member))
        assert removed["Message"] == "Removed interface from queue"
        client.wait_for(lambda f: f.get("Event") == "QueueMemberRemoved")
        again = client.action("QueueRemove", ("Queue", "support"), ("Interface", member))
        assert again["Message"] == "Unable to remove interface: Not there"
        client.action("QueueStatus", ("Queue", "support"))
        rows = client.collect(lambda f: f.get("Event") == "QueueStatusComplete")
        assert rows[-1]["ListItems"] == "1"


@pytest.mark.parametrize("pbx_sim", [{"speed": 20}], indirect=True)
def test_a_call_redirected_into_a_queue_reaches_the_member(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        client.action(
            "QueueAdd",
            ("Queue", "support"),
            ("Interface", "Local/+15551234599@pstn-sim"),
            ("MemberName", "agent99"),
        )
        result = answered(client, "Local/+15550000002@pstn-sim", "q-1")
        reply = client.action(
            "Redirect",
            ("Channel", result["Channel"]),
            ("Context", "harness-queue"),
            ("Exten", "support"),
            ("Priority", "1"),
        )
        assert reply["Message"] == "Redirect successful"
        connect = client.wait_for(lambda f: f.get("Event") == "AgentConnect")
        client.wait_for(
            lambda f: f.get("Event") == "BridgeEnter" and f["Channel"] == result["Channel"]
        )
        client.action("Hangup", ("Channel", result["Channel"]))
        complete = client.wait_for(lambda f: f.get("Event") == "AgentComplete")
    assert (connect["Channel"], connect["Queue"], connect["MemberName"]) == (
        result["Channel"],
        "support",
        "agent99",
    )
    assert connect["DestLinkedid"] == "q-1"
    assert (complete["Queue"], complete["Reason"]) == ("support", "caller")
