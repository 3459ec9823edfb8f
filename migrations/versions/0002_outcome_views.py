"""outcome views and report indexes

Stable SQL views for operators, BI tools and `dialer report`:

- `call_attempts_report`: one row per call attempt.
- `contacts_report`: one row per contact with its latest attempt.
- `campaign_summary`: one row per campaign (totals, outcomes, rates); the same figures for attempts
  queued since a given time come from the function `campaign_summary_since(timestamptz)`.

Derived columns (see each view's COMMENT in the database for the full list):
- answered: the call was answered (answered_at set, AMD ran, or the outcome implies an answer).
- human: AMD said HUMAN or NOTSURE, or the outcome is one of transferred, human_no_press,
  human_other_key, opted_out.
- pressed: the callee pressed the campaign's press key (the DTMF contains it) or was transferred.
- campaign_summary counts answered, human_answered and presses among finished attempts (those
  with an outcome), so that its rates compare like with like; attempts in progress show in
  attempts_open.
- ring_seconds: sent -> answered, or sent -> ended when unanswered; talk_seconds: answered -> ended;
  transfer_seconds: transfer answered -> transfer ended (or the call's end).

Indexes, so reports stay under a second on tens of millions of attempts:
- ix_call_attempts_campaign_queued is rebuilt covering the columns the campaign summary and the
  filtered call lists read, so both run as index-only scans of one campaign's entries.
- ix_call_attempts_queued_at: newest-first call lists across campaigns and current sends per
  trunk (campaign watch).
- ix_contacts_campaign_status: contact counts per status for one campaign.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The outcome taxonomy as of this revision. Frozen here on purpose: a migration must create the
# same views whatever the application code says later.
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
)
HUMAN_OUTCOMES = ("transferred", "human_no_press", "human_other_key", "opted_out")
MACHINE_OUTCOMES = ("voicemail_left", "machine_no_message")
HUMAN_AMD_STATUSES = ("HUMAN", "NOTSURE")
OPEN_STATUSES = ("queued", "originating", "up")
REPORT_INCLUDE = (
    "id",
    "status",
    "outcome",
    "amd_status",
    "dtmf",
    "sent_at",
    "answered_at",
    "ended_at",
)
QUEUED_INCLUDE = ("id", "trunk_id", "outcome", "sent_at")


def _list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _human(a: str) -> str:
    return (
        f"(coalesce(upper({a}.amd_status) IN ({_list(HUMAN_AMD_STATUSES)}), false)"
        f" OR coalesce({a}.outcome IN ({_list(HUMAN_OUTCOMES)}), false))"
    )


def _answered_without_time(a: str) -> str:
    # What implies an answer besides answered_at: AMD ran, or the outcome needs an answer.
    return (
        f"({a}.amd_status IS NOT NULL OR {_human(a)}"
        f" OR coalesce({a}.outcome IN ({_list(MACHINE_OUTCOMES)}), false))"
    )


def _answered(a: str) -> str:
    return f"({a}.answered_at IS NOT NULL OR {_answered_without_time(a)})"


def _pressed(a: str, c: str) -> str:
    return (
        f"(coalesce({a}.outcome = 'transferred', false)"
        f" OR coalesce(strpos({a}.dtmf, {c}.press_key) > 0, false))"
    )


def _seconds(start: str, end: str) -> str:
    return f"round(extract(epoch FROM ({end}) - ({start})), 3)::double precision"


def _ratio(numerator: str, denominator: str) -> str:
    return f"round({numerator}::numeric / nullif({denominator}, 0), 4)::double precision"


CALL_ATTEMPTS_REPORT = f"""
CREATE VIEW call_attempts_report AS
SELECT
    a.id AS attempt_id,
    a.custom_call_id AS call_id,
    a.campaign_id,
    c.name AS campaign,
    a.contact_id,
    ct.phone_e164 AS phone,
    ct.first_name,
    ct.last_name,
    ct.fields AS contact_fields,
    a.trunk_id,
    t.name AS trunk,
    a.attempt_number,
    a.status,
    a.queued_at,
    a.sent_at,
    a.answered_at,
    a.ended_at,
    {_seconds("a.sent_at", "coalesce(a.answered_at, a.ended_at)")} AS ring_seconds,
    {_seconds("a.answered_at", "a.ended_at")} AS talk_seconds,
    {_answered("a")} AS answered,
    {_human("a")} AS human,
    {_pressed("a", "c")} AS pressed,
    a.amd_status,
    a.amd_cause,
    a.dtmf,
    a.transfer_status,
    a.transfer_requested_at,
    a.transfer_answered_at,
    a.transfer_ended_at,
    {_seconds("a.transfer_answered_at", "coalesce(a.transfer_ended_at, a.ended_at)")}
        AS transfer_seconds,
    a.voicemail_left,
    a.recording_file,
    a.originate_response,
    a.originate_reason,
    a.dial_status,
    a.hangup_cause,
    a.hangup_cause_txt,
    a.send_error,
    a.uniqueid,
    a.channel,
    a.outcome
