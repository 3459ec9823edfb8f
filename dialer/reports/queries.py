"""Outcome reports: read-only queries over the views of migration 0002, returning plain dicts.

Every function takes an open SQLAlchemy `Connection` and runs inside the caller's transaction.
The views (`call_attempts_report`, `contacts_report`, `campaign_summary` and the function
`campaign_summary_since`) hold the definitions; this module only picks rows from them with
plans that stay fast on tens of millions of attempts.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, BinaryIO

from psycopg import sql
from sqlalchemy import Connection, text

from dialer import csvsafe
from dialer.campaigns.pbxs import USABLE_STATES, current_rate_sql, effective_state_sql
from dialer.models import CONTACT_STATUSES, OPEN_ATTEMPT_STATUSES

# The outcome taxonomy the views know by name (each has a column in campaign_summary).
OUTCOMES = (
    "transferred",
    "human_no_press",
    "human_other_key",
    "opted_out",
    "voicemail_left",
    "machine_no_message",
    "busy",
    "no_answer",
    "congestion",
    "rejected",
    "failed",
    "abandoned",
    "unknown",
    "queue_abandoned",
    "operator_hangup",
    "interrupted",
)
FINAL_CAMPAIGN_STATUSES = ("completed", "cancelled")
MAX_LIST_LIMIT = 10_000
# Columns of call_attempts_report, in view order: the export's header.
EXPORT_COLUMNS = (
    "attempt_id",
    "call_id",
    "campaign_id",
    "campaign",
    "contact_id",
    "phone",
    "first_name",
    "last_name",
    "contact_fields",
    "trunk_id",
    "trunk",
    "attempt_number",
    "status",
    "queued_at",
    "sent_at",
    "answered_at",
    "ended_at",
    "ring_seconds",
    "talk_seconds",
    "answered",
    "human",
    "pressed",
    "amd_status",
    "amd_cause",
    "dtmf",
    "transfer_status",
    "transfer_requested_at",
    "transfer_answered_at",
    "transfer_ended_at",
    "transfer_seconds",
    "voicemail_left",
    "recording_file",
    "originate_response",
    "originate_reason",
    "dial_status",
    "hangup_cause",
    "hangup_cause_txt",
    "send_error",
    "uniqueid",
    "channel",
    "outcome",
    "ended_by",
    "transfer_source",
    "transfer_queue",
    "operator_hangup_at",
    "operator_retry",
    "pbx_down_at",
    "pbx",
    "originate_response_at",
    "caller_id",
    "dialled_phone",
    "queue_wait_s",
    "agent",
)
# The export's text columns: those a spreadsheet could take for a formula. The others are
# numbers, times and flags, and contact_fields is a JSON object ("{...}").
EXPORT_TEXT_COLUMNS = frozenset(
    {
        "call_id",
        "campaign",
        "phone",
        "first_name",
        "last_name",
        "trunk",
        "status",
        "amd_status",
        "amd_cause",
        "dtmf",
        "transfer_status",
        "recording_file",
        "originate_response",
        "dial_status",
        "hangup_cause_txt",
        "send_error",
        "uniqueid",
        "channel",
        "outcome",
        "ended_by",
        "transfer_source",
        "transfer_queue",
        "pbx",
        "caller_id",
        "dialled_phone",
        "agent",
    }
)
# Current sends per trunk are counted among attempts queued this recently: an attempt waits
# seconds between queueing and sending, and the bound keeps the count an index range scan.
SEND_LOOKBACK = dt.timedelta(minutes=10)
# "Current" calls per second: the sends of the last few seconds.
WATCH_WINDOW_SECONDS = 5.0


class CampaignNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no campaign named {name!r}")
        self.name = name


class CallNotFound(LookupError):
    def __init__(self, ref: str, message: str | None = None) -> None:
        super().__init__(message or f"no call attempt with id or call id {ref!r}")
        self.ref = ref


# ASCII digits only (str.isdigit also takes "²" and other scripts' digits), within a bigint.
_ATTEMPT_ID = re.compile(r"[0-9]{1,18}")
_CALL_ID = re.compile(r"[0-9]{1,20}_[0-9]{1,20}")


def call_lookup(ref: str) -> tuple[str, int | str]:
    """The report column and value naming the call `ref` (an attempt id or a custom_call_id);
    CallNotFound with the reason if it can be neither."""
    if _ATTEMPT_ID.fullmatch(ref):
        return "attempt_id", int(ref)
    if _CALL_ID.fullmatch(ref):
        return "call_id", ref
    raise CallNotFound(
        ref,
        f"{ref!r} is neither an attempt id (up to 18 digits, 0-9) nor a call id "
        "(<epoch_ms>_<attempt id>, e.g. 1767225600000_42)",
    )


def _rows(conn: Connection, query: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in conn.execute(text(query), params)]


def find_campaign(conn: Connection, name: str) -> dict[str, Any]:
    """The campaign's id, name, status, trunk, press key and transfer queue; CampaignNotFound
    if there is none."""
    rows = _rows(
        conn,
        "SELECT id, name, status, trunk_id, press_key, transfer_queue FROM campaigns"
        " WHERE name = :name",
        name=name,
    )
    if not rows:
        raise CampaignNotFound(name)
    return rows[0]


def campaign_summary(
    conn: Connection, campaign: str, since: dt.datetime | None = None, *, queue: bool = True
) -> dict[str, Any]:
    """One row of `campaign_summary` (or `campaign_summary_since(since)`) for a campaign; for
    a campaign that transfers into a queue, with its `queue_figures` unless `queue` is false."""
    found = find_campaign(conn, campaign)
    if since is None:
        summary = _rows(
            conn, "SELECT * FROM campaign_summary WHERE campaign_id = :id", id=found["id"]
        )[0]
    else:
        query = "SELECT * FROM campaign_summary_since(:since) WHERE campaign_id = :id"
        summary = _rows(conn, query, id=found["id"], since=since)[0]
    if queue and found["transfer_queue"]:
        summary.update(queue_figures(conn, found["id"], since=since))
    return summary


_OPEN = ", ".join(f"'{s}'" for s in OPEN_ATTEMPT_STATUSES)
# The rolling window of the `..._5m` queue figures.
QUEUE_WINDOW = dt.timedelta(minutes=5)
QUEUE_FIGURES = (
    "transfer_abandon_rate",
    "avg_queue_wait_seconds",
    "agent_occupancy",
    "transfer_abandon_rate_5m",
    "avg_queue_wait_seconds_5m",
    "agent_occupancy_5m",
)
# One statement: the campaign's attempts by its campaign index, then its queue's agent minutes
# within the campaign's span. `pbx = ANY(...)` gives the agent minutes' key (pbx, queue,
# minute) its leading column, and the scalar subqueries make queue and minutes index bounds:
# they are read as index ranges rather than scanned.
_QUEUE_FIGURES = text(
    f"""
    WITH k AS (
        SELECT c.transfer_queue AS queue,
               c.status IN ({", ".join(f"'{s}'" for s in FINAL_CAMPAIGN_STATUSES)}) AS final,
               coalesce(CAST(:now AS timestamptz), now()) AS now,
               coalesce(CAST(:since AS timestamptz), '-infinity') AS since,
               date_trunc('minute', coalesce(CAST(:now AS timestamptz), now())
                                    - CAST(:window AS interval)) AS window_minute,
               coalesce(CAST(:now AS timestamptz), now()) - CAST(:window AS interval)
                   AS window_start
          FROM campaigns c
         WHERE c.id = :id
    ), mine AS (
        SELECT a.sent_at, a.ended_at, a.status, a.outcome, a.queue_wait_s,
               a.status = 'ended' AND a.transfer_queue IS NOT NULL
                   AND a.outcome IN ('transferred', 'queue_abandoned') AS queued,
               a.ended_at > (SELECT window_start FROM k)
                   AND a.ended_at <= (SELECT now FROM k) AS recent
          FROM call_attempts a
         WHERE a.campaign_id = :id AND a.queued_at >= (SELECT since FROM k)
    ), calls AS (
        SELECT min(m.sent_at) AS span_start,
               CASE WHEN k.final AND NOT coalesce(bool_or(m.status IN ({_OPEN})), false)
                    THEN coalesce(max(m.ended_at), k.now)
                    ELSE k.now END AS span_end,
               count(*) FILTER (WHERE m.queued) AS entered,
               count(*) FILTER (WHERE m.queued AND m.outcome = 'queue_abandoned') AS abandoned,
               avg(m.queue_wait_s) FILTER (WHERE m.queued) AS wait,
               count(*) FILTER (WHERE m.queued AND m.recent) AS entered_5m,
               count(*) FILTER (WHERE m.queued AND m.recent
                                  AND m.outcome = 'queue_abandoned') AS abandoned_5m,
               avg(m.queue_wait_s) FILTER (WHERE m.queued AND m.recent) AS wait_5m
          FROM k LEFT JOIN mine m ON true
         GROUP BY k.final, k.now
    ), agents AS (
        SELECT sum(q.staffed_s) AS staffed, sum(q.busy_s) AS busy,
               sum(q.staffed_s) FILTER (WHERE q.minute >= k.window_minute) AS staffed_5m,
               sum(q.busy_s) FILTER (WHERE q.minute >= k.window_minute) AS busy_5m
          FROM k
          JOIN queue_agent_minutes q
            ON q.pbx = ANY (ARRAY(SELECT name FROM pbxs)) AND q.queue = (SELECT queue FROM k)
           AND q.minute >= (SELECT date_trunc('minute', span_start) FROM calls)
           AND q.minute <= (SELECT span_end FROM calls)
    )
    SELECT round(c.abandoned::numeric / nullif(c.entered, 0), 4)::double precision
               AS transfer_abandon_rate,
           round(c.wait, 3)::double precision AS avg_queue_wait_seconds,
           round((a.busy / nullif(a.staffed, 0))::numeric, 4)::double precision
               AS agent_occupancy,
           round(c.abandoned_5m::numeric / nullif(c.entered_5m, 0), 4)::double precision
               AS transfer_abandon_rate_5m,
           round(c.wait_5m, 3)::double precision AS avg_queue_wait_seconds_5m,
           round((a.busy_5m / nullif(a.staffed_5m, 0))::numeric, 4)::double precision
               AS agent_occupancy_5m
      FROM calls c CROSS JOIN agents a
    """
)


def queue_figures(
    conn: Connection,
    campaign_id: int,
    *,
    since: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> dict[str, float | None]:
    """How a campaign's transfers into its queue went (attempts queued since `since`).

    Attempts that entered the queue: those ended as transferred or queue_abandoned with a
    transfer queue. `transfer_abandon_rate`: the share of them that ended queue_abandoned;
    `avg_queue_wait_seconds`: their mean queue_wait_s; `agent_occupancy`: busy over staffed
    agent-seconds of the campaign's queue (queue_agent_minutes, every PBX) in the minutes from
    that of the campaign's first send to its last end (to `now` while it may still call). The
    `_5m` figures: the same for the attempts that ended, and the minutes that overlap, the last
    `QUEUE_WINDOW`. Each is None when there is nothing to divide by.
    """
    params = {"id": campaign_id, "since": since, "now": now, "window": QUEUE_WINDOW}
    return dict(conn.execute(_QUEUE_FIGURES, params).one()._mapping)


def list_calls(
    conn: Connection,
    *,
    campaign: str | None = None,
    outcome: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Rows of `call_attempts_report`, newest first, filtered by campaign, outcome and time."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    where = ["true"]
    params: dict[str, Any] = {"limit": limit}
    if campaign is not None:
        where.append("a.campaign_id = :campaign_id")
        params["campaign_id"] = find_campaign(conn, campaign)["id"]
    if outcome is not None:
        where.append("a.outcome = :outcome")
        params["outcome"] = outcome
    if since is not None:
        where.append("a.queued_at >= :since")
        params["since"] = since
    # Pick the ids first from an index (covering campaign, time and outcome), then join the
    # view for those rows only.
    query = f"""
        WITH picked AS MATERIALIZED (
            SELECT a.id, a.queued_at
            FROM call_attempts a
            WHERE {" AND ".join(where)}
            ORDER BY a.queued_at DESC, a.id DESC
            LIMIT :limit
        )
        SELECT r.*
        FROM picked p
        JOIN call_attempts_report r ON r.attempt_id = p.id
        ORDER BY p.queued_at DESC, p.id DESC
    """
    return _rows(conn, query, **params)


def get_call(conn: Connection, ref: str) -> dict[str, Any]:
    """One attempt by attempt id or custom_call_id, with its payload and its `events` timeline."""
    column, value = call_lookup(ref)
    rows = _rows(conn, f"SELECT * FROM call_attempts_report WHERE {column} = :value", value=value)
    if not rows:
        raise CallNotFound(ref)
    call = rows[0]
    call["payload"] = conn.execute(
        text("SELECT payload FROM call_attempts WHERE id = :id"), {"id": call["attempt_id"]}
    ).scalar_one()
    call["events"] = _rows(
        conn,
        """
        SELECT id, received_at, event, data
        FROM call_events
        WHERE call_attempt_id = :id
        ORDER BY received_at, id
        """,
        id=call["attempt_id"],
    )
    return call


def contacts_page(
    conn: Connection, campaign: str, *, after_phone: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """A page of `contacts_report` for a campaign in phone order (keyset: pass the last phone)."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    campaign_id = find_campaign(conn, campaign)["id"]
    return _rows(
        conn,
        """
        SELECT * FROM contacts_report
        WHERE campaign_id = :id AND phone > :after
        ORDER BY phone
        LIMIT :limit
        """,
        id=campaign_id,
        after=after_phone or "",
        limit=limit,
    )


