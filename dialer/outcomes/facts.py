"""Call facts written to their attempts: the facts update and the close (outcome, retry).

Both are operations of `dialer.dbsteps`, run by the listener's store (`dialer.outcomes.callstore`) within
its batch, by reconciliation (`dialer.outcomes.reconcile`) and by live call control. Facts merge the same
way everywhere (`merge_values`, and in SQL `_merge_sql`): the first value of a fact wins and
times keep their earliest value, so events may arrive in any order and more than once.

The close reads the attempts to close (locked) and their campaign's settings, decides each
outcome and the contact's next step in Python (`dialer.outcomes.rules`, `dialer.outcomes.retry`), and writes
in one statement: the attempts `ended` with the facts not stored yet, the contacts re-scheduled,
completed, exhausted or dnc, a `DialerOutcome` row in each call's timeline, and the campaign
summary's counts (`campaign_attempt_stats`, one upsert per group rather than a trigger per call,
in key order: concurrent closes lock the shared rows in the same order). The close is
conditional on the attempt still being open, so whichever of listener or reconciliation comes
first closes it and the other does nothing: one outcome per attempt, ever.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from dialer.ami.events import EARLIEST, CallFacts, answered_in, to_json
from dialer.dbsteps import Steps, run_steps
from dialer.outcomes.retry import NEXT_NUMBER_AFTER, RetryPolicy, next_step
from dialer.outcomes.rules import Decision, EndedBy, Outcome, decide, decide_without_end

OPEN = ("queued", "originating", "up")
OUTCOME_EVENT = "DialerOutcome"

# Fact -> SQL type, for the facts UPDATE (hangup_at becomes ended_at when the attempt is
# closed).
FACT_COLUMNS: dict[str, str] = {
    "uniqueid": "text",
    "channel": "text",
    "originate_response": "text",
    "originate_reason": "integer",
    "originate_response_at": "timestamptz",
    "answered_at": "timestamptz",
    "dial_status": "text",
    "amd_status": "text",
    "amd_cause": "text",
    "dtmf": "text",
    "read_status": "text",
    "voicemail_left": "boolean",
    "transfer_requested_at": "timestamptz",
    "transfer_answered_at": "timestamptz",
    "transfer_ended_at": "timestamptz",
    "transfer_status": "text",
    "recording_file": "text",
    "hangup_cause": "integer",
    "hangup_cause_txt": "text",
    "transfer_source": "text",
    "transfer_queue": "text",
    "queue_joined_at": "timestamptz",
    "queue_wait_s": "integer",
    "agent": "text",
    "operator_hangup_at": "timestamptz",
    "operator_retry": "boolean",
    "pbx_down_at": "timestamptz",
}


def _merge_sql(column: str) -> str:
    fn = "LEAST" if column in EARLIEST else "COALESCE"
    return f"{column} = {fn}(a.{column}, r.{column})"


_UPDATE_FACTS = text(
    f"""
    UPDATE call_attempts a SET
           {", ".join(_merge_sql(c) for c in FACT_COLUMNS)},
           status = CASE WHEN a.status = 'originating' AND r.answered THEN 'up' ELSE a.status END
      FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
           id bigint, answered boolean, {", ".join(f"{c} {t}" for c, t in FACT_COLUMNS.items())})
     WHERE a.id = r.id
    """
)
# Read through psycopg itself (positional rows): the fact columns come after the first four.
_READ_FOR_CLOSE = f"""
    SELECT a.id, a.custom_call_id, a.contact_id, k.attempts,
           {", ".join(f"a.{c}" for c in FACT_COLUMNS)},
           c.press_key, c.opt_out_key, c.max_attempts, c.retry_delays::text
      FROM call_attempts a
      JOIN contacts k ON k.id = a.contact_id
      JOIN campaigns c ON c.id = a.campaign_id
     WHERE a.id = ANY(%(ids)s::bigint[]) AND a.status IN {OPEN}
     ORDER BY a.id
       FOR UPDATE OF a
