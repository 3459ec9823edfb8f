"""The listener's database writes: one transaction per batch of events, a handful of statements.

`CallStore.apply(batch)`:
1. finds the call attempts of the batch's custom_call_ids (cached; unknown ids are counted and
   their events dropped);
2. stores every used event in `call_events` (`ON CONFLICT DO NOTHING` on its fingerprint: an
   event seen twice is kept once);
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

Each statement takes all its rows as one JSON document (`jsonb_to_recordset`): no round trip
per event or per call.
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

from sqlalchemy import Connection, Engine, text

from dialer.events import EARLIEST, CallFacts, Event, EventFacts, encode, fingerprint
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
_INSERT_EVENTS = text(
    """
    INSERT INTO call_events (call_attempt_id, event, fingerprint, received_at, data)
    SELECT r.id, r.event, r.fp, r.at, r.data
      FROM jsonb_to_recordset(CAST(:rows AS jsonb))
           AS r(id bigint, event text, fp text, at timestamptz, data jsonb)
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
_READ_FOR_CLOSE = text(
    f"""
    SELECT a.id, a.custom_call_id, a.contact_id, a.status,
           {", ".join(f"a.{c}" for c in FACT_COLUMNS)},
           k.attempts, c.press_key, c.opt_out_key, c.max_attempts,
           c.retry_delays::text AS retry_delays
      FROM call_attempts a
      JOIN contacts k ON k.id = a.contact_id
      JOIN campaigns c ON c.id = a.campaign_id
     WHERE a.id = ANY(:ids) AND a.status IN {OPEN}
     ORDER BY a.id
       FOR UPDATE OF a
    """
)
# The close counts the attempts it finishes in campaign_attempt_stats itself, one upsert per
# group (migration 0004), with the row trigger told to skip this statement: a closed attempt
# was open, so it was not counted before.
_COUNTING = text("SELECT set_config('dialer.attempt_stats', :value, true)")
_CLOSE_ATTEMPTS = text(
    f"""
    WITH closed AS (
        UPDATE call_attempts a
           SET status = 'ended', outcome = r.outcome, ended_at = r.ended_at,
               {", ".join(f"{c} = r.{c}" for c in FACT_COLUMNS)}
          FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
               id bigint, outcome text, ended_at timestamptz,
               {", ".join(f"{c} {t}" for c, t in FACT_COLUMNS.items())})
         WHERE a.id = r.id AND a.status IN {OPEN}
        RETURNING a.id, a.campaign_id, a.queued_at, a.outcome, a.amd_status, a.dtmf,
                  a.sent_at, a.answered_at, a.ended_at
    ), counted AS (
        INSERT INTO campaign_attempt_stats AS s
               (campaign_id, bucket, outcome, amd_status, dtmf, attempts, sent, answered_at,
                talk_total, talk_count, first_sent_at, last_sent_at)
        SELECT campaign_id, date_bin(interval '10 minutes', queued_at, timestamptz 'epoch'),
               outcome, amd_status, dtmf, count(*), count(sent_at), count(answered_at),
               coalesce(sum(ended_at - answered_at), interval '0'),
               count(ended_at - answered_at), min(sent_at), max(sent_at)
          FROM closed
         GROUP BY 1, 2, 3, 4, 5
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
_SETTLE_CONTACTS = text(
    """
    UPDATE contacts k
       SET status = CASE WHEN k.status = 'dialing' OR r.status = 'dnc' THEN r.status
                         ELSE k.status END,
           last_outcome = r.outcome,
           next_attempt_at = coalesce(r.next_attempt_at, k.next_attempt_at),
           updated_at = now()
      FROM jsonb_to_recordset(CAST(:rows AS jsonb))
           AS r(contact_id bigint, status text, outcome text, next_attempt_at timestamptz)
     WHERE k.id = r.contact_id
    """
)


class CloseReason(enum.StrEnum):
    HANGUP = "hangup"  # the originated channel hung up
    ORIGINATE_FAILED = "originate_failed"  # failed OriginateResponse, no Hangup followed
    GONE = "gone"  # reconciliation: the PBX no longer has the call


@dataclass(slots=True)
class Observation:
    """One used event of a known-to-be-correlated call, as the listener buffers it."""

    call_id: str
    event: Event
    facts: EventFacts
    at: dt.datetime  # when it happened (event_time)
    origin: float  # wall-clock seconds the latency is measured from


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
            known = [o for o in batch if calls.get(o.call_id) is not None]
            result.unknown = len(batch) - len(known)
            result.stored = len(known)
            requests: dict[int, CloseRequest] = {}
            for call_id in failed:
                info = calls.get(call_id)
                if info is not None and not info.closed:
                    requests[info.attempt_id] = CloseRequest(
                        info.attempt_id, CloseReason.ORIGINATE_FAILED, now
                    )
            facts: dict[int, dict[str, Any]] = {}
            for o in known:
                info = calls[o.call_id]
                assert info is not None
                merge_values(facts.setdefault(info.attempt_id, {}), o.facts.values)
                if o.facts.final and not info.closed:
                    requests[info.attempt_id] = CloseRequest(
                        info.attempt_id, CloseReason.HANGUP, o.at
                    )
            if known:
                self._insert_events(conn, known, calls)
                result.dnc_added = self._opt_outs(conn, known, calls)
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
        closing = {c.attempt_id for c in result.closed}
        for o in known:
            info = calls[o.call_id]
            assert info is not None
            channel = o.facts.values.get("channel")
            if (
                info.record
                and not info.closed
                and not info.recording_asked
                and info.attempt_id not in closing
                and o.event.get("Event") == "OriginateResponse"
                and o.facts.values.get("originate_response") == "Success"
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

    def _insert_events(
        self, conn: Connection, batch: list[Observation], calls: dict[str, CallInfo | None]
    ) -> None:
        parts = []
        for o in batch:
            info = calls[o.call_id]
            assert info is not None
            name = o.event.get("Event", "")
            if name == "UserEvent":
                name = o.event.get("UserEvent") or name
            data = encode(o.event)
            parts.append(
                f'{{"id":{info.attempt_id},"event":{json.dumps(name)},'
                f'"fp":"{fingerprint(data)}","at":"{o.at.isoformat()}","data":{data}}}'
            )
        conn.execute(_INSERT_EVENTS, {"rows": "[" + ",".join(parts) + "]"})

    def _opt_outs(
        self, conn: Connection, batch: list[Observation], calls: dict[str, CallInfo | None]
    ) -> int:
        rows = []
        for o in batch:
            info = calls[o.call_id]
            digit = o.facts.values.get("dtmf")
            if info is not None and digit and info.opt_out_key and digit == info.opt_out_key:
                rows.append({"phone": info.phone, "reason": f"opt-out key on call {o.call_id}"})
        if not rows:
            return 0
        return conn.execute(_ADD_DNC, {"rows": _json(rows), "source": DNC_SOURCE}).rowcount


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
    rows = []
    for attempt_id, values in facts.items():
        row = {c: values[c] for c in FACT_COLUMNS if values.get(c) is not None}
        answered = CallFacts().merge(row).answered
        rows.append({**row, "id": attempt_id, "answered": answered})
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
    rows = list(conn.execute(_READ_FOR_CLOSE, {"ids": sorted(by_id)}))
    # Unique per close: a second close of one attempt would show as a second audit row.
    audit_tag = uuid.uuid4().hex
    closing: list[dict[str, Any]] = []
    contacts: list[dict[str, Any]] = []
    audit: list[dict[str, Any]] = []
    decided: dict[int, tuple[str, Outcome, CloseReason]] = {}
    left_open: list[int] = []
    for row in rows:
        request = by_id[row.id]
        stored = row._mapping
        values = {c: stored[c] for c in FACT_COLUMNS}
        merge_values(values, pending.get(row.id, {}))
        facts = CallFacts(**values)
        keys = {"press_key": row.press_key, "opt_out_key": row.opt_out_key}
        if request.reason is CloseReason.GONE:
            outcome = decide_without_end(facts, **keys)
        elif request.reason is CloseReason.ORIGINATE_FAILED and facts.answered and not facts.ended:
            left_open.append(row.id)
            continue
        else:
            outcome = decide(facts, **keys)
        step = next_step(_policy(row.max_attempts, row.retry_delays), outcome, row.attempts, now)
        decided[row.id] = (row.custom_call_id, outcome, request.reason)
        closing.append(
            {
                **{c: values[c] for c in FACT_COLUMNS},
                "id": row.id,
                "outcome": outcome.value,
                "ended_at": request.ended_at,
            }
        )
        contacts.append(
            {
                "contact_id": row.contact_id,
                "status": step.contact_status.value,
                "outcome": outcome.value,
                "next_attempt_at": step.next_attempt_at,
            }
        )
        audit.append(
            {
                "id": row.id,
                "event": OUTCOME_EVENT,
                "fp": f"outcome:{audit_tag}:{row.id}",
                "at": now,
                "data": {
                    "Event": OUTCOME_EVENT,
                    "outcome": outcome.value,
                    "reason": request.reason.value,
                    "contact_status": step.contact_status.value,
                },
            }
        )
    if not closing:
        return [], left_open
    conn.execute(_COUNTING, {"value": "counted"})
    ended = {r.id for r in conn.execute(_CLOSE_ATTEMPTS, {"rows": _json(closing)})}
    conn.execute(_COUNTING, {"value": ""})
    if ended != {c["id"] for c in closing}:
        # Cannot happen under the row locks taken above; never settle a contact twice.
        log.error("attempts changed under lock: %s", sorted({c["id"] for c in closing} - ended))
    settle = [c for c, a in zip(contacts, closing, strict=True) if a["id"] in ended]
    if settle:
        conn.execute(_SETTLE_CONTACTS, {"rows": _json(settle)})
    conn.execute(_INSERT_EVENTS, {"rows": _json([a for a in audit if a["id"] in ended])})
    closed = [Closed(decided[i][0], i, decided[i][1], decided[i][2]) for i in sorted(ended)]
    return closed, left_open


@functools.lru_cache(maxsize=256)
def _policy(max_attempts: int, retry_delays: str | None) -> RetryPolicy:
    # Parsed once per campaign setting, not once per closing call.
    return RetryPolicy(max_attempts, json.loads(retry_delays) if retry_delays else {})


def _json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_encode, ensure_ascii=False)


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")
