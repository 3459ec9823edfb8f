"""Region calling rules, holidays and frequency rules: checked, stored, listed, imported, loaded.

Every change is checked as a whole before anything is written: a value that names no known
country, region or area code, days that overlap another rule of the same scope (one rule per
weekday and scope, so two rules never contradict each other), hours that the 08:00-21:00 guard
leaves nothing of, a date given twice. An import loads all of its rows or none, and names each
bad row's line and field. Workers read the rules through `load_rulebook` and
`load_frequency_rules`; `rules_version` (bumped by triggers) tells them when to read again.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE
from sqlalchemy import Connection, delete, select, text
from sqlalchemy.orm import Session

from dialer.campaigns import validation
from dialer.campaigns.calling_rules import Holiday, HoursRule, RuleBook
from dialer.campaigns.calling_window import GUARD_END, GUARD_START
from dialer.campaigns.frequency import FrequencyRule
from dialer.campaigns.regions import KNOWN_REGIONS
from dialer.campaigns.validation import NotFound, SettingError
from dialer.models import CallingHoliday, CallingRule
from dialer.models import FrequencyRule as FrequencyRuleRow

CSV_COLUMNS = ("where", "days", "hours", "date", "note")
EXAMPLE_FILE = "calling_rules.example.csv"
_AREA_CODE = re.compile(r"\+[1-9][0-9]{0,7}")
# A frequency period longer than this is almost certainly a typo (and a long history to read).
MAX_PERIOD = dt.timedelta(days=366)

VERSION_SQL = "SELECT version FROM rules_version WHERE id = 1"
HOURS_SQL = "SELECT scope, value, days, hours_start, hours_end FROM calling_rules ORDER BY id"
HOLIDAYS_SQL = "SELECT scope, value, day, name FROM calling_holidays ORDER BY id"
FREQUENCY_SQL = (
    "SELECT name, max_attempts, period, after_conversation FROM frequency_rules ORDER BY id"
)


# -- values ---------------------------------------------------------------------------------


def scope_of(value: str, field_name: str = "where") -> tuple[str, str]:
    """`US` -> country, `US-CA` -> region, `+1415` -> area code; anything else is refused."""
    validation.single_line(value, field_name)
    text_value = value.strip()
    if text_value.startswith("+"):
        if not _AREA_CODE.fullmatch(text_value):
            raise SettingError(
                field_name, f"{value!r} is not an area code as an E.164 prefix (e.g. +1415)"
            )
        digits = text_value[1:]
        if not any(digits[:n].isdigit() and int(digits[:n]) in COUNTRY_CODE_TO_REGION_CODE
                   for n in range(1, min(3, len(digits)) + 1)):  # fmt: skip
            raise SettingError(field_name, f"{value!r} does not start with a country code")
        return "area_code", text_value
    upper = text_value.upper()
    if "-" in upper:
        if upper not in KNOWN_REGIONS:
            raise SettingError(
                field_name,
                f"unknown region {value!r}: regions are US states and territories (US-CA) and"
                " Canadian provinces and territories (CA-ON)",
            )
        return "region", upper
    return "country", validation.region(upper, field_name)


def describe_scope(scope: str, value: str) -> str:
    return value if scope != "area_code" else f"area code {value}"


def hours_within_guard(start: dt.time, end: dt.time, field_name: str = "hours") -> None:
    if max(start, GUARD_START) >= min(end, GUARD_END):
        raise SettingError(
            field_name,
            f"{start:%H:%M}-{end:%H:%M} allows no call: calls are only ever made between"
            f" {GUARD_START:%H:%M} and {GUARD_END:%H:%M} local time",
        )


def duration(value: str, field_name: str) -> dt.timedelta:
    """`30m`, `4h`, `7d` -> a timedelta, greater than zero and at most a year."""
    validation.single_line(value, field_name)
    seconds = validation.span_seconds(value, "mhd", bare=False)
    if seconds is None:
        raise SettingError(field_name, f"{value!r} is not a duration like 30m, 4h or 7d")
    span = dt.timedelta(seconds=seconds)
    if span <= dt.timedelta(0):
        raise SettingError(field_name, f"{value!r} must be greater than zero")
    if span > MAX_PERIOD:
        raise SettingError(field_name, f"{value!r} must be at most 366 days")
    return span


def format_duration(span: dt.timedelta | None) -> str | None:
    if span is None:
        return None
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- calling rules --------------------------------------------------------------------------


def add_hours(
    session: Session, where: str, *, days: str, hours: str, note: str = ""
) -> CallingRule:
    """Allow calls in `where` on `days` during `hours`; refused if a weekday already has a
    rule in that scope."""
    rule = _hours_row(where, days, hours, note)
    _refuse_overlap(rule, _existing_hours(session, rule.scope, rule.value))
    session.add(rule)
    session.flush()
    return rule


def add_holiday(session: Session, where: str, *, day: str, name: str = "") -> CallingHoliday:
    """No calls in `where` on local date `day` (YYYY-MM-DD)."""
    holiday = _holiday_row(where, day, name)
    if _holiday_exists(session, holiday):
        raise validation.AlreadyExists(
            f"{describe_scope(holiday.scope, holiday.value)} already has a holiday on"
            f" {holiday.day.isoformat()}"
        )
    session.add(holiday)
    session.flush()
    return holiday


def remove_hours(session: Session, rule_id: int) -> None:
    if session.execute(delete(CallingRule).where(CallingRule.id == rule_id)).rowcount == 0:
        raise NotFound(f"no calling rule {rule_id}")


def remove_holiday(session: Session, where: str, day: str) -> None:
    row = _holiday_row(where, day, "")
    done = session.execute(
        delete(CallingHoliday).where(
            CallingHoliday.scope == row.scope,
            CallingHoliday.value == row.value,
            CallingHoliday.day == row.day,
        )
    )
    if done.rowcount == 0:
        raise NotFound(
            f"no holiday on {row.day.isoformat()} for {describe_scope(row.scope, row.value)}"
        )


def list_hours(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(CallingRule).order_by(CallingRule.scope, CallingRule.value,
                                                         CallingRule.id))  # fmt: skip
    return [describe_hours(r) for r in rows]


def list_holidays(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(CallingHoliday).order_by(
            CallingHoliday.day, CallingHoliday.scope, CallingHoliday.value
        )  # fmt: skip
    )
    return [describe_holiday(r) for r in rows]


def describe_hours(rule: CallingRule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "where": rule.value,
        "scope": rule.scope,
        "days": validation.format_days(list(rule.days)),
        "hours": f"{rule.hours_start:%H:%M}-{rule.hours_end:%H:%M}",
        "note": rule.note,
    }


def describe_holiday(holiday: CallingHoliday) -> dict[str, Any]:
    return {
        "where": holiday.value,
        "scope": holiday.scope,
        "date": holiday.day.isoformat(),
        "name": holiday.name,
    }


@dataclass
class ImportResult:
    hours: int = 0
    holidays: int = 0
    errors: list[str] = field(default_factory=list)


def import_rules(session: Session, handle: io.TextIOBase | Any) -> ImportResult:
    """Rules from CSV (`CSV_COLUMNS`): a row with `days` and `hours` allows calls, a row with
    `date` is a holiday. All rows are checked first, against each other and the rules stored;
    any error and nothing is loaded (`result.errors` names each line and field)."""
    result = ImportResult()
    reader = csv.DictReader(handle)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in ("where",) if c not in header]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if missing or unknown:
        raise SettingError(
            "header",
            f"expected columns {', '.join(CSV_COLUMNS)} (where, then days and hours, or date);"
            f" missing {missing or 'none'}, unknown {unknown or 'none'}",
        )
    reader.fieldnames = header
    # (line, message) while checking: sorted by line, then written out.
    errors: list[tuple[int, str]] = []
    hours_rows: list[tuple[int, CallingRule]] = []
    holiday_rows: list[tuple[int, CallingHoliday]] = []
    for row in reader:
        line = reader.line_num
        cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
        if None in row:
            errors.append((line, "more cells than columns"))
            continue
        try:
            if cells.get("date"):
                if cells.get("days") or cells.get("hours"):
                    raise SettingError(
                        "date", "a row is either a holiday (date) or hours (days, hours)"
                    )
                holiday_rows.append((line, _holiday_row(cells["where"], cells["date"],
                                                        cells.get("note", ""))))  # fmt: skip
            else:
                hours_rows.append((line, _hours_row(cells.get("where", ""), cells.get("days", ""),
                                                    cells.get("hours", ""), cells.get("note", ""))))  # fmt: skip
        except SettingError as exc:
            errors.append((line, str(exc)))
    seen: dict[tuple[str, str], list[CallingRule]] = {}
    for line, rule in hours_rows:
        key = (rule.scope, rule.value)
        if key not in seen:
            seen[key] = _existing_hours(session, *key)
        try:
            _refuse_overlap(rule, seen[key])
        except SettingError as exc:
            errors.append((line, str(exc)))
        seen[key].append(rule)
    dates: set[tuple[str, str, dt.date]] = set()
    for line, holiday in holiday_rows:
        key3 = (holiday.scope, holiday.value, holiday.day)
        if key3 in dates or _holiday_exists(session, holiday):
            errors.append(
                (line, f"date: {describe_scope(holiday.scope, holiday.value)} already has"
                       f" a holiday on {holiday.day.isoformat()}")
            )  # fmt: skip
        dates.add(key3)
    if errors:
        errors.sort(key=lambda error: error[0])  # stable: a line's errors in the order found
        result.errors = [f"line {line}: {message}" for line, message in errors]
        return result
    session.add_all([r for _, r in hours_rows] + [h for _, h in holiday_rows])
    session.flush()
    result.hours, result.holidays = len(hours_rows), len(holiday_rows)
    return result


def example_csv() -> str:
    """The example rules file shipped with the project (made-up values)."""
    return resources.files("dialer.campaigns").joinpath(EXAMPLE_FILE).read_text(encoding="utf-8")


def _hours_row(where: str, days: str, hours: str, note: str) -> CallingRule:
    scope, value = scope_of(where)
    if not days:
        raise SettingError("days", "give the weekdays the hours apply to (e.g. mon-fri)")
    if not hours:
        raise SettingError("hours", "give the hours calls are allowed (e.g. 09:00-20:00)")
    day_list = validation.calling_days(days)
    start, end = validation.calling_hours(hours)
    hours_within_guard(start, end)
    validation.single_line(note, "note")
    return CallingRule(scope=scope, value=value, days=day_list, hours_start=start,
                       hours_end=end, note=note)  # fmt: skip


def _holiday_row(where: str, day: str, name: str) -> CallingHoliday:
    scope, value = scope_of(where)
    validation.single_line(day, "date")
    try:
        date = dt.date.fromisoformat(day.strip())
    except ValueError:
        raise SettingError("date", f"{day!r} is not a date as YYYY-MM-DD") from None
    validation.single_line(name, "name")
    return CallingHoliday(scope=scope, value=value, day=date, name=name)


def _existing_hours(session: Session, scope: str, value: str) -> list[CallingRule]:
    return list(
        session.scalars(
            select(CallingRule).where(CallingRule.scope == scope, CallingRule.value == value)
        )
    )


def _refuse_overlap(rule: CallingRule, others: Iterable[CallingRule]) -> None:
    for other in others:
        shared = sorted(set(rule.days) & set(other.days))
        if shared:
            which = f"rule {other.id}" if other.id else "another row"
            raise SettingError(
                "days",
                f"{describe_scope(rule.scope, rule.value)} already has hours for"
                f" {validation.format_days(shared)} ({which}:"
                f" {validation.format_days(list(other.days))}"
                f" {other.hours_start:%H:%M}-{other.hours_end:%H:%M}); one rule per weekday,"
                " remove that one first",
            )


def _holiday_exists(session: Session, holiday: CallingHoliday) -> bool:
    return (
        session.scalar(
            select(CallingHoliday.id).where(
                CallingHoliday.scope == holiday.scope,
                CallingHoliday.value == holiday.value,
                CallingHoliday.day == holiday.day,
            )
        )
        is not None
    )


# -- frequency rules ------------------------------------------------------------------------


def add_frequency(
    session: Session,
    name: str,
    *,
    max_attempts: str | None = None,
    period: str | None = None,
    after_conversation: str | None = None,
) -> FrequencyRuleRow:
    """At most `max_attempts` sent to one number within `period`, over all campaigns; or no
    call within `after_conversation` of one a person answered."""
    name = validation.name(name)
    if after_conversation is not None and (max_attempts is not None or period is not None):
        raise SettingError(
            "after_conversation", "a rule is either max attempts in a period or a rest after a"
            " conversation; add two rules for both",
        )  # fmt: skip
    if after_conversation is None and (max_attempts is None or period is None):
        raise SettingError(
            "max_attempts" if max_attempts is None else "period",
            "give --max-attempts with --period (e.g. 7 in 7d), or --after-conversation",
        )
    row = FrequencyRuleRow(name=name)
    if after_conversation is not None:
        row.after_conversation = duration(after_conversation, "after_conversation")
    else:
        assert max_attempts is not None and period is not None
        row.max_attempts = validation.positive_int(max_attempts, "max_attempts")
        row.period = duration(period, "period")
    if session.scalar(select(FrequencyRuleRow.id).where(FrequencyRuleRow.name == name)):
        raise validation.AlreadyExists(f"frequency rule {name!r} already exists")
    same = select(FrequencyRuleRow.name).where(
        FrequencyRuleRow.max_attempts.is_not_distinct_from(row.max_attempts),
        FrequencyRuleRow.period.is_not_distinct_from(row.period),
        FrequencyRuleRow.after_conversation.is_not_distinct_from(row.after_conversation),
    )
    twin = session.scalar(same)
    if twin:
        raise validation.AlreadyExists(f"frequency rule {twin!r} already says the same")
    session.add(row)
    session.flush()
    return row


def remove_frequency(session: Session, name: str) -> None:
    done = session.execute(delete(FrequencyRuleRow).where(FrequencyRuleRow.name == name))
    if done.rowcount == 0:
        raise NotFound(f"no frequency rule {name!r}")


def list_frequency(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(FrequencyRuleRow).order_by(FrequencyRuleRow.name))
    return [describe_frequency(r) for r in rows]


def describe_frequency(row: FrequencyRuleRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "max_attempts": row.max_attempts,
        "period": format_duration(row.period),
        "after_conversation": format_duration(row.after_conversation),
    }


# -- loading --------------------------------------------------------------------------------


def rulebook_from_rows(
    version: int, hours: Iterable[Sequence[Any]], holidays: Iterable[Sequence[Any]]
) -> RuleBook:
    """A `RuleBook` from the rows of `HOURS_SQL` and `HOLIDAYS_SQL`."""
    return RuleBook(
        (HoursRule(s, v, frozenset(int(d) for d in days), start, end)
         for s, v, days, start, end in hours),
        (Holiday(s, v, day, name) for s, v, day, name in holidays),
        version,
    )  # fmt: skip


def frequency_from_rows(rows: Iterable[Sequence[Any]]) -> tuple[FrequencyRule, ...]:
    return tuple(FrequencyRule(n, m, p, a) for n, m, p, a in rows)


def load_version(connection: Connection) -> int:
    return int(connection.execute(text(VERSION_SQL)).scalar_one())


def load_rulebook(connection: Connection) -> tuple[RuleBook, tuple[FrequencyRule, ...]]:
    """The calling and frequency rules as stored now, with their version."""
    version = load_version(connection)
    book = rulebook_from_rows(
        version,
        connection.execute(text(HOURS_SQL)),
        connection.execute(text(HOLIDAYS_SQL)),
    )
    return book, frequency_from_rows(connection.execute(text(FREQUENCY_SQL)))
