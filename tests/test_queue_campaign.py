"""Queue campaigns' settings: the commands, their refusals, and the payload's queue variable."""

from __future__ import annotations

import json

import pytest

from dialer.campaigns.validation import SettingError, queue_name, ratio
from dialer.dialing.payload import CallSettings, TrunkRoute, build_originate_payload


@pytest.fixture
def trunk(dialer) -> None:
    dialer("trunk", "add", "MC", "--cps", "10", "--max-channels", "30")


def test_a_queue_campaign_is_created_shown_and_changed(dialer, trunk) -> None:
    created = json.loads(
        dialer(
            "campaign", "create", "sales", "--trunk", "MC", "--caller-id", "+12125550100",
            "--ivr-file", "offer", "--transfer-queue", "sales-1", "--pace-by-queue",
            "--abandon-target", "2.5%", "--json",
        ).output
    )  # fmt: skip
    assert (created["transfer_queue"], created["pace_by_queue"]) == ("sales-1", True)
    assert created["abandon_target"] == pytest.approx(0.025)
    changed = json.loads(dialer("campaign", "set", "sales", "--no-pace-by-queue", "--json").output)
    assert changed["pace_by_queue"] is False and changed["transfer_queue"] == "sales-1"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (["--pace-by-queue"], "pace_by_queue"),
        (["--transfer-queue", "a,b"], "transfer_queue"),
        (["--transfer-queue", "-x"], "transfer_queue"),
        (["--transfer-queue", "q", "--abandon-target", "0"], "abandon_target"),
        (["--transfer-queue", "q", "--abandon-target", "100%"], "abandon_target"),
        (["--transfer-queue", "q", "--abandon-target", "lots"], "abandon_target"),
    ],
)
def test_bad_queue_settings_are_refused_naming_the_field(
    dialer, trunk, options: list[str], field: str
) -> None:
    result = dialer(
        "campaign", "create", "sales", "--trunk", "MC", "--caller-id", "+12125550100",
        "--ivr-file", "offer", *options, ok=False,
    )  # fmt: skip
    assert field in result.output
    assert "sales" not in dialer("campaign", "list").output


def test_clearing_the_queue_of_a_paced_campaign_is_refused(dialer, trunk) -> None:
    dialer(
        "campaign", "create", "sales", "--trunk", "MC", "--caller-id", "+12125550100",
        "--ivr-file", "offer", "--transfer-queue", "sales", "--pace-by-queue",
    )  # fmt: skip
    result = dialer("campaign", "set", "sales", "--transfer-queue", "", ok=False)
    assert "transfer_queue" in result.output


@pytest.mark.parametrize(("text", "value"), [("0.03", 0.03), ("3%", 0.03), (" 10% ", 0.1)])
def test_ratio(text: str, value: float) -> None:
    assert ratio(text, "abandon_target") == pytest.approx(value)


@pytest.mark.parametrize("bad", ["sales\r\nAction: Hangup", "a b", "x" * 81])
def test_queue_names_that_could_not_reach_the_dialplan_are_refused(bad: str) -> None:
    with pytest.raises(SettingError) as refused:
        queue_name(bad)
    assert refused.value.field == "transfer_queue"


def _payload(**settings: object) -> dict:
    return build_originate_payload(
        call_id="1764633600000_1",
        to_number="+12125550101",
        from_number="+12125550100",
        settings=CallSettings(ivr_file="offer", **settings),  # type: ignore[arg-type]
        trunk=TrunkRoute(),
    )


def test_the_queue_goes_in_both_cases_only_for_queue_campaigns() -> None:
    variables = _payload(transfer_queue="sales")["variable"]
    assert (variables["transfer_queue"], variables["TRANSFER_QUEUE"]) == ("sales", "sales")
    plain = _payload()["variable"]
    assert "transfer_queue" not in plain and "TRANSFER_QUEUE" not in plain
