"""The listener's database writes: one transaction per batch of events, a handful of statements.

`CallStore.apply(batch)`:
1. finds the call attempts of the batch's custom_call_ids (cached; unknown ids are counted and
   their events dropped) and locks them against deletion until the COMMIT: call_events has no
   foreign key (migration 0006), and a deleted attempt takes its events with it;
2. stores every used event in `call_events` with COPY; an event stored before (same
   fingerprint: replayed, read twice) makes the COPY fail, and the batch's events are then
   inserted with `ON CONFLICT DO NOTHING` instead: an event seen twice is kept once;
3. adds opted-out numbers to the do-not-call list at once, after waiting for calls to them
   being sent at that moment;
4. applies the facts, merged per call, in one UPDATE (`dialer.outcomes.facts`);
5. closes the attempts whose call is over (`dialer.outcomes.facts`): outcome, contact, timeline
   row and counts in one statement. A closing call's facts are written by the close itself (one
   row version instead of two: every index of call_attempts is updated on each). The close is
   the batch's last statement, so the campaign's shared count rows stay locked only until the
   COMMIT.

Each statement takes all its rows at once (COPY, or one JSON document read with
`jsonb_to_recordset`): no round trip per event or per call. The events are encoded once, when
the listener takes them (`Observation.of`), and the statements that run once per batch with a
row per call read and write through the psycopg connection itself, without ORM rows. A batch is
an operation of `dialer.dbsteps`: `apply` runs it in the calling thread, `apply_async` on an
event loop with its database calls on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, text

from dialer.ami.events import Event, EventFacts, encode, fingerprint, to_json
from dialer.contacts import dnc
from dialer.dbsteps import Steps, run_steps, run_steps_in_threads
from dialer.outcomes.facts import (
    OPEN,
    Closed,
    CloseReason,
    CloseRequest,
    close_attempts_steps,
    merge_values,
    update_facts_steps,
)

log = logging.getLogger(__name__)

DNC_SOURCE = "opt_out"

# Statements run through psycopg itself (positional rows) are plain strings.
_LOOKUP = """
    SELECT a.custom_call_id, a.id, a.status, coalesce(a.phone_e164, k.phone_e164),
           c.opt_out_key, c.record_calls
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
# An opt-out first waits for calls to the same number being sent right now (the worker holds
# the contact's row from its last check to its send, `dialer.dialing.originate`), as `dnc.add_e164`
# does, in id order; the entry is stamped after that wait: no call reaches the PBX after it.
_WAIT_FOR_SENDS = """
    SELECT id FROM contacts WHERE phone_e164 = ANY(%(phones)s::text[])
     ORDER BY id FOR NO KEY UPDATE
"""
_ADD_DNC = text(
    """
    INSERT INTO dnc_numbers (phone_e164, campaign_id, source, reason, added_at)
    SELECT r.phone, NULL, :source, r.reason, clock_timestamp()
      FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(phone text, reason text)
    ON CONFLICT DO NOTHING
    """
)


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


@dataclass(frozen=True, slots=True)
class HeldClose:
    """A close the listener held back for a while and now asks for: a failed
    OriginateResponse that waited for its Hangup, or a Hangup with cause 0 that waited to see
    whether the PBX was going down (`ended_at`: the Hangup's time)."""

    call_id: str
    reason: CloseReason = CloseReason.ORIGINATE_FAILED
    ended_at: dt.datetime | None = None


@dataclass(slots=True)
class CallInfo:
    attempt_id: int
    phone: str
    opt_out_key: str | None
    closed: bool
    record: bool = False  # the campaign records its answered calls
    recording_asked: bool = False


@dataclass(slots=True)
class BatchResult:
    stored: int = 0  # used events of known calls (duplicates included)
    unknown: int = 0  # events of calls that are not ours
    dnc_added: int = 0
    closed: list[Closed] = field(default_factory=list)
    # (call id, channel) of calls just answered whose campaign records them: the listener
    # starts MixMonitor on each (once per call).
    record: list[tuple[str, str]] = field(default_factory=list)


