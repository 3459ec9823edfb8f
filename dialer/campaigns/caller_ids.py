"""Which caller ID of a pool a call goes out with (pure, no I/O).

Local presence first: a number with the callee's area code (North America), else one in one of
the callee's regions (state, province), else one in the callee's country, else the pool's
default. Among the numbers of the first of those tiers that has one usable, the least used
today (the lowest id among equals). A number resting, or with `daily_cap` calls today, is not
usable; when no tier has a usable number the call waits.

`PoolChooser` keeps, per tier, a heap of (calls today, id): a pick is a few heap operations
whatever the pool's size. Picking a number pushes its new count into each of its tiers' heaps;
older entries are dropped when they reach the top.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from dialer.campaigns import regions


@dataclass(slots=True)
class PoolNumber:
    """One number of a pool as the dispatch tick sees it."""

    id: int
    number: str
    country: str | None
    regions: frozenset[str]
    area: str | None  # `+1415` for a North American number, else None
    is_default: bool = False
    calls_today: int = 0
    resting: bool = False


def where_is(number: str) -> tuple[str | None, frozenset[str], str | None]:
    """A number's country, regions and North American area, for local presence."""
    area = number[:5] if number.startswith("+1") and len(number) >= 5 else None
    return regions.country_of(number), regions.regions_of(number), area


class PoolChooser:
    """Picks the caller ID of each call of one tick from one pool (see the module doc)."""

    def __init__(self, numbers: Iterable[PoolNumber], daily_cap: int) -> None:
        self.daily_cap = daily_cap
        self._numbers: dict[int, PoolNumber] = {}
        self._heaps: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        self._tiers: dict[int, list[tuple[str, str]]] = {}
        for n in numbers:
            if n.resting or n.calls_today >= daily_cap:
                continue
            self._numbers[n.id] = n
            tiers = [("country", n.country or "")] + [("region", r) for r in n.regions]
            if n.area:
                tiers.append(("area", n.area))
            if n.is_default:
                tiers.append(("default", ""))
            self._tiers[n.id] = tiers
            for tier in tiers:
                self._heaps[tier].append((n.calls_today, n.id))
        for heap in self._heaps.values():
            heapq.heapify(heap)

    @property
    def exhausted(self) -> bool:
        """No number is usable any more this tick."""
        return not self._numbers

    def pick(self, callee: str) -> PoolNumber | None:
        """The number the call to `callee` goes out with (counted as used), or None."""
        country, callee_regions, area = where_is(callee)
        tiers: list[tuple[str, str]] = []
        if area:
            tiers.append(("area", area))
        tiers.extend(("region", r) for r in sorted(callee_regions))
        if country:
            tiers.append(("country", country))
        tiers.append(("default", ""))
        # Regions: the least used over every region the callee may be in.
        for group in _grouped(tiers):
            best: PoolNumber | None = None
            for tier in group:
                found = self._top(tier)
                if found is not None and (best is None or (found.calls_today, found.id) <
                                          (best.calls_today, best.id)):  # fmt: skip
                    best = found
            if best is not None:
                self._use(best)
                return best
        return None

    def _top(self, tier: tuple[str, str]) -> PoolNumber | None:
        heap = self._heaps.get(tier)
        while heap:
            calls, number_id = heap[0]
            number = self._numbers.get(number_id)
            if number is None or calls != number.calls_today:
                heapq.heappop(heap)  # capped, or an older count of a number pushed again
                continue
            return number
        return None

    def _use(self, number: PoolNumber) -> None:
        number.calls_today += 1
        if number.calls_today >= self.daily_cap:
            del self._numbers[number.id]
            return
        for tier in self._tiers[number.id]:
            heapq.heappush(self._heaps[tier], (number.calls_today, number.id))


def _grouped(tiers: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    groups: list[list[tuple[str, str]]] = []
    for tier in tiers:
        if groups and groups[-1][0][0] == tier[0] == "region":
            groups[-1].append(tier)
        else:
            groups.append([tier])
    return groups
