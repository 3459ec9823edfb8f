"""`dialer rules` through the command runner, checked against the database it changes: every
bad input refused with its field named and nothing written, imports all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support_celery import rows, scalar


def counts(session_factory) -> tuple[int, int, int]:
    return tuple(
        scalar(session_factory, f"SELECT count(*) FROM {t}")
        for t in ("calling_rules", "calling_holidays", "frequency_rules")
    )


def test_hours_holidays_and_frequency_rules_are_added_listed_and_removed(
    dialer, session_factory
) -> None:
    added = json.loads(dialer("rules", "hours", "add", "us-tx", "--days", "mon-fri",
                              "--hours", "09:00-20:00", "--note", "state", "--json").output)  # fmt: skip
    assert added | {"id": 0} == {"id": 0, "where": "US-TX", "scope": "region", "days": "mon-fri",
                                 "hours": "09:00-20:00", "note": "state"}  # fmt: skip
    dialer("rules", "hours", "add", "+1415", "--days", "sat", "--hours", "10:00-16:00")
    dialer("rules", "holiday", "add", "US", "2027-07-05", "--name", "observed")
    dialer("rules", "frequency", "add", "seven", "--max-attempts", "7", "--period", "7d")
    dialer("rules", "frequency", "add", "rest", "--after-conversation", "24h")

    listed = json.loads(dialer("rules", "hours", "list", "--json").output)
    assert [(r["scope"], r["where"]) for r in listed] == [
        ("area_code", "+1415"),
        ("region", "US-TX"),
    ]
    assert json.loads(dialer("rules", "holiday", "list", "--json").output) == [
        {"where": "US", "scope": "country", "date": "2027-07-05", "name": "observed"}
    ]
    assert json.loads(dialer("rules", "frequency", "list", "--json").output) == [
        {"name": "rest", "max_attempts": None, "period": None, "after_conversation": "1d"},
        {"name": "seven", "max_attempts": 7, "period": "7d", "after_conversation": None},
    ]
    assert counts(session_factory) == (2, 1, 2)

    dialer("rules", "hours", "remove", str(added["id"]))
    dialer("rules", "holiday", "remove", "US", "2027-07-05")
    dialer("rules", "frequency", "remove", "seven")
    assert counts(session_factory) == (1, 0, 1)
    assert "no calling rule 999" in dialer("rules", "hours", "remove", "999", ok=False).output


def test_every_change_moves_the_rules_version(dialer, session_factory) -> None:
    versions = [scalar(session_factory, "SELECT version FROM rules_version")]
    for args in (
        ("hours", "add", "US", "--days", "mon", "--hours", "09:00-17:00"),
        ("holiday", "add", "US", "2027-01-01"),
        ("frequency", "add", "one", "--max-attempts", "1", "--period", "1h"),
        ("frequency", "remove", "one"),
    ):
        dialer("rules", *args)
        versions.append(scalar(session_factory, "SELECT version FROM rules_version"))
    assert versions == sorted(set(versions)), "each change must move the version forward"


BAD_INPUTS = [
    ("unknown region", ("hours", "add", "US-XX", "--days", "mon", "--hours", "09:00-17:00"),
     "where: unknown region 'US-XX'"),
    ("unknown country", ("hours", "add", "QQ", "--days", "mon", "--hours", "09:00-17:00"),
     "where: 'QQ' is not a known region code"),
    ("area code without a country code", ("holiday", "add", "+999", "2027-01-01"),
     "where: '+999' does not start with a country code"),
    ("area code not digits", ("holiday", "add", "+1-415", "2027-01-01"),
     "where: '+1-415' is not an area code"),
    ("bad days", ("hours", "add", "US", "--days", "mon-funday", "--hours", "09:00-17:00"),
     "days: 'mon-funday': unknown day"),
    ("hours backwards", ("hours", "add", "US", "--days", "mon", "--hours", "17:00-09:00"),
     "hours: '17:00-09:00': the start must be before the end"),
    ("hours outside the guard", ("hours", "add", "US", "--days", "mon", "--hours", "05:00-07:30"),
     "hours: 05:00-07:30 allows no call"),
    ("a line break in a note", ("hours", "add", "US", "--days", "mon", "--hours", "09:00-17:00",
                                "--note", "a\nb"), "note: must not contain line breaks"),
    ("bad date", ("holiday", "add", "US", "2027-02-30"), "date: '2027-02-30' is not a date"),
    ("attempts without period", ("frequency", "add", "x", "--max-attempts", "3"), "period: give"),
    ("both kinds", ("frequency", "add", "x", "--max-attempts", "3", "--period", "1d",
                    "--after-conversation", "4h"), "after_conversation: a rule is either"),
    ("zero attempts", ("frequency", "add", "x", "--max-attempts", "0", "--period", "1d"),
     "max_attempts:"),
    ("bad period", ("frequency", "add", "x", "--max-attempts", "3", "--period", "7 days"),
     "period: '7 days' is not a duration"),
    ("period over a year", ("frequency", "add", "x", "--max-attempts", "3", "--period", "400d"),
     "period: '400d' must be at most 366 days"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), [c[1:] for c in BAD_INPUTS],
                         ids=[c[0] for c in BAD_INPUTS])  # fmt: skip
def test_bad_input_is_refused_naming_its_field(dialer, session_factory, args, message) -> None:
    result = dialer("rules", *args, ok=False)
    assert message in result.output
    assert counts(session_factory) == (0, 0, 0)


def test_overlapping_and_repeated_rules_are_refused(dialer, session_factory) -> None:
    dialer("rules", "hours", "add", "US-CA", "--days", "mon-fri", "--hours", "09:00-20:00")
    overlap = dialer("rules", "hours", "add", "us-ca", "--days", "fri-sun", "--hours",
                     "10:00-12:00", ok=False).output  # fmt: skip
    assert "days: US-CA already has hours for fri" in overlap
    # Other days, or another scope, are fine.
    dialer("rules", "hours", "add", "US-CA", "--days", "sat", "--hours", "10:00-12:00")
    dialer("rules", "hours", "add", "US", "--days", "mon-fri", "--hours", "08:00-21:00")
    dialer("rules", "holiday", "add", "US", "2027-01-01")
    assert "already has a holiday on 2027-01-01" in dialer(
        "rules", "holiday", "add", "US", "2027-01-01", ok=False).output  # fmt: skip
    dialer("rules", "frequency", "add", "seven", "--max-attempts", "7", "--period", "7d")
    assert "already says the same" in dialer(
        "rules", "frequency", "add", "again", "--max-attempts", "7", "--period", "168h",
        ok=False).output  # fmt: skip
    assert counts(session_factory) == (3, 1, 1)


def test_an_import_loads_every_row_or_none_and_names_each_bad_line(
    dialer, session_factory, tmp_path: Path
) -> None:
    bad = tmp_path / "rules.csv"
    bad.write_text(
        "where,days,hours,date,note\n"
        "US,mon-fri,08:00-21:00,,fine\n"
        "US-ZZ,mon,09:00-17:00,,unknown region\n"
        "US,fri-sat,09:00-17:00,,overlaps line 2\n"
        "US,,,2027-13-01,bad date\n"
        "US-TX,mon,09:00-17:00,2027-01-01,both kinds\n"
        "US,,,2027-01-01,fine\n"
        "US,,,2027-01-01,twice\n",
        encoding="utf-8",
    )
    result = dialer("rules", "import", str(bad), ok=False)
    lines = [line.split(": ", 1)[1] for line in result.output.splitlines() if "line " in line]
    assert [line.split(":")[0] for line in lines] == [
        "line 3", "line 4", "line 5", "line 6", "line 8"]  # fmt: skip
    assert "unknown region 'US-ZZ'" in lines[0] and "already has hours for fri" in lines[1]
    assert "nothing was loaded" in result.output
    assert counts(session_factory) == (0, 0, 0)

    header = tmp_path / "header.csv"
    header.write_text("where,days,hours,when\nUS,mon,09:00-17:00,\n", encoding="utf-8")
    assert "header: expected columns" in dialer("rules", "import", str(header), ok=False).output


def test_the_example_file_loads_and_check_says_what_applies(dialer, tmp_path: Path) -> None:
    example = tmp_path / "example.csv"
    example.write_text(dialer("rules", "example").output, encoding="utf-8")
    loaded = json.loads(dialer("rules", "import", str(example), "--json").output)
    assert loaded["hours"] >= 3 and loaded["holidays"] >= 2
    # 2027-01-01 is a holiday in the example file: 10:00 in San Francisco is closed then.
    checked = json.loads(dialer("rules", "check", "+14155550123", "--at",
                                "2027-01-01T10:00:00-08:00", "--json").output)  # fmt: skip
    assert checked["regions"] == ["US-CA"]
    assert checked["rules"] == ["area code +1415", "US", "US-CA"]
    assert checked["open"] is False and checked["next_open"] > "2027-01-01T"
    assert "at: " in dialer("rules", "check", "+14155550123", "--at", "tomorrow", ok=False).output


def test_the_rules_survive_in_the_database_as_typed(dialer, session_factory) -> None:
    dialer("rules", "hours", "add", "ca-ns", "--days", "mon,wed", "--hours", "9:05-17:30")
    [rule] = rows(
        session_factory, "SELECT scope, value, days, hours_start, hours_end FROM calling_rules"
    )
    assert (rule.scope, rule.value, rule.days) == ("region", "CA-NS", [1, 3])
    assert (str(rule.hours_start), str(rule.hours_end)) == ("09:05:00", "17:30:00")
