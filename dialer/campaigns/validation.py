"""Operator settings, checked before they reach the database (pure functions, no I/O).

Each validator takes the text an operator typed and returns the value to store, or raises
`SettingError` naming the field. No value may contain a line break: settings end up in AMI
headers, where CR or LF would inject headers or whole actions.
"""

from __future__ import annotations

import datetime as dt
import math
import re

from phonenumbers import SUPPORTED_REGIONS

from dialer.phone import InvalidNumber, normalize

DTMF_KEYS = frozenset("0123456789*#")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DELAY_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# A week: a retry further away than this is almost certainly a typo.
MAX_RETRY_DELAY = 7 * 86400

_HOURS = re.compile(r"([0-9]{1,2}):([0-9]{2})-([0-9]{1,2}):([0-9]{2})")
_DELAY = re.compile(r"([0-9]+)([smhd]?)")
_OUTCOME = re.compile(r"[a-z][a-z0-9_]*")
_TRUNK_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# A PBX's name, as the settings name it (DIALER_PBXS): `default` is one of them.
_PBX_NAME = re.compile(r"[a-z][a-z0-9_-]{0,30}")
_SOUND_FILE = re.compile(r"[A-Za-z0-9_-]+")
_DIALPLAN_NAME = re.compile(r"[A-Za-z0-9_.+*#-]+")
# Asterisk queue names the reference dialplan's [dialer-queue] can reach (its _[0-9A-Za-z].).
_QUEUE_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.-]*")
_DIAL_PREFIX = re.compile(r"[0-9*#+]*")
_WORD = re.compile(r"[a-z][a-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_CHANNEL_PLACEHOLDERS = frozenset({"number", "trunk"})
_CALLER_NAME_FORBIDDEN = set('"<>\\')


class SettingError(ValueError):
    """A setting is unusable; `field` names it, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(LookupError):
    """An operator named a trunk, campaign or number that does not exist."""


class AlreadyExists(ValueError):
    """An operator tried to create something under a name already taken."""


def single_line(value: str, field: str) -> str:
    """`value` itself; refused if it holds CR, LF or NUL (header injection)."""
    if any(ch in value for ch in "\r\n\x00"):
        raise SettingError(field, "must not contain line breaks or NUL characters")
    return value


def name(value: str, field: str = "name", *, max_length: int = 100) -> str:
    """A campaign's name: one line of printable text, surrounding blanks removed."""
    text = single_line(value, field).strip()
    if not text:
        raise SettingError(field, "must not be empty")
    if len(text) > max_length:
        raise SettingError(field, f"must be at most {max_length} characters")
    if not text.isprintable():
        raise SettingError(field, "must be printable text")
    return text


def trunk_name(value: str, field: str = "trunk") -> str:
    """A trunk's name as Asterisk knows the endpoint: letters, digits, `_`, `.`, `-`."""
    single_line(value, field)
    if not _TRUNK_NAME.fullmatch(value):
        raise SettingError(field, f"{value!r} may only contain letters, digits, '_', '.' and '-'")
    return value


def pbx_name(value: str, field: str = "pbx") -> str:
    """A PBX's name: a lower-case letter, then up to 30 lower-case letters, digits, `_`, `-`."""
    single_line(value, field)
    if not _PBX_NAME.fullmatch(value):
        raise SettingError(
            field,
            f"{value!r} is not a PBX name: a lower-case letter, then up to 30 lower-case "
            "letters, digits, '_' or '-' (e.g. default, east-1)",
        )
    return value


def phone_number(value: str, field: str, region: str) -> str:
    """A valid number for its country, returned in E.164 (national formats read for `region`)."""
    single_line(value, field)
    try:
        return normalize(value, region, strict=True).e164
    except InvalidNumber as exc:
        raise SettingError(field, f"{value!r}: {exc}") from None


def optional_phone_number(value: str, field: str, region: str) -> str:
    """As `phone_number`, but empty text means "none" (stored as '')."""
    return phone_number(value, field, region) if value.strip() else ""


def dtmf_key(value: str, field: str) -> str:
    """One DTMF key: 0-9, * or #."""
    if value not in DTMF_KEYS:
        raise SettingError(field, f"{value!r} is not one DTMF key (0-9, * or #)")
    return value


def calling_hours(value: str, field: str = "hours") -> tuple[dt.time, dt.time]:
    """`HH:MM-HH:MM`, start before end, within one day (e.g. 09:00-20:00)."""
    single_line(value, field)
    match = _HOURS.fullmatch(value.strip())
    if not match:
        raise SettingError(field, f"{value!r} is not HH:MM-HH:MM (e.g. 09:00-20:00)")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise SettingError(field, f"{value!r} is not a time of day (00:00 to 23:59)")
    start, end = dt.time(h1, m1), dt.time(h2, m2)
    if start >= end:
        raise SettingError(field, f"{value!r}: the start must be before the end")
    return start, end


def calling_days(value: str, field: str = "days") -> list[int]:
    """ISO weekdays (1 = Monday) from `mon-fri`, `mon,wed,sat`, `sat-sun` or `fri-mon`."""
    single_line(value, field)
    days: set[int] = set()
    for part in value.lower().replace(" ", "").split(","):
        if not part:
            raise SettingError(field, f"{value!r}: empty day in the list")
        first, sep, last = part.partition("-")
        start = _weekday(first, value, field)
        end = _weekday(last, value, field) if sep else start
        # A range may wrap over the weekend: fri-mon is Friday to Monday.
        span = (end - start) % 7
        days.update((start - 1 + i) % 7 + 1 for i in range(span + 1))
    return sorted(days)


def _weekday(text: str, whole: str, field: str) -> int:
    for names in (WEEKDAYS, _FULL_WEEKDAYS):
        if text in names:
            return names.index(text) + 1
    raise SettingError(field, f"{whole!r}: unknown day {text!r} (use mon, tue, wed, ... sun)")


def format_days(days: list[int]) -> str:
    """The inverse of `calling_days` for display: `mon-fri`, `mon,wed,sat`."""
    ordered = sorted(set(days))
    runs: list[list[int]] = []
    for day in ordered:
        if runs and day == runs[-1][-1] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{WEEKDAYS[run[0] - 1]}-{WEEKDAYS[run[-1] - 1]}")
        else:
            parts.extend(WEEKDAYS[d - 1] for d in run)
    return ",".join(parts)


def positive_int(value: int | str, field: str) -> int:
    """A whole number greater than zero."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise SettingError(field, f"{value!r} is not a whole number") from None
    if number <= 0:
        raise SettingError(field, f"must be greater than zero, got {number}")
    return number


def positive_number(value: float | str, field: str) -> float:
    """A finite number greater than zero (calls per second may be fractional)."""
    try:
        number = float(str(value).strip())
    except ValueError:
        raise SettingError(field, f"{value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise SettingError(field, f"must be a number greater than zero, got {value!r}")
    return number


def sound_file(value: str, field: str) -> str:
    """An Asterisk sound name: no extension and no directory (Asterisk picks the format)."""
    single_line(value, field)
    if not value:
        raise SettingError(field, "must not be empty")
    if "/" in value or "\\" in value:
        raise SettingError(field, f"{value!r} must be a file name without a directory")
    if "." in value:
        raise SettingError(field, f"{value!r} must be a file name without an extension")
    if not _SOUND_FILE.fullmatch(value):
        raise SettingError(field, f"{value!r} may only contain letters, digits, '_' and '-'")
    return value


def optional_sound_file(value: str, field: str) -> str:
    return sound_file(value, field) if value else ""


def dialplan_name(value: str, field: str) -> str:
    """A dialplan context or extension name."""
    single_line(value, field)
    if not _DIALPLAN_NAME.fullmatch(value):
        raise SettingError(
            field, f"{value!r} may only contain letters, digits and '_', '.', '+', '*', '#', '-'"
        )
    return value


def queue_name(value: str, field: str = "transfer_queue") -> str:
    """An Asterisk queue name (queues.conf section), or '' for none."""
    single_line(value, field)
    if value and (len(value) > 80 or not _QUEUE_NAME.fullmatch(value)):
        raise SettingError(
            field,
            f"{value!r} must start with a letter or digit and hold only letters, digits, '_',"
            " '.' and '-' (at most 80)",
        )
    return value


def ratio(value: float | str, field: str) -> float:
    """A share strictly between 0 and 1, written `0.03` or `3%`."""
    text = single_line(str(value), field).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise SettingError(field, f"{text!r} is not a number (e.g. 0.03 or 3%)") from None
    if not (math.isfinite(number) and 0 < number < 1):
        raise SettingError(field, f"{text!r} must be more than 0 and less than 1 (100%)")
    return number


def dial_prefix(value: str, field: str = "transfer_prefix") -> str:
    """Digits (and * # +) dialled before a number; may be empty."""
    single_line(value, field)
    if not _DIAL_PREFIX.fullmatch(value):
        raise SettingError(field, f"{value!r} may only contain digits, '*', '#' and '+'")
    return value


def caller_name(value: str, field: str = "caller_name") -> str:
    """Caller ID display name; Asterisk parses `"name" <number>`, so quotes and <> are out."""
    single_line(value, field)
    if _CALLER_NAME_FORBIDDEN.intersection(value):
        raise SettingError(field, f'{value!r} must not contain ", <, > or \\')
    if len(value) > 80:
        raise SettingError(field, "must be at most 80 characters")
    return value


def keyword(value: str, field: str) -> str:
    """A lowercase word such as a wait strategy (`random`)."""
    single_line(value, field)
    if not _WORD.fullmatch(value):
        raise SettingError(field, f"{value!r} must be a lowercase word (letters, digits, '_')")
    return value


def span_seconds(text: str, units: str = "smhd", *, bare: bool = True) -> int | None:
    """`90s`, `30m`, `2h`, `1d` (units among `units`; a bare `3600` with `bare`) -> seconds;
    None when `text` is not one. Limits are the caller's."""
    match = _DELAY.fullmatch(text.strip().lower())
    if (
        not match
        or (match.group(2) == "" and not bare)
        or (match.group(2) and match.group(2) not in units)
    ):
        return None
    return int(match.group(1)) * _DELAY_UNITS[match.group(2)]


def retry_rule(value: str, field: str = "retry") -> tuple[str, int]:
    """`OUTCOME=DELAY` -> (outcome, seconds); DELAY is `3600`, `90s`, `30m`, `2h` or `1d`."""
    single_line(value, field)
    outcome, sep, delay = value.partition("=")
    outcome, delay = outcome.strip().lower(), delay.strip().lower()
    if not sep or not outcome or not delay:
        raise SettingError(field, f"{value!r} is not OUTCOME=DELAY (e.g. busy=30m)")
    if not _OUTCOME.fullmatch(outcome):
        raise SettingError(field, f"{value!r}: outcome {outcome!r} must be a lowercase word")
    seconds = span_seconds(delay)
    if seconds is None:
        raise SettingError(field, f"{value!r}: delay {delay!r} is not like 3600, 90s, 30m, 2h, 1d")
    if seconds <= 0:
        raise SettingError(field, f"{value!r}: the delay must be greater than zero")
    if seconds > MAX_RETRY_DELAY:
        raise SettingError(field, f"{value!r}: the delay must be at most 7 days")
    return outcome, seconds


def retry_rules(values: list[str] | tuple[str, ...], field: str = "retry") -> dict[str, int]:
    """Several `OUTCOME=DELAY` rules as {outcome: seconds}; an outcome may appear once."""
    rules: dict[str, int] = {}
    for value in values:
        outcome, seconds = retry_rule(value, field)
        if outcome in rules:
            raise SettingError(field, f"outcome {outcome!r} is given twice")
        rules[outcome] = seconds
    return rules


def region(value: str, field: str = "region") -> str:
    """An ISO 3166 alpha-2 region phonenumbers knows (e.g. US, GB), upper-cased."""
    single_line(value, field)
    code = value.strip().upper()
    if code not in SUPPORTED_REGIONS:
        raise SettingError(field, f"{value!r} is not a known region code (e.g. US, GB, DE)")
    return code


def channel_template(value: str, field: str = "channel_template") -> str:
    """An Asterisk dial string with `{number}` (and optionally `{trunk}`) placeholders."""
    single_line(value, field)
    if "{number}" not in value:
        raise SettingError(field, f"{value!r} must contain the {{number}} placeholder")
    unknown = set(_PLACEHOLDER.findall(value)) - _CHANNEL_PLACEHOLDERS
    if unknown:
        raise SettingError(
            field, f"{value!r}: unknown placeholder(s) {sorted(unknown)}; use {{number}}, {{trunk}}"
        )
    if any(ch.isspace() for ch in value) or "," in value:
        raise SettingError(field, f"{value!r} must not contain spaces or commas")
    return value


def timestamp(value: str, field: str) -> dt.datetime:
    """An ISO 8601 date-time with a UTC offset (`2026-03-01T09:00:00+01:00` or `...Z`)."""
    single_line(value, field)
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise SettingError(
            field, f"{value!r} is not an ISO 8601 date-time (e.g. 2026-03-01T09:00:00+01:00)"
        ) from None
    if moment.tzinfo is None:
        raise SettingError(field, f"{value!r} needs a UTC offset, e.g. +01:00 or Z")
    return moment
