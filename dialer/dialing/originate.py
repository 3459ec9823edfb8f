"""Send the Originate for one call attempt, at most once whatever happens to the task.

The dispatch tick committed the attempt `queued`, with the payload to send. Here:
1. claim: a conditional UPDATE `queued -> originating` that also re-checks the do-not-call
   lists and that the campaign still runs, and commits. A redelivered or duplicated task
   matches no row and does nothing; an attempt whose number went on a list, or whose campaign
   was paused or stopped, since it was queued is closed as not sent;
   It also reads the state of the PBX the dispatcher routed the attempt through: one that
   cannot take calls now (down, shutting down, refusing, disabled) gets nothing sent; the
   attempt is given back, due at once, for the next tick to route it through another PBX;
2. wait until the AMI connection to that PBX is up, then take the trunk's and the PBX's next
   pacing slot (`dialer.dialing.pacing`);
3. last checks, in a transaction that locks the contact's row until the Originate is written:
   the number is on no do-not-call list, the campaign runs, the calling window (the campaign's
   hours and every region calling rule and holiday of the number,
   `dialer.campaigns.calling_rules`) is open at the slot (and `WINDOW_MARGIN_S` after it),
   reconciliation has not closed the attempt, and the PBX can still take calls.
   `dnc.add_e164` locks the same row, so a number put on the list is either seen here or
   listed only after the call was sent. With frequency rules (`dialer.campaigns.frequency`)
   the number itself is locked too (an advisory lock on it, after the row's), and its attempts
   over all campaigns read after the lock: two campaigns calling one number at once are judged
   one after the other, each seeing the other's send. A call a rule holds back is given back,
   due when the rule allows it. The rules are read again when `rules_version` moves;
4. sleep until the slot starts and send, in the slot or not at all: a send more than
   `SLOT_TOLERANCE_S` late (slow wake-up, connection lost meanwhile) would bunch with the
   calls after it and overrun the trunk's rate, so that slot is dropped and another taken;
5. record when it was sent.

Failures: `AmiConnectionError` (nothing left the dialer), or an Originate refused because the
PBX is shutting down -> the PBX is reported down or shutting down (`dialer.campaigns.pbxs`),
attempt `not_sent`, contact due again at once without using up an attempt (the next tick
routes it through a PBX that can take it); a PBX this worker has no AMI settings for ->
`not_sent`, due again after `UNREACHABLE_RETRY_S` (never sent through another PBX with the
wrong dial string); `OriginateFateUnknown` -> the attempt stays `originating`
with `send_error` set, for reconciliation against the PBX: never sent again; `OriginateRejected`
(Asterisk refused, no call exists) -> the PBX is reported `refusing`, the attempt ended with
outcome `failed` and the contact re-scheduled like any failed attempt. An attempt stopped by the last checks is `not_sent`.
A database connection that died under the task (a Postgres restart or failover): before the
send, the attempt is given back through a fresh connection (`reconnect`), due at once, and
the task ends `not_sent`; under the claim, `ClaimInterrupted` lets the task claim again on a
fresh connection (the claim is conditional, so at most one of the two can take it).

This is the dialer's hot path, so it talks to Postgres through a plain psycopg connection in
autocommit mode (no ORM), three round trips per call: the claim; the slots (the trunk's and the
PBX's, in their own transaction) with the BEGIN, lock and checks of the send transaction (a call
whose PBX's turn comes after the trunk's takes the trunk's slot in one more, when its PBX's
comes: `take_slot_and_check`); and the sent time with the COMMIT after
the send. Their statements are prepared once per connection and run with EXECUTE, several in one
simple-protocol query: the server plans them once, and the client neither adapts parameters nor
keeps a pipeline per statement (half of the path's client time before). Values are put in the
query as literals made from ints, floats and datetimes only (`_literal`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import logging
import math
import secrets
import select
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import psycopg
from psycopg.rows import namedtuple_row
from psycopg.types.json import Jsonb, set_json_loads

from dialer import logs, metrics
from dialer.ami.client import (
    AmiAuthenticationError,
    AmiConnectionError,
    AmiError,
    OriginateFateUnknown,
    OriginateRejected,
)
from dialer.campaigns import calling_window, frequency, pbxs
from dialer.campaigns import rules as rules_store
from dialer.campaigns.calling_rules import RuleBook
from dialer.campaigns.calling_window import CallingWindow
from dialer.campaigns.frequency import FrequencyRule
from dialer.contacts.dnc import NUMBER_LOCK_KEY
from dialer.dialing.pacing import (
    LOCK_TRUNK_PREPARED,
    PAD,
    TAKE_SLOT_PREPARED,
    TAKE_SLOTS_PREPARED,
)
from dialer.dialing.payload import CallSettings, TrunkRoute, build_originate_payload
from dialer.settings import SettingsError

log = logging.getLogger(__name__)

# An attempt this worker could not send for a reason of its own (no AMI settings for the PBX,
# the database) is due again after this: the tick would otherwise create a not-sent row per
# contact per second. One the PBX could not take is due at once: it is routed elsewhere.
UNREACHABLE_RETRY_S = 15.0
PBX_UNAVAILABLE_RETRY_S = 0.0
# A worker without AMI settings for a PBX says so at most this often.
NO_SETTINGS_LOG_EVERY_S = 60.0
# A payload refused for a campaign or trunk setting stays refused until the operator fixes it.
BAD_SETTINGS_RETRY_S = 300.0
REJECTED_OUTCOME = "failed"
REJECTED_RETRY_S = 300.0
# Latest a call may leave after its slot started; keep it well inside pacing.PAD's slack
# (5% of each second): later sends are what bunch calls into one second.
SLOT_TOLERANCE_S = 0.01
# After a slot missed by waking up late (most likely the last checks took longer than the
# time to the slot), the next one starts at least twice that late ahead, up to this.
MAX_SLOT_LEAD_S = 0.5
# A call waiting for its PBX's turn takes the trunk's slot this long before it.
TRUNK_LEAD_S = 0.02
# Slots dropped (late, or the connection lost) before the attempt is given back unsent.
SLOT_TURNS = 3
# How such an attempt's send_error begins (the last slot's reason follows in brackets).
MISSED_SLOTS_REASON = "not sent: no send within its pacing slot"
# No call is started this close to the end of its calling window: it must reach the PBX
# while the window is open, and a loaded PBX reads its socket late.
WINDOW_MARGIN_S = 2.0


class Result(enum.StrEnum):
    SENT = "sent"
    ALREADY_TAKEN = "already_taken"  # another delivery of the task owns the attempt
    NOT_SENT = "not_sent"  # nothing left the dialer; contact due again
    ON_DNC = "on_dnc"  # added to a do-not-call list after it was queued
    CAMPAIGN_STOPPED = "campaign_stopped"  # paused, cancelled or ended after it was queued
    FATE_UNKNOWN = "fate_unknown"  # may have been sent; left for reconciliation
    REJECTED = "rejected"  # Asterisk refused it; no call exists
    OUTSIDE_WINDOW = "outside_window"  # its calling window closed before its slot
    CLOSED = "closed"  # reconciliation closed it before it was sent
    PBX_UNAVAILABLE = "pbx_unavailable"  # its PBX cannot take calls now; routed again
    FREQUENCY_HELD = "frequency_held"  # a frequency rule holds the number; due when it allows


class Originator(Protocol):
    def wait_connected(self, timeout: float) -> None: ...

    def originate(
        self,
        payload: Mapping[str, Any],
        *,
        timeout: float | None = None,
        send_by: float | None = None,
    ) -> None: ...


# The number an attempt dials: its own (the contact's first or an alternate); attempts made
# before it was recorded dial the contact's.
_DIALLED = (
    "coalesce(a.phone_e164, (SELECT k0.phone_e164 FROM contacts k0 WHERE k0.id = a.contact_id))"
)

_DNC_FOR_ATTEMPT = f"""
    EXISTS (SELECT 1 FROM dnc_numbers d
             WHERE d.phone_e164 = {_DIALLED}
               AND (d.campaign_id IS NULL OR d.campaign_id = a.campaign_id))