"""
_FACTS_AT = slice(4, 4 + len(FACT_COLUMNS))
# The close counts the attempts it finishes in campaign_attempt_stats itself, one upsert per
# group (migration 0004), with the row trigger told to skip this statement: a closed attempt
# was open, so it was not counted before.
_COUNTING = text("SELECT set_config('dialer.attempt_stats', :value, true)")
_CLOSE_ATTEMPTS = text(
    f"""
    WITH closed AS (
        UPDATE call_attempts a
           SET status = 'ended', outcome = r.outcome, ended_by = r.ended_by, ended_at = r.ended_at,
               {", ".join(_merge_sql(c) for c in FACT_COLUMNS)}
          FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
               id bigint, outcome text, ended_by text, ended_at timestamptz, reason text,
               contact_id bigint,
               contact_status text, next_attempt_at timestamptz,
               {", ".join(f"{c} {t}" for c, t in FACT_COLUMNS.items())})
         WHERE a.id = r.id AND a.status IN {OPEN}
        RETURNING a.id, a.campaign_id, a.queued_at, a.outcome, a.amd_status, a.dtmf,
                  a.ended_by, a.transfer_source, a.sent_at, a.answered_at, a.ended_at,
                  r.reason, r.contact_id, r.contact_status, r.next_attempt_at
    ), noted AS (
        -- The decision in the call's timeline; the tag makes each close's rows new.
        INSERT INTO call_events (call_attempt_id, event, fingerprint, received_at, data)
        SELECT c.id, CAST(:event AS text), 'outcome:' || CAST(:tag AS text) || ':' || c.id,
               CAST(:now AS timestamptz),
               jsonb_build_object('Event', CAST(:event AS text), 'outcome', c.outcome,
                                  'ended_by', c.ended_by, 'reason', c.reason,
                                  'contact_status', c.contact_status)
          FROM closed c
    ), settled AS (
        UPDATE contacts k
           SET status = CASE WHEN k.status = 'dialing' OR c.contact_status = 'dnc'
                             THEN c.contact_status ELSE k.status END,
               last_outcome = c.outcome,
               next_attempt_at = coalesce(c.next_attempt_at, k.next_attempt_at),
               -- Campaigns that dial alternate numbers: the next attempt goes to the next.
               phone_index = CASE
                   WHEN c.contact_status = 'pending' AND cardinality(k.alt_phones) > 0
                    AND c.outcome IN ({", ".join(f"'{o.value}'" for o in sorted(NEXT_NUMBER_AFTER))})
                    AND (SELECT m.dial_alt_numbers FROM campaigns m WHERE m.id = c.campaign_id)
                   THEN (k.phone_index + 1) % (cardinality(k.alt_phones) + 1)
                   ELSE k.phone_index END,
               updated_at = now()
          FROM closed c
         WHERE k.id = c.contact_id
    ), counted AS (
        -- In key order: concurrent closes lock the shared count rows in the same order.
        INSERT INTO campaign_attempt_stats AS s
               (campaign_id, bucket, outcome, amd_status, dtmf, ended_by, transfer_source,
                attempts, sent, answered_at, talk_total, talk_count, first_sent_at, last_sent_at)
        SELECT campaign_id, date_bin(interval '10 minutes', queued_at, timestamptz 'epoch'),
               outcome, amd_status, dtmf, ended_by, transfer_source, count(*), count(sent_at),
               count(answered_at), coalesce(sum(ended_at - answered_at), interval '0'),
               count(ended_at - answered_at), min(sent_at), max(sent_at)
          FROM closed
         GROUP BY 1, 2, 3, 4, 5, 6, 7
         ORDER BY 1, 2, 3, 4, 5, 6, 7
        ON CONFLICT (campaign_id, bucket, outcome, amd_status, dtmf, ended_by, transfer_source)
        DO UPDATE SET
               attempts = s.attempts + excluded.attempts,
               sent = s.sent + excluded.sent,
               answered_at = s.answered_at + excluded.answered_at,
               talk_total = s.talk_total + excluded.talk_total,
               talk_count = s.talk_count + excluded.talk_count,
               first_sent_at = least(s.first_sent_at, excluded.first_sent_at),
               last_sent_at = greatest(s.last_sent_at, excluded.last_sent_at)
    )
    SELECT id FROM closed
    """
)


class CloseRaceError(RuntimeError):
    """An attempt locked for its close was not closed; the batch is rolled back."""


class CloseReason(enum.StrEnum):
    HANGUP = "hangup"  # the originated channel hung up
    ORIGINATE_FAILED = "originate_failed"  # failed OriginateResponse, no Hangup followed
    GONE = "gone"  # reconciliation: the PBX no longer has the call
    PBX_DOWN = "pbx_down"  # its PBX stayed down too long (dialer.dialing.pbxcontrol)


@dataclass(frozen=True, slots=True)
class Closed:
    call_id: str
    attempt_id: int
    outcome: Outcome
    reason: CloseReason
    ended_by: EndedBy = EndedBy.CALLEE


@dataclass(frozen=True, slots=True)
class CloseRequest:
    attempt_id: int
    reason: CloseReason
    ended_at: dt.datetime


def merge_values(into: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Merge one event's fact values: first value wins, earliest time wins."""
    for name, value in values.items():
        if value is None:
            continue
        current = into.get(name)
        if current is None or (name in EARLIEST and value < current):
            into[name] = value


