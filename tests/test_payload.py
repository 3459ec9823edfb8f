"""The Originate payload reproduces the specification's scenarios exactly, and refuses bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from dialer.ami import wire as amiwire
from dialer.ami.wire import VARIABLE_ORDER, is_local_channel
from dialer.cli import cli
from dialer.dialing.payload import (
    PAYLOAD_KEYS,
    CallSettings,
    OriginateTemplate,
    PayloadError,
    TrunkRoute,
    build_originate_payload,
    custom_call_id,
)

SPEC = (Path(__file__).parent / "data" / "originate_payload_spec.md").read_text()
SEED_CALL = ["--to", "+1234567890", "--from", "+19876543210", "--trunk", "MC"]
SEED_CALL += ["--call-id", "1704067200000_12345"]


def _spec_json(heading: str) -> str:
    """The JSON block that follows `heading` in the specification, verbatim."""
    section = SPEC.split(heading, 1)[1]
    return re.search(r"```json\n(.*?)\n```", section, re.S).group(1)


SCENARIOS = {
    "scenario 1: with transfer number": (
        _spec_json("### Scenario 1"),
        [
            *SEED_CALL,
            "--transfer-number",
            "+15551234567",
            "--ivr-file",
            "appointment_reminder",
            "--ivr-vm-file",
            "appointment_reminder",
        ],
    ),
    "scenario 2: without transfer number": (_spec_json("### Scenario 2"), SEED_CALL),
}


@pytest.mark.parametrize(("expected", "args"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_preview_prints_the_spec_scenario_exactly(expected: str, args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["payload", "preview", *args])
    assert result.exit_code == 0, result.output
    assert result.output == expected + "\n"
    # Structure too: key order at both levels (json.loads keeps order).
    printed, spec = json.loads(result.output), json.loads(expected)
    assert list(printed) == list(spec) == list(PAYLOAD_KEYS)
    assert list(printed["variable"]) == list(spec["variable"]) == list(VARIABLE_ORDER)


def test_library_builds_the_spec_payload() -> None:
    payload = build_originate_payload(
        call_id=custom_call_id(1704067200000, 12345),
        to_number="+1234567890",
        from_number="+19876543210",
        settings=CallSettings(ivr_file="welcome_message"),
        trunk=TrunkRoute(),
    )
    assert json.dumps(payload, indent=2) == _spec_json("### Scenario 2")
    assert payload["priority"] == 1 and payload["timeout"] == 30000 and payload["async"] is True


def test_a_campaign_template_gives_the_same_payload_as_the_builder() -> None:
    settings = CallSettings(ivr_file="welcome_message", transfer_number="(212) 555-0199")
    trunk = TrunkRoute(name="MC")
    template = OriginateTemplate.build(from_number="212-555-0100", settings=settings, trunk=trunk)
    for n, to in enumerate(["+12125550123", "+442079460000"]):
        call_id = custom_call_id(1704067200000, n)
        built = build_originate_payload(
            call_id=call_id,
            to_number=to,
            from_number="212-555-0100",
            settings=settings,
            trunk=trunk,
        )
        assert json.dumps(template.payload(call_id, to)) == json.dumps(built)


@pytest.mark.parametrize(
    "to", ["2125550123", "+1 212 555 0123", "+9991234567", "+0123", "", "+12125550123\r\n"]
)
def test_a_template_takes_only_e164_numbers_of_known_countries(to: str) -> None:
    template = OriginateTemplate.build(
        from_number="+12125550100", settings=CallSettings(), trunk=TrunkRoute()
    )
    with pytest.raises(PayloadError, match="to: "):
        template.payload("1_1", to)


def test_national_numbers_use_the_region_and_names_default_to_the_number() -> None:
    payload = build_originate_payload(
        call_id="1_2",
        to_number="+1 (212) 555-0101",
        from_number="020 7946 0018",
        settings=CallSettings(
            region="GB",
            transfer_number="07700 900123",
            caller_id_name=None,
            amd_enabled=False,
            press_key="#",
        ),
        trunk=TrunkRoute(),
    )
    assert payload["variable"]["to"] == payload["variable"]["TO_NUMBER"] == "+12125550101"
    assert payload["variable"]["from"] == "+442079460018"
    assert payload["variable"]["transfer_number"] == "+447700900123"
    assert payload["callerid"] == '"+442079460018" <+442079460018>'
    assert payload["variable"]["AMD_ENABLED"] == "false"
    assert payload["variable"]["PRESS_KEY"] == "#"


def test_caller_name_and_local_channel_template() -> None:
    payload = build_originate_payload(
        call_id="1704067200000_7",
        to_number="5550000001",
        from_number="5559990000",
        settings=CallSettings(caller_id_name="Clinic Reminders"),
        trunk=TrunkRoute(name="lab", channel_template="Local/{number}@pstn-sim"),
    )
    assert payload["channel"] == "Local/+15550000001@pstn-sim"
    assert payload["callerid"] == '"Clinic Reminders" <+15559990000>'
    assert payload["variable"]["trunk"] == payload["variable"]["TRUNK"] == "lab"
    assert is_local_channel(payload["channel"])
    assert not is_local_channel("PJSIP/+15550000001@MC")


def test_custom_call_id_shape() -> None:
    assert custom_call_id(1704067200000, 12345) == "1704067200000_12345"
    with pytest.raises(PayloadError):
        custom_call_id(-1, 3)


BASE = {
    "call_id": "1704067200000_1",
    "to_number": "+15550000001",
    "from_number": "+15559990000",
    "settings": CallSettings(),
    "trunk": TrunkRoute(),
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"to_number": "not a number"}, "to:"),
        ({"to_number": ""}, "to:"),
        ({"from_number": "+1"}, "from:"),
        ({"settings": CallSettings(transfer_number="call me")}, "transfer number:"),
        ({"call_id": "abc"}, "call id"),
        ({"call_id": "1704067200000_1,x"}, "call id"),
        ({"settings": CallSettings(press_key="12")}, "press key"),
        ({"settings": CallSettings(priority=0)}, "priority"),
        ({"settings": CallSettings(timeout_ms=0)}, "timeout"),
        ({"settings": CallSettings(context="")}, "context"),
        ({"settings": CallSettings(caller_id_name='a" <1>')}, "caller name"),
        ({"trunk": TrunkRoute(channel_template="PJSIP/fixed@MC")}, "{number}"),
        ({"trunk": TrunkRoute(name="")}, "trunk"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(change: dict, message: str) -> None:
    with pytest.raises(PayloadError, match=re.escape(message)):
        build_originate_payload(**{**BASE, **change})


def test_cli_refuses_invalid_number_and_unsafe_value() -> None:
    runner = CliRunner()
    bad_number = runner.invoke(
        cli, ["payload", "preview", "--to", "nobody", "--from", "+15559990000"]
    )
    assert bad_number.exit_code != 0
    assert "to:" in bad_number.output
    unsafe = runner.invoke(
        cli,
        [*["payload", "preview", *SEED_CALL], "--ivr-file", "x\r\n\r\nAction: Hangup"],
    )
    assert unsafe.exit_code != 0
    assert "CR, LF or NUL" in unsafe.output
    assert "Action: Hangup" not in unsafe.output


def test_cli_wire_prints_the_ami_frame() -> None:
    result = CliRunner().invoke(
        cli,
        [
            *["payload", "preview", *SEED_CALL, "--wire"],
            *["--channel-template", "Local/{number}@pstn-sim", "--ivr-file", "a,b"],
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.split("\n")
    assert lines[:3] == ["Action: Originate", "ActionID: 1704067200000_12345",
                         "Channel: Local/+1234567890@pstn-sim"]  # fmt: skip
    assert "Async: true" in lines
    assert "Variable: ivr_file=a\\,b" in lines
    assert lines[-4:] == [
        "ChannelId: 1704067200000_12345",
        "OtherChannelId: 1704067200000_12345-2",
        "",
        "",
    ]
    as_json = CliRunner().invoke(cli, ["payload", "preview", *SEED_CALL, "--wire", "--json"])
    assert json.loads(as_json.output)[0] == ["Action", "Originate"]


# -- where the transfer leaves ---------------------------------------------------------------------

TRANSFER = CallSettings(transfer_number="+15551234567")


def _variables(trunk: TrunkRoute, settings: CallSettings = TRANSFER) -> dict[str, str]:
    return build_originate_payload(**{**BASE, "settings": settings, "trunk": trunk})["variable"]


def test_a_template_naming_another_endpoint_sends_the_transfer_dial_string_last() -> None:
    variables = _variables(TrunkRoute("MC", "PJSIP/{number}@carrier-east"))
    assert list(variables) == [*VARIABLE_ORDER, "transfer_dial", "TRANSFER_DIAL"]
    assert variables["transfer_dial"] == "PJSIP/+15551234567@carrier-east"
    assert variables["TRANSFER_DIAL"] == variables["transfer_dial"]
    prefixed = _variables(
        TrunkRoute("MC", "PJSIP/{number}@carrier-east"),
        CallSettings(transfer_number="+15551234567", transfer_prefix="9"),
    )
    assert prefixed["TRANSFER_DIAL"] == "PJSIP/9+15551234567@carrier-east"
    lab = _variables(TrunkRoute("lab", "Local/{number}@transfer-sim"))
    assert lab["TRANSFER_DIAL"] == "Local/+15551234567@transfer-sim"


@pytest.mark.parametrize(
    "trunk",
    [
        TrunkRoute(),
        TrunkRoute("MC", "PJSIP/{number}@MC"),
        TrunkRoute("east", "PJSIP/{number}@{trunk}"),
    ],
    ids=["default", "the trunk's own name", "{trunk}"],
)
def test_no_transfer_dial_when_the_dialplan_builds_the_same_string(trunk: TrunkRoute) -> None:
    assert list(_variables(trunk)) == list(VARIABLE_ORDER)


def test_no_transfer_dial_without_a_transfer_number() -> None:
    variables = _variables(TrunkRoute("MC", "PJSIP/{number}@carrier-east"), CallSettings())
    assert list(variables) == list(VARIABLE_ORDER)


def test_the_transfer_dial_string_is_worked_out_once_per_template() -> None:
    template = OriginateTemplate.build(
        from_number="+15559990000",
        settings=TRANSFER,
        trunk=TrunkRoute("MC", "PJSIP/{number}@carrier-east"),
    )
    assert template.transfer_dial == "PJSIP/+15551234567@carrier-east"
    first = template.payload("1_1", "+12125550123")
    second = template.payload("1_2", "+442079460000")
    assert first["variable"]["TRANSFER_DIAL"] is second["variable"]["TRANSFER_DIAL"]


def test_the_wire_sends_the_transfer_dial_string_after_the_specs_variables() -> None:
    payload = build_originate_payload(
        **{**BASE, "settings": TRANSFER, "trunk": TrunkRoute("MC", "PJSIP/{number}@carrier-east")}
    )
    # jsonb gives keys back sorted by length, then bytes
    payload["variable"] = dict(sorted(payload["variable"].items(), key=lambda i: (len(i[0]), i[0])))
    names = [v.split("=", 1)[0] for k, v in amiwire.originate_headers(payload) if k == "Variable"]
    assert names == [*VARIABLE_ORDER, "transfer_dial", "TRANSFER_DIAL"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trunk": TrunkRoute("MC", "PJSIP/{number}@east,west")}, "channel template"),
        ({"trunk": TrunkRoute("MC", "PJSIP/{number}@east\r\nAction: Hangup")}, "channel template"),
        ({"trunk": TrunkRoute("a,b", "PJSIP/{number}@{trunk}")}, "channel template"),
        ({"settings": CallSettings(transfer_prefix="9,1")}, "transfer prefix"),
        ({"settings": CallSettings(transfer_prefix="9\n")}, "transfer prefix"),
    ],
)
def test_dial_strings_dial_and_the_header_cannot_carry_are_refused(
    change: dict, message: str
) -> None:
    with pytest.raises(PayloadError, match=re.escape(message)):
        build_originate_payload(**{**BASE, **change})