"""

# The state in effect of the attempt's PBX (`dialer.campaigns.pbxs`), `disabled` if it is.
_PBX_STATE = f"""
    (SELECT CASE WHEN p.enabled THEN {pbxs.effective_state_sql("p")} ELSE 'disabled' END
       FROM pbxs p WHERE p.name = a.pbx) AS pbx_state
"""

# The second branch is this task run's own claim, committed though its answer was lost with
# the connection: nothing was sent for it (the run is still in its claim), and the last checks
# before the send look at the campaign and the lists again.
_CLAIM = f"""
    UPDATE call_attempts a SET status = 'originating', claim_token = $2
     WHERE a.id = $1
       AND ((a.status = 'queued'
             AND EXISTS (SELECT 1 FROM campaigns c
                          WHERE c.id = a.campaign_id AND c.status = 'running')
             AND NOT {_DNC_FOR_ATTEMPT})
            OR (a.status = 'originating' AND a.claim_token = $2 AND a.sent_at IS NULL))
    RETURNING a.payload, a.trunk_id, a.pbx, a.custom_call_id, {_PBX_STATE},
              (SELECT t.name FROM trunks t WHERE t.id = a.trunk_id)
"""

# Why a claim matched nothing.
_STATE = f"""
    SELECT a.status, c.status, {_DNC_FOR_ATTEMPT}
      FROM call_attempts a JOIN campaigns c ON c.id = a.campaign_id
     WHERE a.id = %(id)s
"""

# The last checks, in the transaction that sends. The attempt is locked before anything else:
# the listener's close locks attempts, then settles their contacts; a send holding the contact
# that wrote its attempt's sent time only at its end deadlocked with it.
_LOCK_ATTEMPT = """
    SELECT a.id FROM call_attempts a WHERE a.id = $1 FOR NO KEY UPDATE
"""
# Then the contact, alone: under READ COMMITTED the next statement's snapshot is taken after
# the wait, so it sees a do-not-call entry committed by the transaction the lock waited for.
_LOCK_CONTACT = """
    SELECT k.id FROM contacts k
     WHERE k.id = (SELECT a.contact_id FROM call_attempts a WHERE a.id = $1)
       FOR NO KEY UPDATE
"""
_SEND_CHECK = f"""
    SELECT a.status, c.status AS campaign_status, {_DNC_FOR_ATTEMPT} AS on_dnc,
           coalesce(a.phone_e164, k.phone_e164) AS phone_e164,
           CASE WHEN coalesce(a.phone_e164, k.phone_e164) = k.phone_e164 THEN k.timezones
           END AS timezones,
           c.calling_hours_start, c.calling_hours_end, c.calling_days,
           {_PBX_STATE}, (SELECT v.version FROM rules_version v WHERE v.id = 1) AS rules_version
      FROM call_attempts a
      JOIN contacts k ON k.id = a.contact_id
      JOIN campaigns c ON c.id = a.campaign_id
     WHERE a.id = $1
"""

# Frequency rules: the number is locked (after the contact's row: always in that order), then
# its attempts over all campaigns are read, in a statement of their own so that its snapshot
# is taken after the lock's wait: it sees the send of the transaction it waited for.
_LOCK_NUMBER = f"""
    SELECT pg_advisory_xact_lock({NUMBER_LOCK_KEY}, hashtext({_DIALLED}))
      FROM call_attempts a
     WHERE a.id = $1
