"""who ended the call: operator and PBX endings, transfer sources, key presses only

Every ended attempt now says who ended it (`call_attempts.ended_by`: callee, ivr, operator,
pbx, network, dialer), and a transfer says who made it (`transfer_source`: ivr or operator) and
which queue it went into (`transfer_queue`). Three facts the PBX's events do not carry are kept
with the others: `operator_hangup_at` and `operator_retry` (written by `dialer call hangup`
before it sends the AMI Hangup) and `pbx_down_at` (the listener saw the PBX shut down or lost it
while the call ended). Three outcomes join the taxonomy: `operator_hangup`, `interrupted` (the
PBX ended the call) and `queue_abandoned`.

Existing rows are carried over from what they recorded:
- `transfer_source`: `ivr` for attempts whose timeline has the IVR's `DialerTransfer`,
  `operator` for those with a successful `ControlTransfer` by an operator (a queue transfer
  also fills `transfer_queue`); `operator_hangup_at` from a `ControlHangup` by an operator;
- outcomes that blamed the callee for what an operator or the PBX did: `abandoned` becomes
  `operator_hangup` after an operator's hang-up, `queue_abandoned` after a transfer into a
  queue, and `interrupted` for an answered call cut with hang-up cause 0; contacts that were
  re-scheduled for an operator's hang-up are completed (the operator ended them);
- `ended_by` from the outcome (as `dialer.outcomes.rules` decides it as of this revision);
- an operator transfer that was answered gets `transfer_ended_at` = the call's end.

`campaign_attempt_stats` gains `ended_by` and `transfer_source` in its key (and is rebuilt),
so that the summary can count who ended the calls and tell operator transfers from the IVR's.
The views change accordingly: `pressed` (and `presses`, `press_rate`) counts key presses only,
not transfers; `transfer_rate` counts the IVR's transfers per human answer; the summary adds
a column per new outcome, `operator_transfers` and `ended_by` (counts per value, as JSON);
`call_attempts_report` adds `ended_by`, `transfer_source`, `transfer_queue`,
`operator_hangup_at`, `operator_retry` and `pbx_down_at`; `contacts_report` adds
`last_ended_by`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENDED_BY = ("callee", "ivr", "operator", "pbx", "network", "dialer")
TRANSFER_SOURCES = ("ivr", "operator")
# The taxonomy as of this revision (frozen: a migration creates the same views whatever the
# application says later).
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
HUMAN_OUTCOMES = ("transferred", "human_no_press", "human_other_key", "opted_out")
MACHINE_OUTCOMES = ("voicemail_left", "machine_no_message")
HUMAN_AMD_STATUSES = ("HUMAN", "NOTSURE")
OPEN = "('queued', 'originating', 'up')"
FINISHED = "('ended', 'not_sent')"
BUCKET = "interval '10 minutes'"
COUNTED_SETTING = "dialer.attempt_stats"
NOT_COUNTED = f"current_setting('{COUNTED_SETTING}', true) IS DISTINCT FROM 'counted'"
KEY = ("campaign_id", "bucket", "outcome", "amd_status", "dtmf", "ended_by", "transfer_source")
GROUP = ("outcome", "amd_status", "dtmf", "ended_by", "transfer_source")
TRACKED = (
    "campaign_id",
    "queued_at",
    "status",
    "outcome",
    "amd_status",
    "dtmf",
    "ended_by",
    "transfer_source",
    "sent_at",
    "answered_at",
    "ended_at",
)
NEW_COLUMNS = (
    ("transfer_source", sa.Text()),
    ("transfer_queue", sa.Text()),
    ("operator_hangup_at", sa.DateTime(timezone=True)),
    ("operator_retry", sa.Boolean()),
    ("pbx_down_at", sa.DateTime(timezone=True)),
    ("ended_by", sa.Text()),
)


def _list(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _bucket(expr: str) -> str:
    return f"date_bin({BUCKET}, {expr}, timestamptz 'epoch')"


def _load(name: str):  # type: ignore[no-untyped-def]
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"dialer_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- carrying existing rows over -------------------------------------------------------------------

CARRY_OVER = (
    # Who made each transfer, from the call's timeline.
    """
    UPDATE call_attempts a SET transfer_source = 'ivr'
     WHERE a.transfer_requested_at IS NOT NULL
       AND EXISTS (SELECT 1 FROM call_events e
                    WHERE e.call_attempt_id = a.id AND e.event = 'DialerTransfer')
    """,
    """
    UPDATE call_attempts a
       SET transfer_source = coalesce(a.transfer_source, 'operator'),
           transfer_queue = CASE WHEN t.kind = 'queue' THEN t.exten END
      FROM (SELECT DISTINCT ON (call_attempt_id) call_attempt_id,
                   data ->> 'TargetKind' AS kind, data ->> 'Exten' AS exten
              FROM call_events
             WHERE event = 'ControlTransfer' AND data ->> 'By' = 'operator'
               AND data ->> 'Result' = 'ok'
             ORDER BY call_attempt_id, id) t
     WHERE a.id = t.call_attempt_id
    """,
    """
    UPDATE call_attempts a SET operator_hangup_at = h.at
      FROM (SELECT call_attempt_id, min(received_at) AS at
              FROM call_events
             WHERE event = 'ControlHangup' AND data ->> 'By' = 'operator'
             GROUP BY call_attempt_id) h
     WHERE a.id = h.call_attempt_id
    """,
    # Outcomes that blamed the callee.
    """
    UPDATE call_attempts SET outcome = 'operator_hangup'
     WHERE status = 'ended' AND operator_hangup_at IS NOT NULL
       AND outcome IN ('abandoned', 'unknown', 'no_answer', 'busy', 'rejected', 'failed',
                       'machine_no_message')
    """,
    """
    UPDATE call_attempts SET outcome = 'queue_abandoned'
     WHERE status = 'ended' AND outcome = 'abandoned' AND transfer_queue IS NOT NULL
    """,
    """
    UPDATE call_attempts SET outcome = 'interrupted'
     WHERE status = 'ended' AND outcome = 'abandoned' AND hangup_cause = 0
       AND answered_at IS NOT NULL
    """,
    # An operator transfer nobody reported the end of ended with the call.
    """
    UPDATE call_attempts SET transfer_ended_at = ended_at
     WHERE status = 'ended' AND transfer_answered_at IS NOT NULL AND transfer_ended_at IS NULL
    """,
    f"""
    UPDATE call_attempts SET ended_by = CASE
        WHEN operator_hangup_at IS NOT NULL THEN 'operator'
        WHEN outcome = 'interrupted' OR (send_error IS NOT NULL AND answered_at IS NULL
                                         AND outcome = 'failed') THEN 'pbx'
        WHEN outcome IN ('human_no_press', 'human_other_key', 'opted_out', 'voicemail_left')
            THEN 'ivr'
        WHEN outcome = 'failed' AND (answered_at IS NOT NULL OR amd_status IS NOT NULL
                                     OR transfer_requested_at IS NOT NULL) THEN 'ivr'
        WHEN outcome IN ('congestion', 'failed') THEN 'network'
        WHEN outcome = 'unknown' THEN 'dialer'
        ELSE 'callee' END
     WHERE status = 'ended'
    """,
    # Contacts re-scheduled for an operator's hang-up: the operator ended them.
    f"""
    UPDATE contacts k SET status = 'completed', last_outcome = 'operator_hangup',
           updated_at = now()
      FROM call_attempts a
     WHERE a.contact_id = k.id AND a.outcome = 'operator_hangup' AND k.status = 'pending'
       AND a.attempt_number = (SELECT max(b.attempt_number) FROM call_attempts b
                                WHERE b.contact_id = k.id)
       AND NOT EXISTS (SELECT 1 FROM call_attempts o
                        WHERE o.contact_id = k.id AND o.status IN {OPEN})
    """,
)

# -- counts kept by triggers -----------------------------------------------------------------------


def _same_group(prefix: str, row: str) -> str:
    return " AND ".join(f"{prefix}.{c} IS NOT DISTINCT FROM {row}.{c}" for c in GROUP)


_ADD = f"""
    INSERT INTO campaign_attempt_stats AS s
           ({", ".join(KEY)}, attempts, sent, answered_at, talk_total, talk_count,
            first_sent_at, last_sent_at)
    VALUES (NEW.campaign_id, {_bucket("NEW.queued_at")}, NEW.outcome, NEW.amd_status, NEW.dtmf,
            NEW.ended_by, NEW.transfer_source, 1,
            (NEW.sent_at IS NOT NULL)::int, (NEW.answered_at IS NOT NULL)::int,
            coalesce(NEW.ended_at - NEW.answered_at, interval '0'),
            (NEW.ended_at - NEW.answered_at IS NOT NULL)::int, NEW.sent_at, NEW.sent_at)
    ON CONFLICT ({", ".join(KEY)}) DO UPDATE SET
           attempts = s.attempts + 1,
           sent = s.sent + excluded.sent,
           answered_at = s.answered_at + excluded.answered_at,
           talk_total = s.talk_total + excluded.talk_total,
           talk_count = s.talk_count + excluded.talk_count,
           first_sent_at = least(s.first_sent_at, excluded.first_sent_at),
           last_sent_at = greatest(s.last_sent_at, excluded.last_sent_at);
