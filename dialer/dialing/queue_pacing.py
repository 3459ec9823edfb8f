"""What the dispatch tick reads to pace a campaign by its transfer queue (I/O for
`dialer.dialing.agent_pacing`).

The queue's members come from `queue_members`, which each PBX's listener keeps from app_queue's
events, counted only while that listener follows its PBX (state `up`, or `refusing` calls for a
while): no word from a queue, no calls; the campaign's calls in flight and its measured rates from its recent attempts (the
`LEARN_WINDOW` of attempts queued, through the campaign's index), its abandon rate over the
whole campaign from `campaign_attempt_stats`. A few milliseconds per queue-paced campaign
per tick; other campaigns read nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from sqlalchemy import Connection, text

from dialer.dialing.agent_pacing import Agents, Decision, Flow, decide

log = logging.getLogger(__name__)

# Rates are learned from the attempts queued this recently: long enough for hundreds of calls,
# short enough to follow a campaign whose callees change through the day.
LEARN_WINDOW = dt.timedelta(minutes=20)
# The abandon rate's rolling window.
ROLLING_WINDOW = dt.timedelta(minutes=5)
# A member whose device is invalid or unavailable cannot take a call: not staffed.
UNREACHABLE_STATUSES = (4, 5)
FREE_STATUSES = (0, 1)

_MEMBERS = text(
    """
    SELECT paused, status, in_call, wrapup_s,
           extract(epoch FROM :now - coalesce(call_started_at, updated_at)) AS busy_for,
           extract(epoch FROM last_call_at + make_interval(secs => wrapup_s) - :now) AS wrapup_left
      FROM queue_members
     WHERE queue = :queue AND pbx = ANY(:pbxs)
       AND pbx IN (SELECT name FROM pbxs WHERE state IN ('up', 'refusing'))
    """
)
_FLOW = text(
    """
    SELECT count(*) FILTER (WHERE status IN ('queued', 'originating')) AS ringing,
           count(*) FILTER (WHERE status = 'up' AND transfer_requested_at IS NULL
                              AND answered_at > :press_window_start) AS in_ivr,
           count(*) FILTER (WHERE status = 'up' AND transfer_requested_at IS NOT NULL
                              AND transfer_answered_at IS NULL) AS waiting,
           count(*) FILTER (WHERE status IN ('up', 'ended') AND sent_at IS NOT NULL) AS sent,
           count(*) FILTER (WHERE status IN ('up', 'ended') AND answered_at IS NOT NULL) AS answered,
           count(*) FILTER (WHERE answered_at IS NOT NULL
                              AND (status = 'ended' OR transfer_requested_at IS NOT NULL
                                   OR answered_at <= :press_window_start)) AS answered_settled,
           count(*) FILTER (WHERE transfer_requested_at IS NOT NULL) AS pressed,
           avg(extract(epoch FROM transfer_requested_at - sent_at))
               FILTER (WHERE transfer_requested_at IS NOT NULL) AS press_delay_s,
           avg(extract(epoch FROM coalesce(transfer_ended_at, ended_at) - transfer_answered_at))
               FILTER (WHERE status = 'ended' AND transfer_answered_at IS NOT NULL) AS talk_s,
           count(*) FILTER (WHERE status = 'ended' AND ended_at > :rolling_start
                              AND outcome IN ('transferred', 'queue_abandoned')
                              AND transfer_queue IS NOT NULL) AS queued_window,
           count(*) FILTER (WHERE status = 'ended' AND ended_at > :rolling_start
                              AND outcome = 'queue_abandoned') AS abandoned_window
      FROM call_attempts
     WHERE campaign_id = :campaign_id AND queued_at > :learn_start
    """
)
_TOTALS = text(
    """
    SELECT coalesce(sum(attempts) FILTER (WHERE outcome IN ('transferred', 'queue_abandoned')
                                            AND transfer_source = 'ivr'), 0) AS queued,
           coalesce(sum(attempts) FILTER (WHERE outcome = 'queue_abandoned'
                                            AND transfer_source = 'ivr'), 0) AS abandoned
      FROM campaign_attempt_stats WHERE campaign_id = :campaign_id
    """
)
# How long after the answer a key press may still come: the prompt's Read() waits 10 s after
# a prompt of a few seconds.
PRESS_WINDOW_S = 15.0


def agents(connection: Connection, queue: str, pbxs: Iterable[str], now: dt.datetime) -> Agents:
    """The queue's members on these PBXs, as the policy counts them."""
    staffed = free = 0
    busy_for: list[float] = []
    wrapup_left: list[float] = []
    wrapups: list[int] = []
    rows = connection.execute(_MEMBERS, {"queue": queue, "pbxs": list(pbxs), "now": now})
    for row in rows:
        if row.paused or row.status in UNREACHABLE_STATUSES:
            continue
        staffed += 1
        wrapups.append(row.wrapup_s)
        if row.in_call or row.status not in FREE_STATUSES:
            busy_for.append(float(row.busy_for or 0.0))
        elif row.wrapup_left is not None and row.wrapup_left > 0:
            wrapup_left.append(float(row.wrapup_left))
        else:
            free += 1
    wrapup = sum(wrapups) / len(wrapups) if wrapups else 0.0
    return Agents(staffed, free, tuple(busy_for), tuple(wrapup_left), wrapup)


def flow(connection: Connection, campaign_id: int, now: dt.datetime, wrapup_s: float) -> Flow:
    """The campaign's calls in flight and what its recent calls measured."""
    first = connection.execute(
        _FLOW,
        {
            "campaign_id": campaign_id,
            "learn_start": now - LEARN_WINDOW,
            "rolling_start": now - ROLLING_WINDOW,
            "press_window_start": now - dt.timedelta(seconds=PRESS_WINDOW_S),
        },
    ).one()
    totals = connection.execute(_TOTALS, {"campaign_id": campaign_id}).one()
    talk = first.talk_s
    return Flow(
        ringing=first.ringing,
        in_ivr=first.in_ivr,
        waiting=first.waiting,
        sent=first.sent,
        answered=first.answered,
        answered_settled=first.answered_settled,
        pressed=first.pressed,
        press_delay_s=float(first.press_delay_s) if first.press_delay_s is not None else None,
        handle_s=float(talk) + wrapup_s if talk is not None else None,
        queued_total=int(totals.queued),
        abandoned_total=int(totals.abandoned),
        queued_window=first.queued_window,
        abandoned_window=first.abandoned_window,
    )


def allowance(
    connection: Connection,
    *,
    campaign_id: int,
    queue: str,
    target: float,
    pbxs: Iterable[str],
    now: dt.datetime,
) -> Decision:
    """How many calls the campaign may start now."""
    members = agents(connection, queue, pbxs, now)
    if members.staffed == 0:
        return decide(members, Flow(), target=target)
    return decide(members, flow(connection, campaign_id, now, members.wrapup_s), target=target)
