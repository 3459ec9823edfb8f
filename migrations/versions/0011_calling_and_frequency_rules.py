"""Region calling rules, holidays and frequency rules, and the version workers reload them by

Operators write the hours calls are allowed in a country, region or area code, the dates with
no calls, and limits on calls to one number over all campaigns. `rules_version` is bumped by a
statement trigger on each change, so a worker's last checks read one number to know whether
the rules it holds are current. Frequency rules look a number's attempts up across campaigns:
`contacts.phone_e164` gets its own index.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCOPE_KNOWN = "scope IN ('country', 'region', 'area_code')"
VALUE_FORMAT = (
    "(scope = 'country' AND value ~ '^[A-Z]{2}$')"
    " OR (scope = 'region' AND value ~ '^[A-Z]{2}-[A-Z0-9]{1,3}$')"
    " OR (scope = 'area_code' AND value ~ '^\\+[1-9][0-9]{0,7}$')"
)
RULE_TABLES = ("calling_rules", "calling_holidays", "frequency_rules")
CLOCK_US = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"


def upgrade() -> None:
    op.create_table(
        "calling_rules",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("days", postgresql.ARRAY(sa.SmallInteger()), nullable=False),
        sa.Column("hours_start", sa.Time(), nullable=False),
        sa.Column("hours_end", sa.Time(), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),  # fmt: skip
        sa.CheckConstraint(SCOPE_KNOWN, name=op.f("ck_calling_rules_scope_known")),
        sa.CheckConstraint(VALUE_FORMAT, name=op.f("ck_calling_rules_value_format")),
        sa.CheckConstraint(
            "days <> '{}' AND days <@ '{1,2,3,4,5,6,7}'", name=op.f("ck_calling_rules_days_iso")
        ),  # fmt: skip
        sa.CheckConstraint("hours_start < hours_end", name=op.f("ck_calling_rules_hours_order")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calling_rules")),
    )
    op.create_index("ix_calling_rules_scope_value", "calling_rules", ["scope", "value"])
    op.create_table(
        "calling_holidays",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),  # fmt: skip
        sa.CheckConstraint(SCOPE_KNOWN, name=op.f("ck_calling_holidays_scope_known")),
        sa.CheckConstraint(VALUE_FORMAT, name=op.f("ck_calling_holidays_value_format")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calling_holidays")),
        sa.UniqueConstraint("scope", "value", "day", name=op.f("uq_calling_holidays_scope_value_day")),
    )
    op.create_table(
        "frequency_rules",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=True),
        sa.Column("period", sa.Interval(), nullable=True),
        sa.Column("after_conversation", sa.Interval(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),  # fmt: skip
        sa.CheckConstraint(
            "(max_attempts IS NOT NULL AND period IS NOT NULL AND after_conversation IS NULL)"
            " OR (max_attempts IS NULL AND period IS NULL AND after_conversation IS NOT NULL)",
            name=op.f("ck_frequency_rules_one_kind"),
        ),
        sa.CheckConstraint(
            "max_attempts IS NULL OR max_attempts >= 1",
            name=op.f("ck_frequency_rules_max_attempts_positive"),
        ),  # fmt: skip
        sa.CheckConstraint(
            "period IS NULL OR period > interval '0'", name=op.f("ck_frequency_rules_period_positive")
        ),  # fmt: skip
        sa.CheckConstraint(
            "after_conversation IS NULL OR after_conversation > interval '0'",
            name=op.f("ck_frequency_rules_after_conversation_positive"),
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frequency_rules")),
        sa.UniqueConstraint("name", name=op.f("uq_frequency_rules_name")),
    )
    op.create_table(
        "rules_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_rules_version_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules_version")),
        comment="One row: a number bumped on every change to the calling and frequency rules",
    )
    # Versions are microseconds of the clock (and always move forward): a worker that holds
    # the rules of one database never takes another database's rules for its own.
    op.execute(f"INSERT INTO rules_version (id, version) VALUES (1, {CLOCK_US})")
    op.execute(
        f"""
        CREATE FUNCTION rules_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE rules_version SET version = greatest(version + 1, {CLOCK_US}) WHERE id = 1;
            RETURN NULL;
        END $$
        """
    )
    for table in RULE_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE"
            f" ON {table} FOR EACH STATEMENT EXECUTE FUNCTION rules_version_bump()"
        )
    op.create_index("ix_contacts_phone_e164", "contacts", ["phone_e164"])


def downgrade() -> None:
    op.drop_index("ix_contacts_phone_e164", table_name="contacts")
    for table in RULE_TABLES:
        op.execute(f"DROP TRIGGER {table}_version ON {table}")
    op.execute("DROP FUNCTION rules_version_bump()")
    op.drop_table("rules_version")
    op.drop_table("frequency_rules")
    op.drop_table("calling_holidays")
    op.drop_index("ix_calling_rules_scope_value", table_name="calling_rules")
    op.drop_table("calling_rules")