"""
# Without frequency rules: the number only when it is an alternate (no row, no lock, else).
_LOCK_ALTERNATE = f"""
    SELECT pg_advisory_xact_lock({NUMBER_LOCK_KEY}, hashtext(a.phone_e164))
      FROM call_attempts a JOIN contacts k ON k.id = a.contact_id
     WHERE a.id = $1 AND a.phone_e164 <> k.phone_e164
"""
_NUMBER_HISTORY = f"""
    SELECT o.sent_at, {frequency.CONVERSATION_AT_SQL} AS conversation_at
      FROM call_attempts a
      JOIN call_attempts o ON o.phone_e164 = {_DIALLED}
     WHERE a.id = $1 AND o.id <> $1 AND o.sent_at >= $2
"""

# For an attempt created without a payload (the dispatcher always stores one).
_PAYLOAD_INPUTS = """
    SELECT a.custom_call_id, coalesce(a.phone_e164, k.phone_e164) AS phone_e164,
           t.name AS trunk_name, r.channel_template, c.*
      FROM call_attempts a
      JOIN contacts k ON k.id = a.contact_id
      JOIN campaigns c ON c.id = a.campaign_id
      JOIN trunks t ON t.id = a.trunk_id
      LEFT JOIN trunk_routes r ON r.trunk_id = a.trunk_id AND r.pbx = a.pbx
     WHERE a.id = %(id)s
"""
_STORE_PAYLOAD = "UPDATE call_attempts SET payload = %(payload)s WHERE id = %(id)s"

# Nothing was sent: the attempt is closed as not sent and the contact gets its attempt back.
_GIVE_BACK = """
    WITH attempt AS (
        UPDATE call_attempts SET status = 'not_sent', send_error = %(error)s
         WHERE id = %(id)s AND status = %(from_status)s
        RETURNING contact_id
    )
    UPDATE contacts k
       SET status = %(contact_status)s, attempts = greatest(k.attempts - 1, 0),
           next_attempt_at = now() + make_interval(secs => %(delay)s), updated_at = now()
      FROM attempt
     WHERE k.id = attempt.contact_id AND k.status = 'dialing'
"""

# sent_at is a record of when, not a guard (the claim is): its commit need not wait for the
# WAL flush.
_SENT = """
    UPDATE call_attempts SET sent_at = $2
      FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
     WHERE id = $1
"""

# The hot path's statements: name -> (argument types, text).
_PREPARED = {
    "dialer_claim": ("bigint, bigint", _CLAIM),
    "dialer_lock_trunk": ("bigint", LOCK_TRUNK_PREPARED),
    "dialer_take_slots": ("bigint, float8, float8, bigint", TAKE_SLOTS_PREPARED),
    "dialer_take_slot": ("bigint, float8, float8", TAKE_SLOT_PREPARED),
    "dialer_lock_attempt": ("bigint", _LOCK_ATTEMPT),
    "dialer_lock_contact": ("bigint", _LOCK_CONTACT),
    "dialer_send_check": ("bigint", _SEND_CHECK),
    "dialer_lock_number": ("bigint", _LOCK_NUMBER),
    "dialer_lock_alternate": ("bigint", _LOCK_ALTERNATE),
    "dialer_number_history": ("bigint, timestamptz", _NUMBER_HISTORY),
    "dialer_sent": ("bigint, timestamptz", _SENT),
}
_READY: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()

_FATE_UNKNOWN = """
    UPDATE call_attempts SET send_error = %(error)s, sent_at = coalesce(sent_at, %(sent_at)s)
     WHERE id = %(id)s AND status = 'originating'
"""

_REJECTED = """
    WITH attempt AS (
        UPDATE call_attempts
           SET status = 'ended', outcome = %(outcome)s, ended_by = 'pbx', ended_at = now(),
               send_error = %(error)s,
               sent_at = coalesce(sent_at, %(sent_at)s)
         WHERE id = %(id)s AND status = 'originating'
        RETURNING contact_id, campaign_id
    )
    UPDATE contacts k
       SET status = CASE WHEN k.attempts >= c.max_attempts THEN 'exhausted' ELSE 'pending' END,
           last_outcome = %(outcome)s,
           next_attempt_at = now() + make_interval(
               secs => coalesce((c.retry_delays ->> %(outcome)s)::float8, %(delay)s)),
           updated_at = now()
      FROM attempt JOIN campaigns c ON c.id = attempt.campaign_id
     WHERE k.id = attempt.contact_id AND k.status = 'dialing'
"""


class ClaimInterrupted(Exception):
    """The connection died under the claim. The attempt is still queued, or was claimed by
    that very statement; claiming it again on another connection with the same `claim_token`
    is safe: the claim is conditional, and takes back only that token's own claim."""


def new_claim_token() -> int:
    """A token for one run of the originate task (a positive bigint)."""
    return secrets.randbits(62) + 1


def originate_attempt(
    conn: psycopg.Connection[Any],
    attempt_id: int,
    ami_for: Callable[[str], Originator],
    *,
    send_timeout: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    reconnect: Callable[[], psycopg.Connection[Any]] | None = None,
    claim_token: int | None = None,
) -> Result:
    """Send call attempt `attempt_id` at most once (see the module doc); returns what happened.

    `conn` must be in autocommit mode; `ami_for(pbx)` gives the client for the trunk's PBX.
    `reconnect()`, if given, gives a fresh connection to give the attempt back on when `conn`
    died before anything was sent (else the attempt waits for reconciliation); it raises
    `psycopg.Error` when none can be had in time. `claim_token` (`new_claim_token`) names this
    run of the task: after `ClaimInterrupted`, call again with the same token.
    """
    route: dict[str, str] = {}
    result = _originate(
        conn, attempt_id, ami_for, send_timeout=send_timeout, sleep=sleep, clock=clock,
        reconnect=reconnect, claim_token=claim_token, route=route,
    )  # fmt: skip
    metrics.ORIGINATES.labels(route.get("trunk", "-"), route.get("pbx", "-"), result.value).inc()
    return result