"""

_REMOVE = f"""
    b := {_bucket("OLD.queued_at")};
    UPDATE campaign_attempt_stats s SET
           attempts = s.attempts - 1,
           sent = s.sent - (OLD.sent_at IS NOT NULL)::int,
           answered_at = s.answered_at - (OLD.answered_at IS NOT NULL)::int,
           talk_total = s.talk_total - coalesce(OLD.ended_at - OLD.answered_at, interval '0'),
           talk_count = s.talk_count - (OLD.ended_at - OLD.answered_at IS NOT NULL)::int
     WHERE s.campaign_id = OLD.campaign_id AND s.bucket = b AND {_same_group("s", "OLD")}
    RETURNING s.attempts, s.first_sent_at, s.last_sent_at INTO left_, first_, last_;
    IF FOUND THEN
        IF left_ <= 0 THEN
            DELETE FROM campaign_attempt_stats s
             WHERE s.campaign_id = OLD.campaign_id AND s.bucket = b
               AND {_same_group("s", "OLD")};
        ELSIF OLD.sent_at = first_ OR OLD.sent_at = last_ THEN
            UPDATE campaign_attempt_stats s SET first_sent_at = m.first, last_sent_at = m.last
              FROM (SELECT min(a.sent_at) AS first, max(a.sent_at) AS last
                      FROM call_attempts a
                     WHERE a.campaign_id = OLD.campaign_id
                       AND a.queued_at >= b AND a.queued_at < b + {BUCKET}
                       AND a.status IN {FINISHED}
                       AND {_same_group("a", "OLD")}) m
             WHERE s.campaign_id = OLD.campaign_id AND s.bucket = b
               AND {_same_group("s", "OLD")};
        END IF;
    END IF;
