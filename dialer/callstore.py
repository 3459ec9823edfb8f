"""The listener's database writes: one transaction per batch of events, a handful of statements.

`CallStore.apply(batch)`:
1. finds the call attempts of the batch's custom_call_ids (cached; unknown ids are counted and
   their events dropped) and locks them against deletion until the COMMIT: call_events has no
   foreign key (migration 0006), and a deleted attempt takes its events with it;
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
   per attempt, ever. The same statement settles the contacts, adds each decision to its
   call's timeline (a `DialerOutcome` row in call_events) and adds the closed attempts to the
   campaign summary's counts (`campaign_attempt_stats`), one upsert per group rather than a
   trigger per call, in key order (concurrent closes lock the shared rows in the same order).
   It is the batch's last statement: those rows stay locked only until the COMMIT.

Each statement takes all its rows at once (COPY, or one JSON document read with
`jsonb_to_recordset`): no round trip per event or per call. The events are encoded once, when
the listener takes them (`Observation.of`), and the statements that run once per batch with a
row per call read and write through the psycopg connection itself, without ORM rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import functools
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

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

T = TypeVar("T")
# A database call of a store operation, run by whoever runs the operation (`run_steps`).
Step = Callable[[], Any]
# A store operation: a generator of its database calls, each sent back its call's result.
Steps = Generator[Step, Any, T]

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


# Statements run through psycopg itself (positional rows) are plain strings.
_LOOKUP = """
    SELECT a.custom_call_id, a.id, a.status, k.phone_e164, c.opt_out_key, c.record_calls
      FROM call_attempts a
      JOIN contacts k ON k.id = a.contact_id
      JOIN campaigns c ON c.id = a.campaign_id
     WHERE a.custom_call_id = ANY(%(ids)s::text[])
"""
_LOCK_ATTEMPTS = """
    SELECT id FROM call_attempts WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR KEY SHARE
