"""Region calling rules and holidays, and the schedule they give each number (pure, no I/O).

Operators write rules for a scope: a country (`US`), a region (`US-CA`, see
`dialer.campaigns.regions`) or an area code written as an E.164 prefix (`+1415`). A scope's
hour rules add up, and the weekdays none of them names are closed there; its holidays close
whole local dates. A number is under every scope it belongs to (its country, each of its
regions, each rule prefix it starts with), and a call is allowed only when all of them, the
campaign's hours and the guard allow it: the strictest applies. Hours and dates are the
callee's local ones, in every time zone the number may be in (`calling_window`).

`RuleBook` holds the rules as read at one `rules_version`; both the dispatch tick and the last
checks before a send ask it for a number's schedule.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from dialer.campaigns import regions
from dialer.campaigns.calling_window import Schedule

SCOPES = ("country", "region", "area_code")
Scope = tuple[str, str]  # (scope, value)


@dataclass(frozen=True, slots=True)
class HoursRule:
    """Calls allowed in `scope` on ISO weekdays `days` between `start` and `end` (local)."""

    scope: str
    value: str
    days: frozenset[int]
    start: dt.time
    end: dt.time


@dataclass(frozen=True, slots=True)
class Holiday:
    """No calls in `scope` on local date `day`."""

    scope: str
    value: str
    day: dt.date
    name: str = ""


class RuleBook:
    """The rules at one version, and the schedule they give a number (cached per scope set)."""

    def __init__(
        self, hours: Iterable[HoursRule] = (), holidays: Iterable[Holiday] = (), version: int = 0
    ) -> None:
        self.version = version
        self._hours: dict[Scope, list[tuple[frozenset[int], dt.time, dt.time]]] = defaultdict(list)
        self._holidays: dict[Scope, set[dt.date]] = defaultdict(set)
        for rule in hours:
            self._hours[(rule.scope, rule.value)].append((rule.days, rule.start, rule.end))
        for holiday in holidays:
            self._holidays[(holiday.scope, holiday.value)].add(holiday.day)
        scopes = set(self._hours) | set(self._holidays)
        self._countries = {v for s, v in scopes if s == "country"}
        self._regions = {v for s, v in scopes if s == "region"}
        self._prefixes = {v for s, v in scopes if s == "area_code"}
        self._prefix_lengths = sorted({len(p) for p in self._prefixes})
        self._schedules: dict[tuple[Scope, ...], Schedule | None] = {}

    @property
    def empty(self) -> bool:
        return not (self._countries or self._regions or self._prefixes)

    def scopes_for(self, phone_e164: str) -> tuple[Scope, ...]:
        """The scopes with rules that `phone_e164` is under, sorted."""
        if self.empty:
            return ()
        found: list[Scope] = []
        if self._countries:
            country = regions.country_of(phone_e164)
            if country in self._countries:
                found.append(("country", country))
        if self._regions:
            found.extend(("region", r) for r in regions.regions_of(phone_e164) & self._regions)
        for length in self._prefix_lengths:
            if phone_e164[:length] in self._prefixes:
                found.append(("area_code", phone_e164[:length]))
        return tuple(sorted(found))

    def schedule(self, scopes: tuple[Scope, ...]) -> Schedule | None:
        """What the rules of `scopes` together allow; None when there are none."""
        if not scopes:
            return None
        if scopes not in self._schedules:
            combined = Schedule.always()
            for scope in scopes:
                stretches = self._hours.get(scope)
                closed = self._holidays.get(scope, ())
                own = (
                    Schedule.weekly(stretches, closed)
                    if stretches
                    else Schedule(Schedule.always().week, frozenset(closed))
                )
                combined = combined.intersect(own)
            self._schedules[scopes] = combined
        return self._schedules[scopes]

    def schedule_for(self, phone_e164: str) -> Schedule | None:
        return self.schedule(self.scopes_for(phone_e164))
