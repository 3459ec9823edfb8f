"""Admin commands through the command runner, checked against the database they change."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from dialer.campaigns import service as campaigns
from dialer.cli import cli
from dialer.db import transaction
from dialer.models import CAMPAIGN_STATUSES, Campaign, Contact, DncNumber, Trunk

FIXTURES = Path(__file__).parent / "fixtures"
OPERATOR_ACTIONS = ("schedule", "start", "pause", "resume", "stop")
FUTURE = "2999-01-04T09:00:00+00:00"


@pytest.fixture
def spring(dialer) -> str:
    dialer("trunk", "add", "MC", "--cps", "10", "--max-channels", "30")
    dialer(
        "campaign", "create", "spring", "--trunk", "MC", "--caller-id", "(212) 555-0100",
        "--ivr-file", "welcome",
    )  # fmt: skip
    return "spring"


def _campaign(session_factory: sessionmaker[Session], name: str = "spring") -> Campaign:
    with session_factory() as session:
        return session.scalars(select(Campaign).where(Campaign.name == name)).one()


def _add_contacts(session_factory, name: str, statuses: list[str]) -> None:
    with transaction(session_factory) as session:
        campaign_id = session.scalar(select(Campaign.id).where(Campaign.name == name))
        for i, status in enumerate(statuses):
            session.add(
                Contact(
                    campaign_id=campaign_id,
                    phone_e164=f"+1212555{i:04d}",
                    phone_raw=f"212555{i:04d}",
                    status=status,
                )
            )


def _set_status(session_factory, name: str, status: str) -> None:
    with transaction(session_factory) as session:
        session.execute(update(Campaign).where(Campaign.name == name).values(status=status))


# Trunks


def test_trunk_add_set_list(dialer, session_factory) -> None:
    out = dialer("trunk", "add", "MC", "--cps", "12.5", "--max-channels", "30", "--json")
    assert json.loads(out.output)["routes"] == [
        {"pbx": "default", "channel_template": "PJSIP/{number}@{trunk}"}
    ]
    dialer("trunk", "set", "MC", "--cps", "20", "--disable")
    listed = json.loads(dialer("trunk", "list", "--json").output)
    assert [(t["name"], t["cps"], t["enabled"], t["channels_in_use"]) for t in listed] == [
        ("MC", 20.0, False, 0)
    ]
    with session_factory() as session:
        trunk = session.scalars(select(Trunk)).one()
    assert (trunk.cps, trunk.max_channels, trunk.enabled) == (20.0, 30, False)
    assert "MC" in dialer("trunk", "list").output


TRUNK_REFUSALS = [
    (["--cps", "0", "--max-channels", "3"], "cps: must be a number greater than zero"),
    (["--cps", "1", "--max-channels", "-1"], "max_channels: must be greater than zero"),
    (
        ["--cps", "1", "--max-channels", "1", "--channel-template", "PJSIP/x@MC"],
        "channel_template:",
    ),
    (
        ["--cps", "1", "--max-channels", "1", "--channel-template", "PJSIP/{number}\r\n@MC"],
        "channel_template: must not contain line breaks",
    ),
]


def test_trunk_settings_are_refused_with_the_field_named(dialer, session_factory) -> None:
    for args, message in TRUNK_REFUSALS:
        result = dialer("trunk", "add", "MC", *args, ok=False)
        assert message in result.output, args
    with session_factory() as session:
        assert session.scalars(select(Trunk)).all() == []


def test_trunk_names_are_unique_and_safe(dialer) -> None:
    dialer("trunk", "add", "MC", "--cps", "1", "--max-channels", "1")
    assert (
        "exists already"
        in dialer("trunk", "add", "MC", "--cps", "1", "--max-channels", "1", ok=False).output
    )
    assert (
        "name:"
        in dialer("trunk", "add", "M C", "--cps", "1", "--max-channels", "1", ok=False).output
    )
    assert "no trunk named 'XX'" in dialer("trunk", "set", "XX", "--cps", "2", ok=False).output


def _routes(dialer) -> dict[str, list[tuple[str, str]]]:
    listed = json.loads(dialer("trunk", "list", "--json").output)
    return {t["name"]: [(r["pbx"], r["channel_template"]) for r in t["routes"]] for t in listed}


def test_trunk_routes_add_change_and_remove(dialer) -> None:
    """A trunk reachable through several PBXs, each with its own dial string; every bad
    input is refused with its reason and changes nothing."""
    dialer("trunk", "add", "MC", "--cps", "10", "--max-channels", "30")
    unknown = dialer("trunk", "route", "add", "MC", "east", ok=False).output
    assert "unknown PBX 'east'" in unknown and "dialer pbx set east" in unknown
    assert "not a PBX name" in dialer("trunk", "route", "add", "MC", "East", ok=False).output
    assert _routes(dialer) == {"MC": [("default", "PJSIP/{number}@{trunk}")]}

    # Registered, though this host has no AMI settings for it: accepted with a warning.
    registered = dialer("pbx", "set", "east", "--cps", "50", "--max-channels", "100")
    assert "warning: PBX 'east' is not configured on this host" in registered.output
    added = dialer(
        "trunk", "route", "add", "MC", "east", "--channel-template", "PJSIP/{number}@mc-east"
    )  # fmt: skip
    assert "warning: PBX 'east' is not configured on this host" in added.output
    assert _routes(dialer) == {
        "MC": [("default", "PJSIP/{number}@{trunk}"), ("east", "PJSIP/{number}@mc-east")]
    }
    again = dialer("trunk", "route", "add", "MC", "east", ok=False).output
    assert "trunk MC already has a route on PBX east" in again
    bad = dialer(
        "trunk", "route", "add", "MC", "default", "--channel-template", "PJSIP/1@x", ok=False
    ).output  # fmt: skip
    assert "channel_template:" in bad

    # Which route a template is for must be said once there are several.
    which = dialer("trunk", "set", "MC", "--channel-template", "PJSIP/{number}@x", ok=False)
    assert "has routes on default, east: say which with --pbx" in which.output
    dialer("trunk", "set", "MC", "--pbx", "east", "--channel-template", "PJSIP/{number}@mc-e2")
    assert _routes(dialer)["MC"][1] == ("east", "PJSIP/{number}@mc-e2")
    several = dialer("trunk", "set", "MC", "--pbx", "west", ok=False).output
    assert "has routes on default, east, none on west" in several

    dialer("trunk", "route", "remove", "MC", "default")
    missing = dialer("trunk", "route", "remove", "MC", "default", ok=False).output
    assert "trunk MC has no route on PBX 'default' (it has: east)" in missing
    assert "unknown PBX 'west'" in dialer("trunk", "set", "MC", "--pbx", "west", ok=False).output
    # `--pbx` alone moves a trunk's only route, as it moved the trunk before routes.
    dialer("trunk", "set", "MC", "--pbx", "default")
    assert _routes(dialer) == {"MC": [("default", "PJSIP/{number}@mc-e2")]}
    assert "default: PJSIP/{number}@mc-e2" in dialer("trunk", "list").output

    last = dialer("trunk", "route", "remove", "MC", "default").output
    assert "warning: trunk MC has no route left" in last
    assert "none (its calls wait)" in dialer("trunk", "list").output


def _pbxs(dialer) -> dict[str, dict]:
    return {p["name"]: p for p in json.loads(dialer("pbx", "list", "--json").output)}


def test_pbx_set_and_list(dialer, session_factory) -> None:
    default = _pbxs(dialer)["default"]
    assert (default["max_cps"], default["max_channels"], default["latency_threshold_ms"]) == (
        1000.0, 10000, 500,
    )  # fmt: skip
    assert (default["state"], default["configured_here"], default["trunks"]) == (
        "unknown", True, [],
    )  # fmt: skip
    for args, message in [
        (["--cps", "0"], "cps: must be a number greater than zero"),
        (["--max-channels", "x"], "max_channels: 'x' is not a whole number"),
        (["--latency-threshold", "-5"], "latency_threshold: must be greater than zero"),
        ([], "nothing to change"),
    ]:
        assert message in dialer("pbx", "set", "default", *args, ok=False).output, args
    assert "not a PBX name" in dialer("pbx", "set", "Bad Name", "--cps", "1", ok=False).output

    dialer("trunk", "add", "MC", "--cps", "10", "--max-channels", "30")
    dialer("trunk", "add", "ALT", "--cps", "10", "--max-channels", "30")
    with session_factory.begin() as session:  # back-pressure had lowered its rate
        session.execute(text("UPDATE pbxs SET rate = 30, rate_reason = 'slow'"))
    out = dialer(
        "pbx", "set", "default", "--cps", "40", "--max-channels", "80",
        "--latency-threshold", "300", "--json",
    )  # fmt: skip
    data = json.loads(out.output)
    assert (data["max_cps"], data["rate"], data["rate_reason"]) == (40.0, 30.0, "slow")
    assert (data["max_channels"], data["latency_threshold_ms"]) == (80, 300)
    assert data["trunks"] == ["ALT", "MC"]
    # A maximum at or under the lowered rate: nothing is held back any more.
    data = json.loads(dialer("pbx", "set", "default", "--cps", "25", "--json").output)
    assert (data["rate"], data["rate_reason"]) == (25.0, None)
    data = json.loads(dialer("pbx", "set", "default", "--disable", "--json").output)
    assert (data["enabled"], data["state"]) == (False, "disabled")
    listed = dialer("pbx", "list").output
    assert "default" in listed and "disabled" in listed and "ALT, MC" in listed


# Campaign settings


def test_campaign_create_uses_the_spec_defaults(spring, session_factory) -> None:
    campaign = _campaign(session_factory)
    assert campaign.status == "draft"
    assert campaign.caller_id_number == "+12125550100"
    assert (campaign.context, campaign.exten, campaign.priority) == ("DynamicIVR", "s", 1)
    assert campaign.originate_timeout_ms == 30000
    assert (campaign.press_key, campaign.wait_strategy, campaign.amd_enabled) == (
        "1",
        "random",
        True,
    )
    assert (campaign.max_attempts, campaign.region, campaign.opt_out_key) == (3, "US", None)
    assert (campaign.calling_hours_start, campaign.calling_hours_end) == (dt.time(9), dt.time(20))
    assert campaign.calling_days == [1, 2, 3, 4, 5]


def test_campaign_create_with_every_setting(dialer, session_factory) -> None:
    dialer("trunk", "add", "MC", "--cps", "10", "--max-channels", "30")
    out = dialer(
        "campaign", "create", "autumn", "--trunk", "MC", "--caller-id", "020 7946 0958",
        "--region", "gb", "--caller-name", "Acme", "--ivr-file", "promo",
        "--ivr-vm-file", "promo_vm", "--transfer-number", "+12125550199",
        "--transfer-prefix", "9", "--press-key", "2", "--opt-out-key", "9", "--no-amd",
        "--wait-strategy", "fixed", "--context", "Outbound", "--exten", "start",
        "--priority", "2", "--timeout-ms", "25000", "--max-attempts", "5",
        "--retry", "busy=30m", "--retry", "no_answer=2h", "--hours", "10:00-18:30",
        "--days", "mon,wed,sat", "--record", "--json",
    ).output  # fmt: skip
    settings = json.loads(out)
    assert settings["caller_id"] == "+442079460958"
    assert settings["retry"] == {"busy": 1800, "no_answer": 7200}
    assert (settings["hours"], settings["days"]) == ("10:00-18:30", "mon,wed,sat")
    campaign = _campaign(session_factory, "autumn")
    assert (campaign.region, campaign.press_key, campaign.opt_out_key) == ("GB", "2", "9")
    assert (campaign.amd_enabled, campaign.record_calls, campaign.priority) == (False, True, 2)
    assert campaign.transfer_number == "+12125550199"
    assert campaign.calling_days == [1, 3, 6]


CAMPAIGN_REFUSALS = [
    (["--caller-id", "+1 555 123 4567"], "caller_id: '+1 555 123 4567': invalid number"),
    (
        ["--ivr-file", "welcome.wav"],
        "ivr_file: 'welcome.wav' must be a file name without an extension",
    ),
    (
        ["--ivr-file", "sounds/welcome"],
        "ivr_file: 'sounds/welcome' must be a file name without a directory",
    ),
    (["--ivr-vm-file", "vm\r\nAction: Hangup"], "ivr_vm_file: must not contain line breaks"),
    (["--press-key", "12"], "press_key: '12' is not one DTMF key"),
    (["--opt-out-key", "1"], "opt_out_key: must differ from the press key"),
    (["--hours", "20:00-09:00"], "hours: '20:00-09:00': the start must be before the end"),
    (["--days", "weekdays"], "days: 'weekdays': unknown day"),
    (["--retry", "busy=soon"], "retry: 'busy=soon': delay 'soon'"),
    (["--transfer-number", "911"], "transfer_number:"),
    (["--timeout-ms", "0"], "timeout_ms: must be greater than zero"),
    (["--caller-name", 'Acme "Sales"'], "caller_name:"),
    (["--region", "ZZ"], "region: 'ZZ' is not a known region code"),
    (["--trunk", "nope"], "no trunk named 'nope'"),
]


def test_campaign_create_refuses_bad_settings(dialer, session_factory) -> None:
    dialer("trunk", "add", "MC", "--cps", "10", "--max-channels", "30")
    for args, message in CAMPAIGN_REFUSALS:
        base = {"--trunk": "MC", "--caller-id": "+12125550100", "--ivr-file": "welcome"}
        for flag, value in zip(args[::2], args[1::2], strict=True):
            base[flag] = value
        argv = [item for pair in base.items() for item in pair]
        result = dialer("campaign", "create", "bad", *argv, ok=False)
        assert message in result.output, args
    with session_factory() as session:
        assert session.scalars(select(Campaign)).all() == []


def test_campaign_set_changes_only_what_is_given(dialer, spring, session_factory) -> None:
    dialer("campaign", "set", "spring", "--hours", "10:00-19:00", "--max-attempts", "5")
    campaign = _campaign(session_factory)
    assert (campaign.calling_hours_start, campaign.max_attempts) == (dt.time(10), 5)
    assert (campaign.ivr_file, campaign.caller_id_number) == ("welcome", "+12125550100")
    result = dialer("campaign", "set", "spring", "--press-key", "x", ok=False)
    assert "press_key:" in result.output
    assert _campaign(session_factory).press_key == "1"
    assert "nothing to change" in dialer("campaign", "set", "spring", ok=False).output


def test_campaign_set_is_refused_while_running(dialer, spring, session_factory) -> None:
    _add_contacts(session_factory, "spring", ["pending"])
    dialer("campaign", "start", "spring")
    result = dialer("campaign", "set", "spring", "--ivr-file", "other", ok=False)
    assert "while it is running; pause it first" in result.output
    assert _campaign(session_factory).ivr_file == "welcome"
    dialer("campaign", "pause", "spring")
    dialer("campaign", "set", "spring", "--ivr-file", "other")
    assert _campaign(session_factory).ivr_file == "other"


def test_campaign_show_reports_progress(dialer, spring, session_factory) -> None:
    _add_contacts(
        session_factory, "spring", ["pending", "pending", "completed", "dnc", "exhausted"]
    )
    with transaction(session_factory) as session:
        session.execute(
            text(
                "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id,"
                " attempt_number, status, outcome, ended_at)"
                " SELECT '1704067200000_' || c.id, c.campaign_id, c.id, 1, 1, 'ended', o, now()"
                " FROM contacts c JOIN (VALUES ('+12125550002', 'transferred'),"
                " ('+12125550004', 'busy')) AS v(phone, o) ON v.phone = c.phone_e164"
            )
        )
        session.execute(
            text(
                "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id,"
                " attempt_number, status) SELECT '1704067200001_1', campaign_id, id, 1, 2, 'up'"
                " FROM contacts WHERE phone_e164 = '+12125550004'"
            )
        )
    shown = json.loads(dialer("campaign", "show", "spring", "--json").output)
    assert shown["settings"]["name"] == "spring"
    contacts = shown["progress"]["contacts"]
    assert (contacts["pending"], contacts["completed"], contacts["total"]) == (2, 1, 5)
    assert (contacts["dnc"], contacts["exhausted"], contacts["dialing"]) == (1, 1, 0)
    attempts = shown["progress"]["attempts"]
    assert (attempts["ended"], attempts["up"], attempts["total"]) == (2, 1, 3)
    assert shown["progress"]["outcomes"] == {"busy": 1, "transferred": 1}
    human = dialer("campaign", "show", "spring").output
    assert "transferred" in human and "DynamicIVR" in human
    listed = json.loads(dialer("campaign", "list", "--json").output)
    assert [(c["name"], c["contacts"], c["pending"]) for c in listed] == [("spring", 5, 2)]


# Lifecycle


def test_lifecycle_through_the_legal_path(dialer, spring, session_factory) -> None:
    out = dialer("campaign", "schedule", "spring", "--start", FUTURE, "--json").output
    assert json.loads(out)["status"] == "scheduled"
    assert _campaign(session_factory).start_at == dt.datetime(2999, 1, 4, 9, tzinfo=dt.UTC)
    refused = dialer("campaign", "start", "spring", ok=False)
    assert "it has no contacts; import a list first" in refused.output
    dialer("contacts", "import", "spring", str(FIXTURES / "messy_contacts.csv"))
    for action, status in [("start", "running"), ("pause", "paused"), ("resume", "running")]:
        assert json.loads(dialer("campaign", action, "spring", "--json").output)["status"] == status
        assert _campaign(session_factory).status == status
    dialer("campaign", "stop", "spring")
    assert _campaign(session_factory).status == "cancelled"


def test_every_illegal_operator_transition_is_refused(dialer, spring, session_factory) -> None:
    _add_contacts(session_factory, "spring", ["pending"])
    refused = 0
    for status in CAMPAIGN_STATUSES:
        for action in OPERATOR_ACTIONS:
            allowed_from, _ = campaigns.TRANSITIONS[action]
            if status in allowed_from:
                continue
            _set_status(session_factory, "spring", status)
            extra = ["--start", FUTURE] if action == "schedule" else []
            result = dialer("campaign", action, "spring", *extra, ok=False)
            assert f"cannot {action} campaign 'spring': it is {status}" in result.output
            assert _campaign(session_factory).status == status
            refused += 1
    assert refused == 30 - 10  # 6 statuses x 5 actions, minus the legal ones


def test_schedule_checks_its_times(dialer, spring) -> None:
    past = dialer("campaign", "schedule", "spring", "--start", "2000-01-01T00:00:00Z", ok=False)
    assert "start: is in the past" in past.output
    naive = dialer("campaign", "schedule", "spring", "--start", "2999-01-01T09:00", ok=False)
    assert "start: '2999-01-01T09:00' needs a UTC offset" in naive.output
    backwards = dialer(
        "campaign", "schedule", "spring", "--start", FUTURE, "--end", "2998-01-01T00:00:00Z",
        ok=False,
    )  # fmt: skip
    assert "end: must be after the start" in backwards.output


def test_a_campaign_with_nothing_left_to_dial_completes(spring, session_factory) -> None:
    _add_contacts(session_factory, "spring", ["pending", "completed"])
    with transaction(session_factory) as session:
        campaigns.start(session, "spring")
        campaign_id = session.scalar(select(Campaign.id))
        assert campaigns.complete_if_exhausted(session, campaign_id) is False
        session.execute(update(Contact).values(status="dialing"))
        assert campaigns.complete_if_exhausted(session, campaign_id) is False
        session.execute(update(Contact).values(status="exhausted"))
        session.execute(
            text(
                "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id,"
                " attempt_number, status) SELECT '1_1', campaign_id, min(id), 1, 1, 'originating'"
                " FROM contacts GROUP BY campaign_id"
            )
        )
        # An attempt still open: its outcome may yet schedule a retry.
        assert campaigns.complete_if_exhausted(session, campaign_id) is False
        session.execute(
            text("UPDATE call_attempts SET status = 'ended', outcome = 'busy', ended_at = now()")
        )
        assert campaigns.complete_if_exhausted(session, campaign_id) is True
    assert _campaign(session_factory).status == "completed"


def test_resuming_a_campaign_with_nothing_left_completes_it(dialer, spring, session_factory):
    _add_contacts(session_factory, "spring", ["pending"])
    dialer("campaign", "start", "spring")
    dialer("campaign", "pause", "spring")
    with transaction(session_factory) as session:
        session.execute(update(Contact).values(status="completed"))
    out = dialer("campaign", "resume", "spring", "--json").output
    assert json.loads(out)["status"] == "completed"


def test_advance_schedules_starts_and_ends_campaigns(spring, session_factory) -> None:
    _add_contacts(session_factory, "spring", ["pending"])
    now = dt.datetime(2999, 1, 4, 9, tzinfo=dt.UTC)
    with transaction(session_factory) as session:
        campaigns.schedule(
            session, "spring", now, now + dt.timedelta(hours=8), now=now - dt.timedelta(days=1)
        )
        assert campaigns.advance_schedules(session, now - dt.timedelta(minutes=1)) == {
            "running": [],
            "completed": [],
        }
        assert campaigns.advance_schedules(session, now) == {"running": ["spring"], "completed": []}
        assert campaigns.advance_schedules(session, now + dt.timedelta(hours=8)) == {
            "running": [],
            "completed": ["spring"],
        }


# Contact import


def test_contacts_import_command(dialer, spring, session_factory, tmp_path: Path) -> None:
    rejects = tmp_path / "rejects.csv"
    out = dialer(
        "contacts", "import", "spring", str(FIXTURES / "messy_contacts.csv"),
        "--rejects", str(rejects), "--json",
    ).output  # fmt: skip
    summary = json.loads(out)
    assert (summary["rows_total"], summary["accepted"], summary["rejected"]) == (19, 10, 7)
    assert rejects.read_text(encoding="utf-8").startswith("line,reason,raw")
    human = dialer("contacts", "import", "spring", str(FIXTURES / "messy_contacts.csv")).output
    assert "duplicates      12" in human and "loaded this same file before" in human
    with session_factory() as session:
        assert len(session.scalars(select(Contact)).all()) == 10
    missing = dialer("contacts", "import", "nope", str(FIXTURES / "messy_contacts.csv"), ok=False)
    assert "no campaign named 'nope'" in missing.output
    column = dialer(
        "contacts", "import", "spring", str(FIXTURES / "messy_contacts.csv"),
        "--phone-column", "mobile", ok=False,
    )  # fmt: skip
    assert "no 'mobile' column in the header" in column.output


def test_contacts_import_with_an_encoding(dialer, spring, session_factory, tmp_path: Path) -> None:
    path, rejects = tmp_path / "excel.csv", tmp_path / "rejects.csv"
    path.write_bytes(
        "phone,first_name,last_name\n+12125550121,Zoë,Müller\n+12125550122,José,\n".encode("cp1252")
        + b"+12125550123,Bad\x81Byte,\n"
    )
    as_utf8 = dialer("contacts", "import", "spring", str(path), "--rejects", str(rejects))
    assert "rejected        3" in as_utf8.output
    assert [row[:2] for row in csv.reader(rejects.open(encoding="utf-8", newline=""))] == [
        ["line", "reason"],
        ["2", "malformed row: not UTF-8 text (byte 16 of the row)"],
        ["3", "malformed row: not UTF-8 text (byte 17 of the row)"],
        ["4", "malformed row: not UTF-8 text (byte 17 of the row)"],
    ]

    summary = json.loads(dialer(
        "contacts", "import", "spring", str(path), "--encoding", "cp1252",
        "--rejects", str(rejects), "--json",
    ).output)  # fmt: skip
    assert (summary["accepted"], summary["rejected"]) == (2, 1)
    with session_factory() as session:
        names = session.execute(select(Contact.phone_e164, Contact.first_name, Contact.last_name))
        assert sorted(names) == [("+12125550121", "Zoë", "Müller"), ("+12125550122", "José", None)]
    assert list(csv.reader(rejects.open(encoding="utf-8", newline=""))) == [
        ["line", "reason", "raw"],
        [
            "4",
            "malformed row: not cp1252 text (byte 17 of the row)",
            "'+12125550123,Bad\ufffdByte,",
        ],
    ]

    unknown = CliRunner().invoke(
        cli, ["contacts", "import", "spring", str(path), "--encoding", "x"]
    )
    assert unknown.exit_code == 2
    assert "Invalid value for '--encoding': 'x' is not a text encoding" in unknown.output


# Do-not-call


def test_dnc_add_marks_pending_contacts_globally(dialer, spring, session_factory) -> None:
    dialer("trunk", "add", "T2", "--cps", "1", "--max-channels", "1")
    dialer(
        "campaign",
        "create",
        "autumn",
        "--trunk",
        "T2",
        "--caller-id",
        "+12125550100",
        "--ivr-file",
        "x",
    )
    _add_contacts(session_factory, "spring", ["pending", "pending", "dialing"])
    _add_contacts(session_factory, "autumn", ["pending", "pending"])
    out = dialer(
        "dnc", "add", "+12125550000", "(212) 555-0002", "--reason", "asked", "--json"
    ).output
    assert json.loads(out) == {
        "added": 2,
        "already_listed": 0,
        "contacts_marked": 2,
        "rejected": [],
    }
    with session_factory() as session:
        statuses = {
            (c.campaign_id, c.phone_e164): c.status for c in session.scalars(select(Contact))
        }
        entries = session.scalars(select(DncNumber)).all()
    assert sorted(statuses.values()).count("dnc") == 2
    # The contact being dialled is left to finish; the dial-time check covers new attempts.
    assert [s for (_, phone), s in statuses.items() if phone == "+12125550002"] == ["dialing"]
    assert {(e.phone_e164, e.campaign_id, e.reason) for e in entries} == {
        ("+12125550000", None, "asked"),
        ("+12125550002", None, "asked"),
    }
    again = json.loads(dialer("dnc", "add", "+12125550000", "--json").output)
    assert (again["added"], again["already_listed"]) == (0, 1)


def test_dnc_add_for_one_campaign(dialer, spring, session_factory) -> None:
    dialer("trunk", "add", "T2", "--cps", "1", "--max-channels", "1")
    dialer(
        "campaign",
        "create",
        "autumn",
        "--trunk",
        "T2",
        "--caller-id",
        "+12125550100",
        "--ivr-file",
        "x",
    )
    _add_contacts(session_factory, "spring", ["pending"])
    _add_contacts(session_factory, "autumn", ["pending"])
    dialer("dnc", "add", "2125550000", "--campaign", "autumn")
    with session_factory() as session:
        rows = session.execute(
            select(Campaign.name, Contact.status).join(Campaign, Campaign.id == Contact.campaign_id)
        ).all()
    assert sorted(rows) == [("autumn", "dnc"), ("spring", "pending")]
    listed = json.loads(dialer("dnc", "list", "--campaign", "autumn", "--json").output)
    assert [(e["number"], e["campaign"]) for e in listed] == [("+12125550000", "autumn")]
    assert json.loads(dialer("dnc", "list", "--global", "--json").output) == []


def test_dnc_add_with_one_bad_number_adds_nothing(dialer, spring, session_factory) -> None:
    result = dialer("dnc", "add", "+12125550000", "+1 555 123 4567", ok=False)
    assert "number: '+1 555 123 4567': invalid number" in result.output
    with session_factory() as session:
        assert session.scalars(select(DncNumber)).all() == []


def test_dnc_then_import_loads_the_number_as_dnc(dialer, spring, session_factory) -> None:
    dialer("dnc", "add", "+12125550103")
    out = dialer("contacts", "import", "spring", str(FIXTURES / "messy_contacts.csv"), "--json")
    assert json.loads(out.output)["on_dnc"] == 1
    with session_factory() as session:
        status = session.scalar(select(Contact.status).where(Contact.phone_e164 == "+12125550103"))
    assert status == "dnc"


def test_dnc_remove(dialer, spring, session_factory) -> None:
    dialer("dnc", "add", "+12125550000")
    dialer("dnc", "add", "+12125550000", "--campaign", "spring")
    assert (
        json.loads(dialer("dnc", "remove", "212-555-0000", "--json").output)["removed"]
        == "+12125550000"
    )
    with session_factory() as session:
        left = session.execute(select(DncNumber.phone_e164, DncNumber.campaign_id)).all()
    assert len(left) == 1 and left[0][1] is not None
    assert "is not on the global list" in dialer("dnc", "remove", "+12125550000", ok=False).output


def test_dnc_import_file(dialer, spring, session_factory, tmp_path: Path) -> None:
    _add_contacts(session_factory, "spring", ["pending", "pending"])
    path = tmp_path / "dnc.csv"
    path.write_text(
        "name,phone\nAnn,+12125550001\nBob,not a number\n\nCid,(212) 555-0150\nDee,+12125550001\n",
        encoding="utf-8",
    )
    out = json.loads(dialer("dnc", "import", str(path), "--reason", "registry", "--json").output)
    assert (out["added"], out["already_listed"], out["contacts_marked"]) == (2, 0, 1)
    assert [(r["line"], r["raw"]) for r in out["rejected"]] == [(3, "Bob,not a number")]
    with session_factory() as session:
        numbers = dict(session.execute(select(DncNumber.phone_e164, DncNumber.source)).all())
    assert numbers == {"+12125550001": "import", "+12125550150": "import"}
    plain = tmp_path / "plain.txt"
    plain.write_text("+12125550151\n2125550152\n", encoding="utf-8")
    assert json.loads(dialer("dnc", "import", str(plain), "--json").output)["added"] == 2


def test_dnc_import_with_an_encoding(dialer, session_factory, tmp_path: Path) -> None:
    path = tmp_path / "opt-outs.csv"
    path.write_bytes("name,phone\nJosé,+12125550001\n".encode("cp1252") + b"Bad\x81,+12125550002\n")
    as_utf8 = json.loads(dialer("dnc", "import", str(path), "--json").output)
    assert as_utf8["added"] == 0
    assert [(r["line"], r["reason"]) for r in as_utf8["rejected"]] == [
        (2, "not UTF-8 text"),
        (3, "not UTF-8 text"),
    ]
    as_cp1252 = json.loads(
        dialer("dnc", "import", str(path), "--encoding", "cp1252", "--json").output
    )
    assert as_cp1252["added"] == 1
    assert as_cp1252["rejected"] == [
        {"line": 3, "raw": "Bad\ufffd,+12125550002", "reason": "not cp1252 text"}
    ]
    with session_factory() as session:
        assert session.scalars(select(DncNumber.phone_e164)).all() == ["+12125550001"]
    refused = CliRunner().invoke(cli, ["dnc", "import", str(path), "--encoding", "utf-16"])
    assert refused.exit_code == 2
    assert "Invalid value for '--encoding': 'utf-16' cannot be read row by row" in refused.output
