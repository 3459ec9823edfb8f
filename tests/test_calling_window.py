"""Calling windows in the callee's zones: tables of known cases, then properties over all zones.

The property tests compare `next_open` with a brute-force scan of every minute (all window
edges, UTC offsets and DST changes since 2000 fall on whole minutes, so the open set can only
change on a minute boundary).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dialer.campaigns.calling_window import (
    GUARD_END,
    GUARD_START,
    HORIZON,
    CallingWindow,
    country_zones,
    is_open,
    next_open,
    zones_for,
)

UTC = dt.UTC
WEEKDAYS = frozenset({1, 2, 3, 4, 5})
NY = "America/New_York"
LA = "America/Los_Angeles"


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def local(zone: str, *args: int, fold: int = 0) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zoneinfo.ZoneInfo(zone), fold=fold)


def window(start: str = "09:00", end: str = "20:00", days=WEEKDAYS) -> CallingWindow:
    return CallingWindow(dt.time.fromisoformat(start), dt.time.fromisoformat(end), frozenset(days))


# (case, window, zones, instant, expected next opening or None)
NEXT_OPEN_CASES = [
    ("open now: returns the instant itself", window(), [NY], local(NY, 2024, 3, 5, 10, 0),
     local(NY, 2024, 3, 5, 10, 0)),
    ("before opening, same day", window(), [NY], local(NY, 2024, 3, 5, 7, 59),
     local(NY, 2024, 3, 5, 9, 0)),
    ("at closing time it is closed: next weekday", window(), [NY], local(NY, 2024, 3, 5, 20, 0),
     local(NY, 2024, 3, 6, 9, 0)),
    ("Friday evening to Monday, across the spring-forward Sunday", window(), [NY],
     local(NY, 2024, 3, 8, 20, 30), utc(2024, 3, 11, 13, 0)),
    ("Friday evening to Monday, across the fall-back Sunday", window(), [NY],
     local(NY, 2024, 11, 1, 20, 30), utc(2024, 11, 4, 14, 0)),
    ("two zones: both must be open (LA opens last)", window(), [NY, LA],
     local(NY, 2024, 3, 5, 9, 0), local(LA, 2024, 3, 5, 9, 0)),
    ("guard narrows a wider window: 06:00-23:00 opens at 08:00", window("06:00", "23:00"), [NY],
     local(NY, 2024, 3, 5, 6, 30), local(NY, 2024, 3, 5, 8, 0)),
    ("guard closes at 21:00 whatever the campaign says", window("06:00", "23:00"), [NY],
     local(NY, 2024, 3, 5, 21, 0), local(NY, 2024, 3, 6, 8, 0)),
    ("weekend-only campaign", window(days={6, 7}), [NY], local(NY, 2024, 3, 5, 12, 0),
     local(NY, 2024, 3, 9, 9, 0)),
    ("half-hour DST zone (Lord Howe) on its change day",
     window("08:00", "21:00", range(1, 8)), ["Australia/Lord_Howe"],
     local("Australia/Lord_Howe", 2024, 4, 6, 22, 0), local("Australia/Lord_Howe", 2024, 4, 7, 8, 0)),
    ("window narrowed to nothing by the guard", window("21:00", "23:00"), [NY],
     local(NY, 2024, 3, 5, 12, 0), None),
    ("zones 25 hours apart never share a one-hour window", window("09:00", "10:00", range(1, 8)),
     ["Pacific/Kiritimati", "Pacific/Pago_Pago"], utc(2024, 3, 5, 0, 0), None),
    ("no zone at all is never open", window(), [], utc(2024, 3, 5, 15, 0), None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("win", "zones", "at", "expected"),
    [case[1:] for case in NEXT_OPEN_CASES],
    ids=[case[0] for case in NEXT_OPEN_CASES],
)
def test_next_open_table(win, zones, at, expected) -> None:
    assert next_open(win, zones, at) == expected
    assert is_open(win, zones, at) == (expected == at)
    if expected is not None:
        assert is_open(win, zones, expected)
        if expected > at:
            assert not is_open(win, zones, expected - dt.timedelta(microseconds=1))


IS_OPEN_CASES = [
    ("Monday 09:00 New York", window(), [NY], local(NY, 2024, 3, 4, 9, 0), True),
    ("Monday 08:59:59 New York", window(), [NY], local(NY, 2024, 3, 4, 8, 59, 59), False),
    ("Saturday noon, weekdays only", window(), [NY], local(NY, 2024, 3, 9, 12, 0), False),
    ("open in New York, not yet in Los Angeles", window(), [NY, LA],
     local(NY, 2024, 3, 4, 11, 0), False),
    ("DST: 09:30 EDT is 13:30 UTC, open", window(), [NY], utc(2024, 3, 11, 13, 30), True),
    ("DST: 13:30 UTC the week before is 08:30 EST, closed", window(), [NY],
     utc(2024, 3, 4, 13, 30), False),
    ("fall-back night: second 01:30 is still outside", window("08:00", "21:00", range(1, 8)),
     [NY], local(NY, 2024, 11, 3, 1, 30, fold=1), False),
    ("guard: 07:00 refused even if the campaign allows 00:00-23:59",
     window("00:00", "23:59", range(1, 8)), [NY], local(NY, 2024, 3, 4, 7, 0), False),
    ("guard: 20:59 allowed", window("00:00", "23:59", range(1, 8)), [NY],
     local(NY, 2024, 3, 4, 20, 59), True),
    ("guard: 21:00 refused", window("00:00", "23:59", range(1, 8)), [NY],
     local(NY, 2024, 3, 4, 21, 0), False),
    ("Auckland weekday is Tuesday while UTC is Monday", window(days={2}), ["Pacific/Auckland"],
     utc(2024, 3, 4, 23, 0), True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("win", "zones", "at", "expected"),
    [case[1:] for case in IS_OPEN_CASES],
    ids=[case[0] for case in IS_OPEN_CASES],
)
def test_is_open_table(win, zones, at, expected) -> None:
    assert is_open(win, zones, at) is expected


ZONES_FOR_CASES = [
    ("stored zones are used as they are", "+12125550101", ["America/Chicago"],
     ("America/Chicago",)),
    ("no stored zone: the number's prefix (212 is New York)", "+12125550101", [],
     ("America/New_York",)),
    ("unknown marker is no zone", "+442079460000", ["Etc/Unknown"], ("Europe/London",)),
    ("prefix without a zone: every zone of the country code", "+1234567890", [],
     country_zones(1)),
    ("a stored zone zoneinfo does not know: the strict fallback", "+12125550101",
     ["Mars/Olympus_Mons"], country_zones(1)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("phone", "stored", "expected"),
    [case[1:] for case in ZONES_FOR_CASES],
    ids=[case[0] for case in ZONES_FOR_CASES],
)
def test_zones_for(phone: str, stored: list[str], expected: tuple[str, ...]) -> None:
    assert zones_for(phone, stored) == expected


def test_country_fallback_spans_the_whole_numbering_plan() -> None:
    zones = country_zones(1)
    assert {"Pacific/Guam", "Pacific/Honolulu", NY, "America/St_Johns"} <= set(zones)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(window(), [NY], dt.datetime(2024, 3, 4, 12, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_open(window(), [NY], dt.datetime(2024, 3, 4, 12, 0))


def test_window_from_campaign_and_bad_days() -> None:
    class Row:
        calling_hours_start = dt.time(10)
        calling_hours_end = dt.time(22)
        calling_days = [1, 7]

    win = CallingWindow.from_campaign(Row())
    assert win.days == frozenset({1, 7})
    assert win.effective_hours == (dt.time(10), GUARD_END)
    with pytest.raises(ValueError, match="ISO weekdays"):
        window(days={0, 1})


# -- properties ---------------------------------------------------------------------------

ALL_ZONES = sorted(zoneinfo.available_timezones())
# Zones whose clocks change, some by unusual amounts or at unusual hours.
DST_ZONES = [
    NY, LA, "Europe/London", "Europe/Berlin", "Australia/Sydney", "Australia/Lord_Howe",
    "America/Santiago", "America/Asuncion", "Pacific/Auckland", "America/St_Johns",
    "Asia/Tehran", "America/Havana", "Africa/Casablanca", "Pacific/Chatham", "Antarctica/Troll",
    "America/Nuuk", "Asia/Gaza", "Europe/Dublin",
]  # fmt: skip
START_2000 = int(utc(2000, 1, 1).timestamp())
END_2037 = int(utc(2037, 1, 1).timestamp())
MINUTE = dt.timedelta(minutes=1)


def _transitions_near(zone: str, seconds: int) -> list[int]:
    """UTC offset changes of `zone` within a year after `seconds` (bisected to the second)."""
    tz = zoneinfo.ZoneInfo(zone)

    def offset(s: int) -> dt.timedelta | None:
        return dt.datetime.fromtimestamp(s, UTC).astimezone(tz).utcoffset()

    found = []
    step = 6 * 3600
    for lo in range(seconds, seconds + 366 * 86400, step):
        hi = lo + step
        if offset(lo) != offset(hi):
            a, b = lo, hi
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (mid, b) if offset(mid) == offset(a) else (a, mid)
            found.append(b)
    return found


@st.composite
def instants(draw: st.DrawFn, zones: list[str]) -> dt.datetime:
    """An instant, half the time within two days of one of the zones' DST changes."""
    base = draw(st.integers(START_2000, END_2037))
    if draw(st.booleans()):
        changes = _transitions_near(draw(st.sampled_from(zones)), base)
        if changes:
            base = draw(st.sampled_from(changes)) + draw(st.integers(-2 * 86400, 2 * 86400))
    micro = draw(st.sampled_from([0, 0, 1, 999_999, draw(st.integers(0, 999_999))]))
    return dt.datetime.fromtimestamp(base, UTC).replace(microsecond=micro)


