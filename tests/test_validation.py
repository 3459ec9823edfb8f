"""Settings validators and the campaign lifecycle table (pure, no database)."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from dialer.campaigns import validation
from dialer.campaigns.service import (
    TRANSITIONS,
    CampaignChanges,
    IllegalTransition,
    next_status,
)
from dialer.campaigns.validation import SettingError
from dialer.models import CAMPAIGN_STATUSES

ACCEPTED = [
    (validation.phone_number, ("+1 212 555 0101", "caller_id", "US"), "+12125550101"),
    (validation.phone_number, ("(212) 555-0101", "caller_id", "US"), "+12125550101"),
    (validation.phone_number, ("020 7946 0958", "caller_id", "GB"), "+442079460958"),
    (validation.optional_phone_number, ("", "transfer_number", "US"), ""),
    (validation.optional_phone_number, ("2125550199", "transfer_number", "US"), "+12125550199"),
    (validation.dtmf_key, ("1", "press_key"), "1"),
    (validation.dtmf_key, ("*", "press_key"), "*"),
    (validation.dtmf_key, ("#", "opt_out_key"), "#"),
    (validation.calling_hours, ("09:00-20:00",), (dt.time(9), dt.time(20))),
    (validation.calling_hours, ("8:30-17:45",), (dt.time(8, 30), dt.time(17, 45))),
    (validation.calling_hours, ("00:00-23:59",), (dt.time(0), dt.time(23, 59))),
    (validation.calling_days, ("mon-fri",), [1, 2, 3, 4, 5]),
    (validation.calling_days, ("mon,wed,sat",), [1, 3, 6]),
    (validation.calling_days, ("Sat-Sun",), [6, 7]),
    (validation.calling_days, ("fri-mon",), [1, 5, 6, 7]),
    (validation.calling_days, ("monday, friday",), [1, 5]),
    (validation.calling_days, ("mon-sun",), [1, 2, 3, 4, 5, 6, 7]),
    (validation.positive_int, ("3", "max_attempts"), 3),
    (validation.positive_int, (30000, "timeout_ms"), 30000),
    (validation.positive_number, ("0.5", "cps"), 0.5),
    (validation.positive_number, ("10", "cps"), 10.0),
    (validation.sound_file, ("welcome_message", "ivr_file"), "welcome_message"),
    (validation.sound_file, ("promo-2026", "ivr_file"), "promo-2026"),
    (validation.optional_sound_file, ("", "ivr_vm_file"), ""),
    (validation.retry_rule, ("busy=30m",), ("busy", 1800)),
    (validation.retry_rule, ("no_answer=2h",), ("no_answer", 7200)),
    (validation.retry_rule, ("congestion=3600",), ("congestion", 3600)),
    (validation.retry_rule, ("machine=90s",), ("machine", 90)),
    (validation.retry_rule, ("failed=1d",), ("failed", 86400)),
    (validation.retry_rule, (" Busy = 5m ",), ("busy", 300)),
    (validation.retry_rules, (["busy=30m", "no_answer=2h"],), {"busy": 1800, "no_answer": 7200}),
    (validation.region, ("US",), "US"),
    (validation.region, ("gb",), "GB"),
    (validation.channel_template, ("PJSIP/{number}@{trunk}",), "PJSIP/{number}@{trunk}"),
    (validation.channel_template, ("Local/{number}@outbound",), "Local/{number}@outbound"),
    (validation.trunk_name, ("MC", "trunk"), "MC"),
    (validation.trunk_name, ("carrier-1.eu", "trunk"), "carrier-1.eu"),
    (validation.name, ("  Spring promo 2026 ",), "Spring promo 2026"),
    (validation.caller_name, ("Acme Sales",), "Acme Sales"),
    (validation.dial_prefix, ("",), ""),
    (validation.dial_prefix, ("9*",), "9*"),
    (validation.dialplan_name, ("DynamicIVR", "context"), "DynamicIVR"),
    (validation.keyword, ("random", "wait_strategy"), "random"),
    (
        validation.timestamp,
        ("2026-03-02T09:00:00-05:00", "start"),
        dt.datetime(2026, 3, 2, 14, tzinfo=dt.UTC),
    ),
    (
        validation.timestamp,
        ("2026-03-02T09:00:00Z", "start"),
        dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC),
    ),
]

REFUSED = [
    (validation.phone_number, ("+1 555 123 4567", "caller_id", "US"), "caller_id", "invalid"),
    (validation.phone_number, ("12", "caller_id", "US"), "caller_id", "impossible number"),
    (validation.phone_number, ("call me", "caller_id", "US"), "caller_id", "not a phone number"),
    (validation.phone_number, ("", "transfer_number", "US"), "transfer_number", "missing"),
    (validation.phone_number, ("+12125550101\r\nX", "caller_id", "US"), "caller_id", "line"),
    (validation.optional_phone_number, ("555", "transfer_number", "US"), "transfer_number", ""),
    (validation.dtmf_key, ("12", "press_key"), "press_key", "DTMF"),
    (validation.dtmf_key, ("a", "press_key"), "press_key", "DTMF"),
    (validation.dtmf_key, ("", "opt_out_key"), "opt_out_key", "DTMF"),
    (validation.calling_hours, ("9-20",), "hours", "HH:MM-HH:MM"),
    (validation.calling_hours, ("20:00-09:00",), "hours", "before the end"),
    (validation.calling_hours, ("09:00-09:00",), "hours", "before the end"),
    (validation.calling_hours, ("09:00-24:00",), "hours", "time of day"),
    (validation.calling_hours, ("09:60-20:00",), "hours", "time of day"),
    (validation.calling_hours, ("09:00-20:00\n",), "hours", "line breaks"),
    (validation.calling_days, ("mon-fry",), "days", "unknown day"),
    (validation.calling_days, ("",), "days", "empty day"),
    (validation.calling_days, ("mon,,tue",), "days", "empty day"),
    (validation.positive_int, ("0", "max_channels"), "max_channels", "greater than zero"),
    (validation.positive_int, ("-3", "max_attempts"), "max_attempts", "greater than zero"),
    (validation.positive_int, ("2.5", "max_channels"), "max_channels", "whole number"),
    (validation.positive_number, ("0", "cps"), "cps", "greater than zero"),
    (validation.positive_number, ("-1", "cps"), "cps", "greater than zero"),
    (validation.positive_number, ("nan", "cps"), "cps", "greater than zero"),
    (validation.positive_number, ("inf", "cps"), "cps", "greater than zero"),
    (validation.positive_number, ("fast", "cps"), "cps", "not a number"),
    (validation.sound_file, ("welcome.wav", "ivr_file"), "ivr_file", "extension"),
    (validation.sound_file, ("custom/welcome", "ivr_file"), "ivr_file", "directory"),
    (validation.sound_file, ("..\\welcome", "ivr_file"), "ivr_file", "directory"),
    (validation.sound_file, ("", "ivr_file"), "ivr_file", "empty"),
    (validation.sound_file, ("wel come", "ivr_file"), "ivr_file", "letters"),
    (validation.sound_file, ("welcome\r\nAction: Hangup", "ivr_file"), "ivr_file", "line"),
    (validation.optional_sound_file, ("vm.gsm", "ivr_vm_file"), "ivr_vm_file", "extension"),
    (validation.retry_rule, ("busy",), "retry", "OUTCOME=DELAY"),
    (validation.retry_rule, ("busy=",), "retry", "OUTCOME=DELAY"),
    (validation.retry_rule, ("=30m",), "retry", "OUTCOME=DELAY"),
    (validation.retry_rule, ("busy=30x",), "retry", "delay"),
    (validation.retry_rule, ("busy=-5",), "retry", "delay"),
    (validation.retry_rule, ("busy=0",), "retry", "greater than zero"),
    (validation.retry_rule, ("busy=8d",), "retry", "7 days"),
    (validation.retry_rule, ("no answer=1h",), "retry", "lowercase word"),
    (validation.retry_rules, (["busy=1m", "busy=2m"],), "retry", "twice"),
    (validation.region, ("USA",), "region", "region code"),
    (validation.region, ("XX",), "region", "region code"),
    (validation.channel_template, ("PJSIP/123@MC",), "channel_template", "{number}"),
    (validation.channel_template, ("PJSIP/{num}@{number}",), "channel_template", "placeholder"),
    (validation.channel_template, ("PJSIP/{number}@MC\r\n",), "channel_template", "line"),
    (validation.channel_template, ("PJSIP/{number}@M C",), "channel_template", "spaces"),
    (validation.channel_template, ("PJSIP/{number}@east,west",), "channel_template", "commas"),
    (validation.trunk_name, ("bad name", "trunk"), "trunk", "letters"),
    (validation.trunk_name, ("", "name"), "name", "letters"),
    (validation.name, ("   ",), "name", "empty"),
    (validation.name, ("x" * 101,), "name", "at most"),
    (validation.name, ("spring\nautumn",), "name", "line"),
    (validation.caller_name, ('Acme "Sales"',), "caller_name", "must not contain"),
    (validation.caller_name, ("<Acme>",), "caller_name", "must not contain"),
    (validation.caller_name, ("Acme\r\n",), "caller_name", "line"),
    (validation.dial_prefix, ("9,",), "transfer_prefix", "digits"),
    (validation.dialplan_name, ("Dynamic IVR", "context"), "context", "letters"),
    (validation.dialplan_name, ("s\n", "exten"), "exten", "line"),
    (validation.keyword, ("Random!", "wait_strategy"), "wait_strategy", "lowercase"),
    (validation.timestamp, ("2026-03-02 09:00", "start"), "start", "UTC offset"),
    (validation.timestamp, ("next monday", "end"), "end", "ISO 8601"),
    (validation.single_line, ("a\x00b", "reason"), "reason", "NUL"),
]


@pytest.mark.parametrize(("validator", "args", "expected"), ACCEPTED)
def test_accepted_values(validator, args, expected) -> None:
    assert validator(*args) == expected


@pytest.mark.parametrize(("validator", "args", "field", "fragment"), REFUSED)
def test_refused_values_name_the_field(validator, args, field, fragment) -> None:
    with pytest.raises(SettingError) as caught:
        validator(*args)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    "days", [[1, 2, 3, 4, 5], [1, 3, 6], [6, 7], [1, 5, 6, 7], [2], list(range(1, 8))]
)
def test_format_days_round_trips(days: list[int]) -> None:
    assert validation.calling_days(validation.format_days(days)) == days


def test_campaign_changes_validate_together() -> None:
    values = CampaignChanges(
        caller_id="020 7946 0958",
        region="gb",
        press_key="2",
        opt_out_key="9",
        hours="10:00-18:00",
        retry=["busy=30m"],
        amd=False,
    ).validated(None)
    assert values["region"] == "GB"
    # The caller ID is read with the region given in the same change.
    assert values["caller_id_number"] == "+442079460958"
    assert values["calling_hours_start"] == dt.time(10)
    assert values["retry_delays"] == {"busy": 1800}
    assert values["amd_enabled"] is False


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (CampaignChanges(opt_out_key="1"), "opt_out_key"),  # equals the default press key
        (CampaignChanges(press_key="9", opt_out_key="9"), "opt_out_key"),
        (CampaignChanges(caller_id="+1 555 123 4567"), "caller_id"),
        (CampaignChanges(transfer_number="12345"), "transfer_number"),
        (CampaignChanges(timeout_ms="0"), "timeout_ms"),
        (CampaignChanges(ivr_file="welcome.wav"), "ivr_file"),
        (CampaignChanges(caller_name="x\r\ny"), "caller_name"),
    ],
)
def test_campaign_changes_refused(changes: CampaignChanges, field: str) -> None:
    with pytest.raises(SettingError) as caught:
        changes.validated(None)
    assert caught.value.field == field


LEGAL = {
    ("draft", "schedule"): "scheduled",
    ("scheduled", "schedule"): "scheduled",
    ("draft", "start"): "running",
    ("scheduled", "start"): "running",
    ("running", "pause"): "paused",
    ("paused", "resume"): "running",
    ("running", "complete"): "completed",
    ("draft", "stop"): "cancelled",
    ("scheduled", "stop"): "cancelled",
    ("running", "stop"): "cancelled",
    ("paused", "stop"): "cancelled",
}
ILLEGAL = [pair for pair in itertools.product(CAMPAIGN_STATUSES, TRANSITIONS) if pair not in LEGAL]


@pytest.mark.parametrize(("status", "action"), sorted(LEGAL))
def test_legal_transitions(status: str, action: str) -> None:
    assert next_status("spring", status, action) == LEGAL[(status, action)]


@pytest.mark.parametrize(("status", "action"), ILLEGAL)
def test_illegal_transitions_are_refused_with_the_reason(status: str, action: str) -> None:
    with pytest.raises(IllegalTransition) as caught:
        next_status("spring", status, action)
    assert f"cannot {action} campaign 'spring': it is {status}" in str(caught.value)


def test_final_statuses_say_so() -> None:
    for status in ("completed", "cancelled"):
        with pytest.raises(IllegalTransition, match="final"):
            next_status("spring", status, "start")
    with pytest.raises(IllegalTransition, match="use `resume`"):
        next_status("spring", "paused", "start")