"""

TRACK_FUNCTION = f"""
CREATE OR REPLACE FUNCTION campaign_attempt_stats_track() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    b timestamptz;
    left_ bigint;
    first_ timestamptz;
    last_ timestamptz;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status IN {FINISHED} THEN
        {_REMOVE}
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status IN {FINISHED} THEN
        {_ADD}
    END IF;
    RETURN NULL;
END
$$
"""

REBUILD_FUNCTION = f"""
CREATE OR REPLACE FUNCTION campaign_attempt_stats_rebuild() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    groups bigint;
BEGIN
    -- Writers wait until the rebuild commits, so no close is counted twice or lost.
    LOCK TABLE call_attempts IN SHARE MODE;
    DELETE FROM campaign_attempt_stats;
    INSERT INTO campaign_attempt_stats
           ({", ".join(KEY)}, attempts, sent, answered_at, talk_total, talk_count,
            first_sent_at, last_sent_at)
    SELECT a.campaign_id, {_bucket("a.queued_at")}, a.outcome, a.amd_status, a.dtmf,
           a.ended_by, a.transfer_source, count(*), count(a.sent_at), count(a.answered_at),
           coalesce(sum(a.ended_at - a.answered_at), interval '0'),
           count(a.ended_at - a.answered_at), min(a.sent_at), max(a.sent_at)
      FROM call_attempts a
     WHERE a.status IN {FINISHED}
     GROUP BY 1, 2, 3, 4, 5, 6, 7;
    GET DIAGNOSTICS groups = ROW_COUNT;
    RETURN groups;
