"""Calling windows: when a callee may be called, in the callee's own time zones (pure, no I/O).

A contact is callable at an instant when, in every time zone its number may be in, the local
weekday is one of the campaign's days and the local time is inside the campaign's hours *and*
inside the absolute guard 08:00-21:00, which the operator cannot widen. Local time comes from
zoneinfo, so DST changes are exact: the window follows the wall clock, not a fixed UTC offset.

A `Schedule` is the general form: open hours per weekday (several stretches a day) and local
dates closed all day (holidays). The campaign's window is one; region calling rules
(`dialer.campaigns.calling_rules`) give others, and `Schedule.intersect` keeps what all of
them allow, so the strictest rule applies. Every schedule lies inside the guard.

`next_open` finds the earliest instant at or after a given one when the window is open in all
zones. It walks the zone's constant-offset stretches (found by bisecting `utcoffset`), so it
agrees with `is_open` at every instant, including inside DST gaps and folds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Protocol, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezone
from phonenumbers.tzdata import TIMEZONE_DATA

GUARD_START = dt.time(8, 0)
GUARD_END = dt.time(21, 0)
ALL_DAYS = frozenset(range(1, 8))
# Far enough to cover every weekly pattern plus a DST change; a window that does not open
# within it is treated as never opening.
HORIZON = dt.timedelta(days=15)
UNKNOWN_ZONE = "Etc/Unknown"
# No zone changes its UTC offset twice within this span, so probing at this step finds every
# change (then bisected to the second).
_PROBE_STEP = 2 * 3600
_EPOCH = dt.datetime(1970, 1, 1)
_UTC = dt.UTC


class _CampaignHours(Protocol):
    calling_hours_start: dt.time
    calling_hours_end: dt.time
    calling_days: Sequence[int]


@dataclass(frozen=True, slots=True)
class CallingWindow:
    """Callee-local hours [start, end) on ISO weekdays `days` (1 = Monday), as configured.

    Evaluation always intersects these with the absolute guard (see `effective_hours`).
    """

    start: dt.time
    end: dt.time
    days: frozenset[int] = ALL_DAYS

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("calling hours are callee-local wall times: no tzinfo")
        if not self.days or not self.days <= ALL_DAYS:
            raise ValueError(f"calling days must be ISO weekdays 1-7, got {sorted(self.days)}")

    @classmethod
    def from_campaign(cls, campaign: _CampaignHours) -> CallingWindow:
        return cls(
            start=campaign.calling_hours_start,
            end=campaign.calling_hours_end,
            days=frozenset(int(d) for d in campaign.calling_days),
        )

    @property
    def effective_hours(self) -> tuple[dt.time, dt.time]:
        """The configured hours narrowed to the guard; start >= end means never open."""
        return max(self.start, GUARD_START), min(self.end, GUARD_END)

    def schedule(self) -> Schedule:
        return _window_schedule(self)


# Open stretches of one day: sorted, disjoint, non-empty [start, end) intervals.
Hours: TypeAlias = tuple[tuple[dt.time, dt.time], ...]
_GUARD: Hours = ((GUARD_START, GUARD_END),)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Open hours per ISO weekday (`week[0]` is Monday) and local dates closed all day.

    Built through `weekly` (or `CallingWindow.schedule`), which narrow every stretch to the
    guard, and combined with `intersect`.
    """

    week: tuple[Hours, ...]
    closed_dates: frozenset[dt.date] = frozenset()

    def __post_init__(self) -> None:
        if len(self.week) != 7:
            raise ValueError("a schedule has hours for the 7 weekdays")

    @classmethod
    def weekly(
        cls,
        stretches: Iterable[tuple[Iterable[int], dt.time, dt.time]],
        closed_dates: Iterable[dt.date] = (),
    ) -> Schedule:
        """Open on each stretch's weekdays between its hours (stretches add up), within the
        guard; closed on the weekdays no stretch names and on `closed_dates`."""
        days: list[list[tuple[dt.time, dt.time]]] = [[] for _ in range(7)]
        for weekdays, start, end in stretches:
            for day in weekdays:
                if day not in ALL_DAYS:
                    raise ValueError(f"calling days must be ISO weekdays 1-7, got {day}")
                days[day - 1].append((start, end))
        week = tuple(_intersect_hours(_union_hours(d), _GUARD) for d in days)
        return cls(week, frozenset(closed_dates))

    @classmethod
    def always(cls) -> Schedule:
        """Every day within the guard: what no rule at all allows."""
        return cls((_GUARD,) * 7)

    def intersect(self, other: Schedule) -> Schedule:
        """Open only when both are: the stricter of the two at every instant."""
        if other is self:
            return self
        week = tuple(_intersect_hours(a, b) for a, b in zip(self.week, other.week, strict=True))
        return Schedule(week, self.closed_dates | other.closed_dates)

    def hours_on(self, day: dt.date) -> Hours:
        """The open stretches of local date `day`."""
        if day in self.closed_dates:
            return ()
        return self.week[day.isoweekday() - 1]

    @property
    def never(self) -> bool:
        """No weekday has any open stretch."""
        return not any(self.week)


def is_open(window: CallingWindow | Schedule, zones: Iterable[str], at: dt.datetime) -> bool:
    """True when the window is open at `at` in every zone (no zone: never open)."""
    _require_aware(at)
    schedule = _as_schedule(window)
    if schedule.never:
        return False
    zone_list = list(zones)
    if not zone_list:
        return False
    for name in zone_list:
        local = at.astimezone(_zone(name))
        moment = local.time()
        if not any(start <= moment < end for start, end in schedule.hours_on(local.date())):
            return False
    return True


