"""Report views, queries and commands against a known, hand-counted set of call attempts."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, text

from dialer import migrate
from dialer.cli import cli
from dialer.db import make_engine
from dialer.reports import queries as reports
from dialer.settings import get_settings

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
TRICKY_FIELDS = {"account": 'A-1, "quoted"', "note": "line one\nline two", "city": "Zürich"}

BASE_ROWS = """
INSERT INTO trunks (id, name, cps, max_channels) OVERRIDING SYSTEM VALUE
VALUES (1, 'MC', 10, 20), (2, 'ALT', 5, 10);
INSERT INTO campaigns (id, name, trunk_id, status, caller_id_number, ivr_file, press_key, opt_out_key)
OVERRIDING SYSTEM VALUE
VALUES (1, 'spring', 1, 'running', '+12125550100', 'welcome', '1', '9'),
       (2, 'autumn', 2, 'completed', '+12125550100', 'welcome', '1', NULL);
INSERT INTO contacts (id, campaign_id, phone_e164, phone_raw, first_name, status, fields)
OVERRIDING SYSTEM VALUE
VALUES (1, 1, '+12125550101', '212-555-0101', 'Ann', 'completed', CAST(:tricky AS jsonb)),
       (2, 1, '+12125550102', '212-555-0102', 'Bob', 'pending', '{}'),
       (3, 1, '+12125550103', '212-555-0103', NULL, 'dialing', '{}'),
       (4, 1, '+12125550104', '212-555-0104', NULL, 'exhausted', '{}'),
       (5, 1, '+12125550105', '212-555-0105', NULL, 'dnc', '{}'),
       (6, 1, '+12125550106', '212-555-0106', NULL, 'pending', '{}'),
       (8, 1, '+12125550108', '212-555-0108', NULL, 'completed', '{}'),
       (7, 2, '+12125550107', '212-555-0107', NULL, 'completed', '{}');
SELECT setval(pg_get_serial_sequence(t, 'id'), 1000)
    FROM unnest(ARRAY['trunks', 'campaigns', 'contacts', 'call_attempts']) AS t;
