"""campaign summary from counts kept up to date

`campaign_summary` used to aggregate every attempt of a campaign on each call: about two
seconds for a campaign of four million attempts. Finished attempts (status `ended` or
`not_sent`) no longer change in ways that matter to the summary, so their counts are now kept in
`campaign_attempt_stats`, one row per campaign, 10-minute bucket of `queued_at`, outcome, AMD
status and DTMF. Row triggers on `call_attempts` keep it exact on every insert, update, delete
and truncate, whoever writes; the dialer's own hot path (queued -> originating -> up) does not
touch it, since open attempts are not counted there. A per-row upsert costs about 80 us per
closed call, so the listener, which closes calls in batches of thousands, counts its closes
itself in its close statement (one aggregated upsert) and sets `dialer.attempt_stats =
'counted'` for that statement only, which the update trigger skips.

`campaign_summary_since(since)` now reads:
- the buckets that start at or after `since` from `campaign_attempt_stats`;
- the finished attempts of the one partial bucket before them from `call_attempts` (a range of
  at most ten minutes of the campaign's index);
- the open attempts from `call_attempts` (few: bounded by the trunks' channels and the queue).
The press key is applied when the summary is read (DTMF is kept per row), so a changed press key
counts as it did before. Its columns and figures are the same as revision 0002's.

`campaign_attempt_stats_rebuild()` recomputes the table from the attempts (run by this upgrade;
also for operators who bulk-load attempts with triggers disabled).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMMENT = (
    "Counts of finished attempts (ended, not_sent) per campaign, 10-minute bucket of queued_at, "
    "outcome, AMD status and DTMF; kept by triggers on call_attempts. "
    "campaign_attempt_stats_rebuild() recomputes it."
)
FINISHED = "('ended', 'not_sent')"
# A writer that closes open attempts in bulk counts them itself, in the same statement (the
# listener: one aggregated upsert per batch instead of one per call), and sets this
# transaction-local setting around that statement only.
COUNTED_SETTING = "dialer.attempt_stats"
NOT_COUNTED = f"current_setting('{COUNTED_SETTING}', true) IS DISTINCT FROM 'counted'"
OPEN = "('queued', 'originating', 'up')"
BUCKET = "interval '10 minutes'"
KEY = ("campaign_id", "bucket", "outcome", "amd_status", "dtmf")
# Columns whose change moves an attempt's contribution.
TRACKED = (
    "campaign_id",
    "queued_at",
    "status",
    "outcome",
    "amd_status",
    "dtmf",
    "sent_at",
    "answered_at",
    "ended_at",
)


def _bucket(expr: str) -> str:
    return f"date_bin({BUCKET}, {expr}, timestamptz 'epoch')"


def _revision_0002():  # type: ignore[no-untyped-def]
    path = Path(__file__).with_name("0002_outcome_views.py")
    spec = importlib.util.spec_from_file_location("dialer_migration_0002", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ADD = f"""
    INSERT INTO campaign_attempt_stats AS s
           (campaign_id, bucket, outcome, amd_status, dtmf, attempts, sent, answered_at,
            talk_total, talk_count, first_sent_at, last_sent_at)
    VALUES (NEW.campaign_id, {_bucket("NEW.queued_at")}, NEW.outcome, NEW.amd_status, NEW.dtmf, 1,
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

# Removing a contribution never inserts (the campaign may be going away with its stats), and
# the first/last send times of a group are recomputed from its attempts only when the removed
# attempt was at one of them.
_REMOVE = f"""
    b := {_bucket("OLD.queued_at")};
    UPDATE campaign_attempt_stats s SET
           attempts = s.attempts - 1,
           sent = s.sent - (OLD.sent_at IS NOT NULL)::int,
           answered_at = s.answered_at - (OLD.answered_at IS NOT NULL)::int,
           talk_total = s.talk_total - coalesce(OLD.ended_at - OLD.answered_at, interval '0'),
           talk_count = s.talk_count - (OLD.ended_at - OLD.answered_at IS NOT NULL)::int
     WHERE s.campaign_id = OLD.campaign_id AND s.bucket = b
       AND s.outcome IS NOT DISTINCT FROM OLD.outcome
       AND s.amd_status IS NOT DISTINCT FROM OLD.amd_status
       AND s.dtmf IS NOT DISTINCT FROM OLD.dtmf
    RETURNING s.attempts, s.first_sent_at, s.last_sent_at INTO left_, first_, last_;
    IF FOUND THEN
        IF left_ <= 0 THEN
            DELETE FROM campaign_attempt_stats s
             WHERE s.campaign_id = OLD.campaign_id AND s.bucket = b
               AND s.outcome IS NOT DISTINCT FROM OLD.outcome
               AND s.amd_status IS NOT DISTINCT FROM OLD.amd_status
               AND s.dtmf IS NOT DISTINCT FROM OLD.dtmf;
        ELSIF OLD.sent_at = first_ OR OLD.sent_at = last_ THEN
            UPDATE campaign_attempt_stats s SET first_sent_at = m.first, last_sent_at = m.last
              FROM (SELECT min(a.sent_at) AS first, max(a.sent_at) AS last
                      FROM call_attempts a
                     WHERE a.campaign_id = OLD.campaign_id
                       AND a.queued_at >= b AND a.queued_at < b + {BUCKET}
                       AND a.status IN {FINISHED}
                       AND a.outcome IS NOT DISTINCT FROM OLD.outcome
                       AND a.amd_status IS NOT DISTINCT FROM OLD.amd_status
                       AND a.dtmf IS NOT DISTINCT FROM OLD.dtmf) m
             WHERE s.campaign_id = OLD.campaign_id AND s.bucket = b
               AND s.outcome IS NOT DISTINCT FROM OLD.outcome
               AND s.amd_status IS NOT DISTINCT FROM OLD.amd_status
               AND s.dtmf IS NOT DISTINCT FROM OLD.dtmf;
        END IF;
    END IF;
"""

TRACK_FUNCTION = f"""
CREATE FUNCTION campaign_attempt_stats_track() RETURNS trigger
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

TRUNCATE_FUNCTION = """
CREATE FUNCTION campaign_attempt_stats_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM campaign_attempt_stats;
    RETURN NULL;
END
$$
"""

REBUILD_FUNCTION = f"""
CREATE FUNCTION campaign_attempt_stats_rebuild() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    groups bigint;
BEGIN
    -- Writers wait until the rebuild commits, so no close is counted twice or lost.
    LOCK TABLE call_attempts IN SHARE MODE;
    DELETE FROM campaign_attempt_stats;
    INSERT INTO campaign_attempt_stats
           (campaign_id, bucket, outcome, amd_status, dtmf, attempts, sent, answered_at,
            talk_total, talk_count, first_sent_at, last_sent_at)
    SELECT a.campaign_id, {_bucket("a.queued_at")}, a.outcome, a.amd_status, a.dtmf, count(*),
           count(a.sent_at), count(a.answered_at),
           coalesce(sum(a.ended_at - a.answered_at), interval '0'),
           count(a.ended_at - a.answered_at), min(a.sent_at), max(a.sent_at)
      FROM call_attempts a
     WHERE a.status IN {FINISHED}
     GROUP BY 1, 2, 3, 4, 5;
    GET DIAGNOSTICS groups = ROW_COUNT;
    RETURN groups;
END
$$
"""

_TRACKED_OLD = ", ".join(f"OLD.{c}" for c in TRACKED)
_TRACKED_NEW = ", ".join(f"NEW.{c}" for c in TRACKED)
TRIGGERS = (
    f"""CREATE TRIGGER campaign_attempt_stats_insert AFTER INSERT ON call_attempts
        FOR EACH ROW WHEN (NEW.status IN {FINISHED})
        EXECUTE FUNCTION campaign_attempt_stats_track()""",
    f"""CREATE TRIGGER campaign_attempt_stats_update
        AFTER UPDATE OF {", ".join(TRACKED)} ON call_attempts
        FOR EACH ROW WHEN ((OLD.status IN {FINISHED} OR NEW.status IN {FINISHED})
                           AND ({_TRACKED_OLD}) IS DISTINCT FROM ({_TRACKED_NEW})
                           AND {NOT_COUNTED})
        EXECUTE FUNCTION campaign_attempt_stats_track()""",
    f"""CREATE TRIGGER campaign_attempt_stats_delete AFTER DELETE ON call_attempts
        FOR EACH ROW WHEN (OLD.status IN {FINISHED})
        EXECUTE FUNCTION campaign_attempt_stats_track()""",
    """CREATE TRIGGER campaign_attempt_stats_truncate AFTER TRUNCATE ON call_attempts
        FOR EACH STATEMENT EXECUTE FUNCTION campaign_attempt_stats_truncate()""",
)


def _summary_since() -> str:
    """Revision 0002's function with its attempt-level pass read from the kept counts."""
    old = _revision_0002()
    definition: str = old.CAMPAIGN_SUMMARY_SINCE
    start = definition.index("        FROM (\n            SELECT\n                a.outcome,")
    end = definition.index("        ) g\n")
    first_full = (
        f"CASE WHEN NOT isfinite(since) THEN since WHEN {_bucket('since')} = since THEN since "
        f"ELSE {_bucket('since')} + {BUCKET} END"
    )
    per_attempt = """
                    a.outcome, a.amd_status, a.dtmf, 1::bigint AS n,
                    (a.status IN {open})::int AS n_open,
                    (a.sent_at IS NOT NULL)::int AS n_sent,
                    (a.answered_at IS NOT NULL)::int AS n_answered_at,
                    coalesce(a.ended_at - a.answered_at, interval '0') AS talk_total,
                    (a.ended_at - a.answered_at IS NOT NULL)::int AS talk_count,
                    a.sent_at AS first_sent_at, a.sent_at AS last_sent_at""".format(open=OPEN)
    groups = f"""        FROM (
            SELECT
                p.outcome,
                p.amd_status,
                sum(p.n) AS n,
                sum(p.n_open) AS n_open,
                sum(p.n_sent) AS n_sent,
                sum(p.n_answered_at) AS n_answered_at,
                coalesce(sum(p.n) FILTER (WHERE strpos(p.dtmf, c.press_key) > 0), 0) AS n_key,
                sum(p.talk_total) FILTER (WHERE p.talk_count > 0) AS talk_total,
                sum(p.talk_count) AS talk_count,
                min(p.first_sent_at) AS first_sent_at,
                max(p.last_sent_at) AS last_sent_at
            FROM (
                SELECT s.outcome, s.amd_status, s.dtmf, s.attempts, 0, s.sent, s.answered_at,
                       s.talk_total, s.talk_count, s.first_sent_at, s.last_sent_at
                FROM campaign_attempt_stats s
                WHERE s.campaign_id = c.id AND s.bucket >= ({first_full})
                UNION ALL
                SELECT {per_attempt}
                FROM call_attempts a
                WHERE a.campaign_id = c.id AND a.status IN {FINISHED}
                  AND a.queued_at >= since AND a.queued_at < ({first_full})
                UNION ALL
                SELECT {per_attempt}
                FROM call_attempts a
                WHERE a.status IN {OPEN} AND a.campaign_id = c.id AND a.queued_at >= since
            ) p (outcome, amd_status, dtmf, n, n_open, n_sent, n_answered_at, talk_total,
                 talk_count, first_sent_at, last_sent_at)
            GROUP BY p.outcome, p.amd_status
"""
    definition = definition[:start] + groups + definition[end:]
    return definition.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    op.create_table(
        "campaign_attempt_stats",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("amd_status", sa.Text(), nullable=True),
        sa.Column("dtmf", sa.Text(), nullable=True),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("sent", sa.BigInteger(), nullable=False),
        sa.Column("answered_at", sa.BigInteger(), nullable=False),
        sa.Column("talk_total", sa.Interval(), nullable=False),
        sa.Column("talk_count", sa.BigInteger(), nullable=False),
        sa.Column("first_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_attempt_stats_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            *KEY, name=op.f("uq_campaign_attempt_stats_key"), postgresql_nulls_not_distinct=True
        ),
        comment=COMMENT,
    )
    op.execute(TRACK_FUNCTION)
    op.execute(TRUNCATE_FUNCTION)
    op.execute(REBUILD_FUNCTION)
    for trigger in TRIGGERS:
        op.execute(trigger)
    op.execute("SELECT campaign_attempt_stats_rebuild()")
    op.execute(_summary_since())


def downgrade() -> None:
    old = _revision_0002()
    op.execute(old.CAMPAIGN_SUMMARY_SINCE.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
    for name in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER campaign_attempt_stats_{name} ON call_attempts")
    op.execute("DROP FUNCTION campaign_attempt_stats_rebuild()")
    op.execute("DROP FUNCTION campaign_attempt_stats_truncate()")
    op.execute("DROP FUNCTION campaign_attempt_stats_track()")
    op.drop_table("campaign_attempt_stats")
