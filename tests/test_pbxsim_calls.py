"""Originated calls on the simulator over real TCP: behaviours, concurrency, limits, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.support_pbx import Frame, PbxSim, RawAmi

IVR_VARIABLES = [
    ("Variable", "press_key=1"),
    ("Variable", "transfer_number=+15551234567"),
    ("Variable", "ivr_file=welcome_message"),
    ("Variable", "ivr_vm_file=vm_message"),
    ("Variable", "amd_enabled=true"),
]


def originate(
    client: RawAmi,
    channel: str,
    call_id: str,
    *extra: tuple[str, str],
    local: bool | None = None,
    variables: list[tuple[str, str]] | None = None,
) -> str:
    """The dialer's Originate: ActionID = ChannelId = custom_call_id (+ OtherChannelId)."""
    headers = [
        ("Channel", channel),
        ("Context", "DynamicIVR"),
        ("Exten", "s"),
        ("Priority", "1"),
        ("Async", "true"),
        ("Timeout", "30000"),
        ("CallerID", '"+15559990000" <+15559990000>'),
        ("ChannelId", call_id),
    ]
    if local if local is not None else channel.startswith("Local/"):
        headers.append(("OtherChannelId", f"{call_id}-2"))
    headers += variables if variables is not None else IVR_VARIABLES
    headers.append(("Variable", f"custom_call_id={call_id}"))
    headers += extra
    reply = client.response(client.send("Originate", *headers, action_id=call_id))
    assert (reply["Response"], reply["Message"]) == ("Success", "Originate successfully queued")
    return call_id


def call_events(client: RawAmi, call_id: str, timeout: float = 10.0) -> list[Frame]:
    """Every event of one call (by Linkedid, or ActionID for OriginateResponse) until its
    originated channel is gone (Hangup of that Uniqueid) and its result was reported."""
    seen: list[Frame] = []
    state = {"hangup": False, "response": False}

    def mine(frame: Frame) -> bool:
        if frame.get("Event") == "OriginateResponse" and frame.get("ActionID") == call_id:
            state["response"] = True
            seen.append(frame)
        elif frame.get("Linkedid") == call_id or frame.get("DestLinkedid") == call_id:
            seen.append(frame)
            if frame.get("Event") == "Hangup" and frame.get("Uniqueid") == call_id:
                state["hangup"] = True
        # the other half of a Local pair hangs up last in some sequences
        return state["hangup"] and state["response"] and not _partner_up(seen, call_id)

    client.collect(mine, timeout)
    return seen


def _partner_up(seen: list[Frame], call_id: str) -> bool:
    created = {f["Uniqueid"] for f in seen if f.get("Event") == "Newchannel"}
    gone = {f["Uniqueid"] for f in seen if f.get("Event") == "Hangup"}
    return bool(created - gone)


def user_events(events: list[Frame]) -> list[tuple[str, ...]]:
    out = []
    for frame in events:
        if frame.get("Event") != "UserEvent":
            continue
        name = frame["UserEvent"]
        keys = {
            "DialerAMD": ("AMDSTATUS", "AMDCAUSE"),
            "DialerDTMF": ("DTMF", "READSTATUS"),
            "DialerVoicemail": ("IVR_VM_FILE", "WAITSTATUS"),
            "DialerTransfer": ("TRANSFER_NUMBER", "TRANSFER_CHANNEL"),
            "DialerTransferResult": ("DIALSTATUS",),
            "DialerRecording": ("RECORDING_FILE",),
        }[name]
        out.append((name, *(frame[k] for k in keys)))
    return out


def hangup_of(events: list[Frame], uniqueid: str) -> tuple[str, str]:
    frame = next(f for f in events if f.get("Event") == "Hangup" and f["Uniqueid"] == uniqueid)
    return frame["Cause"], frame["Cause-txt"]


def result_of(events: list[Frame]) -> Frame:
    (frame,) = [f for f in events if f.get("Event") == "OriginateResponse"]
    return frame


