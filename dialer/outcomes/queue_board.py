"""A PBX's queue members as app_queue reports them, and their agent time (no I/O).

The listener feeds it the member events (QueueMemberAdded/Removed/Status/Pause), the agents'
calls (AgentConnect, AgentComplete) and, after each connect, a QueueStatus snapshot; the board
keeps each member's state and counts, per queue and minute, the seconds members were staffed
(logged in, not paused, reachable) and busy (ringing, in a call or wrapping up). What changed
since the last write is taken with `take_changes`; the listener writes it to `queue_members`
and `queue_agent_minutes`, where the dispatch tick reads it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MEMBER_EVENTS = frozenset(
    {"QueueMemberAdded", "QueueMemberRemoved", "QueueMemberStatus", "QueueMemberPause"}
)
AGENT_EVENTS = frozenset({"AgentConnect", "AgentComplete"})
# app_queue's device states a member cannot take calls in (invalid, unavailable) and those
# it is free in (unknown, not in use).
UNREACHABLE = frozenset({4, 5})
FREE = frozenset({0, 1})


@dataclass
class Member:
    queue: str
    interface: str
    name: str
    paused: bool = False
    status: int = 1
    in_call: bool = False
    wrapup_s: int = 0
    last_call_at: float | None = None  # epoch seconds
    call_started_at: float | None = None
    accounted_at: float = 0.0
    touched: int = 0  # the board's sequence number of its last change

    def staffed(self) -> bool:
        return not self.paused and self.status not in UNREACHABLE

    def busy(self, now: float) -> bool:
        if self.in_call or self.status not in FREE:
            return True
        return self.last_call_at is not None and now < self.last_call_at + self.wrapup_s

    def row(self, pbx: str) -> dict[str, Any]:
        return {
            "pbx": pbx,
            "queue": self.queue,
            "interface": self.interface,
            "member_name": self.name,
            "paused": self.paused,
            "status": self.status,
            "in_call": self.in_call,
            "wrapup_s": self.wrapup_s,
            "last_call_at": _time(self.last_call_at),
            "call_started_at": _time(self.call_started_at),
        }


@dataclass
class Changes:
    """What to write: members to upsert, members gone, agent seconds per (queue, minute)."""

    upsert: list[dict[str, Any]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)
    # The whole membership was re-read: rows of these queues not upserted are gone too.
    snapshot_queues: list[str] | None = None
    minutes: dict[tuple[str, float], list[float]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.upsert or self.removed or self.minutes or self.snapshot_queues is not None)


class QueueBoard:
    def __init__(self, pbx: str) -> None:
        self.pbx = pbx
        self.members: dict[tuple[str, str], Member] = {}
        self._seq = 0
        self._dirty: set[tuple[str, str]] = set()
        self._removed: set[tuple[str, str]] = set()
        self._minutes: dict[tuple[str, float], list[float]] = {}
        self._snapshot_queues: set[str] | None = None
        self._snapshot_seq = 0

    # -- events ---------------------------------------------------------------------------------

    def apply(self, event: Mapping[str, Any], now: float) -> None:
        """One member or agent event, at wall-clock time `now`."""
        name = event.get("Event")
        queue = event.get("Queue") or ""
        interface = event.get("Interface") or event.get("Location") or ""
        if not queue or not interface:
            return
        key = (queue, interface)
        if name == "QueueMemberRemoved":
            member = self.members.pop(key, None)
            if member is not None:
                self._account(member, now)
                self._dirty.discard(key)
                self._removed.add(key)
            return
        member = self.members.get(key)
        if member is None:
            if name in AGENT_EVENTS:
                return  # a member the board never heard of: its own events will come
            member = self.members[key] = Member(queue, interface, interface, accounted_at=now)
            self._removed.discard(key)
        self._account(member, now)
        if name == "AgentConnect":
            member.in_call, member.call_started_at = True, now
        elif name == "AgentComplete":
            member.in_call, member.call_started_at, member.last_call_at = False, None, now
        else:
            _read_fields(member, event)
        self._touch(member)

    def begin_snapshot(self) -> None:
        """A QueueStatus is on its way: events applied from now on are newer than it."""
        self._snapshot_seq = self._seq

    def apply_snapshot(self, entries: Iterable[Mapping[str, Any]], now: float) -> None:
        """The QueueStatus reply (QueueParams and QueueMember entries): the membership as the
        PBX has it. Members an event changed since `begin_snapshot` keep the event's state."""
        queues: set[str] = set()
        seen: set[tuple[str, str]] = set()
        for entry in entries:
            queue = entry.get("Queue") or ""
            if entry.get("Event") == "QueueParams" and queue:
                queues.add(queue)
            if entry.get("Event") != "QueueMember" or not queue:
                continue
            interface = entry.get("Location") or entry.get("Interface") or ""
            if not interface:
                continue
            queues.add(queue)
            key = (queue, interface)
            seen.add(key)
            member = self.members.get(key)
            if member is not None and member.touched > self._snapshot_seq:
                continue
            if member is None:
                member = self.members[key] = Member(queue, interface, interface, accounted_at=now)
                self._removed.discard(key)
            self._account(member, now)
            _read_fields(member, entry)
            if not member.in_call:
                member.call_started_at = None
            self._touch(member)
        for key, member in list(self.members.items()):
            if key not in seen and member.touched <= self._snapshot_seq:
                self._account(member, now)
                del self.members[key]
                self._dirty.discard(key)
        self._snapshot_queues = (self._snapshot_queues or set()) | queues

    def counts(self, now: float) -> dict[tuple[str, str], int]:
        """Members per (queue, state): free, busy, paused or unreachable."""
        found: dict[tuple[str, str], int] = {}
        for member in self.members.values():
            if member.paused:
                state = "paused"
            elif member.status in UNREACHABLE:
                state = "unreachable"
            else:
                state = "busy" if member.busy(now) else "free"
            found[(member.queue, state)] = found.get((member.queue, state), 0) + 1
        return found

    # -- time and writing -----------------------------------------------------------------------

    def take_changes(self, now: float, *, minutes: bool = True) -> Changes:
        """Everything to write since the last call; agent time counted up to `now`, and taken
        only with `minutes` (kept for a later call otherwise)."""
        for member in self.members.values():
            self._account(member, now)
        changes = Changes(
            upsert=[
                self.members[k].row(self.pbx) for k in sorted(self._dirty) if k in self.members
            ],
            removed=sorted(self._removed),
            snapshot_queues=sorted(self._snapshot_queues)
            if self._snapshot_queues is not None
            else None,
            minutes=self._minutes if minutes else {},
        )
        self._dirty, self._removed = set(), set()
        if minutes:
            self._minutes = {}
        self._snapshot_queues = None
        return changes

    def give_back(self, changes: Changes) -> None:
        """A write failed: what it held is written with the next one."""
        for queue, interface in (
            (r["queue"], r["interface"]) for r in changes.upsert
        ):  # fmt: skip
            if (queue, interface) in self.members:
                self._dirty.add((queue, interface))
        self._removed.update(k for k in changes.removed if k not in self.members)
        if changes.snapshot_queues is not None:
            self._snapshot_queues = (self._snapshot_queues or set()) | set(changes.snapshot_queues)
            self._dirty.update(
                k for k in self.members if k[0] in changes.snapshot_queues
            )  # the snapshot deletes rows not upserted with it
        for key, (staffed, busy) in changes.minutes.items():
            bucket = self._minutes.setdefault(key, [0.0, 0.0])
            bucket[0] += staffed
            bucket[1] += busy

    def _touch(self, member: Member) -> None:
        self._seq += 1
        member.touched = self._seq
        self._dirty.add((member.queue, member.interface))

    def _account(self, member: Member, now: float) -> None:
        """Add the member's time since it was last counted to its minute buckets."""
        start, member.accounted_at = member.accounted_at, now
        if now <= start or not member.staffed():
            return
        busy = member.busy(start)
        while start < now:
            minute = start - start % 60
            end = min(now, minute + 60)
            bucket = self._minutes.setdefault((member.queue, minute), [0.0, 0.0])
            bucket[0] += end - start
            if busy:
                bucket[1] += end - start
            start = end


def _read_fields(member: Member, event: Mapping[str, Any]) -> None:
    """A member event's or QueueMember entry's fields (Asterisk 22 names)."""
    member.name = event.get("MemberName") or event.get("Name") or member.name
    member.paused = _int(event.get("Paused"), int(member.paused)) == 1
    member.status = _int(event.get("Status"), member.status)
    in_call = _int(event.get("InCall"), -1)
    if in_call in (0, 1):
        if in_call == 1 and not member.in_call:
            member.call_started_at = member.call_started_at or member.accounted_at
        member.in_call = in_call == 1
    member.wrapup_s = max(0, _int(event.get("Wrapuptime"), member.wrapup_s))
    last_call = _int(event.get("LastCall"), 0)
    # Whole seconds: the board's own, finer time of the same call's end is kept.
    newer = member.last_call_at is None or last_call > member.last_call_at + 1
    if last_call > 0 and not member.in_call and newer:
        member.last_call_at = float(last_call)


def _int(text: Any, default: int) -> int:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return default


def _time(epoch: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(epoch, dt.UTC) if epoch is not None else None
