"""Per-trunk limits shared by every worker process and host: call rate and channel count.

Rate: each trunk row holds the next instant a call may start (`trunks.next_slot_at`). Taking a
slot is one UPDATE that hands out that instant and moves it on by one interval, so grants are
spaced by at least the interval whichever process asks; the caller then sleeps until its slot.
The interval is padded by `PAD`: wake-up, scheduling and network jitter shift individual sends,
and at exactly the limit one late send followed by a prompt one puts limit + 1 calls into some
1-second window. A pad of 5% leaves 50 ms of slack per second at any rate (measured here: 2%,
i.e. 20 ms, was overrun by 4 worker processes on a busy 2-core machine). That slack only holds
if calls leave in their slots: the originate task drops a slot it would miss by more than
`originate.SLOT_TOLERANCE_S` (a late wake-up, an AMI reconnection) and takes another.

Several PBXs: each PBX has a slot row too (`pbxs.next_slot_at`), at the rate back-pressure
allows it. A call takes both at once (`TAKE_SLOTS_PREPARED`): its slot is the later of the
trunk's and the PBX's next free instants, and each moves on from there by its own interval, so
the trunk's CPS holds across all its PBXs and each PBX's across all its trunks. Every taker
locks the trunk's row first, then the PBX's: no two wait for each other. A PBX slower than its
share of the trunk's calls would otherwise hold the trunk back: a call whose PBX's next free
instant is more than one trunk interval after the trunk's takes only the PBX's slot, leaving
the trunk's next slots to calls through other PBXs, and takes the trunk's (`_take_slot_sql`
alone) when its PBX's slot comes; it then goes at the later of the two.

Channels: a trunk's channels in use are its open call attempts (queued, originating or up),
and a PBX's those sent through it; there is no counter to drift. The dispatcher creates
attempts only up to the spare capacity of both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Connection, text

from dialer.models import OPEN_ATTEMPT_STATUSES

PAD = 1.05


def _take_slot_sql(trunk_id: str, lead: str, pad: str) -> str:
    # Asynchronous commit (for this statement's transaction only): the row lock is released
    # without waiting for the WAL flush, so it is held for microseconds. A database crash could
    # lose the last few grants, allowing one slightly early call after recovery.
    return f"""
    UPDATE trunks
       SET next_slot_at = greatest(next_slot_at,
                                   clock_timestamp() + make_interval(secs => {lead}))
                          + make_interval(secs => {pad} / cps)
      FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
     WHERE id = {trunk_id}
    RETURNING extract(epoch FROM next_slot_at - make_interval(secs => {pad} / cps))::float8
"""


_TAKE_SLOT = _take_slot_sql("%(trunk_id)s", "%(lead)s", "%(pad)s")


def _lock_trunk_sql(trunk_id: str) -> str:
    # Asynchronous commit for the slot transaction (see _take_slot_sql).
    return f"""
    SELECT set_config('synchronous_commit', 'off', true)
      FROM trunks WHERE id = {trunk_id} FOR NO KEY UPDATE
"""


def _take_slots_sql(trunk_id: str, lead: str, pad: str, attempt_id: str) -> str:
    rate = "least(coalesce(p.rate, p.max_cps), p.max_cps)"
    earliest = "c.earliest"
    p_at = f"greatest(p.next_slot_at, {earliest})"
    t_at = f"greatest(t.next_slot_at, {earliest})"
    # The PBX's turn within one trunk interval of the trunk's: the call takes both.
    together = f"{p_at} <= {t_at} + make_interval(secs => {pad} / t.cps)"
    return f"""
    WITH slot AS (
        UPDATE pbxs p
           SET next_slot_at = CASE WHEN {together} THEN greatest({p_at}, {t_at})
                                   ELSE {p_at} END
                              + make_interval(secs => {pad} / {rate})
          FROM trunks t,
               (SELECT clock_timestamp() + make_interval(secs => {lead}) AS earliest) c
         WHERE t.id = {trunk_id}
           AND p.name = (SELECT a.pbx FROM call_attempts a WHERE a.id = {attempt_id})
        RETURNING p.next_slot_at - make_interval(secs => {pad} / {rate}) AS at,
                  p.next_slot_at - make_interval(secs => {pad} / {rate})
                      <= {t_at} + make_interval(secs => {pad} / t.cps) AS with_trunk
    ), trunk AS (
        UPDATE trunks t SET next_slot_at = slot.at + make_interval(secs => {pad} / t.cps)
          FROM slot
         WHERE t.id = {trunk_id} AND slot.with_trunk
    )
    SELECT extract(epoch FROM at)::float8, with_trunk FROM slot