FROM call_attempts a
JOIN campaigns c ON c.id = a.campaign_id
JOIN contacts ct ON ct.id = a.contact_id
JOIN trunks t ON t.id = a.trunk_id
"""

CONTACTS_REPORT = f"""
CREATE VIEW contacts_report AS
SELECT
    ct.id AS contact_id,
    ct.campaign_id,
    c.name AS campaign,
    ct.phone_e164 AS phone,
    ct.phone_raw,
    ct.first_name,
    ct.last_name,
    ct.fields,
    ct.timezones,
    ct.import_id,
    ct.status,
    ct.attempts,
    ct.next_attempt_at,
    ct.last_outcome,
    ct.created_at,
    ct.updated_at,
    la.id AS last_attempt_id,
    la.custom_call_id AS last_call_id,
    la.attempt_number AS last_attempt_number,
    la.status AS last_attempt_status,
    la.queued_at AS last_queued_at,
    la.sent_at AS last_sent_at,
    la.answered_at AS last_answered_at,
    la.ended_at AS last_ended_at,
    {_seconds("la.answered_at", "la.ended_at")} AS last_talk_seconds,
    la.amd_status AS last_amd_status,
    la.dtmf AS last_dtmf,
    la.hangup_cause AS last_hangup_cause,
    la.outcome AS last_attempt_outcome
