"""`core restart now` with calls up, over real TCP: actions refused from the first moment, every
channel hung up (cause 0; 16 for a channel in a bridge), calls still ringing failed, then the
Shutdown event, every connection closed, and a new PBX on the same port after `down_for`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dialer.pbxsim import Timings
from tests.support_pbx import Frame, PbxSim, RawAmi
from tests.test_pbxsim_actions import answered, bridged_press1_call
from tests.test_pbxsim_calls import originate

SHUTTING_DOWN = ("Error", "Asterisk is shutting down")


def until_closed(client: RawAmi, timeout: float = 5.0) -> list[Frame]:
    """Every frame left before the simulator closes the connection (which it must)."""
    frames = client.drain(timeout)
    assert client.closed, "the connection was not closed"
    return frames


def index(frames: list[Frame], predicate) -> int:
    return next(i for i, f in enumerate(frames) if predicate(f))


def event(name: str, **headers: str):
    return lambda f: f.get("Event") == name and all(f.get(k) == v for k, v in headers.items())


# Speed 5 keeps the calls up long enough; the Shutdown comes 1 s after the hangups, the time the
# test has to see its actions refused.
@pytest.mark.parametrize(
    "pbx_sim", [{"speed": 5, "timings": Timings(shutdown_settle=5.0)}], indirect=True
)
def test_restart_hangs_up_every_call_then_says_shutdown_and_closes(pbx_sim: PbxSim) -> None:
    client = pbx_sim.connect()
    calls_only = pbx_sim.connect(events="call")  # no `system` events: no Shutdown for it
    bridged_press1_call(client, "rs-br")  # a Local call bridged to its transfer target
    answered(client, "PJSIP/+15550000002@MC", "rs-up")  # in the IVR, waiting for a key
    originate(client, "PJSIP/+15550000005@MC", "rs-ring")  # ringing
    client.wait_for(event("DialState", DestUniqueid="rs-ring"))
    client.drain(0)

    restarted = pbx_sim.core_restart(down_for=0.3)
    refused = client.action(
        "Originate",
        ("Channel", "PJSIP/+15550000002@MC"),
        ("Context", "DynamicIVR"),
        ("Exten", "s"),
        ("Priority", "1"),
        ("Async", "true"),
        ("ChannelId", "rs-late"),
    )
    with RawAmi(pbx_sim.host, pbx_sim.port) as late:  # still accepted, but not even a Login works
        login = late.action("Login", ("Username", pbx_sim.username), ("Secret", pbx_sim.secret))
    frames = client.collect(event("Shutdown"), timeout=5)
    frames += until_closed(client)
    call_frames = until_closed(calls_only)
    client.close()
    calls_only.close()

    assert (refused["Response"], refused["Message"]) == SHUTTING_DOWN
    assert (login["Response"], login["Message"]) == SHUTTING_DOWN
    start = index(frames, event("SoftHangupRequest", Cause="4"))
    frames = frames[start:]
    assert frames[-1].lines[:4] == [
        ("Event", "Shutdown"),
        ("Privilege", "system,all"),
        ("Shutdown", "Cleanly"),
        ("Restart", "True"),
    ]
    names = [f.get("Event") for f in frames]
    assert "Newchannel" not in names  # the refused Originate made nothing
    # every channel is asked at once (cause 4: AST_SOFTHANGUP_SHUTDOWN), then they hang up
    softs = [i for i, name in enumerate(names) if name == "SoftHangupRequest"]
    hangups = [i for i, name in enumerate(names) if name == "Hangup"]
    assert max(softs) < min(hangups) and max(hangups) < len(frames) - 1
    assert {frames[i]["Cause"] for i in softs} == {"4"}
    asked = {frames[i]["Uniqueid"] for i in softs}
    causes = {frames[i]["Uniqueid"]: (frames[i]["Cause"], frames[i]["Cause-txt"]) for i in hangups}
    assert set(causes) == asked and len(asked) == 6  # 2 + 2 (Local pairs) + 1 + 1 (PJSIP)
    assert causes["rs-up"] == causes["rs-ring"] == causes["rs-br-2"] == ("0", "Unknown")
    # a channel in a bridge is kicked out of it with Normal Clearing (bridge_channel.c)
    assert causes["rs-br"] == ("16", "Normal Clearing")
    target = [frames[i] for i in hangups if "@pstn-sim-" in frames[i]["Channel"]]
    target = [f for f in target if f["Channel"].startswith("Local/+15551234599@")]
    leg = {f["Channel"][-2:]: (f["Cause"], f["Cause-txt"]) for f in target}
    assert leg == {";1": ("16", "Normal Clearing"), ";2": ("0", "Unknown")}
    # the ringing call: its dial loop gives up, the channel goes, then the Originate fails
    ring_end = index(frames, event("DialEnd", DestUniqueid="rs-ring"))
    ring_gone = index(frames, event("Hangup", Uniqueid="rs-ring"))
    ring_result = index(frames, event("OriginateResponse", ActionID="rs-ring"))
    assert ring_end < ring_gone < ring_result
    assert frames[ring_end]["DialStatus"] == "NOANSWER"
    assert (frames[ring_result]["Response"], frames[ring_result]["Reason"]) == ("Failure", "0")
    # a session without system events gets the hangups, not the Shutdown, and is closed too
    assert any(event("Hangup", Uniqueid="rs-up")(f) for f in call_frames)
    assert not [f for f in call_frames if f.get("Event") == "Shutdown"]

    restarted.result(timeout=10)
    with pbx_sim.connect() as again:  # FullyBooted at login (consumed by connect)
        listing = again.action("CoreShowChannels")
        complete = again.wait_for(event("CoreShowChannelsComplete"))
        after = answered(again, "PJSIP/+15550000002@MC", "rs-after")
    assert listing["EventList"] == "start" and complete["ListItems"] == "0"
    # a new process: channel names are counted from zero again
    assert after["Channel"] == "PJSIP/MC-00000000"
    assert pbx_sim.active_calls() == 1


def test_restart_without_calls_is_down_for_the_time_asked(pbx_sim: PbxSim) -> None:
    client = pbx_sim.connect()
    restarted = pbx_sim.core_restart(down_for=2.0)
    again = pbx_sim.core_restart(down_for=60.0)  # already in progress: the same restart
    shutdown = client.wait_for(event("Shutdown"))  # no channels to wait for: at once
    until_closed(client)
    client.close()
    assert (shutdown["Shutdown"], shutdown["Restart"]) == ("Cleanly", "True")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((pbx_sim.host, pbx_sim.port), timeout=1).close()
    restarted.result(timeout=10)
    again.result(timeout=1)
    with pbx_sim.connect(events="off") as fresh:
        assert fresh.action("Ping")["Ping"] == "Pong"


def test_cli_sigusr2_restarts_the_pbx(tmp_path: Path) -> None:
    executable = Path(sys.executable).parent / "dialer"
    process = subprocess.Popen(
        [str(executable), "pbx-sim", "--port", "0", "--json", "--speed", "10"]
        + ["--restart-down", "0.5"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DIALER_AMI_USERNAME": "dialer", "DIALER_AMI_SECRET": "s"},
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        client = RawAmi(ready["host"], ready["port"])
        client.login("dialer", "s")
        answered(client, "PJSIP/+15550000099@MC", "usr2-1")
        process.send_signal(signal.SIGUSR2)
        assert "restarting, 1 calls hung up" in process.stdout.readline()
        gone = client.wait_for(event("Hangup", Uniqueid="usr2-1"))
        client.wait_for(event("Shutdown"))
        until_closed(client)
        client.close()
        assert f"listening again on {ready['host']}:{ready['port']}" in process.stdout.readline()
        with RawAmi(ready["host"], ready["port"]) as again:
            again.login("dialer", "s")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert gone["Cause"] == "0"