class CallStore:
    """Batch writer for one listener; one batch at a time.

    `apply` writes a batch from the calling thread. `apply_async` writes it from an event
    loop: its Python work runs on the loop, each database call on a worker thread, so a
    listener's parsing and its batch's preparation never compete for the interpreter lock
    while the database works. Both run the same steps (`_apply`).
    """

    def __init__(
        self, engine: Engine, *, cache_size: int = 200_000, ended_cache_size: int = 20_000
    ) -> None:
        self.engine = engine
        # What a batch needs to know of a call, without a lookup: of the open calls (at most
        # `cache_size`, oldest dropped, against calls nobody closes), and of the
        # `ended_cache_size` calls closed or found unknown last (their late events). Memory
        # follows the calls in progress, not the calls made.
        self._calls: OrderedDict[str, CallInfo] = OrderedDict()
        self._ended: OrderedDict[str, CallInfo | None] = OrderedDict()
        self._cache_size = cache_size
        self._ended_size = ended_cache_size

    @property
    def cached(self) -> int:
        """Calls known without a lookup (open, and closed last)."""
        return len(self._calls) + len(self._ended)

    def apply(
        self,
        batch: Sequence[Observation],
        held: Iterable[str | HeldClose] = (),
        now: dt.datetime | None = None,
    ) -> BatchResult:
        """Store a batch in one transaction. `held`: closes the listener held back and now
        asks for; a call id alone is a failed OriginateResponse that has waited long enough
        for a Hangup (closed unless answered)."""
        with self.engine.begin() as conn:
            result, answers = run_steps(self._apply(conn, batch, held, now))
        return self._committed(result, answers)

    async def apply_async(
        self,
        batch: Sequence[Observation],
        held: Iterable[str | HeldClose] = (),
        now: dt.datetime | None = None,
    ) -> BatchResult:
        """`apply`, from an event loop (see the class doc)."""
        conn = await asyncio.to_thread(_begin, self.engine)
        try:
            steps = self._apply(conn, batch, held, now)
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
            self._ended.pop(call_id, None)

    def _remember(self, call_id: str, info: CallInfo | None) -> None:
        if info is None or info.closed:
            self._calls.pop(call_id, None)
            self._ended[call_id] = info
            self._ended.move_to_end(call_id)
            while len(self._ended) > self._ended_size:
                self._ended.popitem(last=False)
        else:
            self._calls[call_id] = info
            self._calls.move_to_end(call_id)
            while len(self._calls) > self._cache_size:
                self._calls.popitem(last=False)

    # -- steps ------------------------------------------------------------------------------

    def _apply(
        self,
        conn: Connection,
        batch: Sequence[Observation],
        held: Iterable[str | HeldClose],
        now: dt.datetime | None,
    ) -> Steps[tuple[BatchResult, list[tuple[CallInfo, Observation]]]]:
        now = now or dt.datetime.now(dt.UTC)
        result = BatchResult()
        due = [h if isinstance(h, HeldClose) else HeldClose(h) for h in held if h]
        calls = yield from self._resolve(
            conn, {o.call_id for o in batch} | {h.call_id for h in due}
        )
        calls = yield from self._lock(conn, calls)
        requests: dict[int, CloseRequest] = {}
        for close in due:
            info = calls.get(close.call_id)
            if info is not None and not info.closed:
                requests[info.attempt_id] = CloseRequest(
                    info.attempt_id, close.reason, close.ended_at or now
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
            phones = {"phones": sorted({row["phone"] for row in opt_outs})}
            yield lambda: conn.connection.driver_connection.execute(_WAIT_FOR_SENDS, phones)
            yield lambda: conn.execute(text(dnc.LOCK_NUMBERS_SQL), phones)
            params = {"rows": to_json(opt_outs), "source": DNC_SOURCE}
            result.dnc_added = yield lambda: conn.execute(_ADD_DNC, params).rowcount
        # Calls closing now get their facts with the close: one row update, not two.
        yield from update_facts_steps(conn, {i: v for i, v in facts.items() if i not in requests})
        if requests:
            closing = {i: facts.get(i, {}) for i in requests}
            result.closed, left_open = yield from close_attempts_steps(
                conn, list(requests.values()), now, closing
            )
            yield from update_facts_steps(conn, {i: facts[i] for i in left_open if i in facts})
        return result, answers

    def _committed(
        self, result: BatchResult, answers: list[tuple[CallInfo, Observation]]
    ) -> BatchResult:
        """What the cache learns once the batch is committed."""
        for closed in result.closed:
            info = self._calls.get(closed.call_id)
            if info is not None:
                info.closed = True
                self._remember(closed.call_id, info)
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
            elif call_id in self._ended:
                found[call_id] = self._ended[call_id]
                self._ended.move_to_end(call_id)
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
                self._remember(cid, found[cid])
        return found


def _begin(engine: Engine) -> Connection:
    conn = engine.connect()
    conn.begin()
    return conn


def _roll_back(conn: Connection) -> None:
    with contextlib.suppress(Exception):  # the connection may be gone; closing discards it
        conn.rollback()


# -- statements ---------------------------------------------------------------------------------


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