"""

# id, contact, attempt number, status, seconds after T0 when sent / answered / ended (None: not
# reached), amd_status, dtmf, outcome. Queued one second before sending (or at 399 s if unsent).
ATTEMPTS = [
    (1, 1, 1, "ended", 0, 5, 65, "HUMAN", "1", "transferred"),
    (2, 2, 1, "ended", 60, None, 90, None, None, "no_answer"),
    (3, 2, 2, "ended", 3600, 3608, 3638, "MACHINE", None, "voicemail_left"),
    (4, 3, 1, "ended", 120, None, 122, None, None, "busy"),
    (5, 3, 2, "up", 7200, 7204, None, "HUMAN", None, None),
    (6, 4, 1, "ended", 180, 190, 210, "NOTSURE", None, "human_no_press"),
    (7, 4, 2, "ended", 240, 244, 254, "HUMAN", "2", "human_other_key"),
    (8, 4, 3, "ended", 300, 303, 333, "MACHINE", None, "machine_no_message"),
    (9, 5, 1, "ended", 360, 366, 386, "HUMAN", "9", "opted_out"),
    (11, 2, 3, "ended", 7300, 7302, 7312, None, None, "human_no_press"),  # AMD off
    (12, 4, 4, "not_sent", None, None, 400, None, None, "failed"),
    (13, 8, 1, "ended", 495, 500, 501, "NOTSURE", "1", "abandoned"),  # pressed, hung up
    (14, 7, 1, "ended", 0, 3, 33, "HUMAN", "1", "transferred"),  # the other campaign
]
HANGUP = {"no_answer": 19, "busy": 17}

# Hand-counted from ATTEMPTS for campaign spring.
SPRING_SUMMARY = {
    "campaign": "spring",
    "campaign_status": "running",
    "contacts_total": 7,
    "contacts_pending": 2,
    "contacts_dialing": 1,
    "contacts_remaining": 3,
    "contacts_completed": 2,
    "contacts_exhausted": 1,
    "contacts_dnc": 1,
    "contacts_cancelled": 0,
    "attempts": 12,
    "attempts_open": 1,
    "attempts_finished": 11,
    "attempts_sent": 11,
    "answered": 8,
    "human_answered": 6,
    "presses": 2,
    "transferred": 1,
    "human_no_press": 2,
    "human_other_key": 1,
    "opted_out": 1,
    "voicemail_left": 1,
    "machine_no_message": 1,
    "busy": 1,
    "no_answer": 1,
    "congestion": 0,
    "rejected": 0,
    "failed": 1,
    "abandoned": 1,
    "unknown": 0,
    "outcomes": {
        "transferred": 1,
        "no_answer": 1,
        "voicemail_left": 1,
        "busy": 1,
        "human_no_press": 2,
        "human_other_key": 1,
        "machine_no_message": 1,
        "opted_out": 1,
        "failed": 1,
        "abandoned": 1,
    },
    "answer_rate": 0.7273,  # 8 / 11
    "human_rate": 0.5455,  # 6 / 11
    "press_rate": 0.3333,  # 2 / 6
    "transfer_rate": 0.1667,  # 1 / 6
    "avg_talk_seconds": 22.625,  # (60 + 30 + 20 + 10 + 30 + 20 + 10 + 1) / 8
    "first_sent_at": T0,
    "last_sent_at": T0 + dt.timedelta(seconds=7300),
    "attempts_per_hour": 5.42,  # 11 sent over 7300 s
}


def _seed(conn: Connection) -> None:
    for statement in BASE_ROWS.split(";"):
        if statement.strip():
            conn.execute(text(statement), {"tricky": json.dumps(TRICKY_FIELDS)})
    for aid, contact, number, status, sent, answered, ended, amd, dtmf, outcome in ATTEMPTS:
        campaign = 2 if contact == 7 else 1

        def at(seconds: int | None) -> dt.datetime | None:
            return None if seconds is None else T0 + dt.timedelta(seconds=seconds)

        transferred = outcome == "transferred"
        conn.execute(
            text(
                """
                INSERT INTO call_attempts (id, custom_call_id, campaign_id, contact_id, trunk_id,
                    attempt_number, status, queued_at, sent_at, answered_at, ended_at,
                    amd_status, dtmf, outcome, voicemail_left, hangup_cause,
                    transfer_requested_at, transfer_answered_at, transfer_ended_at,
                    transfer_status, send_error)
                OVERRIDING SYSTEM VALUE
                VALUES (:id, :call_id, :campaign, :contact, :campaign, :number, :status, :queued,
                    :sent, :answered, :ended, :amd, :dtmf, :outcome, :vm, :cause,
                    :xfer_req, :xfer_ans, :xfer_end, :xfer_status, :send_error)
                """
            ),
            {
                "id": aid,
                "call_id": f"{int(T0.timestamp() * 1000)}_{aid}",
                "campaign": campaign,
                "contact": contact,
                "number": number,
                "status": status,
                "queued": at(sent - 1 if sent is not None else 399),
                "sent": at(sent),
                "answered": at(answered),
                "ended": at(ended),
                "amd": amd,
                "dtmf": dtmf,
                "outcome": outcome,
                "vm": {"voicemail_left": True, "machine_no_message": False}.get(outcome or ""),
                "cause": HANGUP.get(outcome or "", 16 if ended else None),
                "xfer_req": at(20) if transferred else None,
                "xfer_ans": at(25) if transferred else None,
                "xfer_end": at(65) if transferred else None,
                "xfer_status": "ANSWER" if transferred else None,
                "send_error": "PBX unreachable" if status == "not_sent" else None,
            },
        )
    # Events of attempt 1, inserted out of order: the timeline is by received_at.
    for seconds, name, extra in [
        (65, "Hangup", {"Cause": "16"}),
        (0.1, "Newchannel", {}),
        (6, "UserEvent", {"UserEvent": "DialerAMD", "AMDSTATUS": "HUMAN"}),
    ]:
        data = {"Event": name, "Linkedid": f"{int(T0.timestamp() * 1000)}_1", **extra}
        conn.execute(
            text(
                "INSERT INTO call_events (call_attempt_id, event, fingerprint, received_at, data)"
                " VALUES (1, :event, :fp, :at, CAST(:data AS jsonb))"
            ),
            {
                "event": name,
                "fp": f"fp-{seconds}",
                "at": T0 + dt.timedelta(seconds=seconds),
                "data": json.dumps(data),
            },
        )


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    with engine.begin() as conn:
        _seed(conn)
    return engine


@pytest.fixture
def conn(seeded: Engine) -> Iterator[Connection]:
    with seeded.connect() as connection:
        yield connection


@pytest.fixture
def cli_env(database_url: str, seeded: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the `dialer` commands at this test's seeded database."""
    monkeypatch.setenv("DIALER_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def call_id(aid: int) -> str:
    return f"{int(T0.timestamp() * 1000)}_{aid}"


# --- the views ------------------------------------------------------------------------------


def test_campaign_summary_equals_hand_counted_totals(conn: Connection) -> None:
    summary = reports.campaign_summary(conn, "spring")
    assert {key: summary[key] for key in SPRING_SUMMARY} == SPRING_SUMMARY


def test_campaign_summary_view_has_one_row_per_campaign(conn: Connection) -> None:
    rows = conn.execute(
        text("SELECT campaign, attempts, transferred, contacts_total FROM campaign_summary")
    ).all()
    assert sorted(tuple(r) for r in rows) == [("autumn", 1, 1, 1), ("spring", 12, 1, 7)]
    # Filtering the view by name gives the same row as the report.
    by_name = (
        conn.execute(text("SELECT * FROM campaign_summary WHERE campaign = 'spring'"))
        .one()
        ._mapping
    )
    assert dict(by_name) == reports.campaign_summary(conn, "spring")


def test_campaign_summary_since_counts_only_later_attempts(conn: Connection) -> None:
    # Attempts 3, 5 and 11 were queued at or after 3599 s.
    summary = reports.campaign_summary(conn, "spring", since=T0 + dt.timedelta(seconds=3599))
    assert summary["attempts"] == 3
    assert summary["attempts_open"] == 1
    assert summary["attempts_finished"] == 2
    assert summary["outcomes"] == {"voicemail_left": 1, "human_no_press": 1}
    assert (summary["answered"], summary["human_answered"], summary["presses"]) == (2, 1, 0)
    assert (summary["press_rate"], summary["transfer_rate"]) == (0.0, 0.0)
    assert summary["avg_talk_seconds"] == 20.0  # (30 + 10) / 2
    assert summary["contacts_remaining"] == 3  # contact state is always current


def test_empty_campaign_summary_has_zero_counts_and_no_rates(conn: Connection) -> None:
    conn.execute(
        text(
            "INSERT INTO campaigns (name, trunk_id, caller_id_number, ivr_file)"
            " VALUES ('empty', 1, '+12125550100', 'welcome')"
        )
    )
    summary = reports.campaign_summary(conn, "empty")
    assert summary["attempts"] == 0 and summary["contacts_total"] == 0
    assert summary["outcomes"] == {}
    assert summary["answer_rate"] is None and summary["press_rate"] is None
    assert summary["avg_talk_seconds"] is None and summary["attempts_per_hour"] is None


def test_call_attempts_report_derived_columns(conn: Connection) -> None:
    rows = {
        r["attempt_id"]: r
        for r in (
            dict(m._mapping) for m in conn.execute(text("SELECT * FROM call_attempts_report"))
        )
    }
    assert len(rows) == len(ATTEMPTS)
    first = rows[1]
    assert (first["campaign"], first["phone"], first["first_name"], first["trunk"]) == (
        "spring",
        "+12125550101",
        "Ann",
        "MC",
    )
    assert first["contact_fields"] == TRICKY_FIELDS
    assert (first["ring_seconds"], first["talk_seconds"], first["transfer_seconds"]) == (
        5.0,
        60.0,
        40.0,
    )
    assert (first["answered"], first["human"], first["pressed"]) == (True, True, True)
    # Unanswered: ring runs to the end of the call; no talk.
    assert (rows[2]["ring_seconds"], rows[2]["talk_seconds"], rows[2]["answered"]) == (
        30.0,
        None,
        False,
    )
    # In progress: rung and answered, not ended.
    assert (rows[5]["ring_seconds"], rows[5]["talk_seconds"], rows[5]["human"]) == (4.0, None, True)
    # Never sent: no ring time.
    assert rows[12]["ring_seconds"] is None and rows[12]["send_error"] == "PBX unreachable"
    # Human by outcome with AMD off; machine with a message is answered but not human.
    assert (rows[11]["human"], rows[11]["answered"]) == (True, True)
    assert (rows[3]["human"], rows[3]["answered"], rows[3]["voicemail_left"]) == (
        False,
        True,
        True,
    )
    # Human by AMD alone (NOTSURE counts), whatever the outcome.
    assert (rows[13]["human"], rows[13]["outcome"]) == (True, "abandoned")
    # Pressed: the press key, not any key; an opt-out key is not a press.
    assert [aid for aid, r in sorted(rows.items()) if r["pressed"]] == [1, 13, 14]


def test_contacts_report_has_latest_attempt(conn: Connection) -> None:
    rows = {
        r["contact_id"]: r
        for r in (dict(m._mapping) for m in conn.execute(text("SELECT * FROM contacts_report")))
    }
    assert len(rows) == 8
    assert (rows[2]["last_attempt_number"], rows[2]["last_attempt_outcome"]) == (
        3,
        "human_no_press",
    )
    assert rows[2]["last_call_id"] == call_id(11)
    assert rows[4]["last_attempt_status"] == "not_sent"
    assert rows[3]["last_attempt_status"] == "up" and rows[3]["last_attempt_outcome"] is None
    assert rows[6]["last_attempt_id"] is None  # never called
    assert rows[1]["last_talk_seconds"] == 60.0


def test_contacts_page_is_keyset_paginated(conn: Connection) -> None:
    first = reports.contacts_page(conn, "spring", limit=4)
    assert [r["phone"] for r in first] == [f"+1212555010{n}" for n in (1, 2, 3, 4)]
    rest = reports.contacts_page(conn, "spring", after_phone=first[-1]["phone"], limit=4)
    assert [r["phone"] for r in rest] == [f"+1212555010{n}" for n in (5, 6, 8)]


# --- call lists and details ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "expected_ids"),
    [
        ({"campaign": "spring"}, [11, 5, 3, 13, 12, 9, 8, 7, 6, 4, 2, 1]),
        ({"campaign": "spring", "limit": 3}, [11, 5, 3]),
        ({"campaign": "spring", "outcome": "human_no_press"}, [11, 6]),
        ({"outcome": "transferred"}, [14, 1]),  # equal queue times: higher id first
        ({"campaign": "autumn"}, [14]),
        ({"campaign": "spring", "since": T0 + dt.timedelta(seconds=3599)}, [11, 5, 3]),
        ({"campaign": "spring", "outcome": "busy", "since": T0 + dt.timedelta(hours=1)}, []),
    ],
)
def test_list_calls_filters(conn: Connection, filters: dict, expected_ids: list[int]) -> None:
    assert [r["attempt_id"] for r in reports.list_calls(conn, **filters)] == expected_ids


