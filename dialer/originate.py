"""Send the Originate for one call attempt, at most once whatever happens to the task.

The dispatch tick committed the attempt `queued`, with the payload to send. Here:
1. claim: a conditional UPDATE `queued -> originating` that also re-checks the do-not-call
   lists and that the campaign still runs, and commits. A redelivered or duplicated task
   matches no row and does nothing; an attempt whose number went on a list, or whose campaign
   was paused or stopped, since it was queued is closed as not sent;
2. take the trunk's next pacing slot and sleep until it starts;
3. send through the AMI adapter and record when.

Failures: `AmiConnectionError` (nothing left the dialer) -> attempt `not_sent`, contact due
again without using up an attempt; `OriginateFateUnknown` -> the attempt stays `originating`
with `send_error` set, for reconciliation against the PBX: never sent again; `OriginateRejected`
(Asterisk refused, no call exists) -> attempt ended with outcome `failed` and the contact
re-scheduled like any failed attempt.

This is the dialer's hot path, so it talks to Postgres through a plain psycopg connection in
autocommit mode (one round trip per statement, no ORM), three statements per call.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import psycopg
from psycopg.rows import namedtuple_row
from psycopg.types.json import Jsonb

from dialer.ami import (
    AmiAuthenticationError,
    AmiConnectionError,
    AmiError,
    OriginateFateUnknown,
    OriginateRejected,
)
from dialer.pacing import wait_for_slot
from dialer.payload import CallSettings, TrunkRoute, build_originate_payload

log = logging.getLogger(__name__)

# A PBX that cannot be reached is retried soon, not at once: the tick would otherwise create
# a not-sent row per contact per second during an outage.
UNREACHABLE_RETRY_S = 15.0
# A payload refused for a campaign or trunk setting stays refused until the operator fixes it.
BAD_SETTINGS_RETRY_S = 300.0
REJECTED_OUTCOME = "failed"
REJECTED_RETRY_S = 300.0


class Result(enum.StrEnum):
    SENT = "sent"
    ALREADY_TAKEN = "already_taken"  # another delivery of the task owns the attempt
    NOT_SENT = "not_sent"  # nothing left the dialer; contact due again
    ON_DNC = "on_dnc"  # added to a do-not-call list after it was queued
    CAMPAIGN_STOPPED = "campaign_stopped"  # paused, cancelled or ended after it was queued
    FATE_UNKNOWN = "fate_unknown"  # may have been sent; left for reconciliation
    REJECTED = "rejected"  # Asterisk refused it; no call exists


class Originator(Protocol):
    def originate(self, payload: Mapping[str, Any], *, timeout: float | None = None) -> None: ...


_DNC_FOR_ATTEMPT = """
    EXISTS (SELECT 1 FROM contacts k JOIN dnc_numbers d ON d.phone_e164 = k.phone_e164
             WHERE k.id = a.contact_id
               AND (d.campaign_id IS NULL OR d.campaign_id = a.campaign_id))
"""

_CLAIM = f"""
    UPDATE call_attempts a SET status = 'originating'
     WHERE a.id = %(id)s AND a.status = 'queued'
       AND EXISTS (SELECT 1 FROM campaigns c WHERE c.id = a.campaign_id AND c.status = 'running')
       AND NOT {_DNC_FOR_ATTEMPT}
    RETURNING a.payload, a.trunk_id, (SELECT t.pbx FROM trunks t WHERE t.id = a.trunk_id),
              a.custom_call_id
"""

# Why a claim matched nothing.
_STATE = f"""
    SELECT a.status, c.status, {_DNC_FOR_ATTEMPT}
      FROM call_attempts a JOIN campaigns c ON c.id = a.campaign_id
     WHERE a.id = %(id)s
"""

# For an attempt created without a payload (the dispatcher always stores one).
_PAYLOAD_INPUTS = """
    SELECT a.custom_call_id, k.phone_e164, t.name AS trunk_name, t.channel_template, c.*
      FROM call_attempts a
      JOIN contacts k ON k.id = a.contact_id
      JOIN campaigns c ON c.id = a.campaign_id
      JOIN trunks t ON t.id = a.trunk_id
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
    UPDATE call_attempts SET sent_at = %(sent_at)s
      FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
     WHERE id = %(id)s