END
$$
"""


def _update_trigger(tracked: Sequence[str]) -> str:
    old = ", ".join(f"OLD.{c}" for c in tracked)
    new = ", ".join(f"NEW.{c}" for c in tracked)
    return f"""CREATE TRIGGER campaign_attempt_stats_update
        AFTER UPDATE OF {", ".join(tracked)} ON call_attempts
        FOR EACH ROW WHEN ((OLD.status IN {FINISHED} OR NEW.status IN {FINISHED})
                           AND ({old}) IS DISTINCT FROM ({new})
                           AND {NOT_COUNTED})
        EXECUTE FUNCTION campaign_attempt_stats_track()"""


# -- views -----------------------------------------------------------------------------------------


def _human(a: str) -> str:
    return (
        f"(coalesce(upper({a}.amd_status) IN ({_list(HUMAN_AMD_STATUSES)}), false)"
        f" OR coalesce({a}.outcome IN ({_list(HUMAN_OUTCOMES)}), false))"
    )


def _answered_without_time(a: str) -> str:
    return (
        f"({a}.amd_status IS NOT NULL OR {_human(a)}"
        f" OR coalesce({a}.outcome IN ({_list(MACHINE_OUTCOMES)}), false))"
    )


def _seconds(start: str, end: str) -> str:
    return f"round(extract(epoch FROM ({end}) - ({start})), 3)::double precision"


def _ratio(numerator: str, denominator: str) -> str:
    return f"round({numerator}::numeric / nullif({denominator}, 0), 4)::double precision"


def _report_view(pressed: str, extra: str) -> str:
    """Revision 0002's call_attempts_report with `pressed` defined as given, and `extra`
    columns appended (a view's columns can only be added at its end)."""
    definition: str = _load("0002_outcome_views.py").CALL_ATTEMPTS_REPORT
    start = definition.index("    (coalesce(a.outcome = 'transferred'")
    end = definition.index(" AS pressed,")
    definition = definition[:start] + f"    {pressed}" + definition[end:]
    definition = definition.replace("    a.outcome\nFROM", f"    a.outcome{extra}\nFROM")
    return definition.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1)


REPORT_PRESSED = "coalesce(strpos(a.dtmf, c.press_key) > 0, false)"
REPORT_EXTRA = """,
    a.ended_by,
    a.transfer_source,
    a.transfer_queue,
    a.operator_hangup_at,
    a.operator_retry,
    a.pbx_down_at"""


# The latest attempt's columns contacts_report reads: named, not `a.*`, which would make the
# view depend on every column of call_attempts (and block dropping any of them).
LATEST_ATTEMPT_COLUMNS = (
    "id",
    "custom_call_id",
    "attempt_number",
    "status",
    "queued_at",
    "sent_at",
    "answered_at",
    "ended_at",
    "amd_status",
    "dtmf",
    "hangup_cause",
    "outcome",
)


def _contacts_view(extra: str, columns: Sequence[str] = LATEST_ATTEMPT_COLUMNS) -> str:
    definition: str = _load("0002_outcome_views.py").CONTACTS_REPORT
    definition = definition.replace(
        "    SELECT a.*\n", f"    SELECT {', '.join(f'a.{c}' for c in columns)}\n"
    )
    definition = definition.replace(
        "    la.outcome AS last_attempt_outcome\nFROM",
        f"    la.outcome AS last_attempt_outcome{extra}\nFROM",
    )
    return definition.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1)