def test_list_calls_refuses_bad_limit_and_unknown_campaign(conn: Connection) -> None:
    with pytest.raises(ValueError, match="limit"):
        reports.list_calls(conn, limit=0)
    with pytest.raises(reports.CampaignNotFound, match="winter"):
        reports.list_calls(conn, campaign="winter")


def test_get_call_has_payload_and_ordered_timeline(conn: Connection) -> None:
    by_call_id = reports.get_call(conn, call_id(1))
    by_id = reports.get_call(conn, "1")
    assert by_call_id == by_id
    assert by_call_id["outcome"] == "transferred"
    assert [e["event"] for e in by_call_id["events"]] == ["Newchannel", "UserEvent", "Hangup"]
    assert by_call_id["events"][1]["data"]["AMDSTATUS"] == "HUMAN"
    assert reports.get_call(conn, call_id(2))["events"] == []
    with pytest.raises(reports.CallNotFound):
        reports.get_call(conn, "999_999")


# --- export -------------------------------------------------------------------------------


def test_export_round_trips_through_postgres(conn: Connection) -> None:
    out = io.BytesIO()
    assert reports.export_calls(conn, "spring", out) == 12
    data = out.getvalue()

    # Load the file back into a table shaped like the view: nothing lost, nothing changed.
    columns = ", ".join(reports.EXPORT_COLUMNS)
    conn.execute(text("SET LOCAL TimeZone = 'UTC'"))
    conn.execute(
        text(f"CREATE TEMP TABLE back AS SELECT {columns} FROM call_attempts_report WITH NO DATA")
    )
    raw = conn.connection.driver_connection
    with (
        raw.cursor() as cursor,
        cursor.copy("COPY back FROM STDIN WITH (FORMAT csv, HEADER)") as cp,
    ):
        cp.write(data)
    original = f"SELECT {columns} FROM call_attempts_report WHERE campaign = 'spring'"
    for query in (f"TABLE back EXCEPT {original}", f"{original} EXCEPT TABLE back"):
        assert conn.execute(text(query)).all() == []
    assert conn.execute(text("SELECT count(*) FROM back")).scalar_one() == 12