def update_facts(conn: Connection, facts: Mapping[int, Mapping[str, Any]]) -> None:
    """Apply fact values to their attempts ({attempt id: values}), in one statement."""
    run_steps(update_facts_steps(conn, facts))


def update_facts_steps(conn: Connection, facts: Mapping[int, Mapping[str, Any]]) -> Steps[None]:
    rows = []
    for attempt_id, values in facts.items():
        row = _fact_row(values)
        row["id"] = attempt_id
        row["answered"] = answered_in(values)
        rows.append(row)
    if rows:
        params = {"rows": _json(rows)}
        yield lambda: conn.execute(_UPDATE_FACTS, params)


def close_attempts(
    conn: Connection,
    requests: Sequence[CloseRequest],
    now: dt.datetime,
    pending: Mapping[int, Mapping[str, Any]] | None = None,
) -> tuple[list[Closed], list[int]]:
    """Close the attempts still open among `requests` with their outcome and settle their
    contacts. `pending`: fact values not yet written, by attempt id; they are written with the
    close. Returns the attempts closed here and those left open on purpose (a live call whose
    failed OriginateResponse answered a duplicate send); an attempt closed already is skipped.
    """
    return run_steps(close_attempts_steps(conn, requests, now, pending or {}))


def close_attempts_steps(
    conn: Connection,
    requests: Sequence[CloseRequest],
    now: dt.datetime,
    pending: Mapping[int, Mapping[str, Any]],
) -> Steps[tuple[list[Closed], list[int]]]:
    by_id = {r.attempt_id: r for r in requests}
    ids = {"ids": sorted(by_id)}
    rows = yield lambda: conn.connection.driver_connection.execute(_READ_FOR_CLOSE, ids).fetchall()
    closing: list[dict[str, Any]] = []
    decided: dict[int, tuple[str, Decision, CloseReason]] = {}
    left_open: list[int] = []
    for row in rows:
        attempt_id, call_id, contact_id, attempts = row[0], row[1], row[2], row[3]
        press_key, opt_out_key, max_attempts, retry_delays = row[-4:]
        request = by_id[attempt_id]
        new = pending.get(attempt_id, {})
        values = dict(zip(FACT_COLUMNS, row[_FACTS_AT], strict=True))
        merge_values(values, new)
        facts = CallFacts(**values)
        if request.reason in (CloseReason.GONE, CloseReason.PBX_DOWN):
            decision = decide_without_end(facts, press_key=press_key, opt_out_key=opt_out_key)
        elif request.reason is CloseReason.ORIGINATE_FAILED and facts.answered and not facts.ended:
            left_open.append(attempt_id)
            continue
        else:
            decision = decide(facts, press_key=press_key, opt_out_key=opt_out_key)
        outcome = decision.outcome
        step = next_step(
            _policy(max_attempts, retry_delays),
            outcome,
            attempts,
            now,
            retry_requested=decision.ended_by is EndedBy.OPERATOR and bool(facts.operator_retry),
        )
        decided[attempt_id] = (call_id, decision, request.reason)
        # Only the facts not stored yet: the statement merges them as update_facts does.
        close = _fact_row(new)
        if facts.transfer_answered_at is not None and facts.transfer_ended_at is None:
            # A transfer nobody reported the end of (an operator's) ends with the call.
            close["transfer_ended_at"] = request.ended_at.isoformat()
        close["id"] = attempt_id
        close["outcome"] = outcome.value
        close["ended_by"] = decision.ended_by.value
        close["ended_at"] = request.ended_at.isoformat()
        close["reason"] = request.reason.value
        close["contact_id"] = contact_id
        close["contact_status"] = step.contact_status.value
        if step.next_attempt_at is not None:
            close["next_attempt_at"] = step.next_attempt_at.isoformat()
        closing.append(close)
    if not closing:
        return [], left_open
    # The rows read are locked and open: every one of them closes now. The tag makes each
    # close's outcome rows new (a second close of one attempt would show as a second row).
    params = {"rows": _json(closing), "event": OUTCOME_EVENT, "tag": uuid.uuid4().hex, "now": now}
    ended = yield lambda: _close_counted(conn, params)
    if ended != decided.keys():
        raise CloseRaceError(f"locked attempts not closed: {sorted(decided.keys() - ended)}")
    closed = []
    for attempt_id in sorted(ended):
        call_id, decision, reason = decided[attempt_id]
        closed.append(Closed(call_id, attempt_id, decision.outcome, reason, decision.ended_by))
    return closed, left_open


