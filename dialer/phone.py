"""Phone number normalisation: E.164 and the number's time zones (pure, no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat, timezone
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_UNKNOWN_ZONE = "Etc/Unknown"


class InvalidNumber(ValueError):
    """The text is not a valid, dialable phone number; the message says why."""


@dataclass(frozen=True, slots=True)
class NormalizedNumber:
    e164: str
    timezones: tuple[str, ...]


def is_e164(number: str) -> bool:
    """Whether `number` is already E.164 with a country code that exists, without parsing it.

    For numbers that were normalised when they entered the system (contacts): the cheap check
    the dialer repeats per call instead of a full parse.
    """
    if not _E164.match(number or ""):
        return False
    digits = number[1:4]
    return any(int(digits[:n]) in COUNTRY_CODE_TO_REGION_CODE for n in range(1, len(digits) + 1))


def to_e164(raw: str, region: str | None = "US", *, strict: bool = True) -> str:
    """The number in E.164 (`+15551234567`), parsed with `region` for national formats."""
    return normalize(raw, region, strict=strict).e164


def normalize(raw: str, region: str | None = "US", *, strict: bool = True) -> NormalizedNumber:
    """Parse `raw` (E.164 or national format for `region`) into E.164 and its time zones.

    strict: the number must be valid for its country (imports, campaign settings). Lenient mode
    only requires a well-formed E.164 result; the seed's example numbers (`+1234567890`) are not
    valid NANP numbers, yet an operator previewing a payload must be able to reproduce them.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidNumber("missing phone number")
    if any(ch in text for ch in "\r\n\x00"):
        raise InvalidNumber("phone number contains a control character")
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        raise InvalidNumber(f"not a phone number: {_parse_reason(exc)}") from None
    return from_parsed(number, strict=strict)


def from_parsed(number: PhoneNumber, *, strict: bool = True) -> NormalizedNumber:
    """The E.164 form and time zones of an already parsed number (checks as in `normalize`)."""
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if strict:
        if not phonenumbers.is_possible_number(number):
            raise InvalidNumber("impossible number (wrong length for its country)")
        if not phonenumbers.is_valid_number(number):
            raise InvalidNumber("invalid number (no such prefix in its country)")
    elif not _E164.match(e164):
        raise InvalidNumber("not an E.164 number (+, country code, up to 15 digits)")
    zones = tuple(z for z in timezone.time_zones_for_number(number) if z != _UNKNOWN_ZONE)
    return NormalizedNumber(e164=e164, timezones=zones)


def _parse_reason(exc: NumberParseException) -> str:
    return {
        NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        NumberParseException.NOT_A_NUMBER: "no digits",
        NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        NumberParseException.TOO_SHORT_NSN: "too short",
        NumberParseException.TOO_LONG: "too long",
    }.get(exc.error_type, str(exc))