def test_export_csv_reads_back_with_the_csv_module(conn: Connection) -> None:
    out = io.BytesIO()
    reports.export_calls(conn, "spring", out, since=T0 + dt.timedelta(seconds=100))
    rows = list(csv.DictReader(io.StringIO(out.getvalue().decode("utf-8"), newline="")))
    assert tuple(rows[0]) == reports.EXPORT_COLUMNS
    # Oldest first, and only attempts queued since 100 s (attempt 12 was queued at 399 s).
    assert [int(r["attempt_id"]) for r in rows] == [4, 6, 7, 8, 9, 12, 13, 3, 5, 11]
    everything = io.BytesIO()
    reports.export_calls(conn, "spring", everything)
    first = next(csv.DictReader(io.StringIO(everything.getvalue().decode(), newline="")))
    assert json.loads(first["contact_fields"]) == TRICKY_FIELDS
    assert first["queued_at"].endswith("+00") and first["pressed"] == "t"


def test_export_columns_are_the_view_columns(conn: Connection) -> None:
    names = conn.execute(
        text(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'call_attempts_report' ORDER BY ordinal_position"
        )
    ).scalars()
    assert tuple(names) == reports.EXPORT_COLUMNS


# --- migrations -----------------------------------------------------------------------------

VIEWS = {"call_attempts_report", "contacts_report", "campaign_summary", "caller_id_health"}


