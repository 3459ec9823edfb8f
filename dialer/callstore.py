"""The listener's database writes: one transaction per batch of events, a handful of statements.

`CallStore.apply(batch)`:
1. finds the call attempts of the batch's custom_call_ids (cached; unknown ids are counted and
   their events dropped);
2. stores every used event in `call_events` with COPY; an event stored before (same
   fingerprint: replayed, read twice) makes the COPY fail, and the batch's events are then
   inserted with `ON CONFLICT DO NOTHING` instead: an event seen twice is kept once;
3. adds opted-out numbers to the do-not-call list at once;
4. applies the facts, merged per call, in one UPDATE: the first value of a fact wins and times
   keep their earliest value, so events may arrive in any order and more than once;
5. closes the attempts whose call is over: outcome from the facts, attempt `ended`, contact
   re-scheduled, completed, exhausted or dnc (`dialer.retry`). A closing call's facts are
   written by the close itself (one row version instead of two: every index of call_attempts
   is updated on each). The close is conditional on the attempt still being open, so whichever
   of listener or reconciliation comes first closes it and the other does nothing: one outcome
   per attempt, ever. The same statement adds the closed attempts to the campaign summary's
   counts (`campaign_attempt_stats`), one upsert per group rather than a trigger per call.

Each statement takes all its rows at once (COPY, or one JSON document read with
`jsonb_to_recordset`): no round trip per event or per call. The events are encoded once, when
the listener takes them (`Observation.of`), and the statements that run once per batch with a
row per call read and write through the psycopg connection itself, without ORM rows.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, text

from dialer.events import (
    EARLIEST,
    CallFacts,
    Event,
    EventFacts,
    answered_in,
    encode,
    fingerprint,
    to_json,
)
from dialer.outcomes import Outcome, decide, decide_without_end
from dialer.retry import RetryPolicy, next_step

log = logging.getLogger(__name__)

OPEN = ("queued", "originating", "up")
OUTCOME_EVENT = "DialerOutcome"
DNC_SOURCE = "opt_out"

# Fact -> SQL type, for the facts UPDATE (hangup_at becomes ended_at when the attempt is
# closed).
FACT_COLUMNS: dict[str, str] = {
    "uniqueid": "text",
    "channel": "text",
    "originate_response": "text",
    "originate_reason": "integer",
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
}


def _merge_sql(column: str) -> str:
    fn = "LEAST" if column in EARLIEST else "COALESCE"
    return f"{column} = {fn}(a.{column}, r.{column})"


_LOOKUP = text(
    """
    SELECT a.custom_call_id, a.id, a.status, k.phone_e164, c.press_key, c.opt_out_key,
           c.record_calls
      FROM call_attempts a
      JOIN contacts k ON k.id = a.contact_id
      JOIN campaigns c ON c.id = a.campaign_id
     WHERE a.custom_call_id = ANY(:ids)
    """
)
_COPY_EVENTS = (
    "COPY call_events (call_attempt_id, event, fingerprint, received_at, data) FROM STDIN"
)
# After a COPY refused a duplicate. Events of an attempt deleted meanwhile are dropped too.
_INSERT_EVENTS = text(
    """
    INSERT INTO call_events (call_attempt_id, event, fingerprint, received_at, data)
    SELECT r.id, r.event, r.fp, r.at, r.data
      FROM jsonb_to_recordset(CAST(:rows AS jsonb))
           AS r(id bigint, event text, fp text, at timestamptz, data jsonb)
      JOIN call_attempts a ON a.id = r.id
    ON CONFLICT (call_attempt_id, fingerprint) DO NOTHING
    """
)
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
_ADD_DNC = text(
    """
    INSERT INTO dnc_numbers (phone_e164, campaign_id, source, reason)
    SELECT r.phone, NULL, :source, r.reason
      FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(phone text, reason text)
    ON CONFLICT DO NOTHING
    """
)
# Read through psycopg (positional rows: the fact columns come after the first four).
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
           SET status = 'ended', outcome = r.outcome, ended_at = r.ended_at,
               {", ".join(_merge_sql(c) for c in FACT_COLUMNS)}
          FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
               id bigint, outcome text, ended_at timestamptz, contact_id bigint,
               contact_status text, next_attempt_at timestamptz,
               {", ".join(f"{c} {t}" for c, t in FACT_COLUMNS.items())})
         WHERE a.id = r.id AND a.status IN {OPEN}
        RETURNING a.id, a.campaign_id, a.queued_at, a.outcome, a.amd_status, a.dtmf,
                  a.sent_at, a.answered_at, a.ended_at,
                  r.contact_id, r.contact_status, r.next_attempt_at
    ), settled AS (
        UPDATE contacts k
           SET status = CASE WHEN k.status = 'dialing' OR c.contact_status = 'dnc'
                             THEN c.contact_status ELSE k.status END,
               last_outcome = c.outcome,
               next_attempt_at = coalesce(c.next_attempt_at, k.next_attempt_at),
               updated_at = now()
          FROM closed c
         WHERE k.id = c.contact_id
    ), counted AS (
        -- In key order: concurrent closes lock the shared count rows in the same order.
        INSERT INTO campaign_attempt_stats AS s
               (campaign_id, bucket, outcome, amd_status, dtmf, attempts, sent, answered_at,
                talk_total, talk_count, first_sent_at, last_sent_at)
        SELECT campaign_id, date_bin(interval '10 minutes', queued_at, timestamptz 'epoch'),
               outcome, amd_status, dtmf, count(*), count(sent_at), count(answered_at),
               coalesce(sum(ended_at - answered_at), interval '0'),
               count(ended_at - answered_at), min(sent_at), max(sent_at)
          FROM closed
         GROUP BY 1, 2, 3, 4, 5
         ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (campaign_id, bucket, outcome, amd_status, dtmf) DO UPDATE SET
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


# A call_events row: attempt id, event name, fingerprint, received_at, data (JSON text).
EventRow = tuple[int, str, str, dt.datetime, str]


class CloseReason(enum.StrEnum):
    HANGUP = "hangup"  # the originated channel hung up
    ORIGINATE_FAILED = "originate_failed"  # failed OriginateResponse, no Hangup followed
    GONE = "gone"  # reconciliation: the PBX no longer has the call


@dataclass(slots=True)
class Observation:
    """One used event of a correlated call, as the listener buffers it: already in the form it
    is stored in (the event itself is not kept)."""

    call_id: str
    name: str  # call_events.event: the event's name (a UserEvent's own name)
    data: str  # call_events.data: the event as compact JSON
    fingerprint: str
    facts: EventFacts
    at: dt.datetime  # when it happened (event_time)
    origin: float  # wall-clock seconds the latency is measured from

    @classmethod
    def of(
        cls, call_id: str, event: Event, facts: EventFacts, at: dt.datetime, origin: float
    ) -> Observation:
        data = encode(event)
        name = event.get("Event", "")
        if name == "UserEvent":
            name = event.get("UserEvent") or name
        return cls(call_id, str(name), data, fingerprint(data), facts, at, origin)


@dataclass(slots=True)
class CallInfo:
    attempt_id: int
    phone: str
    opt_out_key: str | None
    closed: bool
    record: bool = False  # the campaign records its answered calls
    recording_asked: bool = False


@dataclass(frozen=True, slots=True)
class Closed:
    call_id: str
    attempt_id: int
    outcome: Outcome
    reason: CloseReason


@dataclass(slots=True)
class BatchResult:
    stored: int = 0  # used events of known calls (duplicates included)
    unknown: int = 0  # events of calls that are not ours
    dnc_added: int = 0
    closed: list[Closed] = field(default_factory=list)
    # (call id, channel) of calls just answered whose campaign records them: the listener
    # starts MixMonitor on each (once per call).
    record: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CloseRequest:
    attempt_id: int
    reason: CloseReason
    ended_at: dt.datetime


class CallStore:
    """Batch writer for one listener; call `apply` from one thread at a time."""

    def __init__(self, engine: Engine, *, cache_size: int = 200_000) -> None:
        self.engine = engine
        self._calls: OrderedDict[str, CallInfo | None] = OrderedDict()
        self._cache_size = cache_size

    def apply(
        self,
        batch: Sequence[Observation],
        originate_failed: Iterable[str] = (),
        now: dt.datetime | None = None,
    ) -> BatchResult:
        """Store a batch in one transaction. `originate_failed`: calls whose failed
        OriginateResponse has waited long enough for a Hangup; they are closed unless answered."""
        now = now or dt.datetime.now(dt.UTC)
        result = BatchResult()
        failed = [c for c in originate_failed if c]
        with self.engine.begin() as conn:
            calls = self._resolve(conn, {o.call_id for o in batch} | set(failed))
            requests: dict[int, CloseRequest] = {}
            for call_id in failed:
                info = calls.get(call_id)
                if info is not None and not info.closed:
                    requests[info.attempt_id] = CloseRequest(
                        info.attempt_id, CloseReason.ORIGINATE_FAILED, now
                    )
            facts: dict[int, dict[str, Any]] = {}
            events: list[EventRow] = []
            opt_outs: list[dict[str, str]] = []
            answers: list[tuple[CallInfo, Observation]] = []
            for o in batch:
                info = calls.get(o.call_id)
                if info is None:
                    continue
                attempt_id = info.attempt_id
                events.append((attempt_id, o.name, o.fingerprint, o.at, o.data))
                values = o.facts.values
                if values:
                    merge_values(facts.setdefault(attempt_id, {}), values)
                    digit = values.get("dtmf")
                    if digit and digit == info.opt_out_key:
                        opt_outs.append(
                            {"phone": info.phone, "reason": f"opt-out key on call {o.call_id}"}
                        )
                    if info.record and values.get("originate_response") == "Success":
                        answers.append((info, o))
                if o.facts.final and not info.closed:
                    requests[attempt_id] = CloseRequest(attempt_id, CloseReason.HANGUP, o.at)
            result.stored = len(events)
            result.unknown = len(batch) - len(events)
            if events:
                insert_events(conn, events)
            if opt_outs:
                result.dnc_added = conn.execute(
                    _ADD_DNC, {"rows": _json(opt_outs), "source": DNC_SOURCE}
                ).rowcount
            # Calls closing now get their facts with the close: one row update, not two.
            update_facts(conn, {i: v for i, v in facts.items() if i not in requests})
            if requests:
                closing = {i: facts.get(i, {}) for i in requests}
                result.closed, left_open = close_attempts(
                    conn, list(requests.values()), now, closing
                )
                update_facts(conn, {i: facts[i] for i in left_open if i in facts})
        for closed in result.closed:
            info = self._calls.get(closed.call_id)
            if info is not None:
                info.closed = True
        closing_now = {c.attempt_id for c in result.closed}
        for info, o in answers:
            channel = o.facts.values.get("channel")
            if (
                not info.closed
                and not info.recording_asked
                and info.attempt_id not in closing_now
                and o.name == "OriginateResponse"
                and channel
            ):
                info.recording_asked = True
                result.record.append((o.call_id, channel))
        return result

    def forget(self, call_ids: Iterable[str]) -> None:
        """Drop cached state (e.g. attempts closed by someone else)."""
        for call_id in call_ids:
            self._calls.pop(call_id, None)

    # -- steps ------------------------------------------------------------------------------

    def _resolve(self, conn: Connection, call_ids: set[str]) -> dict[str, CallInfo | None]:
        found: dict[str, CallInfo | None] = {}
        missing = []
        for call_id in call_ids:
            if call_id in self._calls:
                found[call_id] = self._calls[call_id]
                self._calls.move_to_end(call_id)
            else:
                missing.append(call_id)
        if missing:
            for cid in missing:
                found[cid] = None
            for row in conn.execute(_LOOKUP, {"ids": missing}):
                found[row.custom_call_id] = CallInfo(
                    row.id, row.phone_e164, row.opt_out_key, row.status not in OPEN,
                    record=bool(row.record_calls),
                )  # fmt: skip
            for cid in missing:
                self._calls[cid] = found[cid]
            while len(self._calls) > self._cache_size:
                self._calls.popitem(last=False)
        return found


def merge_values(into: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Merge one event's fact values: first value wins, earliest time wins."""
    for name, value in values.items():
        if value is None:
            continue
        current = into.get(name)
        if current is None or (name in EARLIEST and value < current):
            into[name] = value