_OUTCOME_TYPES = ",\n    ".join(f"{o} bigint" for o in OUTCOMES)
_OUTCOME_SUMS = ",\n        ".join(
    f"coalesce(sum(o.n) FILTER (WHERE o.outcome = '{o}'), 0)::bigint AS {o}" for o in OUTCOMES
)
_FIRST_FULL = (
    f"CASE WHEN NOT isfinite(since) THEN since WHEN {_bucket('since')} = since THEN since "
    f"ELSE {_bucket('since')} + {BUCKET} END"
)
_PER_ATTEMPT = f"""
                    a.outcome, a.amd_status, a.dtmf, a.ended_by, a.transfer_source,
                    1::bigint AS n, (a.status IN {OPEN})::int AS n_open,
                    (a.sent_at IS NOT NULL)::int AS n_sent,
                    (a.answered_at IS NOT NULL)::int AS n_answered_at,
                    coalesce(a.ended_at - a.answered_at, interval '0') AS talk_total,
                    (a.ended_at - a.answered_at IS NOT NULL)::int AS talk_count,
                    a.sent_at AS first_sent_at, a.sent_at AS last_sent_at"""

# Kept counts, the partial bucket before them and the open attempts, grouped by everything the
# summary tells apart; whether a group counts as answered, human or a press is decided once per
# group, then the groups are rolled up per outcome and per campaign.
_SUMMARY_TEMPLATE = f"""
CREATE FUNCTION __NAME__(since timestamptz)
RETURNS TABLE (
    campaign_id integer,
    campaign text,
    campaign_status text,
    contacts_total bigint,
    contacts_pending bigint,
    contacts_dialing bigint,
    contacts_remaining bigint,
    contacts_completed bigint,
    contacts_exhausted bigint,
    contacts_dnc bigint,
    contacts_cancelled bigint,
    attempts bigint,
    attempts_open bigint,
    attempts_finished bigint,
    attempts_sent bigint,
    answered bigint,
    human_answered bigint,
    presses bigint,
    {_OUTCOME_TYPES},
    outcomes jsonb,
    answer_rate double precision,
    human_rate double precision,
    press_rate double precision,
    transfer_rate double precision,
    avg_talk_seconds double precision,
    first_sent_at timestamptz,
    last_sent_at timestamptz,
    attempts_per_hour double precision,
    operator_transfers bigint,
    ended_by jsonb
)
LANGUAGE sql STABLE
AS $$
SELECT
    c.id,
    c.name,
    c.status,
    k.total,
    k.pending,
    k.dialing,
    k.pending + k.dialing,
    k.completed,
    k.exhausted,
    k.dnc,
    k.cancelled,
    s.attempts,
    s.attempts_open,
    s.attempts_finished,
    s.attempts_sent,
    s.answered,
    s.human_answered,
    s.presses,
    {", ".join(f"s.{o}" for o in OUTCOMES)},
    s.outcomes,
    {_ratio("s.answered", "s.attempts_finished")},
    {_ratio("s.human_answered", "s.attempts_finished")},
    {_ratio("s.presses", "s.human_answered")},
    {_ratio("s.ivr_transfers", "s.human_answered")},
    round((extract(epoch FROM s.talk_total) / nullif(s.talk_count, 0))::numeric, 3)
        ::double precision,
    s.first_sent_at,
    s.last_sent_at,
    round(
        s.attempts_sent::numeric
        / nullif(extract(epoch FROM s.last_sent_at - s.first_sent_at) / 3600, 0),
        2
    )::double precision,
    s.operator_transfers,
    s.ended_by
FROM campaigns c
CROSS JOIN LATERAL (
    SELECT
        coalesce(sum(n), 0)::bigint AS total,
        coalesce(sum(n) FILTER (WHERE st.status = 'pending'), 0)::bigint AS pending,
        coalesce(sum(n) FILTER (WHERE st.status = 'dialing'), 0)::bigint AS dialing,
        coalesce(sum(n) FILTER (WHERE st.status = 'completed'), 0)::bigint AS completed,
        coalesce(sum(n) FILTER (WHERE st.status = 'exhausted'), 0)::bigint AS exhausted,
        coalesce(sum(n) FILTER (WHERE st.status = 'dnc'), 0)::bigint AS dnc,
        coalesce(sum(n) FILTER (WHERE st.status = 'cancelled'), 0)::bigint AS cancelled
    FROM (
        SELECT ct.status, count(*) AS n
        FROM contacts ct
        WHERE ct.campaign_id = c.id
        GROUP BY ct.status
    ) st
) k
CROSS JOIN LATERAL (
    SELECT
        coalesce(sum(g.n), 0)::bigint AS attempts,
        coalesce(sum(g.n_open), 0)::bigint AS attempts_open,
        coalesce(sum(g.n) FILTER (WHERE g.outcome IS NOT NULL), 0)::bigint AS attempts_finished,
        coalesce(sum(g.n_sent), 0)::bigint AS attempts_sent,
        coalesce(sum(g.n_answered) FILTER (WHERE g.outcome IS NOT NULL), 0)::bigint AS answered,
        coalesce(sum(g.n_human) FILTER (WHERE g.outcome IS NOT NULL), 0)::bigint
            AS human_answered,
        coalesce(sum(g.n_key) FILTER (WHERE g.outcome IS NOT NULL), 0)::bigint AS presses,
        coalesce(sum(g.n) FILTER (WHERE g.outcome = 'transferred'
                                  AND g.transfer_source IS DISTINCT FROM 'operator'), 0)::bigint
            AS ivr_transfers,
        coalesce(sum(g.n) FILTER (WHERE g.transfer_source = 'operator'
                                  AND g.outcome = 'transferred'), 0)::bigint
            AS operator_transfers,
        {_OUTCOME_SUMS.replace("o.n", "g.n").replace("o.outcome", "g.outcome")},
        coalesce(
            (SELECT jsonb_object_agg(x.outcome, x.n)
               FROM (SELECT g2.outcome, sum(g2.n) AS n FROM groups g2
                      WHERE g2.outcome IS NOT NULL GROUP BY g2.outcome) x),
            '{{}}'::jsonb
        ) AS outcomes,
        coalesce(
            (SELECT jsonb_object_agg(x.ended_by, x.n)
               FROM (SELECT g2.ended_by, sum(g2.n) AS n FROM groups g2
                      WHERE g2.ended_by IS NOT NULL GROUP BY g2.ended_by) x),
            '{{}}'::jsonb
        ) AS ended_by,
        sum(g.talk_total) AS talk_total,
        sum(g.talk_count) AS talk_count,
        min(g.first_sent_at) AS first_sent_at,
        max(g.last_sent_at) AS last_sent_at
    FROM (
        SELECT
            p.outcome,
            p.ended_by,
            p.transfer_source,
            sum(p.n) AS n,
            sum(p.n_open) AS n_open,
            sum(p.n_sent) AS n_sent,
            sum(CASE WHEN {_answered_without_time("p")} THEN p.n ELSE p.n_answered_at END)
                AS n_answered,
            sum(CASE WHEN {_human("p")} THEN p.n ELSE 0 END) AS n_human,
            coalesce(sum(p.n) FILTER (WHERE strpos(p.dtmf, c.press_key) > 0), 0) AS n_key,
            sum(p.talk_total) FILTER (WHERE p.talk_count > 0) AS talk_total,
            sum(p.talk_count) AS talk_count,
            min(p.first_sent_at) AS first_sent_at,
            max(p.last_sent_at) AS last_sent_at
        FROM (
__SOURCE__        ) p (outcome, amd_status, dtmf, ended_by, transfer_source, n, n_open, n_sent,
             n_answered_at, talk_total, talk_count, first_sent_at, last_sent_at)
        GROUP BY p.outcome, p.amd_status, p.ended_by, p.transfer_source
    ) g
) s
$$
"""