"""
_EVENT_COLUMNS = "call_attempt_id, event, fingerprint, received_at, data"
_COPY_EVENTS = f"COPY call_events ({_EVENT_COLUMNS}) FROM STDIN"
# After a COPY refused a duplicate: the rows again, through a staging table of the session.
_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS dialer_staged_events (call_attempt_id bigint,"
    " event text, fingerprint text, received_at timestamptz, data jsonb) ON COMMIT DELETE ROWS",
    "TRUNCATE dialer_staged_events",
)
_COPY_STAGED = f"COPY dialer_staged_events ({_EVENT_COLUMNS}) FROM STDIN"
_INSERT_STAGED = text(
    f"""
    INSERT INTO call_events ({_EVENT_COLUMNS})
    SELECT s.call_attempt_id, s.event, s.fingerprint, s.received_at, s.data
      FROM dialer_staged_events s
      JOIN call_attempts a ON a.id = s.call_attempt_id
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
# The fact columns come after the first four.
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
               id bigint, outcome text, ended_at timestamptz, reason text, contact_id bigint,
               contact_status text, next_attempt_at timestamptz,
               {", ".join(f"{c} {t}" for c, t in FACT_COLUMNS.items())})
         WHERE a.id = r.id AND a.status IN {OPEN}
        RETURNING a.id, a.campaign_id, a.queued_at, a.outcome, a.amd_status, a.dtmf,
                  a.sent_at, a.answered_at, a.ended_at,
                  r.reason, r.contact_id, r.contact_status, r.next_attempt_at
    ), noted AS (
        -- The decision in the call's timeline; the tag makes each close's rows new.
        INSERT INTO call_events (call_attempt_id, event, fingerprint, received_at, data)
        SELECT c.id, CAST(:event AS text), 'outcome:' || CAST(:tag AS text) || ':' || c.id,
               CAST(:now AS timestamptz),
               jsonb_build_object('Event', CAST(:event AS text), 'outcome', c.outcome,
                                  'reason', c.reason, 'contact_status', c.contact_status)
          FROM closed c
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
    # Its call_events row in COPY text format, all but the attempt id that starts it.
    row: str
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
        name = str(name)
        return cls(call_id, name, event_row(name, fingerprint(data), at, data), facts, at, origin)


def event_row(name: str, fingerprint: str, at: dt.datetime, data: str) -> str:
    """A call_events row (event, fingerprint, received_at, data) in COPY text format, after the
    attempt id: tab-separated, backslash, tab, newline and CR escaped, ending in a newline."""
    return (
        f"\t{_copy_text(name)}\t{_copy_text(fingerprint)}\t{at.isoformat()}\t{_copy_text(data)}\n"
    )


def _copy_text(value: str) -> str:
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return value


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
    """Batch writer for one listener; one batch at a time.

    `apply` writes a batch from the calling thread. `apply_async` writes it from an event
    loop: its Python work runs on the loop, each database call on a worker thread, so a
    listener's parsing and its batch's preparation never compete for the interpreter lock
    while the database works. Both run the same steps (`_apply`).
    """

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
        with self.engine.begin() as conn:
            result, answers = run_steps(self._apply(conn, batch, originate_failed, now))
        return self._committed(result, answers)

    async def apply_async(
        self,
        batch: Sequence[Observation],
        originate_failed: Iterable[str] = (),
        now: dt.datetime | None = None,
    ) -> BatchResult:
        """`apply`, from an event loop (see the class doc)."""
        conn = await asyncio.to_thread(_begin, self.engine)
        try:
            steps = self._apply(conn, batch, originate_failed, now)
            result, answers = await run_steps_in_threads(steps)
            await asyncio.to_thread(conn.commit)
        except BaseException:
            await asyncio.to_thread(_roll_back, conn)
            raise
        finally:
            await asyncio.to_thread(conn.close)
        return self._committed(result, answers)

    def forget(self, call_ids: Iterable[str]) -> None:
        """Drop cached state (e.g. attempts closed by someone else)."""
        for call_id in call_ids:
            self._calls.pop(call_id, None)

    # -- steps ------------------------------------------------------------------------------

    def _apply(
        self,
        conn: Connection,
        batch: Sequence[Observation],
        originate_failed: Iterable[str],
        now: dt.datetime | None,
    ) -> Steps[tuple[BatchResult, list[tuple[CallInfo, Observation]]]]:
        now = now or dt.datetime.now(dt.UTC)
        result = BatchResult()
        failed = [c for c in originate_failed if c]
        calls = yield from self._resolve(conn, {o.call_id for o in batch} | set(failed))
        calls = yield from self._lock(conn, calls)
        requests: dict[int, CloseRequest] = {}
        for call_id in failed:
            info = calls.get(call_id)
            if info is not None and not info.closed:
                requests[info.attempt_id] = CloseRequest(
                    info.attempt_id, CloseReason.ORIGINATE_FAILED, now
                )
        facts: dict[int, dict[str, Any]] = {}
        events: list[str] = []
        opt_outs: list[dict[str, str]] = []
        answers: list[tuple[CallInfo, Observation]] = []
        for o in batch:
            info = calls.get(o.call_id)
            if info is None:
                continue
            attempt_id = info.attempt_id
            events.append(f"{attempt_id}{o.row}")
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
            yield from _insert_events(conn, events)
        if opt_outs:
            # In one order: concurrent writers adding the same numbers never wait on each other
            # in a cycle.
            opt_outs.sort(key=lambda row: row["phone"])
            params = {"rows": _json(opt_outs), "source": DNC_SOURCE}
            result.dnc_added = yield lambda: conn.execute(_ADD_DNC, params).rowcount
        # Calls closing now get their facts with the close: one row update, not two.
        yield from _update_facts(conn, {i: v for i, v in facts.items() if i not in requests})
        if requests:
            closing = {i: facts.get(i, {}) for i in requests}
            result.closed, left_open = yield from _close(
                conn, list(requests.values()), now, closing
            )
            yield from _update_facts(conn, {i: facts[i] for i in left_open if i in facts})
        return result, answers

    def _committed(
        self, result: BatchResult, answers: list[tuple[CallInfo, Observation]]
    ) -> BatchResult:
        """What the cache learns once the batch is committed."""
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

    def _lock(
        self, conn: Connection, calls: dict[str, CallInfo | None]
    ) -> Steps[dict[str, CallInfo | None]]:
        """Lock the batch's attempts against deletion until the COMMIT (call_events has no
        foreign key: migration 0006); an attempt deleted already is an unknown call now."""
        ids = sorted({info.attempt_id for info in calls.values() if info is not None})
        if not ids:
            return calls
        params = {"ids": ids}
        rows = yield lambda: conn.connection.driver_connection.execute(
            _LOCK_ATTEMPTS, params
        ).fetchall()
        if len(rows) == len(ids):
            return calls
        present = {row[0] for row in rows}
        gone = [c for c, info in calls.items() if info and info.attempt_id not in present]
        self.forget(gone)
        return {c: None if c in gone else info for c, info in calls.items()}

    def _resolve(self, conn: Connection, call_ids: set[str]) -> Steps[dict[str, CallInfo | None]]:
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
            rows = yield lambda: conn.connection.driver_connection.execute(
                _LOOKUP, {"ids": missing}
            ).fetchall()
            for call_id, attempt_id, status, phone, opt_out_key, record in rows:
                found[call_id] = CallInfo(
                    attempt_id, phone, opt_out_key, status not in OPEN, record=bool(record)
                )
            for cid in missing:
                self._calls[cid] = found[cid]
            while len(self._calls) > self._cache_size:
                self._calls.popitem(last=False)
        return found


# -- running steps ------------------------------------------------------------------------------


def run_steps(steps: Steps[T]) -> T:
    """Run a store operation in this thread, its database calls included."""
    send: Callable[[Any], Step] = steps.send
    value: Any = None
    while True:
        try:
            step = send(value)
        except StopIteration as done:
            return done.value
        try:
            value, send = step(), steps.send
        except Exception as exc:  # the operation may handle it (a duplicate event)
            value, send = exc, steps.throw


async def run_steps_in_threads(steps: Steps[T]) -> T:
    """Run a store operation on this event loop, each database call on a worker thread."""
    send: Callable[[Any], Step] = steps.send
    value: Any = None
    while True:
        try:
            step = send(value)
        except StopIteration as done:
            return done.value
        try:
            value, send = await asyncio.to_thread(step), steps.send
        except Exception as exc:
            value, send = exc, steps.throw


def _begin(engine: Engine) -> Connection:
    conn = engine.connect()
    conn.begin()
    return conn


def _roll_back(conn: Connection) -> None:
    with contextlib.suppress(Exception):  # the connection may be gone; closing discards it
        conn.rollback()


# -- statements ---------------------------------------------------------------------------------


def merge_values(into: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Merge one event's fact values: first value wins, earliest time wins."""
    for name, value in values.items():
        if value is None:
            continue
        current = into.get(name)
        if current is None or (name in EARLIEST and value < current):
            into[name] = value


def _insert_events(conn: Connection, rows: Sequence[str]) -> Steps[None]:
    """Store events: call_events rows in COPY text format (attempt id + `event_row`).

    COPY, in a savepoint; should an event be there already (a replay, a batch written twice
    after a lost COMMIT answer), the rows go through a staging table instead, into call_events
    with `ON CONFLICT DO NOTHING` (skipping events of attempts deleted meanwhile)."""
    data = "".join(rows).encode()
    try:
        yield lambda: _copy(conn, _COPY_EVENTS, data, savepoint=True)
    except psycopg.IntegrityError as exc:
        log.info("events seen before in this batch (%s); storing the new ones", exc.sqlstate)
        yield lambda: _copy(conn, _COPY_STAGED, data, setup=_STAGING)
        yield lambda: conn.execute(_INSERT_STAGED)


def _copy(
    conn: Connection,
    statement: str,
    data: bytes,
    *,
    savepoint: bool = False,
    setup: Iterable[str] = (),
) -> None:
    driver = conn.connection.driver_connection
    with conn.begin_nested() if savepoint else contextlib.nullcontext():
        for query in setup:
            driver.execute(query)
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(data)


def update_facts(conn: Connection, facts: Mapping[int, Mapping[str, Any]]) -> None:
    """Apply fact values to their attempts ({attempt id: values}), in one statement."""
    run_steps(_update_facts(conn, facts))


def _update_facts(conn: Connection, facts: Mapping[int, Mapping[str, Any]]) -> Steps[None]:
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
    return run_steps(_close(conn, requests, now, pending or {}))


def _close(
    conn: Connection,
    requests: Sequence[CloseRequest],
    now: dt.datetime,
    pending: Mapping[int, Mapping[str, Any]],
) -> Steps[tuple[list[Closed], list[int]]]:
    by_id = {r.attempt_id: r for r in requests}
    ids = {"ids": sorted(by_id)}
    rows = yield lambda: conn.connection.driver_connection.execute(_READ_FOR_CLOSE, ids).fetchall()
    closing: list[dict[str, Any]] = []
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
        call_id, outcome, reason = decided[attempt_id]
        closed.append(Closed(call_id, attempt_id, outcome, reason))
    return closed, left_open


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
