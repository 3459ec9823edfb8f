"""What the simulated PBX sustains, and what it does past that: a CPU-bound Asterisk.

Measured on a real Asterisk 22 (DESIGN.md, "Capacity"): the AMI side always answers at once
(`Originate successfully queued`), but a PBX short of CPU places its calls late: the
OriginateResponse, and every event of the call, come later the further it is over, up to tens of
seconds. The simulator plays that with two limits, both None (unlimited) by default:

- `cps`: Originates placed per second. Past it, Originates wait in a queue (first come, first
  placed), one placed every 1/cps seconds: a call starts, and its events and OriginateResponse
  come, as late as its wait. The wait grows with the backlog, and shrinks again once fewer
  Originates arrive than the PBX places.
- `channels`: concurrent calls (calls up or ringing, plus those waiting to start). Above
  `KNEE` of it the PBX is short of CPU: each new call also starts late, from 0 at the knee to
  `max_wait` seconds when full.

Past a bound the PBX refuses: an Originate that would wait more than `max_wait` seconds, or that
finds every channel taken, fails at once (OriginateResponse Failure, Reason 0, its channel hung
up with cause 34), as `max_channels` refuses. Times are real (wall-clock) seconds, not divided by
the simulator's speed: they are what the dialer measures.

`OriginateGate` keeps the queue; it knows nothing of calls (`calls.originate` gives it a start
and a refuse function per Originate). `set()` changes the limits while it runs: a rate change
applies to the Originates already waiting.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Fraction of `channels` above which new calls start late.
KNEE = 0.8
DEFAULT_MAX_WAIT = 2.0


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()  # `set()`: leave this limit as it is

Start = Callable[[Any], None]


@dataclass
class _Waiting:
    item: Any
    start: Start
    since: float


@dataclass
class CapacityStats:
    queued: int = 0  # Originates waiting to be placed now
    late: int = 0  # placed late (queue or channel pressure)
    refused: int = 0  # refused for want of capacity
    max_delay: float = 0.0  # the longest wait so far, in seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "late": self.late,
            "refused": self.refused,
            "max_delay": round(self.max_delay, 3),
        }


def check_limits(cps: float | None, channels: int | None, max_wait: float) -> None:
    """ValueError naming the limit that is out of range."""
    if cps is not None and not cps > 0:
        raise ValueError(f"capacity_cps must be greater than 0, got {cps}")
    if channels is not None and channels < 1:
        raise ValueError(f"capacity_channels must be 1 or more, got {channels}")
    if not max_wait > 0:
        raise ValueError(f"capacity_wait must be greater than 0, got {max_wait}")


class OriginateGate:
    """The Originate queue of one PBX (see the module doc); runs on the simulator's loop.

    loop: the running loop (asked for when needed); active: the calls up or ringing now.
    """

    def __init__(
        self,
        loop: Callable[[], asyncio.AbstractEventLoop],
        active: Callable[[], int],
        *,
        cps: float | None = None,
        channels: int | None = None,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        check_limits(cps, channels, max_wait)
        self._loop = loop
        self._active = active
        self.cps = cps
        self.channels = channels
        self.max_wait = max_wait
        self.queue: deque[_Waiting] = deque()
        self.next_free = float("-inf")  # loop time from which the next Originate may be placed
        self.stats = CapacityStats()
        self._delayed: dict[int, tuple[asyncio.TimerHandle, _Waiting]] = {}
        self._keys = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def limited(self) -> bool:
        return self.cps is not None or self.channels is not None

    @property
    def waiting(self) -> int:
        """Originates accepted and not started yet."""
        return len(self.queue) + len(self._delayed)

    def submit(self, item: Any, start: Start, refuse: Start) -> None:
        """Start `item` now (`start(item)`), later, or refuse it (`refuse(item)`, at once)."""
        now = self._loop().time()
        if self.channels is not None and self._load() >= self.channels:
            self._refuse(item, refuse)
            return
        waiting = _Waiting(item, start, now)
        if self.cps is not None:
            wait = max(0.0, self.next_free - now) + len(self.queue) / self.cps
            if wait > self.max_wait:
                self._refuse(item, refuse)
                return
            if wait > 0:
                self.queue.append(waiting)
                self.stats.queued = len(self.queue)
                self._arm()
                return
            self._take_slot(now)
        self._place(waiting, now)

    def set(self, *, cps: Any = KEEP, channels: Any = KEEP, max_wait: Any = KEEP) -> None:
        """Change the limits (KEEP leaves one as it is). Originates already waiting are placed
        at the new rate (all at once when `cps` becomes None)."""
        new_cps = self.cps if cps is KEEP else cps
        new_channels = self.channels if channels is KEEP else channels
        new_wait = self.max_wait if max_wait is KEEP else max_wait
        check_limits(new_cps, new_channels, new_wait)
        now = self._loop().time()
        if new_cps is not None and new_cps != self.cps:
            # The slot waited for now ends no later than one new interval away.
            self.next_free = min(self.next_free, now + 1.0 / new_cps)
        self.cps, self.channels, self.max_wait = new_cps, new_channels, new_wait
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if new_cps is None:
            self.next_free = float("-inf")
            self._serve()
        else:
            self._arm()

    def drain(self) -> list[Any]:
        """Forget every Originate not started yet (a PBX restart fails them); their items."""
        items = [w.item for w in self.queue]
        items += [w.item for _, w in self._delayed.values()]
        self.clear()
        return items

    def clear(self) -> None:
        for handle, _ in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        self.queue.clear()
        self.stats.queued = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- internals ------------------------------------------------------------------------------

    def _load(self) -> int:
        return self._active() + self.waiting

    def _take_slot(self, now: float, *, queued: bool = False) -> None:
        """One Originate placed now: the next one no sooner than 1/cps later. From the queue
        the slot is the one that was due (a timer firing late does not slow the rate down), with
        at most one interval of catching up."""
        if self.cps is not None:
            interval = 1.0 / self.cps
            floor = now - interval if queued else now
            self.next_free = max(self.next_free, floor) + interval

    def _arm(self) -> None:
        if self._timer is not None or not self.queue:
            return
        loop = self._loop()
        self._timer = loop.call_at(max(self.next_free, loop.time()), self._serve)

    def _serve(self) -> None:
        self._timer = None
        now = self._loop().time()
        while self.queue and (self.cps is None or self.next_free <= now + 1e-6):
            waiting = self.queue.popleft()
            self._take_slot(now, queued=True)
            self._place(waiting, now)
        self.stats.queued = len(self.queue)
        self._arm()

    def _place(self, waiting: _Waiting, now: float) -> None:
        """Its turn has come: start it, after the channel pressure's delay if any."""
        pressure = self._pressure_delay()
        if pressure <= 0:
            self._start(waiting, now)
            return
        key = next(self._keys)
        handle = self._loop().call_later(pressure, self._start_delayed, key)
        self._delayed[key] = (handle, waiting)

    def _start_delayed(self, key: int) -> None:
        entry = self._delayed.pop(key, None)
        if entry is not None:
            self._start(entry[1], self._loop().time())

    def _start(self, waiting: _Waiting, now: float) -> None:
        delay = now - waiting.since
        if delay > 0.001:
            self.stats.late += 1
            self.stats.max_delay = max(self.stats.max_delay, delay)
        waiting.start(waiting.item)

    def _pressure_delay(self) -> float:
        """Seconds a call starts late for want of CPU: 0 up to KNEE of the channels, then
        growing to `max_wait` when they are all taken."""
        if self.channels is None:
            return 0.0
        knee = KNEE * self.channels
        load = self._load()
        if load <= knee:
            return 0.0
        return self.max_wait * min(1.0, (load - knee) / (self.channels - knee))

    def _refuse(self, item: Any, refuse: Start) -> None:
        self.stats.refused += 1
        refuse(item)