def export_calls(
    conn: Connection,
    campaign: str,
    out: BinaryIO,
    *,
    since: dt.datetime | None = None,
    spreadsheet_safe: bool = True,
) -> int:
    """Stream every attempt of a campaign as CSV (header first, times in UTC) into `out`.

    COPY TO STDOUT sends the rows in chunks as the server produces them, so memory stays
    constant whatever the size. With `spreadsheet_safe`, text a spreadsheet would run as a
    formula gets a leading quote (`dialer.csvsafe`); without it every cell is as stored.
    Returns the number of rows written.
    """
    campaign_id = find_campaign(conn, campaign)["id"]
    columns = [
        spreadsheet_safe_sql(c)
        if spreadsheet_safe and c in EXPORT_TEXT_COLUMNS
        else sql.Identifier(c)
        for c in EXPORT_COLUMNS
    ]
    statement = sql.SQL(
        "COPY (SELECT {columns} FROM call_attempts_report"
        " WHERE campaign_id = {campaign_id} AND queued_at >= {since}"
        " ORDER BY queued_at, attempt_id)"
        " TO STDOUT WITH (FORMAT csv, HEADER true)"
    ).format(
        columns=sql.SQL(", ").join(columns),
        campaign_id=sql.Literal(campaign_id),
        since=sql.Literal(since) if since is not None else sql.SQL("'-infinity'"),
    )
    conn.execute(text("SET LOCAL TimeZone = 'UTC'"))
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor:
        with cursor.copy(statement) as copy:
            for chunk in copy:
                out.write(chunk)
        # The header line is not counted by the server.
        return cursor.rowcount


