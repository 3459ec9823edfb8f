"""The demo's contact list: one number per PBX-simulator behaviour, in a region open right now.

The absolute calling-hours guard (08:00-21:00 callee-local) cannot be widened, so a demo run at
any hour of the day picks a country whose local time is comfortably inside it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from phonenumbers import timezone as number_timezone

# Countries spread around the globe, each with a single time zone for its example numbers.
DEMO_REGIONS = ("US", "BR", "GB", "DE", "AE", "IN", "SG", "JP", "AU", "NZ")
# The simulator's behaviour table, by the number's last two digits: what the callee does, and
# the outcome and contact status the dialer must record for it (with two attempts allowed).
BEHAVIOURS: dict[str, tuple[str, str, str]] = {
    "01": ("human, presses the press key", "transferred", "completed"),
    "02": ("human, presses nothing", "human_no_press", "completed"),
    "03": ("answering machine", "voicemail_left", "completed"),
    "04": ("busy", "busy", "exhausted"),
    "05": ("never answers", "no_answer", "exhausted"),
    "06": ("congestion", "congestion", "exhausted"),
    "07": ("answers, hangs up after 1 s", "abandoned", "exhausted"),
    "08": ("human, presses another key", "human_other_key", "completed"),
    "09": ("silent answer (machine)", "voicemail_left", "completed"),
    "10": ("human, hangs up during the prompt", "abandoned", "exhausted"),
}
# A number put on the do-not-call list before the import: loaded as DNC, never dialled.
DNC_SUFFIX = "12"
DNC_BEHAVIOUR = ("on the do-not-call list", None, "dnc")
# Open hours chosen inside the 08:00-21:00 guard with an hour of margin for the run itself.
OPEN_FROM = dt.time(9, 0)
OPEN_UNTIL = dt.time(19, 0)


@dataclass(frozen=True)
class DemoContact:
    phone: str
    first_name: str
    behaviour: str
    expected_outcome: str | None
    expected_status: str


def pick_region(now: dt.datetime) -> tuple[str, str]:
    """(region, zone) of the first demo country whose local time is within the open hours."""
    for region in DEMO_REGIONS:
        number = phonenumbers.example_number_for_type(region, PhoneNumberType.FIXED_LINE)
        (zone,) = number_timezone.time_zones_for_number(number)
        local = now.astimezone(ZoneInfo(zone))
        if OPEN_FROM <= local.time() < OPEN_UNTIL:
            return region, zone
    raise RuntimeError("no demo region is inside its calling hours right now")  # pragma: no cover


def demo_contacts(region: str) -> list[DemoContact]:
    """One contact per behaviour, plus the do-not-call one, numbered from the region's example."""
    example = phonenumbers.example_number_for_type(region, PhoneNumberType.FIXED_LINE)
    base = phonenumbers.format_number(example, PhoneNumberFormat.E164)[:-2]
    table = {**BEHAVIOURS, DNC_SUFFIX: DNC_BEHAVIOUR}
    return [
        DemoContact(f"{base}{suffix}", f"Demo {suffix}", text, outcome, status)
        for suffix, (text, outcome, status) in table.items()
    ]