def insert_events(
    conn: Connection, rows: Sequence[EventRow], *, new_fingerprints: bool = False
) -> None:
    """Store events: (attempt id, name, fingerprint, time, JSON data) rows.

    COPY, in a savepoint; should an event be there already (a replay, a batch written twice
    after a lost COMMIT answer), the whole batch goes in again with `ON CONFLICT DO NOTHING`.
    new_fingerprints: the rows' fingerprints were just made unique; no savepoint.
    """
    if new_fingerprints:
        _copy_events(conn, rows)
        return
    try:
        with conn.begin_nested():
            _copy_events(conn, rows)
    except psycopg.IntegrityError as exc:
        log.info("events seen before in this batch (%s); storing the new ones", exc.sqlstate)
        parts = [
            f'{{"id":{i},"event":{json.dumps(name)},"fp":{json.dumps(fp)},'
            f'"at":"{at.isoformat()}","data":{data}}}'
            for i, name, fp, at, data in rows
        ]
        conn.execute(_INSERT_EVENTS, {"rows": "[" + ",".join(parts) + "]"})


def _copy_events(conn: Connection, rows: Sequence[EventRow]) -> None:
    with conn.connection.driver_connection.cursor() as cursor, cursor.copy(_COPY_EVENTS) as copy:
        for row in rows:
            copy.write_row(row)