"""

_FATE_UNKNOWN = """
    UPDATE call_attempts SET send_error = %(error)s, sent_at = coalesce(sent_at, %(sent_at)s)
     WHERE id = %(id)s AND status = 'originating'
"""

_REJECTED = """
    WITH attempt AS (
        UPDATE call_attempts
           SET status = 'ended', outcome = %(outcome)s, ended_at = now(), send_error = %(error)s,
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


def originate_attempt(
    conn: psycopg.Connection[Any],
    attempt_id: int,
    ami_for: Callable[[str], Originator],
    *,
    send_timeout: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Result:
    """Send call attempt `attempt_id` at most once (see the module doc); returns what happened.

    `conn` must be in autocommit mode; `ami_for(pbx)` gives the client for the trunk's PBX.
    """
    claimed = conn.execute(_CLAIM, {"id": attempt_id}).fetchone()
    if claimed is None:
        return _not_claimed(conn, attempt_id)
    payload, trunk_id, pbx, call_id = claimed

    try:
        if payload is None:
            payload = _build_payload(conn, attempt_id)
        client = ami_for(pbx)
        wait_for_slot(conn, trunk_id, sleep=sleep)
    except ValueError as exc:  # PayloadError: a setting the payload cannot be built from
        log.error("attempt %s: payload refused: %s", call_id, exc)
        _give_back(conn, attempt_id, "originating", f"payload refused: {exc}", BAD_SETTINGS_RETRY_S)
        return Result.NOT_SENT
    except Exception as exc:
        _give_back(conn, attempt_id, "originating", f"not sent: {exc}", UNREACHABLE_RETRY_S)
        raise

    sent_at = dt.datetime.now(dt.UTC)
    try:
        client.originate(payload, timeout=send_timeout)
    except (AmiConnectionError, AmiAuthenticationError) as exc:
        log.warning("attempt %s: not sent: %s", call_id, exc)
        _give_back(conn, attempt_id, "originating", f"not sent: {exc}", UNREACHABLE_RETRY_S)
        return Result.NOT_SENT
    except ValueError as exc:  # amiwire.UnsafeHeaderValue: refused before a byte was written
        log.error("attempt %s: payload refused: %s", call_id, exc)
        _give_back(conn, attempt_id, "originating", f"payload refused: {exc}", BAD_SETTINGS_RETRY_S)
        return Result.NOT_SENT
    except OriginateRejected as exc:
        log.warning("attempt %s: %s", call_id, exc)
        conn.execute(
            _REJECTED,
            {
                "id": attempt_id,
                "outcome": REJECTED_OUTCOME,
                "error": str(exc)[:1000],
                "sent_at": sent_at,
                "delay": REJECTED_RETRY_S,
            },
        )
        return Result.REJECTED
    except BaseException as exc:
        # OriginateFateUnknown, any other adapter error, or an interruption mid-send: the PBX
        # may have the call. Reconciliation decides; sending again could double it.
        if isinstance(exc, AmiError):
            log.warning("attempt %s: send fate unknown: %s", call_id, exc)
        else:
            log.exception("attempt %s: unexpected error while sending", call_id)
        conn.execute(
            _FATE_UNKNOWN,
            {"id": attempt_id, "error": f"fate unknown: {exc}"[:1000], "sent_at": sent_at},
        )
        if isinstance(exc, OriginateFateUnknown | AmiError):
            return Result.FATE_UNKNOWN
        raise
    conn.execute(_SENT, {"id": attempt_id, "sent_at": sent_at})
    return Result.SENT


def _not_claimed(conn: psycopg.Connection[Any], attempt_id: int) -> Result:
    """The claim matched nothing: already taken, or no longer allowed to be sent."""
    state = conn.execute(_STATE, {"id": attempt_id}).fetchone()
    if state is None or state[0] != "queued":
        log.debug("attempt %s: not queued (%s); nothing to do", attempt_id, state and state[0])
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