AMD_HUMAN = ("DialerAMD", "HUMAN", "HUMAN-808-800")

# number -> (UserEvents, OriginateResponse Response/Reason, Hangup cause of the originated
# channel) for Local channels into the callee network.
LOCAL_BEHAVIOUR = {
    "+15550000001": (
        [
            AMD_HUMAN,
            ("DialerDTMF", "1", "OK"),
            ("DialerTransfer", "+15551234567", "Local/+15551234567@pstn-sim"),
            ("DialerTransferResult", "ANSWER"),
        ],
        ("Success", "4"),
        ("16", "Normal Clearing"),
    ),
    "+15550000002": (
        [AMD_HUMAN, ("DialerDTMF", "", "TIMEOUT")],
        ("Success", "4"),
        ("16", "Normal Clearing"),
    ),
    "+15550000003": (
        [
            ("DialerAMD", "MACHINE", "LONGGREETING-1500-1500"),
            ("DialerVoicemail", "vm_message", "SILENCE"),
        ],
        ("Success", "4"),
        ("16", "Normal Clearing"),
    ),
    "+15550000004": ([], ("Failure", "5"), ("0", "Unknown")),
    "+15550000005": ([], ("Failure", "3"), ("19", "User alerting, no answer")),
    "+15550000006": ([], ("Failure", "8"), ("0", "Unknown")),
    "+15550000007": ([], ("Success", "4"), ("16", "Normal Clearing")),
    "+15550000008": (
        [AMD_HUMAN, ("DialerDTMF", "2", "OK")],
        ("Success", "4"),
        ("16", "Normal Clearing"),
    ),
    "+15550000009": (
        [
            ("DialerAMD", "MACHINE", "INITIALSILENCE-2500-2500"),
            ("DialerVoicemail", "vm_message", "SILENCE"),
        ],
        ("Success", "4"),
        ("16", "Normal Clearing"),
    ),
    "+15550000042": ([AMD_HUMAN], ("Success", "4"), ("16", "Normal Clearing")),
}

# PJSIP differs where a SIP trunk differs from a Local channel: a 486 is Reason 0 with cause 17
# on the one channel, a 503 cause 34, the transfer leg goes out the same trunk.
PJSIP_DIFFERENCES = {
    "+15550000001": {"transfer_channel": "PJSIP/+15551234567@MC"},
    "+15550000004": {"result": ("Failure", "0"), "cause": ("17", "User busy")},
    "+15550000006": {"result": ("Failure", "8"), "cause": ("34", "Circuit/channel congestion")},
}


@pytest.mark.parametrize("pbx_sim", [{"speed": 100}], indirect=True)
@pytest.mark.parametrize("tech", ["Local", "PJSIP"])
@pytest.mark.parametrize("number", sorted(LOCAL_BEHAVIOUR))
def test_callee_behaviour_by_last_two_digits(pbx_sim: PbxSim, tech: str, number: str) -> None:
    expected_events, expected_result, expected_cause = LOCAL_BEHAVIOUR[number]
    changes = PJSIP_DIFFERENCES.get(number, {}) if tech == "PJSIP" else {}
    expected_result = changes.get("result", expected_result)
    expected_cause = changes.get("cause", expected_cause)
    if "transfer_channel" in changes:
        expected_events = [
            (e[0], e[1], changes["transfer_channel"]) if e[0] == "DialerTransfer" else e
            for e in expected_events
        ]
    channel = f"Local/{number}@pstn-sim" if tech == "Local" else f"PJSIP/{number}@MC"
    call_id = f"1704067200000_{number[-2:]}"
    with pbx_sim.connect() as client:
        originate(client, channel, call_id)
        events = call_events(client, call_id)
    assert user_events(events) == expected_events
    result = result_of(events)
    assert (result["Response"], result["Reason"]) == expected_result
    assert result["Uniqueid"] == call_id
    assert hangup_of(events, call_id) == expected_cause
    assert all(f["Linkedid"] == call_id for f in events if "Linkedid" in f)
    for frame in events:
        if frame.get("Event") == "UserEvent":
            assert frame["custom_call_id"] == call_id
            assert frame.chanvars()["custom_call_id"] == call_id
    newchannels = [f for f in events if f.get("Event") == "Newchannel"]
    assert newchannels[0]["Uniqueid"] == call_id
    assert newchannels[0].chanvars() == {"custom_call_id": "", "CUSTOM_CALL_ID": ""}
    if tech == "PJSIP":
        assert newchannels[0]["Channel"].startswith("PJSIP/MC-")
    else:
        assert newchannels[1]["Uniqueid"] == f"{call_id}-2"