def update_facts(conn: Connection, facts: Mapping[int, Mapping[str, Any]]) -> None:
    """Apply fact values to their attempts ({attempt id: values}), in one statement."""
    rows = []
    for attempt_id, values in facts.items():
        row = _fact_row(values)
        row["id"] = attempt_id
        row["answered"] = answered_in(values)
        rows.append(row)
    if rows:
        conn.execute(_UPDATE_FACTS, {"rows": _json(rows)})


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
    pending = pending or {}
    by_id = {r.attempt_id: r for r in requests}
    driver = conn.connection.driver_connection
    rows = driver.execute(_READ_FOR_CLOSE, {"ids": sorted(by_id)}).fetchall()
    # Unique per close: a second close of one attempt would show as a second audit row.
    audit_tag = uuid.uuid4().hex
    closing: list[dict[str, Any]] = []
    audit: list[EventRow] = []
    decided: dict[int, tuple[str, Outcome, CloseReason]] = {}
    left_open: list[int] = []
    for row in rows:
        attempt_id, call_id, contact_id, attempts = row[0], row[1], row[2], row[3]
        press_key, opt_out_key, max_attempts, retry_delays = row[-4:]
        request = by_id[attempt_id]
        new = pending.get(attempt_id, {})
        values = dict(zip(FACT_COLUMNS, row[_FACTS_AT], strict=True))
        merge_values(values, new)
        facts = CallFacts(**values)
        if request.reason is CloseReason.GONE:
            outcome = decide_without_end(facts, press_key=press_key, opt_out_key=opt_out_key)
        elif request.reason is CloseReason.ORIGINATE_FAILED and facts.answered and not facts.ended:
            left_open.append(attempt_id)
            continue
        else:
            outcome = decide(facts, press_key=press_key, opt_out_key=opt_out_key)
        step = next_step(_policy(max_attempts, retry_delays), outcome, attempts, now)
        decided[attempt_id] = (call_id, outcome, request.reason)
        # Only the facts not stored yet: the statement merges them as update_facts does.
        close = _fact_row(new)
        close["id"] = attempt_id
        close["outcome"] = outcome.value
        close["ended_at"] = request.ended_at.isoformat()
        close["contact_id"] = contact_id
        close["contact_status"] = step.contact_status.value
        if step.next_attempt_at is not None:
            close["next_attempt_at"] = step.next_attempt_at.isoformat()
        closing.append(close)
        note = {
            "Event": OUTCOME_EVENT,
            "outcome": outcome.value,
            "reason": request.reason.value,
            "contact_status": step.contact_status.value,
        }
        audit.append(
            (attempt_id, OUTCOME_EVENT, f"outcome:{audit_tag}:{attempt_id}", now, encode(note))
        )
    if not closing:
        return [], left_open
    # The rows read are locked and open: every one of them closes now. The outcome rows go
    # first and the close last, so the campaign's shared count rows stay locked only until
    # the COMMIT that follows.
    insert_events(conn, audit, new_fingerprints=True)
    conn.execute(_COUNTING, {"value": "counted"})
    ended = {r.id for r in conn.execute(_CLOSE_ATTEMPTS, {"rows": _json(closing)})}
    conn.execute(_COUNTING, {"value": ""})
    if ended != decided.keys():
        raise CloseRaceError(f"locked attempts not closed: {sorted(decided.keys() - ended)}")
    closed = []
    for attempt_id in sorted(ended):
        call_id, outcome, reason = decided[attempt_id]
        closed.append(Closed(call_id, attempt_id, outcome, reason))
    return closed, left_open


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