_MARK_OPERATOR_HANGUP = text(
    f"""
    UPDATE call_attempts SET operator_hangup_at = :at, operator_retry = :retry
     WHERE id = :id AND status IN {OPEN}
    RETURNING id
    """
)
_CLEAR_OPERATOR_HANGUP = text(
    f"""
    UPDATE call_attempts SET operator_hangup_at = NULL, operator_retry = NULL
     WHERE id = :id AND status IN {OPEN} AND operator_hangup_at = :at
    """
)


def mark_operator_hangup(conn: Connection, attempt_id: int, at: dt.datetime, retry: bool) -> bool:
    """Record that an operator is hanging the call up, before the AMI Hangup is sent: the
    listener may close the call on its Hangup event within milliseconds, and must then know
    who ended it. False when the attempt is not open any more (nothing marked)."""
    params = {"id": attempt_id, "at": at, "retry": retry}
    return conn.execute(_MARK_OPERATOR_HANGUP, params).first() is not None


def clear_operator_hangup(conn: Connection, attempt_id: int, at: dt.datetime) -> None:
    """Undo `mark_operator_hangup` (the Hangup was refused, or the call stayed up); a call
    closed meanwhile keeps what its close decided."""
    conn.execute(_CLEAR_OPERATOR_HANGUP, {"id": attempt_id, "at": at})


def _close_counted(conn: Connection, params: Mapping[str, Any]) -> set[int]:
    conn.execute(_COUNTING, {"value": "counted"})
    ended = {r.id for r in conn.execute(_CLOSE_ATTEMPTS, params)}
    conn.execute(_COUNTING, {"value": ""})
    return ended


def _fact_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """Fact values as a JSON-ready row of `call_attempts` columns (times as ISO text)."""
    return {
        name: value.isoformat() if isinstance(value, dt.datetime) else value
        for name, value in values.items()
        if name in FACT_COLUMNS and value is not None
    }


@functools.lru_cache(maxsize=256)
def _policy(max_attempts: int, retry_delays: str | None) -> RetryPolicy:
    # Parsed once per campaign setting, not once per closing call.
    return RetryPolicy(max_attempts, json.loads(retry_delays) if retry_delays else {})


def _json(rows: list[dict[str, Any]]) -> str:
    # Times are ISO text already (_fact_row).
    return to_json(rows)