def _originate(
    conn: psycopg.Connection[Any],
    attempt_id: int,
    ami_for: Callable[[str], Originator],
    *,
    send_timeout: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    reconnect: Callable[[], psycopg.Connection[Any]] | None,
    claim_token: int | None,
    route: dict[str, str],
) -> Result:
    token = claim_token if claim_token is not None else new_claim_token()
    try:
        (claimed,) = _run(conn, _call("dialer_claim", attempt_id, token))
    except psycopg.OperationalError as exc:
        if conn.closed or conn.broken:
            raise ClaimInterrupted(str(exc)) from exc
        raise
    claimed = claimed[0] if claimed else None
    if claimed is None:
        return _not_claimed(conn, attempt_id)
    payload, trunk_id, pbx, call_id, pbx_state, trunk = claimed
    route["pbx"], route["trunk"] = pbx, trunk
    if pbx_state not in pbxs.USABLE_STATES:
        return _pbx_unavailable(conn, attempt_id, call_id, pbx, pbx_state)

    try:
        if payload is None:
            payload = _build_payload(conn, attempt_id)
        client = ami_for(pbx)
    except SettingsError as exc:  # this host has no AMI settings for the PBX
        _no_settings(conn, attempt_id, pbx, exc)
        return Result.NOT_SENT
    except ValueError as exc:  # PayloadError: a setting the payload cannot be built from
        log.error("attempt %s: payload refused: %s", call_id, exc, extra=logs.call_fields(call_id))
        _give_back(conn, attempt_id, "originating", f"payload refused: {exc}", BAD_SETTINGS_RETRY_S)
        return Result.NOT_SENT
    except Exception as exc:
        _give_back(conn, attempt_id, "originating", f"not sent: {exc}", UNREACHABLE_RETRY_S)
        raise

    missed = "no turn"
    lead = 0.0
    for turn in range(SLOT_TURNS):
        try:
            # Connected first: a slot taken while reconnecting would be sent late, or wasted.
            client.wait_connected(send_timeout)
            sent = _send_in_slot(
                conn, attempt_id, trunk_id, lead, client, payload, pbx=pbx,
                send_timeout=send_timeout, sleep=sleep, clock=clock,
            )  # fmt: skip
        except (AmiConnectionError, AmiAuthenticationError) as exc:
            log.warning("attempt %s: not sent: %s", call_id, exc, extra=logs.call_fields(call_id))
            _report_pbx(conn, pbx, exc)
            _give_back(
                conn, attempt_id, "originating", f"not sent: PBX {pbx}: {exc}",
                PBX_UNAVAILABLE_RETRY_S,
            )  # fmt: skip
            return Result.NOT_SENT
        except Exception as exc:  # the database failed us; nothing was sent
            if _give_back_after_db_error(conn, reconnect, attempt_id, call_id, exc):
                log.warning("attempt %s: not sent, given back: database connection lost (%s)",
                            call_id, exc, extra=logs.call_fields(call_id))  # fmt: skip
                return Result.NOT_SENT
            raise
        if isinstance(sent, Result):
            return _stopped_before_send(conn, attempt_id, sent)
        if isinstance(sent, _Hold):
            return _held_back(conn, attempt_id, call_id, sent)
        if sent.missed:
            missed = sent.missed
            log.info(
                "attempt %s: slot %d dropped: %s",
                call_id,
                turn + 1,
                missed,
                extra=logs.call_fields(call_id),
            )
            lead = min(MAX_SLOT_LEAD_S, max(lead, 2 * sent.late))
            continue
        return _record_send(conn, attempt_id, call_id, pbx, sent, reconnect)
    # A host too busy to keep its slots: the contact waits rather than add to the load.
    _give_back(
        conn, attempt_id, "originating", f"{MISSED_SLOTS_REASON} ({missed})", UNREACHABLE_RETRY_S
    )
    log.warning(
        "attempt %s: not sent, given back: %d pacing slots missed (%s); due again in %.0f s",
        call_id, SLOT_TURNS, missed, UNREACHABLE_RETRY_S, extra=logs.call_fields(call_id),
    )  # fmt: skip
    return Result.NOT_SENT


def _give_back_after_db_error(
    conn: psycopg.Connection[Any],
    reconnect: Callable[[], psycopg.Connection[Any]] | None,
    attempt_id: int,
    call_id: str,
    exc: BaseException,
) -> bool:
    """Nothing was sent: the attempt goes back, due at once when the connection died (the
    database is back, or soon will be), on a fresh connection if `conn` is dead. True when
    the connection had died and the attempt went back through a fresh one: a Postgres
    restart, handled, not an error of the task."""
    dead = conn.closed or conn.broken
    delay = 0.0 if dead else UNREACHABLE_RETRY_S
    if dead and reconnect is None:
        return False  # left to reconciliation
    try:
        replaced = _on_live_connection(
            conn, reconnect,
            lambda c: _give_back(c, attempt_id, "originating", f"not sent: {exc}", delay),
        )  # fmt: skip
    except psycopg.Error as exc_db:  # left to reconciliation
        log.warning("attempt %s: not given back: %s", call_id, exc_db,
                    extra=logs.call_fields(call_id))  # fmt: skip
        return False
    return dead or replaced


def _pbx_unavailable(
    conn: psycopg.Connection[Any], attempt_id: int, call_id: str, pbx: str, state: str | None
) -> Result:
    """The attempt's PBX cannot take calls now: nothing is sent, and the contact is due again
    at once, for the next tick to route it through one that can."""
    log.info(
        "attempt %s: PBX %s is %s; routed again",
        call_id,
        pbx,
        state,
        extra=logs.call_fields(call_id),
    )
    _give_back(
        conn, attempt_id, "originating", f"not sent: PBX {pbx} is {state}; routed again",
        PBX_UNAVAILABLE_RETRY_S,
    )  # fmt: skip
    return Result.PBX_UNAVAILABLE


