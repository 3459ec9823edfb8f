"""Reconciliation: open attempts checked against the channels the PBX really has.

Events can be missed: the listener was down, the AMI connection dropped, an Originate was
written but never acknowledged (`send_error` set, attempt left `originating`). So the listener
asks the PBX for its channels (CoreShowChannels) on every (re)connect and periodically, and
closes the candidate attempts the PBX no longer has:

- stuck: open longer than their Originate timeout plus a grace period;
- on (re)connect also every attempt sent more than `min_age` ago, since its end may have
  happened while nobody was listening. Younger ones are left to the next pass: a loaded PBX can
  take seconds to create an originated channel.

Candidates are the open attempts sent through this PBX (`call_attempts.pbx`, whatever PBXs
their trunk has). A closed attempt gets the outcome its facts already settle (`outcomes.decide_without_end`),
else `unknown`, and is retried per the campaign's policy. The close is the same conditional
update the listener uses, so an attempt is never closed twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from dialer.ami.events import CALL_VARIABLE
from dialer.outcomes.facts import Closed, CloseReason, CloseRequest, close_attempts


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    grace_s: float = 30.0  # beyond the campaign's Originate timeout
    min_age_s: float = 10.0  # on (re)connect: attempts sent longer ago than this


_CANDIDATES = text(
    """
    SELECT a.id, a.custom_call_id
      FROM call_attempts a
      JOIN campaigns c ON c.id = a.campaign_id
     WHERE a.status IN ('originating', 'up')
       AND a.pbx = :pbx
       AND (coalesce(a.sent_at, a.queued_at)
                + make_interval(secs => c.originate_timeout_ms / 1000.0 + :grace) < :snapshot
            OR (:on_connect AND a.sent_at IS NOT NULL AND a.send_error IS NULL
                AND a.sent_at < :snapshot - make_interval(secs => :min_age)))
     ORDER BY a.id
    """
)


def present_call_ids(channels: Iterable[Mapping[str, Any]]) -> set[str]:
    """Every id a live channel answers to: Uniqueid, Linkedid, its custom_call_id variable."""
    present: set[str] = set()
    for channel in channels:
        for name in ("Uniqueid", "Linkedid"):
            value = channel.get(name)
            if value:
                present.add(value)
        variables = channel.get("ChanVariable")
        if isinstance(variables, dict) and variables.get(CALL_VARIABLE):
            present.add(variables[CALL_VARIABLE])
    return present


def gone_attempts(
    candidates: Iterable[tuple[int, str]], present: set[str]
) -> list[tuple[int, str]]:
    """The (attempt id, custom_call_id) candidates the PBX has no channel for."""
    return [(attempt_id, call_id) for attempt_id, call_id in candidates if call_id not in present]


def close_gone(
    conn: Connection,
    *,
    pbx: str,
    present: set[str],
    snapshot: dt.datetime,
    on_connect: bool,
    options: ReconcileOptions,
    now: dt.datetime | None = None,
) -> list[Closed]:
    """Close the candidate attempts of `pbx` that are not in the `present` snapshot."""
    candidates = conn.execute(
        _CANDIDATES,
        {
            "pbx": pbx,
            "grace": options.grace_s,
            "snapshot": snapshot,
            "on_connect": on_connect,
            "min_age": options.min_age_s,
        },
    )
    gone = gone_attempts(((row.id, row.custom_call_id) for row in candidates), present)
    if not gone:
        return []
    now = now or dt.datetime.now(dt.UTC)
    requests = [CloseRequest(attempt_id, CloseReason.GONE, now) for attempt_id, _ in gone]
    closed, _ = close_attempts(conn, requests, now)
    return closed