def _report_objects(url: str) -> tuple[set[str], bool, str]:
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            views = set(
                c.execute(text("SELECT viewname FROM pg_views WHERE schemaname = 'public'"))
                .scalars()
                .all()
            )
            function = c.execute(
                text("SELECT to_regprocedure('campaign_summary_since(timestamptz)') IS NOT NULL")
            ).scalar_one()
            index = c.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                {"n": "ix_call_attempts_campaign_queued"},
            ).scalar_one()
            return views, function, index
    finally:
        engine.dispose()


def test_views_exist_and_survive_downgrade_and_upgrade(empty_database_url: str) -> None:
    url = empty_database_url
    migrate.upgrade(url)
    views, function, index = _report_objects(url)
    assert views == VIEWS and function and "INCLUDE" in index

    migrate.downgrade(url, "0001")
    views, function, index = _report_objects(url)
    assert views == set() and not function and "INCLUDE" not in index

    migrate.upgrade(url)
    views, function, index = _report_objects(url)
    assert views == VIEWS and function and "INCLUDE" in index
    migrate.check(url)
    engine = make_engine(url)
    try:
        with engine.begin() as c:
            _seed(c)
        with engine.connect() as c:
            summary = reports.campaign_summary(c, "spring")
        assert {key: summary[key] for key in SPRING_SUMMARY} == SPRING_SUMMARY
    finally:
        engine.dispose()


# --- since parsing ------------------------------------------------------------------------

NOW = dt.datetime(2026, 5, 10, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("45s", NOW - dt.timedelta(seconds=45)),
        ("30m", NOW - dt.timedelta(minutes=30)),
        ("24h", NOW - dt.timedelta(hours=24)),
        ("7d", NOW - dt.timedelta(days=7)),
        ("2w", NOW - dt.timedelta(weeks=2)),
        ("2026-05-01T09:00+02:00", dt.datetime(2026, 5, 1, 7, 0, tzinfo=dt.UTC)),
        ("2026-05-01T09:00Z", dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)),
        ("2026-05-01", dt.datetime(2026, 5, 1).astimezone()),
    ],
)
def test_parse_since(value: str, expected: dt.datetime) -> None:
    assert reports.parse_since(value, NOW) == expected