def next_open(
    window: CallingWindow | Schedule, zones: Iterable[str], at: dt.datetime
) -> dt.datetime | None:
    """The earliest instant >= `at` when the window is open in every zone, in UTC.

    Returns `at` itself when already open, and None when it does not open within `HORIZON`
    (hours narrowed to nothing by the guard, zones too far apart, no zone at all, holidays
    all the way).
    """
    _require_aware(at)
    schedule = _as_schedule(window)
    zone_list = sorted(set(zones))
    if schedule.never or not zone_list:
        return None
    t = _to_naive_utc(at)
    limit = t + HORIZON
    # Each round moves t to the first instant some zone opens at or after t; no common opening
    # is skipped because every zone is closed between t and its own next opening.
    while t < limit:
        candidates = [_zone_next_open(_zone(z), schedule, t, limit) for z in zone_list]
        if any(c is None for c in candidates):
            return None
        latest = max(c for c in candidates if c is not None)
        if latest == t:
            return t.replace(tzinfo=_UTC)
        t = latest
    return None


def zones_for(phone_e164: str, stored: Sequence[str] = ()) -> tuple[str, ...]:
    """The zones a contact's window is evaluated in: the stored ones, else from the number.

    A number whose prefix has no known zone falls back to every zone of its country code (the
    strictest reading: callable only when all of them are open). A stored zone that zoneinfo
    does not know is treated the same way.
    """
    known = tuple(z for z in stored if z and z != UNKNOWN_ZONE)
    if known and all(_zone_exists(z) for z in known):
        return known
    try:
        number = phonenumbers.parse(phone_e164, None)
    except phonenumbers.NumberParseException:
        return ()
    if not known:
        from_prefix = tuple(
            z for z in phone_timezone.time_zones_for_number(number) if z != UNKNOWN_ZONE
        )
        if from_prefix and all(_zone_exists(z) for z in from_prefix):
            return from_prefix
    return country_zones(number.country_code)


@cache
def country_zones(country_code: int) -> tuple[str, ...]:
    """Every zone phonenumbers lists for any prefix of `country_code`, sorted."""
    prefix = str(country_code)
    zones = {
        zone
        for key, names in TIMEZONE_DATA.items()
        if key.startswith(prefix)
        for zone in names
        if zone != UNKNOWN_ZONE and _zone_exists(zone)
    }
    return tuple(sorted(zones))


# -- internals ----------------------------------------------------------------------------


@cache
def _window_schedule(window: CallingWindow) -> Schedule:
    return Schedule.weekly([(window.days, window.start, window.end)])


def _as_schedule(window: CallingWindow | Schedule) -> Schedule:
    return window if isinstance(window, Schedule) else _window_schedule(window)


def _union_hours(stretches: Iterable[tuple[dt.time, dt.time]]) -> Hours:
    merged: list[tuple[dt.time, dt.time]] = []
    for start, end in sorted(s for s in stretches if s[0] < s[1]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _intersect_hours(a: Hours, b: Hours) -> Hours:
    out: list[tuple[dt.time, dt.time]] = []
    for a_start, a_end in a:
        for b_start, b_end in b:
            start, end = max(a_start, b_start), min(a_end, b_end)
            if start < end:
                out.append((start, end))
    return _union_hours(out)


def _require_aware(at: dt.datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("instants must be timezone-aware datetimes")


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@cache
def _zone_exists(name: str) -> bool:
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _to_naive_utc(at: dt.datetime) -> dt.datetime:
    return at.astimezone(_UTC).replace(tzinfo=None)


def _whole_seconds(naive_utc: dt.datetime) -> int:
    delta = naive_utc - _EPOCH
    return delta.days * 86400 + delta.seconds


def _offset_at(zone: ZoneInfo, seconds: int) -> dt.timedelta:
    offset = (_EPOCH + dt.timedelta(seconds=seconds)).replace(tzinfo=_UTC).astimezone(zone)
    return offset.utcoffset() or dt.timedelta(0)


def _segment(
    zone: ZoneInfo, t: dt.datetime, limit: dt.datetime
) -> tuple[dt.timedelta, dt.datetime]:
    """The zone's UTC offset at `t` and the instant it next changes (or `limit`)."""
    lo = _whole_seconds(t)
    offset = _offset_at(zone, lo)
    end = _whole_seconds(limit) + 1
    while lo < end:
        hi = min(lo + _PROBE_STEP, end)
        if _offset_at(zone, hi) != offset:
            # Bisect to the first whole second with the new offset (tzdb changes on seconds).
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_at(zone, mid) == offset:
                    lo = mid
                else:
                    hi = mid
            return offset, _EPOCH + dt.timedelta(seconds=hi)
        lo = hi
    return offset, limit


def _zone_next_open(
    zone: ZoneInfo, schedule: Schedule, t: dt.datetime, limit: dt.datetime
) -> dt.datetime | None:
    """Earliest naive-UTC instant >= t, before `limit`, when one zone's window is open."""
    while t < limit:
        offset, segment_end = _segment(zone, t, limit)
        # Within the segment local time is t + offset, so each local day's window maps to one
        # UTC interval.
        day = (t + offset).date()
        while True:
            day_start = dt.datetime.combine(day, dt.time()) - offset
            if day_start >= segment_end:
                break
            for start, end in schedule.hours_on(day):
                opens = dt.datetime.combine(day, start) - offset
                closes = dt.datetime.combine(day, end) - offset
                lo = max(opens, t)
                if lo < min(closes, segment_end):
                    return lo
            day += dt.timedelta(days=1)
        t = segment_end
    return None