def spreadsheet_safe_sql(column: str) -> sql.Composable:
    """`csvsafe.neutralise` of a text column, as the select-list item naming it.

    The export's CSV is written by Postgres (COPY), which streams it at the server's pace;
    the same rule in SQL keeps it so, where parsing and writing every row again here would
    not. Built from `csvsafe`'s patterns; a test holds both forms to the same answers.
    """
    cell = sql.Identifier(column)
    return sql.SQL(
        "CASE WHEN left({cell}, 1) IN ({starts}) AND {cell} !~ {inert}"
        " THEN {quote} || {cell} ELSE {cell} END AS {cell}"
    ).format(
        cell=cell,
        starts=sql.SQL(", ").join(sql.Literal(start) for start in csvsafe.FORMULA_STARTS),
        inert=sql.Literal(f"^(?:{csvsafe.INERT_PATTERN})$"),
        quote=sql.Literal(csvsafe.QUOTE),
    )


def watch_frame(
    conn: Connection, campaign: str, *, window_seconds: float = WATCH_WINDOW_SECONDS
) -> dict[str, Any]:
    """What `dialer campaign watch` shows: progress, per-trunk rates and channels, outcomes.

    Contacts and attempts come from `campaign_summary` (index-only scans of the campaign's
    contacts and attempts). Per trunk: the calls sent in the last `window_seconds` (all
    campaigns; an index-only range scan of recently queued attempts), the channels in use (its
    open attempts, as the dispatcher counts them; the partial index of open attempts) and how
    far ahead its pacing has handed out call slots, and whether any of its PBXs can take calls
    (`waiting_for_pbx`). Trunks listed: the campaign's, and any other still carrying one of its
    calls. Per PBX serving the campaign's trunk (or carrying one of its calls): its state in
    effect and why, the rate back-pressure allows and why it is lower, its last p90
    OriginateResponse latency, its sends in the window and its calls. Run it in a REPEATABLE
    READ transaction for numbers from one instant.
    """
    found = find_campaign(conn, campaign)
    summary = campaign_summary(conn, campaign, queue=False)
    window = dt.timedelta(seconds=window_seconds)
    params = {
        "id": found["id"],
        "trunk_id": found["trunk_id"],
        "lookback": SEND_LOOKBACK + window,
        "window": window,
        "window_seconds": window_seconds,
    }
    open_list = ", ".join(f"'{s}'" for s in OPEN_ATTEMPT_STATUSES)
    usable = ", ".join(f"'{s}'" for s in USABLE_STATES)
    trunks = _rows(
        conn,
        f"""
        WITH sends AS (
            SELECT trunk_id, count(*) AS n
            FROM call_attempts
            WHERE queued_at >= now() - :lookback AND sent_at >= now() - :window
            GROUP BY trunk_id
        ),
        open_calls AS (
            SELECT trunk_id,
                   count(*) AS n,
                   count(*) FILTER (WHERE status = 'queued') AS queued,
                   count(*) FILTER (WHERE campaign_id = :id) AS mine
            FROM call_attempts
            WHERE status IN ({open_list})
            GROUP BY trunk_id
        )
        SELECT
            t.name AS trunk,
            t.enabled,
            t.cps AS cps_limit,
            t.max_channels,
            coalesce(s.n, 0) AS sent_in_window,
            round(coalesce(s.n, 0) / CAST(:window_seconds AS numeric), 2)::double precision
                AS current_cps,
            coalesce(o.n, 0) AS open_channels,
            coalesce(o.queued, 0) AS queued,
            coalesce(o.mine, 0) AS campaign_open_channels,
            round(greatest(0, extract(epoch FROM t.next_slot_at - now())), 3)::double precision
                AS slots_ahead_seconds,
            NOT EXISTS (SELECT 1 FROM trunk_routes r JOIN pbxs p ON p.name = r.pbx
                         WHERE r.trunk_id = t.id AND p.enabled
                           AND {effective_state_sql("p")} IN ({usable})) AS waiting_for_pbx
        FROM trunks t
        LEFT JOIN sends s ON s.trunk_id = t.id
        LEFT JOIN open_calls o ON o.trunk_id = t.id
        WHERE t.id = :trunk_id OR coalesce(o.mine, 0) > 0
        ORDER BY t.name
        """,
        **params,
    )
    pbxs = _rows(
        conn,
        f"""
        WITH sends AS (
            SELECT pbx, count(*) AS n
            FROM call_attempts
            WHERE queued_at >= now() - :lookback AND sent_at >= now() - :window
            GROUP BY pbx
        ),
        open_calls AS (
            SELECT pbx, count(*) AS n, count(*) FILTER (WHERE campaign_id = :id) AS mine
            FROM call_attempts
            WHERE status IN ({open_list})
            GROUP BY pbx
        )
        SELECT
            p.name AS pbx,
            CASE WHEN p.enabled THEN {effective_state_sql("p")} ELSE 'disabled' END AS state,
            p.state_reason,
            p.max_cps,
            {current_rate_sql("p")} AS rate,
            p.rate_reason,
            p.latency_ms,
            p.latency_samples,
            p.latency_threshold_ms,
            round(coalesce(s.n, 0) / CAST(:window_seconds AS numeric), 2)::double precision
                AS current_cps,
            coalesce(o.n, 0) AS open_channels,
            p.max_channels,
            coalesce(o.mine, 0) AS campaign_open_channels
        FROM pbxs p
        LEFT JOIN sends s ON s.pbx = p.name
        LEFT JOIN open_calls o ON o.pbx = p.name
        WHERE p.name IN (SELECT pbx FROM trunk_routes WHERE trunk_id = :trunk_id)
           OR coalesce(o.mine, 0) > 0
        ORDER BY p.name
        """,
        **params,
    )
    # The campaign's own sends, from its index (which has no trunk).
    campaign_sent = conn.execute(
        text(
            "SELECT count(*) FROM call_attempts WHERE campaign_id = :id"
            " AND queued_at >= now() - :lookback AND sent_at >= now() - :window"
        ),
        params,
    ).scalar_one()
    total = summary["contacts_total"]
    remaining = summary["contacts_remaining"]
    return {
        "campaign": summary["campaign"],
        "status": summary["campaign_status"],
        "complete": summary["campaign_status"] in FINAL_CAMPAIGN_STATUSES,
        "at": conn.execute(text("SELECT now()")).scalar_one(),
        "window_seconds": window_seconds,
        "contacts_total": total,
        "contacts_remaining": remaining,
        "contacts_done": total - remaining,
        "progress": round((total - remaining) / total, 4) if total else None,
        "contacts": {status: summary[f"contacts_{status}"] for status in CONTACT_STATUSES},
        "attempts": summary["attempts"],
        "attempts_open": summary["attempts_open"],
        "attempts_finished": summary["attempts_finished"],
        "attempts_sent": summary["attempts_sent"],
        "campaign_sent_in_window": campaign_sent,
        "campaign_cps": round(campaign_sent / window_seconds, 2),
        "answer_rate": summary["answer_rate"],
        "human_rate": summary["human_rate"],
        "press_rate": summary["press_rate"],
        "transfer_rate": summary["transfer_rate"],
        "operator_transfers": summary["operator_transfers"],
        "outcomes": summary["outcomes"],
        "ended_by": summary["ended_by"],
        "trunks": trunks,
        "pbxs": pbxs,
    }


_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: dt.datetime) -> dt.datetime:
    """A `--since` value: an age before `now` (30m, 24h, 7d, 2w) or an ISO 8601 date/time.

    A time without an offset is taken in the machine's local time zone.
    """
    age = _AGE.match(value)
    if age:
        return now - dt.timedelta(**{_AGE_UNITS[age.group(2)]: int(age.group(1))})
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is neither an age like 30m, 24h, 7d nor an ISO time like 2026-05-01T09:00"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.astimezone()