@pytest.mark.parametrize("value", ["", "yesterday", "5y", "-3h", "2026-13-01"])
def test_parse_since_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="neither an age"):
        reports.parse_since(value, NOW)


# --- commands -----------------------------------------------------------------------------


def test_report_command_formats(cli_env: str) -> None:
    runner = CliRunner()
    as_json = runner.invoke(cli, ["report", "spring", "--json"])
    assert as_json.exit_code == 0, as_json.output
    parsed = json.loads(as_json.output)
    assert parsed["outcomes"] == SPRING_SUMMARY["outcomes"]
    assert parsed["press_rate"] == SPRING_SUMMARY["press_rate"]

    as_csv = runner.invoke(cli, ["report", "spring", "--format", "csv"])
    assert as_csv.exit_code == 0, as_csv.output
    [row] = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert (row["attempts"], row["human_answered"], row["contacts_remaining"]) == ("12", "6", "3")

    table = runner.invoke(cli, ["report", "spring", "--since", "2026-03-02T10:59:59Z"])
    assert table.exit_code == 0, table.output
    assert (
        "voicemail_left" in table.output and "transferred" not in table.output.split("outcome")[-1]
    )

    missing = runner.invoke(cli, ["report", "winter"])
    assert missing.exit_code == 1 and "no campaign named 'winter'" in missing.output
    bad_since = runner.invoke(cli, ["report", "spring", "--since", "soon"])
    assert bad_since.exit_code == 2 and "'soon' is neither an age" in bad_since.output


def test_calls_list_and_show_commands(cli_env: str) -> None:
    runner = CliRunner()
    listed = runner.invoke(
        cli, ["calls", "list", "--campaign", "spring", "--outcome", "human_no_press", "--json"]
    )
    assert listed.exit_code == 0, listed.output
    assert [r["call_id"] for r in json.loads(listed.output)] == [call_id(11), call_id(6)]

    table = runner.invoke(cli, ["calls", "list", "--limit", "2"])
    assert table.exit_code == 0, table.output
    assert call_id(11) in table.output and call_id(5) in table.output
    assert call_id(3) not in table.output

    bad = runner.invoke(cli, ["calls", "list", "--outcome", "maybe"])
    assert bad.exit_code == 2

    shown = runner.invoke(cli, ["calls", "show", call_id(1)])
    assert shown.exit_code == 0, shown.output
    timeline = shown.output.split("events (3)")[1]
    assert timeline.index("Newchannel") < timeline.index("DialerAMD") < timeline.index("Hangup")
    assert "AMDSTATUS=HUMAN" in timeline

    missing = runner.invoke(cli, ["calls", "show", "42_42"])
    assert missing.exit_code == 1 and "42_42" in missing.output

    # Odd references: a clear error, never a traceback ("²".isdigit() is true; int() fails).
    for odd in ["\u00b2", "\u0663", "1_\u00b2", "9" * 19, "a\x00b", "1_2\n", "1-2", ""]:
        refused = runner.invoke(cli, ["calls", "show", odd])
        assert refused.exit_code == 1, (odd, refused.output)
        assert refused.exception is None or isinstance(refused.exception, SystemExit), odd
        assert "neither an attempt id" in refused.output, (odd, refused.output)