FROM contacts ct
JOIN campaigns c ON c.id = ct.campaign_id
LEFT JOIN LATERAL (
    SELECT a.*
    FROM call_attempts a
    WHERE a.contact_id = ct.id
    ORDER BY a.attempt_number DESC
    LIMIT 1
) la ON true
"""

_OUTCOME_COLUMNS_TYPES = ",\n    ".join(f"{o} bigint" for o in OUTCOMES)
_OUTCOME_COLUMNS = ",\n        ".join(
    f"coalesce(sum(o.n) FILTER (WHERE o.outcome = '{o}'), 0)::bigint AS {o}" for o in OUTCOMES
)

# The attempt-level pass is the cost: it groups one campaign's index entries by (outcome,
# amd_status) with only cheap per-row work. Whether a group counts as answered or human, and
# whether a transfer counts as a press, is decided once per group (a few dozen rows), then the
# groups are rolled up per outcome and per campaign.
CAMPAIGN_SUMMARY_SINCE = f"""
CREATE FUNCTION campaign_summary_since(since timestamptz)
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
    {_OUTCOME_COLUMNS_TYPES},
    outcomes jsonb,
    answer_rate double precision,
    human_rate double precision,
    press_rate double precision,
    transfer_rate double precision,
    avg_talk_seconds double precision,
    first_sent_at timestamptz,
    last_sent_at timestamptz,
    attempts_per_hour double precision
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
    {_ratio("s.transferred", "s.human_answered")},
    round((extract(epoch FROM s.talk_total) / nullif(s.talk_count, 0))::numeric, 3)
        ::double precision,
    s.first_sent_at,
    s.last_sent_at,
    round(
        s.attempts_sent::numeric
        / nullif(extract(epoch FROM s.last_sent_at - s.first_sent_at) / 3600, 0),
        2
    )::double precision
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
        coalesce(sum(o.n), 0)::bigint AS attempts,
        coalesce(sum(o.n_open), 0)::bigint AS attempts_open,
        coalesce(sum(o.n) FILTER (WHERE o.outcome IS NOT NULL), 0)::bigint AS attempts_finished,
        coalesce(sum(o.n_sent), 0)::bigint AS attempts_sent,
        coalesce(sum(o.n_answered) FILTER (WHERE o.outcome IS NOT NULL), 0)::bigint AS answered,
        coalesce(sum(o.n_human) FILTER (WHERE o.outcome IS NOT NULL), 0)::bigint AS human_answered,
        coalesce(sum(o.n_pressed) FILTER (WHERE o.outcome IS NOT NULL), 0)::bigint AS presses,
        {_OUTCOME_COLUMNS},
        coalesce(
            jsonb_object_agg(o.outcome, o.n) FILTER (WHERE o.outcome IS NOT NULL), '{{}}'::jsonb
        ) AS outcomes,
        sum(o.talk_total) AS talk_total,
        sum(o.talk_count) AS talk_count,
        min(o.first_sent_at) AS first_sent_at,
        max(o.last_sent_at) AS last_sent_at
    FROM (
        SELECT
            g.outcome,
            sum(g.n) AS n,
            sum(g.n_open) AS n_open,
            sum(g.n_sent) AS n_sent,
            sum(CASE WHEN {_answered_without_time("g")} THEN g.n ELSE g.n_answered_at END)
                AS n_answered,
            sum(CASE WHEN {_human("g")} THEN g.n ELSE 0 END) AS n_human,
            sum(CASE WHEN g.outcome = 'transferred' THEN g.n ELSE g.n_key END) AS n_pressed,
            sum(g.talk_total) AS talk_total,
            sum(g.talk_count) AS talk_count,
            min(g.first_sent_at) AS first_sent_at,
            max(g.last_sent_at) AS last_sent_at
        FROM (
            SELECT
                a.outcome,
                a.amd_status,
                count(*) AS n,
                count(*) FILTER (WHERE a.status IN ({_list(OPEN_STATUSES)})) AS n_open,
                count(a.sent_at) AS n_sent,
                count(a.answered_at) AS n_answered_at,
                count(*) FILTER (WHERE strpos(a.dtmf, c.press_key) > 0) AS n_key,
                sum(a.ended_at - a.answered_at) AS talk_total,
                count(a.ended_at - a.answered_at) AS talk_count,
                min(a.sent_at) AS first_sent_at,
                max(a.sent_at) AS last_sent_at
            FROM call_attempts a
            WHERE a.campaign_id = c.id AND a.queued_at >= since
            GROUP BY a.outcome, a.amd_status
        ) g
        GROUP BY g.outcome
    ) o
) s
$$
"""

CAMPAIGN_SUMMARY = """
CREATE VIEW campaign_summary AS
SELECT * FROM campaign_summary_since('-infinity')
"""

COMMENTS = {
    "VIEW call_attempts_report": (
        "One row per call attempt: campaign, contact, times, ring/talk/transfer seconds, AMD, "
        "DTMF, transfer, voicemail, recording, hangup cause and outcome. answered: the call was "
        "answered; human: AMD HUMAN/NOTSURE or a human outcome; pressed: the press key was "
        "pressed or the call was transferred."
    ),
    "VIEW contacts_report": "One row per contact: its current state and its latest attempt.",
    "VIEW campaign_summary": (
        "One row per campaign: contact counts, attempts, counts per outcome (columns and the "
        "outcomes object), answered, human_answered and presses (among finished attempts), "
        "answer_rate and human_rate (per finished attempt), press_rate and "
        "transfer_rate (per human answer), avg_talk_seconds, attempts_per_hour (sent attempts "
        "over the span from first to last send). campaign_summary_since(t) gives the same for "
        "attempts queued at or after t."
    ),
    "FUNCTION campaign_summary_since(timestamptz)": (
        "campaign_summary restricted to attempts queued at or after the argument "
        "(contact counts are always current)."
    ),
}


def upgrade() -> None:
    op.drop_index("ix_call_attempts_campaign_queued", table_name="call_attempts")
    op.create_index(
        "ix_call_attempts_campaign_queued",
        "call_attempts",
        ["campaign_id", "queued_at"],
        postgresql_include=list(REPORT_INCLUDE),
    )
    op.create_index(
        "ix_call_attempts_queued_at",
        "call_attempts",
        ["queued_at"],
        postgresql_include=list(QUEUED_INCLUDE),
    )
    op.create_index("ix_contacts_campaign_status", "contacts", ["campaign_id", "status"])
    op.execute(CALL_ATTEMPTS_REPORT)
    op.execute(CONTACTS_REPORT)
    op.execute(CAMPAIGN_SUMMARY_SINCE)
    op.execute(CAMPAIGN_SUMMARY)
    for target, comment in COMMENTS.items():
        op.execute(f"COMMENT ON {target} IS '{comment}'")


def downgrade() -> None:
    op.execute("DROP VIEW campaign_summary")
    op.execute("DROP FUNCTION campaign_summary_since(timestamptz)")
    op.execute("DROP VIEW contacts_report")
    op.execute("DROP VIEW call_attempts_report")
    op.drop_index("ix_contacts_campaign_status", table_name="contacts")
    op.drop_index("ix_call_attempts_queued_at", table_name="call_attempts")
    op.drop_index("ix_call_attempts_campaign_queued", table_name="call_attempts")
    op.create_index(
        "ix_call_attempts_campaign_queued", "call_attempts", ["campaign_id", "queued_at"]
    )
