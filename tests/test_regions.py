"""The area-code table (`dialer.campaigns.nanp_areas`) against phonenumbers' geocoding data,
and a number's regions."""

from __future__ import annotations

import subprocess
import sys

import phonenumbers
import pytest
from phonenumbers import geocoder

from dialer.campaigns import regions
from dialer.campaigns.nanp_areas import REGIONS_BY_AREA


def _from_geocoding_data() -> dict[str, frozenset[str]]:
    """Every North American geographic area code's regions, read from the library's data."""
    found: dict[str, frozenset[str]] = {}
    for npa in range(200, 1000):
        number = phonenumbers.parse(f"+1{npa}2345678")
        if not phonenumbers.is_valid_number(number):
            continue
        country = phonenumbers.region_code_for_number(number)
        if country not in regions.REGIONS:
            continue
        description = geocoder.description_for_number(number, "en")
        named = {regions.region_named(part.strip(), country) for part in description.split("/")}
        named.discard(None)
        if named:
            found[f"+1{npa}"] = frozenset(r for r in named if r is not None)
    return found


def test_the_table_is_the_geocoding_data() -> None:
    assert _from_geocoding_data() == REGIONS_BY_AREA


REGIONS_CASES = [
    ("San Francisco", "+14155550100", {"US-CA"}),
    ("902 serves two provinces", "+19025550100", {"CA-NS", "CA-PE"}),
    ("867: three territories", "+18675550100", {"CA-NT", "CA-NU", "CA-YT"}),
    ("Washington D.C.", "+12025550100", {"US-DC"}),
    ("toll-free: every US region", "+18005550100", regions.REGIONS["US"]),
    ("Puerto Rico is its own country", "+17875550100", set()),
    ("not North American", "+442071234567", set()),
]  # fmt: skip


@pytest.mark.parametrize(("phone", "expected"), [c[1:] for c in REGIONS_CASES],
                         ids=[c[0] for c in REGIONS_CASES])  # fmt: skip
def test_regions_of(phone: str, expected: set[str]) -> None:
    assert regions.regions_of(phone) == expected


def test_the_dialer_never_loads_the_geocoding_data() -> None:
    """It costs a process about 100 MB: the dialing path must not import it."""
    code = (
        "import sys; import dialer.dialing.dispatch, dialer.dialing.originate, "
        "dialer.outcomes.listener, dialer.cli; "
        "from dialer.campaigns import regions; regions.regions_of('+14155550100'); "
        "print('phonenumbers.geocoder' in sys.modules)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "False"