def test_calls_export_command_writes_file_only_when_complete(cli_env: str, tmp_path: Path) -> None:
    runner = CliRunner()
    target = tmp_path / "spring.csv"
    done = runner.invoke(cli, ["calls", "export", "spring", str(target), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["rows"] == 12
    rows = list(csv.DictReader(target.open(newline="", encoding="utf-8")))
    assert len(rows) == 12 and {r["campaign"] for r in rows} == {"spring"}

    failed_target = tmp_path / "winter.csv"
    failed = runner.invoke(cli, ["calls", "export", "winter", str(failed_target)])
    assert failed.exit_code == 1
    assert list(tmp_path.iterdir()) == [target]


# --- spreadsheet-safe CSV -------------------------------------------------------------------

# contact id -> (first name, last name) a spreadsheet would run as formulas; "-3" is a number.
FORMULA_NAMES = {
    1: ('=HYPERLINK("http://x","y")', "-3"),
    2: ("+cmd|' /C calc'!A0", "Bob"),
    3: ("@SUM(1)", None),
    4: ("-2+3", None),
    5: ("\t=1+1", None),
    8: ("\r=1+1", None),
}


@pytest.fixture
def formula_names(seeded: Engine) -> dict[int, tuple[str, str | None]]:
    with seeded.begin() as conn:
        for contact, (first, last) in FORMULA_NAMES.items():
            conn.execute(
                text("UPDATE contacts SET first_name = :first, last_name = :last WHERE id = :id"),
                {"first": first, "last": last, "id": contact},
            )
    return FORMULA_NAMES


def _csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def _check_names(rows: list[dict[str, str]], *, quoted: bool) -> None:
    """Each row's names are its contact's, with a leading quote if `quoted` (not "-3")."""
    assert {int(r["contact_id"]) for r in rows} == set(FORMULA_NAMES)
    for row in rows:
        first, last = FORMULA_NAMES[int(row["contact_id"])]
        assert row["first_name"] == ("'" + first if quoted else first)
        assert row["last_name"] == (last or "")
        assert row["phone"] == f"+1212555010{row['contact_id']}"


def test_calls_export_quotes_formulas_unless_raw(
    cli_env: str, formula_names: dict, seeded: Engine, tmp_path: Path
) -> None:
    runner = CliRunner()
    safe, raw = tmp_path / "safe.csv", tmp_path / "raw.csv"
    assert runner.invoke(cli, ["calls", "export", "spring", str(safe)]).exit_code == 0
    assert runner.invoke(cli, ["calls", "export", "spring", str(raw), "--raw-csv"]).exit_code == 0
    to_stdout = runner.invoke(cli, ["calls", "export", "spring", "-"])
    assert to_stdout.exit_code == 0, to_stdout.output

    safe_rows = _csv_rows(safe.read_bytes())
    assert len(safe_rows) == 12
    _check_names(safe_rows, quoted=True)
    assert _csv_rows(to_stdout.stdout_bytes) == safe_rows
    raw_rows = _csv_rows(raw.read_bytes())
    _check_names(raw_rows, quoted=False)
    # Only the formulas differ between the two files.
    for quoted, as_stored in zip(safe_rows, raw_rows, strict=True):
        differ = {key for key in quoted if quoted[key] != as_stored[key]}
        assert differ == {"first_name"}
    # The database keeps the names as they were given.
    with seeded.connect() as conn:
        stored = conn.execute(text("SELECT id, first_name, last_name FROM contacts")).all()
    assert {id_: (first, last) for id_, first, last in stored if id_ in FORMULA_NAMES} == (
        FORMULA_NAMES
    )


def test_calls_list_csv_quotes_formulas_unless_raw(cli_env: str, formula_names: dict) -> None:
    runner = CliRunner()
    listing = ["calls", "list", "--campaign", "spring", "--format", "csv"]
    safe = runner.invoke(cli, listing)
    assert safe.exit_code == 0, safe.output
    _check_names(_csv_rows(safe.stdout_bytes), quoted=True)
    raw = runner.invoke(cli, [*listing, "--raw-csv"])
    assert raw.exit_code == 0, raw.output
    _check_names(_csv_rows(raw.stdout_bytes), quoted=False)
    # JSON is for programs: always as stored.
    as_json = runner.invoke(cli, ["calls", "list", "--campaign", "spring", "--json"])
    assert {r["first_name"] for r in json.loads(as_json.output)} == {
        first for first, _ in FORMULA_NAMES.values()
    }


def test_export_text_columns_are_the_view_text_columns(conn: Connection) -> None:
    # A text column left out of the list would be exported unquoted.
    names = conn.execute(
        text(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'call_attempts_report' AND data_type = 'text'"
        )
    ).scalars()
    assert set(names) == reports.EXPORT_TEXT_COLUMNS