"""


# For PREPARE: the trunk's row locked (trunk id), then both slots taken (trunk id, lead, pad,
# attempt id, whose PBX it is), in one transaction of their own; the originate task sends
# them in one round trip with the send transaction's first statements. The trunk's slot alone
# (trunk id, lead, pad), for a call whose PBX's turn came later.
LOCK_TRUNK_PREPARED = _lock_trunk_sql("$1")
TAKE_SLOTS_PREPARED = _take_slots_sql("$1", "$2", "$3", "$4")
TAKE_SLOT_PREPARED = _take_slot_sql("$1", "$2", "$3")
_LOCK_TRUNK = _lock_trunk_sql("%(trunk_id)s")
_TAKE_SLOTS = _take_slots_sql("%(trunk_id)s", "%(lead)s", "%(pad)s", "%(attempt_id)s")

_USAGE = text(
    """
    SELECT t.id, t.max_channels, t.cps,
           count(a.id) AS open,
           count(a.id) FILTER (WHERE a.status = 'queued') AS queued
      FROM trunks t
      LEFT JOIN call_attempts a
        ON a.trunk_id = t.id AND a.status = ANY(:open_statuses)
     WHERE t.id = ANY(:trunk_ids)
     GROUP BY t.id
    """
)


class UnknownTrunk(LookupError):
    """No trunk row with that id."""


@dataclass(frozen=True, slots=True)
class TrunkUsage:
    trunk_id: int
    max_channels: int
    cps: float
    open: int  # attempts queued, originating or up
    queued: int  # of which not yet taken by an originate task

    @property
    def spare_channels(self) -> int:
        return max(0, self.max_channels - self.open)

    def spare_capacity(self, lookahead_s: float) -> int:
        """How many new attempts may be created now.

        Bounded by free channels, and by what the trunk can start within `lookahead_s`
        (minus attempts already waiting), so a slow trunk does not build a long queue whose
        calls would go out long after the checks that admitted them.
        """
        backlog_limit = max(1, int(self.cps * lookahead_s + 0.999999)) - self.queued
        return max(0, min(self.spare_channels, backlog_limit))


def take_slot(connection: psycopg.Connection[Any], trunk_id: int, *, lead: float = 0.0) -> float:
    """Reserve the trunk's next call slot; returns its start as a Unix timestamp.

    `connection` is in autocommit mode: the statement commits at once, so the row lock that
    serialises every process on this trunk is held as briefly as possible.

    lead: on an idle trunk, the slot starts this many seconds from now rather than at once,
    leaving the caller time for its last checks before the slot.
    """
    row = connection.execute(
        _TAKE_SLOT, {"pad": PAD, "trunk_id": trunk_id, "lead": lead}
    ).fetchone()
    if row is None:
        raise UnknownTrunk(f"trunk {trunk_id} does not exist")
    return float(row[0])


def take_slots(
    connection: psycopg.Connection[Any], trunk_id: int, attempt_id: int, *, lead: float = 0.0
) -> tuple[float, bool]:
    """Reserve the attempt's PBX's next slot, and the trunk's with it unless the PBX's turn
    comes later (see the module doc); returns the slot's start as a Unix timestamp and whether
    the trunk's slot was taken. `connection` is in autocommit mode (one short transaction)."""
    params = {"pad": PAD, "trunk_id": trunk_id, "lead": lead, "attempt_id": attempt_id}
    with connection.transaction():
        connection.execute(_LOCK_TRUNK, params)
        row = connection.execute(_TAKE_SLOTS, params).fetchone()
    if row is None:
        raise UnknownTrunk(f"trunk {trunk_id} or the PBX of attempt {attempt_id} does not exist")
    return float(row[0]), bool(row[1])


def wait_for_slot(
    connection: psycopg.Connection[Any],
    trunk_id: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> float:
    """Take a slot and sleep until it starts; returns the seconds slept.

    The slot is an instant on the database's clock, waited for on this host's clock: a wait
    measured from when the answer arrived would add the commit and network delay, which
    differ from call to call, and bunch calls together. Hosts must keep their clocks in step
    (NTP) to well within the pad.
    """
    wait = take_slot(connection, trunk_id) - clock()
    if wait > 0:
        sleep(wait)
    return max(0.0, wait)


def trunk_usage(connection: Connection, trunk_ids: Iterable[int]) -> dict[int, TrunkUsage]:
    """Channel usage of the given trunks, read in one query."""
    ids = sorted(set(trunk_ids))
    if not ids:
        return {}
    rows = connection.execute(
        _USAGE, {"trunk_ids": ids, "open_statuses": list(OPEN_ATTEMPT_STATUSES)}
    )
    return {
        row.id: TrunkUsage(row.id, row.max_channels, float(row.cps), row.open, row.queued)
        for row in rows
    }


def max_in_window(times: Iterable[float], width: float = 1.0) -> int:
    """The most events inside any half-open window [t, t + width) of `times` (seconds),
    sliding, not bucketed: what "no 1-second window over the limit" is checked with."""
    ordered = sorted(times)
    best = first = 0
    for last, t in enumerate(ordered):
        while ordered[first] <= t - width:
            first += 1
        best = max(best, last - first + 1)
    return best