# The finished attempts from the kept counts (whole buckets) and the attempts of the partial
# bucket before them, and the open attempts.
KEPT_SOURCE = f"""            SELECT s.outcome, s.amd_status, s.dtmf, s.ended_by, s.transfer_source, s.attempts,
                   0, s.sent, s.answered_at, s.talk_total, s.talk_count, s.first_sent_at,
                   s.last_sent_at
            FROM campaign_attempt_stats s
            WHERE s.campaign_id = c.id AND s.bucket >= ({_FIRST_FULL})
            UNION ALL
            SELECT {_PER_ATTEMPT}
            FROM call_attempts a
            WHERE a.campaign_id = c.id AND a.status IN {FINISHED}
              AND a.queued_at >= since AND a.queued_at < ({_FIRST_FULL})
            UNION ALL
            SELECT {_PER_ATTEMPT}
            FROM call_attempts a
            WHERE a.status IN {OPEN} AND a.campaign_id = c.id AND a.queued_at >= since
"""
# Every attempt, counted one by one: the reference the kept counts must agree with (tests).
FULL_SOURCE = f"""            SELECT {_PER_ATTEMPT}
            FROM call_attempts a
            WHERE a.campaign_id = c.id AND a.queued_at >= since
"""
CAMPAIGN_SUMMARY_SINCE = _SUMMARY_TEMPLATE.replace("__NAME__", "campaign_summary_since").replace(
    "__SOURCE__", KEPT_SOURCE
)