@pytest.mark.parametrize("pbx_sim", [{"speed": 100}], indirect=True)
def test_transfer_leg_carries_the_calls_linkedid(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        originate(client, "PJSIP/+15550000001@MC", "c-transfer")
        events = call_events(client, "c-transfer")
    legs = [f for f in events if f.get("Event") == "Newchannel" and f["Uniqueid"] != "c-transfer"]
    assert len(legs) == 1
    leg = legs[0]
    assert leg["Linkedid"] == "c-transfer"
    assert leg.chanvars()["custom_call_id"] == ""
    names = [(f["Event"], f.get("Channel"), f.get("DialStatus")) for f in events]
    assert ("DialEnd", "PJSIP/MC-00000000", "ANSWER") in names  # the IVR's Dial() of the leg
    enters = [f["Channel"] for f in events if f.get("Event") == "BridgeEnter"]
    assert enters == [leg["Channel"], "PJSIP/MC-00000000"]


@pytest.mark.parametrize("pbx_sim", [{"speed": 200}], indirect=True)
def test_200_concurrent_originates_each_get_one_result_and_a_consistent_linkedid(
    pbx_sim: PbxSim,
) -> None:
    numbers = ["01", "02", "03", "04", "06", "07", "08", "09", "42", "77"]
    with pbx_sim.connect() as client:
        ids = []
        payload = b""
        for n in range(200):
            call_id = f"1704067200000_{n}"
            ids.append(call_id)
            lines = [
                "Action: Originate",
                f"ActionID: {call_id}",
                f"Channel: PJSIP/+155500000{numbers[n % 10]}@MC",
                "Context: DynamicIVR",
                "Exten: s",
                "Priority: 1",
                "Async: true",
                f"ChannelId: {call_id}",
                f"Variable: custom_call_id={call_id}",
                "Variable: transfer_number=+15551234567",
            ]
            payload += ("\r\n".join(lines) + "\r\n\r\n").encode()
        client.send_raw(payload)  # all 200 in one burst
        pending = set(ids)
        frames = client.collect(lambda f: _all_done(f, pending), timeout=30)
        frames += client.drain(0.3)
    results: dict[str, list[Frame]] = defaultdict(list)
    linked: dict[str, set[str]] = defaultdict(set)
    owner_of_uid: dict[str, str] = {}
    for frame in frames:
        if frame.get("Event") == "OriginateResponse":
            results[frame["ActionID"]].append(frame)
        elif frame.get("Event") == "Newchannel":
            owner_of_uid[frame["Uniqueid"]] = frame["Linkedid"]
        if "Linkedid" in frame:
            linked[frame["Uniqueid"]].add(frame["Linkedid"])
    assert sorted(results) == sorted(ids)
    assert all(len(v) == 1 for v in results.values())
    for call_id in ids:
        result = results[call_id][0]
        assert result["Uniqueid"] == call_id
    # every channel of a call, transfer legs included, carries the call's id as Linkedid
    assert all(len(v) == 1 for v in linked.values())
    assert {next(iter(v)) for v in linked.values()} <= set(ids)
    assert all(owner_of_uid[uid] in ids for uid in owner_of_uid)
    assert pbx_sim.active_calls() == 0


def _all_done(frame: Frame, pending: set[str]) -> bool:
    if frame.get("Event") == "Hangup" and frame.get("Uniqueid") in pending:
        pending.discard(frame["Uniqueid"])
    return not pending


def test_duplicate_channel_id_fails_with_reason_0(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        originate(client, "Local/+15550000002@pstn-sim", "dup-1")
        client.wait_for(lambda f: f.get("Event") == "Newchannel" and f["Uniqueid"] == "dup-1")
        again = client.send(
            "Originate",
            ("Channel", "Local/+15550000002@pstn-sim"),
            ("Context", "DynamicIVR"),
            ("Exten", "s"),
            ("Priority", "1"),
            ("Async", "true"),
            ("ChannelId", "dup-1"),
        )
        assert client.response(again)["Message"] == "Originate successfully queued"
        failed = client.wait_for(
            lambda f: f.get("Event") == "OriginateResponse" and f.get("ActionID") == again
        )
    assert (failed["Response"], failed["Reason"], failed["Uniqueid"]) == ("Failure", "0", "dup-1")
    assert failed["Channel"] == "Local/+15550000002@pstn-sim"


def test_unknown_technology_fails_with_reason_0_and_no_uniqueid(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        action_id = client.send(
            "Originate",
            ("Channel", "Foo/123"),
            ("Context", "DynamicIVR"),
            ("Exten", "s"),
            ("Priority", "1"),
            ("Async", "yes"),
        )
        client.response(action_id)
        result = client.wait_for(lambda f: f.get("Event") == "OriginateResponse")
        # no channel was ever created
        assert client.drain(0.1) == []
    assert (result["Response"], result["Reason"], result["Uniqueid"]) == (
        "Failure",
        "0",
        "<unknown>",
    )
    assert (result["Channel"], result["ActionID"]) == ("Foo/123", action_id)


@pytest.mark.parametrize("pbx_sim", [{"speed": 20, "max_channels": 2}], indirect=True)
def test_originates_beyond_max_channels_fail_like_a_congested_trunk(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        for n in range(4):
            originate(client, "PJSIP/+15550000002@MC", f"mc-{n}")
        results = [
            client.wait_for(lambda f: f.get("Event") == "OriginateResponse") for _ in range(4)
        ]
        hangups = {
            f["Uniqueid"]: f["Cause"] for f in client.drain(0.05) if f.get("Event") == "Hangup"
        }
    by_id = {f["ActionID"]: (f["Response"], f["Reason"]) for f in results}
    assert by_id == {
        "mc-0": ("Success", "4"),
        "mc-1": ("Success", "4"),
        "mc-2": ("Failure", "0"),
        "mc-3": ("Failure", "0"),
    }
    assert hangups.get("mc-2") == "34" and hangups.get("mc-3") == "34"


def test_no_answer_is_reason_3_after_the_scaled_originate_timeout(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        start = client.send(
            "Originate",
            ("Channel", "PJSIP/+15550000005@MC"),
            ("Context", "DynamicIVR"),
            ("Exten", "s"),
            ("Priority", "1"),
            ("Async", "true"),
            ("Timeout", "5000"),  # 5 s at speed 50: 0.1 s
        )
        client.response(start)
        ringing = client.wait_for(lambda f: f.get("Event") == "DialState")
        result = client.wait_for(lambda f: f.get("Event") == "OriginateResponse", timeout=2)
        hangup = client.wait_for(lambda f: f.get("Event") == "Hangup")
    assert ringing["DialStatus"] == "RINGING"
    assert (result["Response"], result["Reason"]) == ("Failure", "3")
    assert (hangup["Cause"], hangup["ChannelStateDesc"]) == ("19", "Ringing")


def test_events_off_session_gets_only_the_queued_response(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as listener, pbx_sim.connect(events="off") as quiet:
        originate(quiet, "PJSIP/+15550000007@MC", "quiet-1")
        events = call_events(listener, "quiet-1")
        assert result_of(events)["Response"] == "Success"
        assert quiet.drain(0.1) == []


def test_synchronous_originate_answers_when_the_call_does(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        failed = client.action(
            "Originate",
            ("Channel", "Foo/bar"),
            ("Context", "DynamicIVR"),
            ("Exten", "s"),
            ("Priority", "1"),
            ("Async", "false"),
        )
        assert (failed["Response"], failed["Message"]) == ("Error", "Originate failed")
        answered = client.action(
            "Originate",
            ("Channel", "PJSIP/+15550000007@MC"),
            ("Context", "DynamicIVR"),
            ("Exten", "s"),
            ("Priority", "1"),
        )
        assert (answered["Response"], answered["Message"]) == (
            "Success",
            "Originate successfully queued",
        )
        seen = client.drain(0.1)
    assert "OriginateResponse" not in [f.get("Event") for f in seen]


def test_originate_refusals(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:

        def refusal(*headers: tuple[str, str]) -> str | None:
            return client.action("Originate", *headers).get("Message")

        assert refusal(("Context", "DynamicIVR")) == "Channel not specified"
        assert refusal(("Channel", "nodash"), ("Async", "true")) == "Invalid channel"
        assert (
            refusal(
                ("Channel", "Local/1@pstn-sim"),
                ("Context", "NoSuchContext"),
                ("Exten", "s"),
                ("Priority", "1"),
                ("Async", "true"),
            )
            == "Extension does not exist."
        )
        assert refusal(("Channel", "Local/1@pstn-sim"), ("Timeout", "soon")) == "Invalid timeout"
        assert refusal(("Channel", "Local/1@pstn-sim"), ("ChannelId", "x" * 150)) == (
            "Uniqueid length exceeds maximum of 149"
        )
        assert refusal(("Channel", "Local/1@pstn-sim"), ("Async", "false")) == (
            "Originate with 'Exten' requires 'Context' and 'Priority'"
        )


def test_restart_drops_sessions_and_calls(pbx_sim: PbxSim) -> None:
    client = pbx_sim.connect()
    originate(client, "PJSIP/+15550000002@MC", "before-restart")
    client.wait_for(lambda f: f.get("Event") == "OriginateResponse")
    assert pbx_sim.active_calls() == 1
    port = pbx_sim.port
    pbx_sim.restart()
    with pytest.raises(ConnectionError):
        client.drain(1.0)
        client._recv(timeout=1.0)
    client.close()
    assert pbx_sim.port == port and pbx_sim.active_calls() == 0
    with pbx_sim.connect() as again:
        listing = again.action("CoreShowChannels")
        complete = again.wait_for(lambda f: f.get("Event") == "CoreShowChannelsComplete")
    assert listing["EventList"] == "start" and complete["ListItems"] == "0"


def test_record_file_has_one_json_line_per_action(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        client.send_raw(
            b"Action: Originate\r\nActionID: rec-1\r\nChannel: PJSIP/+15550000002@MC\r\n"
            b"Context: DynamicIVR\r\nExten: s\r\nPriority: 1\r\nAsync: true\r\nChannelId: rec-1\r\n"
            b'Variable: custom_call_id=rec-1\r\nVariable: comma=a,b\r\nVariable: quoted="a,b"\r\n\r\n'
        )
        client.response("rec-1")
        client.action("Ping")
    records = pbx_sim.records()
    assert [r["action"] for r in records] == ["Login", "Originate", "Ping"]
    login, originated, _ = records
    assert ["Secret", "***"] in login["headers"]
    assert pbx_sim.secret not in json.dumps(records)
    assert originated["action_id"] == "rec-1"
    assert originated["channel"] == "PJSIP/+15550000002@MC"
    assert originated["channel_id"] == "rec-1"
    assert originated["variables"] == {"custom_call_id": "rec-1", "comma": "a", "quoted": "a,b"}
    assert ["Variable", "comma=a,b"] in originated["headers"]
    assert records[0]["mono"] <= records[1]["mono"] <= records[2]["mono"]
    assert all(isinstance(r["wall"], float) for r in records)


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    executable = Path(sys.executable).parent / "dialer"
    record = tmp_path / "cli.jsonl"
    process = subprocess.Popen(
        [
            str(executable),
            "pbx-sim",
            "--port",
            "0",
            "--json",
            "--speed",
            "50",
            "--record",
            str(record),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DIALER_AMI_USERNAME": "dialer", "DIALER_AMI_SECRET": "cli-secret"},
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        with RawAmi(ready["host"], ready["port"]) as client:
            assert client.greeting == "Asterisk Call Manager/11.0.0"
            client.login("dialer", "cli-secret")
            assert client.action("Ping")["Ping"] == "Pong"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert [
        r["action"] for r in json.loads("[" + ",".join(record.read_text().splitlines()) + "]")
    ] == [
        "Login",
        "Ping",
    ]


@pytest.mark.parametrize("pbx_sim", [{"varset_events": True}], indirect=True)
def test_varset_events_show_the_originate_variables_being_set(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        originate(client, "Local/+15550000007@pstn-sim", "vs-1", variables=[("Variable", "a=1")])
        events = call_events(client, "vs-1")
    varsets = [
        (f["Uniqueid"], f["Variable"], f["Value"]) for f in events if f.get("Event") == "VarSet"
    ]
    # the originated channel applies the list reversed, its Local other half in order
    assert varsets == [
        ("vs-1", "custom_call_id", "vs-1"),
        ("vs-1", "a", "1"),
        ("vs-1-2", "a", "1"),
        ("vs-1-2", "custom_call_id", "vs-1"),
    ]
    first = next(f for f in events if f.get("Event") == "VarSet")
    assert first.chanvars()["custom_call_id"] == "vs-1"


def test_cli_sigusr1_cuts_every_ami_connection_and_keeps_the_calls(tmp_path: Path) -> None:
    """SIGUSR1 is a network failure on demand: every session is dropped, no call ends."""
    executable = Path(sys.executable).parent / "dialer"
    process = subprocess.Popen(
        [str(executable), "pbx-sim", "--port", "0", "--json", "--speed", "20"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DIALER_AMI_USERNAME": "dialer", "DIALER_AMI_SECRET": "s"},
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        first = RawAmi(ready["host"], ready["port"])
        second = RawAmi(ready["host"], ready["port"])
        first.login("dialer", "s")
        second.login("dialer", "s", events="off")
        # 99: a callee who stays on the line for a minute (3 s at speed 20).
        originate(first, "PJSIP/+15550000099@MC", "usr1-1")
        first.wait_for(lambda f: f.get("Event") == "OriginateResponse")
        process.send_signal(signal.SIGUSR1)
        assert "dropped 2 AMI connections, 1 calls up" in process.stdout.readline()
        for client in (first, second):
            assert _cut(client)
            client.close()
        with RawAmi(ready["host"], ready["port"]) as again:
            again.login("dialer", "s")
            again.action("CoreShowChannels")
            listing = again.collect(lambda f: f.get("Event") == "CoreShowChannelsComplete")
            # the call survived the cut, and its Hangup still comes
            assert [f["Uniqueid"] for f in listing if f.get("Event") == "CoreShowChannel"] == [
                "usr1-1"
            ]
            hangup = again.wait_for(lambda f: f.get("Event") == "Hangup", timeout=10)
            assert hangup["Uniqueid"] == "usr1-1"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _cut(client: RawAmi, timeout: float = 5.0) -> bool:
    """True once the simulator has closed or reset the connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client._recv(timeout=0.2)
        except ConnectionError:  # closed (EOF) or reset (abort)
            return True
    return False