@st.composite
def windows(draw: st.DrawFn) -> CallingWindow:
    """Mostly windows that overlap the guard hours (others are simply never open)."""
    if draw(st.integers(0, 9)):
        start = draw(st.integers(6 * 60, 20 * 60))
        end = draw(st.integers(start + 1, 23 * 60))
    else:
        start = draw(st.integers(0, 24 * 60 - 2))
        end = draw(st.integers(start + 1, 24 * 60 - 1))
    days = draw(st.frozensets(st.integers(1, 7), min_size=1))
    return CallingWindow(dt.time(start // 60, start % 60), dt.time(end // 60, end % 60), days)


zone_sets = st.one_of(
    st.lists(st.sampled_from(DST_ZONES), min_size=1, max_size=2, unique=True),
    st.lists(st.sampled_from(ALL_ZONES), min_size=1, max_size=2, unique=True),
)


def _first_open_minute(win: CallingWindow, zones: list[str], at: dt.datetime, until: dt.datetime):
    """Brute force: `at` if open, else the first whole minute after it that is open."""
    if is_open(win, zones, at):
        return at
    t = at.replace(second=0, microsecond=0) + MINUTE
    while t < until:
        if is_open(win, zones, t):
            return t
        t += MINUTE
    return None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), win=windows(), zones=zone_sets)
def test_next_open_is_the_first_open_instant(data, win: CallingWindow, zones: list[str]) -> None:
    at = data.draw(instants(zones))
    found = next_open(win, zones, at)
    if found is None:
        # Checked over the first 8 days (every weekday pattern once): nothing may be open.
        assert _first_open_minute(win, zones, at, at + dt.timedelta(days=8)) is None
        return
    assert at <= found < at + HORIZON
    assert is_open(win, zones, found), "next_open returned a closed instant"
    assume(found - at <= dt.timedelta(days=8))  # keep the brute force bounded
    assert _first_open_minute(win, zones, at, found + MINUTE) == found


@settings(max_examples=200, deadline=None)
@given(data=st.data(), win=windows(), zones=zone_sets)
def test_open_means_inside_every_rule_in_every_zone(data, win: CallingWindow, zones) -> None:
    at = data.draw(instants(zones))
    if not is_open(win, zones, at):
        return
    for name in zones:
        wall = at.astimezone(zoneinfo.ZoneInfo(name))
        assert GUARD_START <= wall.time() < GUARD_END
        assert win.start <= wall.time() < win.end
        assert wall.isoweekday() in win.days