def reference_summary_since(name: str = "reference_summary_since") -> str:
    """The summary computed from every attempt (no kept counts), for tests."""
    return _summary_function(
        _SUMMARY_TEMPLATE.replace("__NAME__", name).replace("__SOURCE__", FULL_SOURCE)
    )


CAMPAIGN_SUMMARY = """
CREATE VIEW campaign_summary AS
SELECT * FROM campaign_summary_since('-infinity')
"""

COMMENTS = {
    "VIEW call_attempts_report": (
        "One row per call attempt: campaign, contact, times, ring/talk/transfer seconds, AMD, "
        "DTMF, transfer (and who made it: ivr or operator), voicemail, recording, hangup cause, "
        "outcome and who ended the call (ended_by: callee, ivr, operator, pbx, network, "
        "dialer). answered: the call was answered; human: AMD HUMAN/NOTSURE or a human "
        "outcome; pressed: the press key was pressed."
    ),
    "VIEW contacts_report": "One row per contact: its current state and its latest attempt.",
    "VIEW campaign_summary": (
        "One row per campaign: contact counts, attempts, counts per outcome (columns and the "
        "outcomes object), answered, human_answered and presses (key presses, among finished "
        "attempts), answer_rate and human_rate (per finished attempt), press_rate and "
        "transfer_rate (the IVR''s transfers, per human answer), operator_transfers, "
        "ended_by (finished attempts per who ended them), avg_talk_seconds, attempts_per_hour "
        "(sent attempts over the span from first to last send). campaign_summary_since(t) "
        "gives the same for attempts queued at or after t."
    ),
    "FUNCTION campaign_summary_since(timestamptz)": (
        "campaign_summary restricted to attempts queued at or after the argument "
        "(contact counts are always current)."
    ),
}


def _summary_function(body: str = CAMPAIGN_SUMMARY_SINCE) -> str:
    # `groups`: the per-group rows, referred to twice (rows and JSON objects).
    start = body.index("    FROM (\n        SELECT\n            p.outcome,")
    end = body.index("    ) g\n) s\n")
    groups_sql = body[start + len("    FROM (") : end]
    body = body[:start] + "    FROM groups g\n" + body[end + len("    ) g\n") :]
    return body.replace(
        "CROSS JOIN LATERAL (\n    SELECT\n        coalesce(sum(g.n), 0)",
        f"CROSS JOIN LATERAL (\n    WITH groups AS ({groups_sql}    )\n    SELECT\n"
        "        coalesce(sum(g.n), 0)",
        1,
    )