_no_settings_logged: dict[str, float] = {}


def _no_settings(
    conn: psycopg.Connection[Any], attempt_id: int, pbx: str, exc: SettingsError
) -> None:
    """This worker cannot reach the PBX the attempt was routed through: given back, never sent
    through another PBX (the payload carries this PBX's dial string)."""
    now = time.monotonic()
    if now - _no_settings_logged.get(pbx, -math.inf) >= NO_SETTINGS_LOG_EVERY_S:
        _no_settings_logged[pbx] = now
        log.error("PBX %s: calls routed to it cannot be sent from this worker: %s", pbx, exc)
    error = (
        f"not sent: this worker has no AMI settings for PBX {pbx} (DIALER_PBXS on its host); "
        "run workers for it where it is configured"
    )
    _give_back(conn, attempt_id, "originating", error, UNREACHABLE_RETRY_S)


def _report_pbx(conn: psycopg.Connection[Any], pbx: str, exc: BaseException) -> None:
    """Tell every host that this PBX cannot take calls now (`dialer.campaigns.pbxs`)."""
    if isinstance(exc, AmiAuthenticationError):
        state, reason = "refusing", f"AMI login refused: {exc}"
    elif isinstance(exc, OriginateRejected):
        state = "shutting_down" if exc.pbx_shutting_down else "refusing"
        reason = f"Originate refused: {exc}"
    else:
        state, reason = "down", f"worker could not reach it: {exc}"
    try:
        conn.execute(pbxs.RECORD_STATE_SQL, pbxs.state_params(pbx, state, reason, listener=False))
    except psycopg.Error as exc_db:
        log.warning("PBX %s: could not record it %s: %s", pbx, state, exc_db)


@dataclass(frozen=True, slots=True)
class _Hold:
    """A frequency rule holds the number until `until`."""

    until: dt.datetime
    rule: str


def _held_back(conn: psycopg.Connection[Any], attempt_id: int, call_id: str, hold: _Hold) -> Result:
    """Nothing sent: the contact gets its attempt back, due when the rule allows the call."""
    log.info("attempt %s: held back by frequency rule %s until %s", call_id, hold.rule,
             f"{hold.until:%Y-%m-%d %H:%M:%S}Z", extra=logs.call_fields(call_id))  # fmt: skip
    delay = max(0.0, (hold.until - dt.datetime.now(dt.UTC)).total_seconds())
    error = f"held back by frequency rule {hold.rule} until {hold.until.isoformat()}"
    _give_back(conn, attempt_id, "originating", error, delay)
    return Result.FREQUENCY_HELD


@dataclass(slots=True)
class _Send:
    """What became of one slot: missed (nothing sent, why), or sent with the send's error."""

    missed: str = ""
    late: float = 0.0  # seconds after the slot it woke up
    sent_at: dt.datetime | None = None
    error: BaseException | None = None
    recorded: bool = False  # sent_at written with the send transaction's commit


