"""Caller-ID pools: numbers picked per call, daily caps, resting; the caller ID of each attempt

- `caller_id_pools` and `caller_ids` (where each number is, for local presence; whether it
  rests and why), `campaigns.caller_id_pool_id`.
- `caller_id_usage`: calls per number and day, added by the dispatch tick and taken back by a
  trigger when an attempt ends `not_sent` (nothing went out with the number).
- `call_attempts.caller_id` (the number the call went out with: every attempt from now on) and
  `caller_id_id` (the pool number), with an index for the numbers' answer rates.
- `call_attempts_report` gets `caller_id` at its end.
- `caller_id_health`: each pool number's answer rate over its pool's window (calls sent since
  its last rest ended), beside its pool's, and whether it rests.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USAGE_COMMENT = "Calls per caller ID and day (its pool's cap_zone): what daily caps are held to"
REPORT_COMMENT = (
    "One row per call attempt: campaign, contact, times, ring/talk/transfer seconds, AMD, "
    "DTMF, transfer (and who made it: ivr or operator), voicemail, recording, hangup cause, "
    "outcome and who ended the call (ended_by: callee, ivr, operator, pbx, network, "
    "dialer), the PBX it went through, when its OriginateResponse came and the caller ID it "
    "went out with. answered: the call was answered; human: AMD HUMAN/NOTSURE or a human "
    "outcome; pressed: the press key was pressed."
)


HEALTH_VIEW = """
CREATE VIEW caller_id_health AS
WITH counted AS (
    SELECT ci.id, ci.pool_id, ci.number, ci.rested_until, ci.rest_reason,
           greatest(now() - p.rest_window, coalesce(ci.counted_since, '-infinity')) AS since
      FROM caller_ids ci JOIN caller_id_pools p ON p.id = ci.pool_id
), per_number AS (
    SELECT c.id, c.pool_id, c.number, c.rested_until, c.rest_reason,
           count(a.sent_at) AS sent, count(a.answered_at) AS answered
      FROM counted c
      LEFT JOIN call_attempts a
        ON a.caller_id_id = c.id AND a.sent_at >= c.since AND a.sent_at < now()
     GROUP BY 1, 2, 3, 4, 5
)
SELECT p.name AS pool, n.number, n.sent, n.answered,
       round(n.answered::numeric / nullif(n.sent, 0), 4)::float8 AS answer_rate,
       round(sum(n.answered) OVER w / nullif(sum(n.sent) OVER w, 0), 4)::float8
           AS pool_answer_rate,
       coalesce(n.rested_until > now(), false) AS resting, n.rested_until, n.rest_reason,
       p.rest_below, p.rest_min_calls, p.rest_for, n.id AS caller_id_id
  FROM per_number n JOIN caller_id_pools p ON p.id = n.pool_id