def upgrade() -> None:
    for name, type_ in NEW_COLUMNS:
        op.add_column("call_attempts", sa.Column(name, type_, nullable=True))
    op.create_check_constraint(
        op.f("ck_call_attempts_ended_by_known"),
        "call_attempts", f"ended_by IS NULL OR ended_by IN ({_list(ENDED_BY)})"
    )
    op.create_check_constraint(
        op.f("ck_call_attempts_transfer_source_known"),
        "call_attempts",
        f"transfer_source IS NULL OR transfer_source IN ({_list(TRANSFER_SOURCES)})",
    )
    for statement in CARRY_OVER:
        op.execute(statement)
    op.add_column("campaign_attempt_stats", sa.Column("ended_by", sa.Text(), nullable=True))
    op.add_column(
        "campaign_attempt_stats", sa.Column("transfer_source", sa.Text(), nullable=True)
    )
    op.drop_constraint("uq_campaign_attempt_stats_key", "campaign_attempt_stats", type_="unique")
    op.create_unique_constraint(
        "uq_campaign_attempt_stats_key",
        "campaign_attempt_stats",
        list(KEY),
        postgresql_nulls_not_distinct=True,
    )
    op.execute(TRACK_FUNCTION)
    op.execute(REBUILD_FUNCTION)
    op.execute("DROP TRIGGER campaign_attempt_stats_update ON call_attempts")
    op.execute(_update_trigger(TRACKED))
    op.execute("SELECT campaign_attempt_stats_rebuild()")
    op.execute(
        "COMMENT ON TABLE campaign_attempt_stats IS 'Counts of finished attempts (ended, "
        "not_sent) per campaign, 10-minute bucket of queued_at, outcome, AMD status, DTMF, who "
        "ended the call and the transfer''s source; kept by triggers on call_attempts. "
        "campaign_attempt_stats_rebuild() recomputes it.'"
    )
    op.execute(_report_view(REPORT_PRESSED, REPORT_EXTRA))
    op.execute("DROP VIEW contacts_report")
    op.execute(_contacts_view(",\n    la.ended_by AS last_ended_by", (*LATEST_ATTEMPT_COLUMNS, "ended_by")))
    op.execute("DROP VIEW campaign_summary")
    op.execute("DROP FUNCTION campaign_summary_since(timestamptz)")
    op.execute(_summary_function())
    op.execute(CAMPAIGN_SUMMARY)
    for target, comment in COMMENTS.items():
        op.execute(f"COMMENT ON {target} IS '{comment}'")


def downgrade() -> None:
    old = _load("0002_outcome_views.py")
    stats = _load("0004_campaign_attempt_stats.py")
    # contacts_report selects `a.*`: the views go before the columns and come back after.
    op.execute("DROP VIEW campaign_summary")
    op.execute("DROP FUNCTION campaign_summary_since(timestamptz)")
    op.execute("DROP VIEW contacts_report")
    op.execute("DROP VIEW call_attempts_report")
    op.execute("DROP TRIGGER campaign_attempt_stats_update ON call_attempts")
    op.execute(stats.TRIGGERS[1])
    op.execute(stats.TRACK_FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute(
        stats.REBUILD_FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    )
    op.drop_constraint("uq_campaign_attempt_stats_key", "campaign_attempt_stats", type_="unique")
    op.drop_column("campaign_attempt_stats", "transfer_source")
    op.drop_column("campaign_attempt_stats", "ended_by")
    op.create_unique_constraint(
        "uq_campaign_attempt_stats_key",
        "campaign_attempt_stats",
        list(stats.KEY),
        postgresql_nulls_not_distinct=True,
    )
    op.execute(f"COMMENT ON TABLE campaign_attempt_stats IS '{stats.COMMENT}'")
    op.drop_constraint(op.f("ck_call_attempts_transfer_source_known"), "call_attempts", type_="check")
    op.drop_constraint(op.f("ck_call_attempts_ended_by_known"), "call_attempts", type_="check")
    for name, _ in reversed(NEW_COLUMNS):
        op.drop_column("call_attempts", name)
    op.execute("SELECT campaign_attempt_stats_rebuild()")
    op.execute(old.CALL_ATTEMPTS_REPORT)
    op.execute(_contacts_view(""))
    op.execute(old.CAMPAIGN_SUMMARY_SINCE)
    op.execute(stats._summary_since())
    op.execute(old.CAMPAIGN_SUMMARY)
    for target, comment in old.COMMENTS.items():
        op.execute(f"COMMENT ON {target} IS '{comment}'")