def _send_in_slot(
    conn: psycopg.Connection[Any],
    attempt_id: int,
    trunk_id: int,
    lead: float,
    client: Originator,
    payload: Mapping[str, Any],
    *,
    pbx: str,
    send_timeout: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> _Send | _Hold | Result:
    """A pacing slot, then the last checks, the wait for the slot and the send, with the
    contact's row locked.

    Returns the Result that stopped the attempt before it was sent, or a `_Send`. Raises only
    before anything was sent (a database error).
    """
    sent: _Send | None = None
    asked = clock()
    try:
        slot, check = take_slot_and_check(
            conn, attempt_id, trunk_id, lead, sleep=sleep, clock=clock
        )
        stopped = _stopped_by(check, slot)
        if stopped is Result.FREQUENCY_HELD:
            assert check is not None and check.held is not None
            return _Hold(*check.held)
        if stopped is not None:
            return stopped
        wait = slot - clock()
        if wait > 0:
            sleep(wait)
        late = clock() - slot
        if late > SLOT_TOLERANCE_S:
            return _Send(missed=f"woke up {late * 1000:.0f} ms after the slot", late=late)
        _check_still_connected(conn)
        metrics.PACING_WAIT.observe(max(0.0, slot - asked))
        sent_at = dt.datetime.now(dt.UTC)
        writing = time.monotonic()
        try:
            # Checked again by the adapter just before the write, after the hand-over to its
            # thread and any wait for a dropped connection.
            client.originate(payload, timeout=send_timeout, send_by=slot + SLOT_TOLERANCE_S)
        except AmiConnectionError as exc:  # nothing left the dialer
            return _Send(missed=str(exc), late=max(0.0, clock() - slot))
        except BaseException as exc:
            return _Send(sent_at=sent_at, error=exc)
        metrics.SEND_LATENCY.labels(pbx).observe(time.monotonic() - writing)
        sent = _Send(sent_at=sent_at)
        return sent
    finally:
        # Releases the lock. Once something may have been sent, a failed COMMIT (connection
        # lost) changes nothing that matters: the transaction only read and locked.
        _end_transaction(conn, attempt_id, sent)


def take_slot_and_check(
    conn: psycopg.Connection[Any],
    attempt_id: int,
    trunk_id: int,
    lead: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> tuple[float, Any]:
    """Take the trunk's and the PBX's next pacing slot (`dialer.dialing.pacing`, their own
    transaction), then open the send transaction: lock the contact's row and read what the last
    checks need. One round trip; the send transaction stays open. Returns the slot (Unix time)
    and the checks' row.

    When the PBX's turn comes later than the trunk's next slots (a PBX slower than its share of
    the trunk's calls), those are left to calls through other PBXs: this call waits for its
    PBX's slot, then takes the trunk's (one more round trip, that call only)."""
    _, slot_rows, *checks = _run(
        conn,
        "BEGIN",
        _call("dialer_lock_trunk", trunk_id),
        _call("dialer_take_slots", trunk_id, lead, PAD, attempt_id),
        "COMMIT",
        *_check_statements(attempt_id, clock),
    )
    if not slot_rows:
        raise LookupError(f"trunk {trunk_id} or the PBX of attempt {attempt_id} does not exist")
    slot, with_trunk = float(slot_rows[0][0]), bool(slot_rows[0][1])
    check = _read_check(conn, attempt_id, checks, clock)
    if with_trunk or _stopped_by(check, slot) is not None:
        return slot, check
    wait = slot - TRUNK_LEAD_S - clock()
    if wait > 0:
        sleep(wait)
    # The trunk's slot no earlier than the PBX's; the send transaction is ended and opened
    # again around it (the contact's row unlocked for a moment, its checks read again).
    trunk_lead = max(TRUNK_LEAD_S, slot - clock())
    trunk_rows, *checks = _run(
        conn,
        "COMMIT",
        "BEGIN",
        _call("dialer_take_slot", trunk_id, trunk_lead, PAD),
        "COMMIT",
        *_check_statements(attempt_id, clock),
    )
    if not trunk_rows:
        raise LookupError(f"trunk {trunk_id} does not exist")
    return float(trunk_rows[0][0]), _read_check(conn, attempt_id, checks, clock)


@dataclass(frozen=True, slots=True)
class _Rules:
    """The calling and frequency rules as this process last read them."""

    book: RuleBook
    frequency: tuple[FrequencyRule, ...]


# Read at the first check, and again whenever the check sees `rules_version` move.
_rules = _Rules(RuleBook(version=-1), ())
# A number's history is read this much further back than the rules need: the slot comes a
# little after the read.
_HISTORY_SLACK = dt.timedelta(minutes=5)


@dataclass(slots=True)
class _Check:
    """What the last checks read: the attempt's row, the rules in force, and, with frequency
    rules, the number's attempts (sent at, conversation at) with the number locked."""

    row: Any
    rules: _Rules
    history: list[Any]
    held: tuple[dt.datetime, str] | None = None  # set by `_stopped_by`


def _check_statements(attempt_id: int, clock: Callable[[], float]) -> list[str]:
    """Open the send transaction, lock the attempt, its contact and the number dialled, and read
    the checks; with frequency rules in force, the number's history too (one round trip).

    The number itself is locked when frequency rules are in force, or when it is an alternate
    of the contact: do-not-call entries for it take that lock (`dnc.lock_numbers`) where the
    contact's row lock covers only its first number. Both locks come before the check, whose
    snapshot then sees an entry committed by the transaction a lock waited for."""
    statements = [
        "BEGIN",
        _call("dialer_lock_attempt", attempt_id),
        _call("dialer_lock_contact", attempt_id),
    ]
    if _rules.frequency:
        return statements + [
            _call("dialer_lock_number", attempt_id),
            _call("dialer_send_check", attempt_id),
            _history_statement(attempt_id, _rules, clock),
        ]
    return statements + [
        _call("dialer_lock_alternate", attempt_id),
        _call("dialer_send_check", attempt_id),
    ]


def _history_statement(attempt_id: int, rules: _Rules, clock: Callable[[], float]) -> str:
    since = dt.datetime.fromtimestamp(clock(), dt.UTC) - frequency.lookback(rules.frequency)
    return _call("dialer_number_history", attempt_id, since - _HISTORY_SLACK)


def _read_check(
    conn: psycopg.Connection[Any], attempt_id: int, results: list[list[Any]],
    clock: Callable[[], float],
) -> _Check | None:  # fmt: skip
    """The check from the rows of `_check_statements`; the rules read again if they changed
    (and the number locked and its history read, if that was not done with the rules held)."""
    global _rules
    _, _, _, check_rows, *number = results  # the attempt's, contact's and number's locks
    if not check_rows:
        return None
    row = check_rows[0]
    rules, history = _rules, (number[0] if number else None)
    if row.rules_version != rules.book.version:
        version, hours, holidays, freq = _run(
            conn,
            rules_store.VERSION_SQL,
            rules_store.HOURS_SQL,
            rules_store.HOLIDAYS_SQL,
            rules_store.FREQUENCY_SQL,
        )
        rules = _rules = _Rules(
            rules_store.rulebook_from_rows(version[0][0], hours, holidays),
            rules_store.frequency_from_rows(freq),
        )
        history = None  # read with the old rules' reach, or not at all
    if rules.frequency and history is None:
        # Locked after the check: the history is read after the lock all the same.
        _, history = _run(
            conn,
            _call("dialer_lock_number", attempt_id),
            _history_statement(attempt_id, rules, clock),
        )
    return _Check(row, rules, history or [])


def _stopped_by(check: _Check | None, slot: float) -> Result | None:
    """Why the attempt must not be sent in this slot, or None."""
    if check is None or check.row.status != "originating":
        return Result.CLOSED
    row = check.row
    if row.on_dnc:
        return Result.ON_DNC
    if row.campaign_status != "running":
        return Result.CAMPAIGN_STOPPED
    if row.pbx_state not in pbxs.USABLE_STATES:
        return Result.PBX_UNAVAILABLE
    schedule = CallingWindow(
        row.calling_hours_start, row.calling_hours_end, frozenset(row.calling_days)
    ).schedule()
    book = check.rules.book
    scopes = book.scopes_for(row.phone_e164)
    if scopes:
        schedule = schedule.intersect(book.schedule(scopes) or schedule)
    zones = calling_window.zones_for(row.phone_e164, tuple(row.timezones or ()))
    starts = dt.datetime.fromtimestamp(slot, dt.UTC)
    for at in (starts, starts + dt.timedelta(seconds=WINDOW_MARGIN_S)):
        if not calling_window.is_open(schedule, zones, at):
            return Result.OUTSIDE_WINDOW
    if check.rules.frequency:
        check.held = frequency.held_until(
            check.rules.frequency,
            starts,
            [h.sent_at for h in check.history if h.sent_at is not None],
            [h.conversation_at for h in check.history if h.conversation_at is not None],
        )
        if check.held is not None:
            return Result.FREQUENCY_HELD
    return None


def _check_still_connected(conn: psycopg.Connection[Any]) -> None:
    """Raise if the database session (and with it the row lock) ended while we slept.

    An idle session gets nothing from the server unless it is being terminated, so a readable
    socket is the sign; the query then raises the server's error.
    """
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        conn.execute("SELECT 1")


def _record_sent_at(
    conn: psycopg.Connection[Any],
    attempt_id: int,
    call_id: str,
    sent: _Send,
    reconnect: Callable[[], psycopg.Connection[Any]] | None,
) -> None:
    """The sent time, after the send transaction could not commit it: on a fresh connection
    when that one died (waiting for the database as `reconnect` does). The call is out
    whatever happens here: without its sent time the attempt is still closed by its events,
    or by reconciliation."""
    assert sent.sent_at is not None
    sent_at = sent.sent_at
    try:
        _on_live_connection(
            conn, reconnect, lambda c: _run(c, _call("dialer_sent", attempt_id, sent_at))
        )
    except psycopg.Error as exc:
        log.warning("attempt %s: sent, but its sent time not recorded: %s", call_id, exc,
                    extra=logs.call_fields(call_id))  # fmt: skip


def _on_live_connection(
    conn: psycopg.Connection[Any],
    reconnect: Callable[[], psycopg.Connection[Any]] | None,
    step: Callable[[psycopg.Connection[Any]], Any],
) -> bool:
    """`step(conn)`; while the connection it runs on is dead, again on a fresh one from
    `reconnect` (which waits for the database, up to its own deadline, then raises). True if
    it took a fresh one. Raises the error of a step that failed on a live connection, or of
    `reconnect`."""
    replaced = False
    while True:
        if (conn.closed or conn.broken) and reconnect is not None:
            conn, replaced = reconnect(), True
        try:
            step(conn)
            return replaced
        except psycopg.Error:
            if reconnect is None or not (conn.closed or conn.broken):
                raise


def _end_transaction(
    conn: psycopg.Connection[Any], attempt_id: int, sent: _Send | None = None
) -> None:
    """COMMIT; after a send, with its sent time written in the same round trip."""
    try:
        if sent is None:
            conn.execute("COMMIT")
            return
        assert sent.sent_at is not None
        _run(conn, _call("dialer_sent", attempt_id, sent.sent_at), "COMMIT")
        sent.recorded = True
    except psycopg.Error as exc:
        log.warning("could not end the send transaction: %s", exc)
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")


def _stopped_before_send(conn: psycopg.Connection[Any], attempt_id: int, result: Result) -> Result:
    """Close an attempt the last checks stopped; its contact gets its attempt back."""
    if result is Result.CLOSED:
        return result  # reconciliation closed it and settled the contact
    if result is Result.PBX_UNAVAILABLE:
        _give_back(
            conn, attempt_id, "originating", "not sent: its PBX stopped taking calls; routed again",
            PBX_UNAVAILABLE_RETRY_S,
        )  # fmt: skip
    elif result is Result.ON_DNC:
        _give_back(
            conn, attempt_id, "originating", "on a do-not-call list at send time", 0.0,
            contact="dnc",
        )  # fmt: skip
    elif result is Result.CAMPAIGN_STOPPED:
        state = conn.execute(_STATE, {"id": attempt_id}).fetchone()
        campaign_status = state[1] if state else "cancelled"
        contact = "cancelled" if campaign_status == "cancelled" else "pending"
        error = f"campaign {campaign_status} at send time"
        _give_back(conn, attempt_id, "originating", error, 0.0, contact=contact)
    else:  # the tick re-schedules the contact to when its window opens
        _give_back(conn, attempt_id, "originating", "calling window closed at send time", 0.0)
    return result


def _record_send(
    conn: psycopg.Connection[Any],
    attempt_id: int,
    call_id: str,
    pbx: str,
    sent: _Send,
    reconnect: Callable[[], psycopg.Connection[Any]] | None = None,
) -> Result:
    exc = sent.error
    if exc is None:
        if not sent.recorded:
            _record_sent_at(conn, attempt_id, call_id, sent, reconnect)
        return Result.SENT
    if isinstance(exc, AmiAuthenticationError):
        log.warning("attempt %s: not sent: %s", call_id, exc, extra=logs.call_fields(call_id))
        _report_pbx(conn, pbx, exc)
        _give_back(
            conn, attempt_id, "originating", f"not sent: PBX {pbx}: {exc}",
            PBX_UNAVAILABLE_RETRY_S,
        )  # fmt: skip
        return Result.NOT_SENT
    if isinstance(exc, ValueError):  # amiwire.UnsafeHeaderValue: refused before a byte was written
        log.error("attempt %s: payload refused: %s", call_id, exc, extra=logs.call_fields(call_id))
        _give_back(conn, attempt_id, "originating", f"payload refused: {exc}", BAD_SETTINGS_RETRY_S)
        return Result.NOT_SENT
    if isinstance(exc, OriginateRejected) and exc.pbx_shutting_down:
        # No call exists and the callee is not the reason: not sent, due again at once, for
        # the next tick to route it through a PBX that takes calls.
        log.warning("attempt %s: not sent: %s", call_id, exc, extra=logs.call_fields(call_id))
        _report_pbx(conn, pbx, exc)
        _give_back(
            conn, attempt_id, "originating", f"not sent: PBX {pbx}: {exc}",
            PBX_UNAVAILABLE_RETRY_S,
        )  # fmt: skip
        return Result.NOT_SENT
    if isinstance(exc, OriginateRejected):
        log.warning("attempt %s: %s", call_id, exc, extra=logs.call_fields(call_id))
        _report_pbx(conn, pbx, exc)
        conn.execute(
            _REJECTED,
            {
                "id": attempt_id,
                "outcome": REJECTED_OUTCOME,
                "error": str(exc)[:1000],
                "sent_at": sent.sent_at,
                "delay": REJECTED_RETRY_S,
            },
        )
        return Result.REJECTED
    # OriginateFateUnknown, any other adapter error, or an interruption mid-send: the PBX may
    # have the call. Reconciliation decides; sending again could double it.
    if isinstance(exc, AmiError):
        log.warning(
            "attempt %s: send fate unknown: %s", call_id, exc, extra=logs.call_fields(call_id)
        )
    else:
        log.error(
            "attempt %s: unexpected error while sending",
            call_id,
            exc_info=exc,
            extra=logs.call_fields(call_id),
        )
    conn.execute(
        _FATE_UNKNOWN,
        {"id": attempt_id, "error": f"fate unknown: {exc}"[:1000], "sent_at": sent.sent_at},
    )
    if isinstance(exc, OriginateFateUnknown | AmiError):
        return Result.FATE_UNKNOWN
    raise exc


def _not_claimed(conn: psycopg.Connection[Any], attempt_id: int) -> Result:
    """The claim matched nothing: already taken, or no longer allowed to be sent."""
    state = conn.execute(_STATE, {"id": attempt_id}).fetchone()
    if state is None or state[0] != "queued":
        log.debug(
            "attempt %s: not queued (%s); nothing to do",
            attempt_id,
            state and state[0],
            extra=logs.call_fields(None, attempt_id=attempt_id),
        )
        return Result.ALREADY_TAKEN
    _, campaign_status, on_dnc = state
    if on_dnc:
        _give_back(
            conn, attempt_id, "queued", "on a do-not-call list at send time", 0.0, contact="dnc"
        )
        return Result.ON_DNC
    if campaign_status != "running":
        contact = "cancelled" if campaign_status == "cancelled" else "pending"
        error = f"campaign {campaign_status} at send time"
        _give_back(conn, attempt_id, "queued", error, 0.0, contact=contact)
        return Result.CAMPAIGN_STOPPED
    # A do-not-call entry seen by the claim is gone again: the next tick settles the contact.
    _give_back(conn, attempt_id, "queued", "do-not-call list changed during the claim", 0.0)
    return Result.NOT_SENT


def _build_payload(conn: psycopg.Connection[Any], attempt_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=namedtuple_row) as cursor:
        row = cursor.execute(_PAYLOAD_INPUTS, {"id": attempt_id}).fetchone()
    payload = build_originate_payload(
        call_id=row.custom_call_id,
        to_number=row.phone_e164,
        from_number=row.caller_id_number,
        settings=CallSettings.from_campaign(row),
        trunk=TrunkRoute(name=row.trunk_name, channel_template=row.channel_template),
    )
    conn.execute(_STORE_PAYLOAD, {"id": attempt_id, "payload": Jsonb(payload)})
    return payload


def _give_back(
    conn: psycopg.Connection[Any],
    attempt_id: int,
    from_status: str,
    error: str,
    delay_s: float,
    *,
    contact: str = "pending",
) -> None:
    conn.execute(
        _GIVE_BACK,
        {
            "id": attempt_id,
            "from_status": from_status,
            "error": error[:1000],
            "contact_status": contact,
            "delay": delay_s,
        },
    )


# -- prepared statements --------------------------------------------------------------------------


def _run(conn: psycopg.Connection[Any], *statements: str) -> list[list[Any]]:
    """Run statements as one simple-protocol query; the rows of each (namedtuples; [] for a
    statement that returns none), in order. The hot path's statements are prepared first."""
    if conn not in _READY:
        _prepare(conn)
    with conn.cursor(row_factory=namedtuple_row) as cursor:
        try:
            cursor.execute("; ".join(statements))
        except psycopg.errors.InvalidSqlStatementName:
            # Gone from the server (a DEALLOCATE ALL): prepared again for the next task on
            # this connection; this one fails as any database error fails it.
            _READY.discard(conn)
            raise
        results = []
        while True:
            results.append(cursor.fetchall() if cursor.description is not None else None)
            if not cursor.nextset():
                break
    # Commands (BEGIN, COMMIT) have no rows at all; statements keep their place.
    return [rows for rows in results if rows is not None]


def _prepare(conn: psycopg.Connection[Any]) -> None:
    # psycopg must not prepare statements of its own here: on a ROLLBACK it drops them all
    # with DEALLOCATE ALL, and ours with them.
    conn.prepare_threshold = None
    conn.execute(
        "; ".join(f"PREPARE {name}({types}) AS {text}" for name, (types, text) in _PREPARED.items())
    )
    # The payload the claim returns is parsed with orjson, about five times faster.
    set_json_loads(orjson.loads, conn)
    _READY.add(conn)


def _call(name: str, *args: int | float | dt.datetime) -> str:
    return f"EXECUTE {name}({', '.join(_literal(a) for a in args)})"


def _literal(value: int | float | dt.datetime) -> str:
    """An SQL literal of a value of these types only: nothing else can reach the query text."""
    if isinstance(value, bool):
        raise TypeError("no booleans in the hot path's literals")
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return repr(float(value))
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("a time without its zone")
        return f"'{value.isoformat()}'::timestamptz"
    raise TypeError(f"no literal for {type(value).__name__}")