WINDOW w AS (PARTITION BY n.pool_id)
"""
HEALTH_COMMENT = (
    "Per caller ID of a pool: calls sent and answered over the rest_window of its pool since"
    " the end of its last rest, its answer rate and that of its pool, and whether it rests"
    " (and why)"
)


def _load(name: str):  # type: ignore[no-untyped-def]
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"dialer_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report_view(with_caller_id: bool) -> str:
    v7, v9 = _load("0007_who_ended_the_call.py"), _load("0009_pbx_in_reports.py")
    extra = v7.REPORT_EXTRA + v9.EXTRA + (",\n    a.caller_id" if with_caller_id else "")
    return v7._report_view(v7.REPORT_PRESSED, extra)


def upgrade() -> None:
    op.create_table(
        "caller_id_pools",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("daily_cap", sa.Integer(), nullable=False),
        sa.Column("cap_zone", sa.Text(), server_default="UTC", nullable=False),
        sa.Column("rest_below", sa.Float(), server_default="0.5", nullable=False),
        sa.Column("rest_min_calls", sa.Integer(), server_default="50", nullable=False),
        sa.Column("rest_window", sa.Interval(), server_default="24:00:00", nullable=False),
        sa.Column("rest_for", sa.Interval(), server_default="24:00:00", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),  # fmt: skip
        sa.CheckConstraint("daily_cap > 0", name=op.f("ck_caller_id_pools_daily_cap_positive")),
        sa.CheckConstraint("rest_below >= 0 AND rest_below < 1",
                           name=op.f("ck_caller_id_pools_rest_below_ratio")),  # fmt: skip
        sa.CheckConstraint("rest_min_calls > 0", name=op.f("ck_caller_id_pools_rest_min_calls_positive")),
        sa.CheckConstraint("rest_window > interval '0'",
                           name=op.f("ck_caller_id_pools_rest_window_positive")),  # fmt: skip
        sa.CheckConstraint("rest_for > interval '0'", name=op.f("ck_caller_id_pools_rest_for_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caller_id_pools")),
        sa.UniqueConstraint("name", name=op.f("uq_caller_id_pools_name")),
    )
    op.create_table(
        "caller_ids",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Text(), nullable=False),
        sa.Column("country", sa.Text(), nullable=True),
        sa.Column("regions", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("area", sa.Text(), nullable=True),
        sa.Column("is_default", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("rested_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rest_reason", sa.Text(), nullable=True),
        sa.Column("counted_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),  # fmt: skip
        sa.CheckConstraint("number ~ '^\\+[1-9][0-9]{1,14}$'", name=op.f("ck_caller_ids_number_e164")),
        sa.ForeignKeyConstraint(["pool_id"], ["caller_id_pools.id"], ondelete="CASCADE",
                                name=op.f("fk_caller_ids_pool_id_caller_id_pools")),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caller_ids")),
        sa.UniqueConstraint("pool_id", "number", name=op.f("uq_caller_ids_pool_id_number")),
    )
    op.create_index("uq_caller_ids_default", "caller_ids", ["pool_id"], unique=True,
                    postgresql_where=sa.text("is_default"))  # fmt: skip
    op.create_table(
        "caller_id_usage",
        sa.Column("caller_id_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.CheckConstraint("calls >= 0", name=op.f("ck_caller_id_usage_calls_not_negative")),
        sa.ForeignKeyConstraint(["caller_id_id"], ["caller_ids.id"], ondelete="CASCADE",
                                name=op.f("fk_caller_id_usage_caller_id_id_caller_ids")),  # fmt: skip
        sa.PrimaryKeyConstraint("caller_id_id", "day", name=op.f("pk_caller_id_usage")),
        comment=USAGE_COMMENT,
    )
    op.add_column("campaigns", sa.Column("caller_id_pool_id", sa.Integer(), nullable=True))
    op.create_foreign_key("fk_campaigns_caller_id_pool_id_caller_id_pools", "campaigns",
                          "caller_id_pools", ["caller_id_pool_id"], ["id"])  # fmt: skip
    op.add_column("call_attempts", sa.Column("caller_id", sa.Text(), nullable=True))
    op.add_column("call_attempts", sa.Column("caller_id_id", sa.Integer(), nullable=True))
    op.create_foreign_key("fk_call_attempts_caller_id_id_caller_ids", "call_attempts",
                          "caller_ids", ["caller_id_id"], ["id"], ondelete="SET NULL")  # fmt: skip
    op.create_index(
        "ix_call_attempts_caller_id_sent", "call_attempts", ["caller_id_id", "sent_at"],
        postgresql_include=["answered_at"], postgresql_where=sa.text("caller_id_id IS NOT NULL"),
    )  # fmt: skip
    # An attempt that ends not sent gives its number's call of the day back.
    op.execute(
        """
        CREATE FUNCTION caller_id_usage_give_back() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE caller_id_usage u SET calls = greatest(u.calls - 1, 0)
              FROM caller_ids ci JOIN caller_id_pools p ON p.id = ci.pool_id
             WHERE ci.id = NEW.caller_id_id AND u.caller_id_id = ci.id
               AND u.day = (NEW.queued_at AT TIME ZONE p.cap_zone)::date;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER call_attempts_caller_id_give_back AFTER UPDATE OF status ON call_attempts"
        " FOR EACH ROW WHEN (NEW.status = 'not_sent' AND OLD.status <> 'not_sent'"
        " AND NEW.caller_id_id IS NOT NULL) EXECUTE FUNCTION caller_id_usage_give_back()"
    )
    op.execute(_report_view(with_caller_id=True))
    op.execute(f"COMMENT ON VIEW call_attempts_report IS '{REPORT_COMMENT}'")
    op.execute(HEALTH_VIEW)
    op.execute(f"COMMENT ON VIEW caller_id_health IS '{HEALTH_COMMENT}'")


def downgrade() -> None:
    op.execute("DROP VIEW caller_id_health")
    previous = _load("0009_pbx_in_reports.py")
    # Columns cannot be taken off a view: it is made again as revision 0009 left it.
    op.execute("DROP VIEW call_attempts_report")
    op.execute(_report_view(with_caller_id=False))
    op.execute(f"COMMENT ON VIEW call_attempts_report IS '{previous.COMMENT}'")
    op.execute("DROP TRIGGER call_attempts_caller_id_give_back ON call_attempts")
    op.execute("DROP FUNCTION caller_id_usage_give_back()")
    op.drop_index("ix_call_attempts_caller_id_sent", table_name="call_attempts")
    op.drop_constraint("fk_call_attempts_caller_id_id_caller_ids", "call_attempts")
    op.drop_column("call_attempts", "caller_id_id")
    op.drop_column("call_attempts", "caller_id")
    op.drop_constraint("fk_campaigns_caller_id_pool_id_caller_id_pools", "campaigns")
    op.drop_column("campaigns", "caller_id_pool_id")
    op.drop_table("caller_id_usage")
    op.drop_index("uq_caller_ids_default", table_name="caller_ids")
    op.drop_table("caller_ids")
    op.drop_table("caller_id_pools")
