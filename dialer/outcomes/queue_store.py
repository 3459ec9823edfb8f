"""Writes a `QueueBoard`'s changes: `queue_members` rows and `queue_agent_minutes` seconds, in
one transaction (the listener calls it off its event loop)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Engine, text

from dialer.outcomes.queue_board import Changes

_DELETE_ALL_BUT = text(
    """
    DELETE FROM queue_members m
     WHERE m.pbx = :pbx
       AND NOT EXISTS (SELECT 1 FROM jsonb_to_recordset(CAST(:keys AS jsonb))
                                  AS k(queue text, interface text)
                        WHERE k.queue = m.queue AND k.interface = m.interface)
    """
)
_DELETE = text(
    """
    DELETE FROM queue_members m
     USING jsonb_to_recordset(CAST(:keys AS jsonb)) AS k(queue text, interface text)
     WHERE m.pbx = :pbx AND k.queue = m.queue AND k.interface = m.interface
    """
)
_UPSERT = text(
    """
    INSERT INTO queue_members AS m (pbx, queue, interface, member_name, paused, status, in_call,
                                    wrapup_s, last_call_at, call_started_at, updated_at)
    SELECT r.pbx, r.queue, r.interface, r.member_name, r.paused, r.status, r.in_call,
           r.wrapup_s, r.last_call_at, r.call_started_at, now()
      FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
           pbx text, queue text, interface text, member_name text, paused boolean,
           status integer, in_call boolean, wrapup_s integer, last_call_at timestamptz,
           call_started_at timestamptz)
    ON CONFLICT (pbx, queue, interface) DO UPDATE
       SET member_name = excluded.member_name, paused = excluded.paused,
           status = excluded.status, in_call = excluded.in_call, wrapup_s = excluded.wrapup_s,
           last_call_at = excluded.last_call_at, call_started_at = excluded.call_started_at,
           updated_at = now()
    """
)
_ADD_MINUTES = text(
    """
    INSERT INTO queue_agent_minutes AS q (pbx, queue, minute, staffed_s, busy_s)
    SELECT :pbx, r.queue, r.minute, r.staffed_s, r.busy_s
      FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
           queue text, minute timestamptz, staffed_s float8, busy_s float8)
     ORDER BY r.queue, r.minute
    ON CONFLICT (pbx, queue, minute) DO UPDATE
       SET staffed_s = q.staffed_s + excluded.staffed_s, busy_s = q.busy_s + excluded.busy_s
    """
)


def write_changes(engine: Engine, pbx: str, changes: Changes) -> None:
    with engine.begin() as conn:
        if changes.snapshot_queues is not None:
            keys = [{"queue": r["queue"], "interface": r["interface"]} for r in changes.upsert]
            conn.execute(_DELETE_ALL_BUT, {"pbx": pbx, "keys": json.dumps(keys)})
        if changes.removed:
            keys = [{"queue": q, "interface": i} for q, i in changes.removed]
            conn.execute(_DELETE, {"pbx": pbx, "keys": json.dumps(keys)})
        if changes.upsert:
            conn.execute(_UPSERT, {"rows": json.dumps(changes.upsert, default=_json)})
        if changes.minutes:
            rows = [
                {
                    "queue": queue,
                    "minute": dt.datetime.fromtimestamp(minute, dt.UTC).isoformat(),
                    "staffed_s": staffed,
                    "busy_s": busy,
                }
                for (queue, minute), (staffed, busy) in changes.minutes.items()
            ]
            conn.execute(_ADD_MINUTES, {"pbx": pbx, "rows": json.dumps(rows)})


def _json(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON: {value!r}")
