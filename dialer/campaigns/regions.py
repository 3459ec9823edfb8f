"""Which country, region and area code a phone number belongs to (pure, no I/O).

Regions are the states and territories of the United States and the provinces and territories
of Canada, named by their ISO 3166-2 codes (`US-CA`, `CA-ON`): the places North American
calling rules are written for. A number's region comes from its area code
(`dialer.campaigns.nanp_areas`, phonenumbers' geocoding data kept as a table). An area code serving several regions (902: Nova Scotia and
Prince Edward Island) belongs to all of them; one whose region is unknown (toll-free,
non-geographic) to every region of its country, so the strictest of their rules applies.
"""

from __future__ import annotations

import re

import phonenumbers

from dialer.campaigns.nanp_areas import REGIONS_BY_AREA

US_REGIONS = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "DC": "Washington D.C.",
    "FL": "Florida", "GA": "Georgia", "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois",
    "IN": "Indiana", "IA": "Iowa", "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana",
    "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts", "MI": "Michigan", "MN": "Minnesota",
    "MS": "Mississippi", "MO": "Missouri", "MT": "Montana", "NE": "Nebraska", "NV": "Nevada",
    "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico", "NY": "New York",
    "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma", "OR": "Oregon",
    "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota",
    "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont", "VA": "Virginia",
    "WA": "Washington State", "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming",
}  # fmt: skip
CA_REGIONS = {
    "AB": "Alberta", "BC": "British Columbia", "MB": "Manitoba", "NB": "New Brunswick",
    "NL": "Newfoundland and Labrador", "NS": "Nova Scotia", "NT": "Northwest Territories",
    "NU": "Nunavut", "ON": "Ontario", "PE": "Prince Edward Island", "QC": "Quebec",
    "SK": "Saskatchewan", "YT": "Yukon",
}  # fmt: skip
REGIONS: dict[str, frozenset[str]] = {
    "US": frozenset(f"US-{code}" for code in US_REGIONS),
    "CA": frozenset(f"CA-{code}" for code in CA_REGIONS),
}
KNOWN_REGIONS = REGIONS["US"] | REGIONS["CA"]

# The geocoding data's English names, and its spelling variants, to region codes.
_BY_NAME = {
    **{name: f"US-{code}" for code, name in US_REGIONS.items()},
    **{name: f"CA-{code}" for code, name in CA_REGIONS.items()},
    "Washington": "US-WA",
    "British Colombia": "CA-BC",
}
_TRAILING_CODE = re.compile(r", ([A-Z]{2})$")


def country_of(phone_e164: str) -> str | None:
    """The ISO 3166-1 code of the country the number belongs to (`US`, `GB`), or None.

    Cached: by area code for North American numbers (an area code lies in one country), by the
    whole number elsewhere (+44 7911 is Guernsey, not the United Kingdom), up to a bound."""
    key = phone_e164[:5] if phone_e164.startswith("+1") else phone_e164
    found = _COUNTRIES.get(key, _UNSEEN)
    if found is _UNSEEN:
        if len(_COUNTRIES) >= _COUNTRIES_KEPT:
            _COUNTRIES.clear()
        found = _COUNTRIES[key] = _country_of(phone_e164)
    return found  # type: ignore[return-value]


_UNSEEN = object()
_COUNTRIES: dict[str, str | None] = {}
_COUNTRIES_KEPT = 100_000


def _country_of(phone_e164: str) -> str | None:
    try:
        number = phonenumbers.parse(phone_e164, None)
    except phonenumbers.NumberParseException:
        return None
    # A number no region claims (a reserved or drama range) counts as its country code's
    # main country: its rules still apply.
    found = phonenumbers.region_code_for_number(
        number
    ) or phonenumbers.region_code_for_country_code(number.country_code)
    return None if found in (None, "ZZ", "001") else found


def regions_of(phone_e164: str) -> frozenset[str]:
    """The regions (`US-CA`) a North American number may be in; empty for other numbers."""
    if not phone_e164.startswith("+1") or len(phone_e164) < 5:
        return frozenset()
    area = phone_e164[:5]
    found = REGIONS_BY_AREA.get(area)
    if found is not None:
        return found
    # Unknown (toll-free, non-geographic): every region of the number's country, if it has.
    return REGIONS.get(country_of(phone_e164) or "", frozenset())


def region_named(text: str, country: str) -> str | None:
    """The region code of a geocoding description's part (`Florida`, `San Francisco, CA`)."""
    match = _TRAILING_CODE.search(text)
    code = f"{country}-{match.group(1)}" if match else _BY_NAME.get(text)
    return code if code in REGIONS.get(country, ()) else None
