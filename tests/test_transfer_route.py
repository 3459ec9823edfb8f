"""Transfers leave through the trunk's channel template, not through an endpoint named after the
trunk: the payload's TRANSFER_DIAL, the operator's DIALER_TRANSFER_DIAL, the reference dialplan
that uses them, and the simulator that plays it (an endpoint that does not exist fails the Dial()
as on Asterisk)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from dialer.ami.client import AmiClient
from dialer.dialing.payload import CallSettings, TrunkRoute, build_originate_payload
from dialer.outcomes.listener import Listener
from tests.support_listener import Attempt, add_attempts, add_campaign
from tests.support_pbx import Frame, PbxSim, RawAmi
from tests.test_listener_e2e import (
    _mark_sent,
    assert_each_ended_once,
    connected,
    fast_options,
    wait_all_ended,
)
from tests.test_pbxsim_calls import IVR_VARIABLES, call_events, originate, user_events

DIALPLAN = Path(__file__).resolve().parents[1] / "dialer" / "asterisk" / "dialer-ivr.conf"
CARRIER = frozenset({"carrier-east"})
TARGET = "+15551234567"
TRUNK_MC = [("Variable", "trunk=MC"), ("Variable", "TRUNK=MC")]


def dial_begins(events: list[Frame], caller: str) -> list[Frame]:
    return [f for f in events if f.get("Event") == "DialBegin" and f.get("Uniqueid") == caller]


# -- the reference dialplan ------------------------------------------------------------------------


def test_the_dialplan_dials_the_transfer_channel_it_worked_out() -> None:
    text = DIALPLAN.read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(";")]
    dials = [line for line in lines if "Dial(" in line]
    assert dials == [
        " same => n,Dial(${TRANSFER_CHANNEL},30,g)",
        " same => n(dial),Dial(${TRANSFER_CHANNEL},30)",
    ]
    # `PJSIP/` is written only in the two fallbacks, each replaced by the dialer's dial string
    # when it sent one.
    pjsip = [line for line in lines if "PJSIP/" in line]
    assert pjsip == [
        " same => n(transfer),Set(TRANSFER_CHANNEL=PJSIP/${TRANSFER_PREFIX}${TRANSFER_NUMBER}"
        "@${TRUNK})",
        " same => n,Set(TRANSFER_CHANNEL=PJSIP/${TRANSFER_PREFIX}${EXTEN}@${TRUNK})",
    ]
    for variable in ("TRANSFER_DIAL", "DIALER_TRANSFER_DIAL"):
        tests = [line for line in lines if f"LEN(${{{variable}}})" in line]
        assert tests and all("GotoIf($[" in line for line in tests), variable
        assert not [line for line in lines if "ExecIf" in line and variable in line], variable
    assert " same => n,Set(TRANSFER_CHANNEL=${TRANSFER_DIAL})" in lines
    assert " same => n,Set(TRANSFER_CHANNEL=${DIALER_TRANSFER_DIAL})" in lines
    assert " same => n,Set(TRANSFER_DIAL=${transfer_dial})" in lines
    # both variables are documented at the top of the file
    header = text.split("\n[dialer-ivr-variables]\n", 1)[0]
    assert re.search(r";\s+TRANSFER_DIAL\s", header)
    assert re.search(r";\s+DIALER_TRANSFER_DIAL\s", header)


# -- the simulator ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pbx_sim", [{"speed": 100, "endpoints": CARRIER}], indirect=True)
def test_press1_transfer_dials_the_templates_endpoint_and_the_trunk_name_fails(
    pbx_sim: PbxSim,
) -> None:
    through_template = [
        *IVR_VARIABLES,
        *TRUNK_MC,
        ("Variable", f"transfer_dial=PJSIP/{TARGET}@carrier-east"),
        ("Variable", f"TRANSFER_DIAL=PJSIP/{TARGET}@carrier-east"),
    ]
    with pbx_sim.connect() as client:
        originate(client, "PJSIP/+15550000001@carrier-east", "tr-1", variables=through_template)
        events = call_events(client, "tr-1")
        # what the old dialplan did: PJSIP/<number>@<trunk name>, an endpoint that is not there
        by_trunk_name = [*IVR_VARIABLES, *TRUNK_MC]
        originate(client, "PJSIP/+15550000001@carrier-east", "tr-2", variables=by_trunk_name)
        old = call_events(client, "tr-2")
    assert user_events(events)[-2:] == [
        ("DialerTransfer", TARGET, f"PJSIP/{TARGET}@carrier-east"),
        ("DialerTransferResult", "ANSWER"),
    ]
    [begin] = dial_begins(events, "tr-1")
    assert begin["DialString"] == f"{TARGET}@carrier-east"
    assert begin["DestChannel"].startswith("PJSIP/carrier-east-")
    assert user_events(old)[-2:] == [
        ("DialerTransfer", TARGET, f"PJSIP/{TARGET}@MC"),
        ("DialerTransferResult", "CHANUNAVAIL"),
    ]
    assert dial_begins(old, "tr-2") == []  # no channel was ever created for it


@pytest.mark.parametrize("pbx_sim", [{"speed": 100}], indirect=True)
def test_a_lab_template_transfers_through_a_local_channel(pbx_sim: PbxSim) -> None:
    lab = [
        *IVR_VARIABLES,
        ("Variable", "trunk=lab"),
        ("Variable", f"transfer_dial=Local/{TARGET}@transfer-sim"),  # the lowercase copy is read
    ]
    with pbx_sim.connect() as client:
        originate(client, "Local/+15550000001@pstn-sim", "tr-lab", variables=lab)
        events = call_events(client, "tr-lab")
    assert user_events(events)[-2:] == [
        ("DialerTransfer", TARGET, f"Local/{TARGET}@transfer-sim"),
        ("DialerTransferResult", "ANSWER"),
    ]
    [begin] = dial_begins(events, "tr-lab")
    assert begin["DialString"] == f"{TARGET}@transfer-sim"
    assert begin["DestChannel"].startswith(f"Local/{TARGET}@transfer-sim-")


def answered_through_carrier(client: RawAmi, call_id: str) -> str:
    originate(
        client, "PJSIP/+15550000099@carrier-east", call_id, variables=[*IVR_VARIABLES, *TRUNK_MC]
    )
    result = client.peek_for(
        lambda f: f.get("Event") == "OriginateResponse" and f.get("ActionID") == call_id
    )
    assert result["Response"] == "Success"
    return result["Channel"]


def redirect_to(client: RawAmi, channel: str, number: str) -> None:
    reply = client.action(
        "Redirect",
        ("Channel", channel),
        ("Context", "dialer-transfer"),
        ("Exten", number),
        ("Priority", "1"),
    )
    assert reply["Message"] == "Redirect successful"


@pytest.mark.parametrize("pbx_sim", [{"speed": 10, "endpoints": CARRIER}], indirect=True)
def test_dialer_transfer_dials_the_dial_string_set_on_the_channel(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect() as client:
        channel = answered_through_carrier(client, "op-1")
        reply = client.action(
            "Setvar",
            ("Channel", channel),
            ("Variable", "DIALER_TRANSFER_DIAL"),
            ("Value", f"PJSIP/{TARGET}@carrier-east"),
        )
        assert reply["Response"] == "Success"
        redirect_to(client, channel, TARGET)
        end = client.wait_for(lambda f: f.get("Event") == "DialEnd" and f.get("Uniqueid") == "op-1")
        begins = dial_begins(client.drain(0.1), "op-1")
        client.action("Hangup", ("Channel", channel))
        # without it, the fallback's endpoint is the trunk's name: no such endpoint
        other = answered_through_carrier(client, "op-2")
        redirect_to(client, other, TARGET)
        gone = client.wait_for(lambda f: f.get("Event") == "Hangup" and f["Uniqueid"] == "op-2")
        rest = client.drain(0.1)
    assert end["DialStatus"] == "ANSWER"
    assert end["DestChannel"].startswith("PJSIP/carrier-east-")
    assert [b["DialString"] for b in begins] == [f"{TARGET}@carrier-east"]
    assert (gone["Context"], gone["Exten"]) == ("dialer-transfer", TARGET)
    assert dial_begins(rest, "op-2") == []


# -- end to end: payload, simulator, listener, outcome ---------------------------------------------


def carrier_payload(attempt: Attempt, *, with_transfer_dial: bool) -> dict[str, Any]:
    payload = build_originate_payload(
        call_id=attempt.custom_call_id,
        to_number=attempt.phone,
        from_number="+15559990000",
        settings=CallSettings(ivr_file="welcome_message", transfer_number=TARGET, timeout_ms=2000),
        trunk=TrunkRoute(name="MC", channel_template="PJSIP/{number}@carrier-east"),
    )
    assert payload["channel"] == f"PJSIP/{attempt.phone}@carrier-east"
    assert payload["variable"]["TRANSFER_DIAL"] == f"PJSIP/{TARGET}@carrier-east"
    if not with_transfer_dial:  # as the dialer sent it before
        del payload["variable"]["transfer_dial"], payload["variable"]["TRANSFER_DIAL"]
    return payload


@pytest.mark.parametrize("pbx_sim", [{"speed": 50, "endpoints": CARRIER}], indirect=True)
def test_a_press1_call_through_another_endpoint_ends_transferred(
    engine: Engine, pbx_sim: PbxSim
) -> None:
    campaign = add_campaign(engine, trunk="MC")
    now, before = add_attempts(engine, campaign, ["+15550000101", "+15550000201"])
    listener = Listener(engine, pbx_sim.server, options=fast_options())

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(listener.run(stop))
        await connected(listener)
        async with AmiClient(pbx_sim.server, events=False) as client:
            for attempt, with_transfer_dial in ((now, True), (before, False)):
                await client.originate(
                    carrier_payload(attempt, with_transfer_dial=with_transfer_dial)
                )
                await asyncio.to_thread(_mark_sent, engine, attempt.id)
        await wait_all_ended(engine, 30)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    rows = assert_each_ended_once(engine, [now, before])
    assert rows[now.id].outcome == "transferred"
    assert rows[before.id].outcome == "failed"  # the transfer could not be made
