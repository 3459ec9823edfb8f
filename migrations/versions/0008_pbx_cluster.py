"""PBXs: trunks reachable through several Asterisk servers, each with its limits and state

A trunk (one carrier account) can now be reached through several PBXs, each with its own
dial string template: `trunk_routes` (trunk, PBX, channel_template) replaces
`trunks.pbx` and `trunks.channel_template`. Each PBX is a row of `pbxs`: its limits
(originates per second, calls up at once), whether it takes calls, its back-pressure latency
threshold, its pacing slot, and its live state (the rate back-pressure allows, the last p90
OriginateResponse latency, up / down / shutting_down / refusing / unknown with since when and
why, the listener's heartbeat).

`call_attempts.pbx` is the PBX an attempt was routed through (reconciliation and live call
control use it); `call_attempts.originate_response_at` is when its OriginateResponse came (the
latency back-pressure measures). Two partial indexes serve them: open attempts per PBX, and
failed OriginateResponses per PBX and time.

Existing data: every PBX named by a trunk gets its row (and `default` always), with limits no
lower than the sum of its trunks' (at least 1000 originates/s and 10,000 calls), so existing
deployments dial as before; each trunk's pbx and channel template become its one route; every
attempt is marked with its trunk's PBX. A trunk whose PBX is not a valid PBX name (lower-case
letter, then up to 30 lower-case letters, digits, `_` or `-`) stops the upgrade with the names
to fix. Downgrade puts each trunk's route back on the trunk (its route on `default` if it has
one, else the first by name) and drops the rest.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PBX_NAME_PATTERN = "^[a-z][a-z0-9_-]{0,30}$"
PBX_STATES = ("up", "down", "shutting_down", "refusing", "unknown")
DEFAULT_TEMPLATE = "PJSIP/{number}@{trunk}"
OPEN = "status IN ('queued', 'originating', 'up')"


def _list(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def upgrade() -> None:
    bind = op.get_bind()
    bad = bind.execute(
        sa.text("SELECT name, pbx FROM trunks WHERE pbx !~ :pattern ORDER BY name"),
        {"pattern": PBX_NAME_PATTERN},
    ).all()
    if bad:
        listed = ", ".join(f"{r.name} (pbx {r.pbx!r})" for r in bad)
        raise RuntimeError(
            f"trunks on PBXs whose names are not PBX names ({PBX_NAME_PATTERN}): {listed}; "
            "rename them (UPDATE trunks SET pbx = ...) and upgrade again"
        )
    op.create_table(
        "pbxs",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("max_cps", sa.Float(), server_default="1000", nullable=False),
        sa.Column("max_channels", sa.Integer(), server_default="10000", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("latency_threshold_ms", sa.Integer(), server_default="500", nullable=False),
        sa.Column(
            "next_slot_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("rate_reason", sa.Text(), nullable=True),
        sa.Column("decreased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("latency_samples", sa.Integer(), nullable=True),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.Text(), server_default="unknown", nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column(
            "state_since",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "state_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(f"name ~ '{PBX_NAME_PATTERN}'", name=op.f("ck_pbxs_name_format")),
        sa.CheckConstraint("max_cps > 0", name=op.f("ck_pbxs_max_cps_positive")),
        sa.CheckConstraint("max_channels > 0", name=op.f("ck_pbxs_max_channels_positive")),
        sa.CheckConstraint(
            "latency_threshold_ms > 0", name=op.f("ck_pbxs_latency_threshold_positive")
        ),
        sa.CheckConstraint("rate IS NULL OR rate > 0", name=op.f("ck_pbxs_rate_positive")),
        sa.CheckConstraint(f"state IN ({_list(PBX_STATES)})", name=op.f("ck_pbxs_state_known")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_pbxs")),
    )
    op.create_table(
        "trunk_routes",
        sa.Column("trunk_id", sa.Integer(), nullable=False),
        sa.Column("pbx", sa.Text(), nullable=False),
        sa.Column("channel_template", sa.Text(), server_default=DEFAULT_TEMPLATE, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "position('{number}' in channel_template) > 0",
            name=op.f("ck_trunk_routes_template_has_number"),
        ),
        sa.ForeignKeyConstraint(
            ["trunk_id"],
            ["trunks.id"],
            name=op.f("fk_trunk_routes_trunk_id_trunks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["pbx"], ["pbxs.name"], name=op.f("fk_trunk_routes_pbx_pbxs")),
        sa.PrimaryKeyConstraint("trunk_id", "pbx", name=op.f("pk_trunk_routes")),
    )
    # Every PBX a trunk names, and `default`, with limits that never bind before the trunks'.
    op.execute(
        """
        INSERT INTO pbxs (name, max_cps, max_channels)
        SELECT pbx, greatest(1000, sum(cps)), greatest(10000, sum(max_channels))
          FROM (SELECT pbx, cps, max_channels FROM trunks
                UNION ALL SELECT 'default', 0, 0) t
         GROUP BY pbx
        """
    )
    op.execute(
        "INSERT INTO trunk_routes (trunk_id, pbx, channel_template) "
        "SELECT id, pbx, channel_template FROM trunks"
    )

    op.add_column(
        "call_attempts",
        sa.Column("pbx", sa.Text(), server_default="default", nullable=False),
    )
    op.add_column(
        "call_attempts",
        sa.Column("originate_response_at", sa.DateTime(timezone=True), nullable=True),
    )
    # Only the attempts of trunks on another PBX than `default` are rewritten.
    op.execute(
        "UPDATE call_attempts a SET pbx = t.pbx FROM trunks t "
        "WHERE t.id = a.trunk_id AND t.pbx <> 'default'"
    )
    op.create_foreign_key(
        op.f("fk_call_attempts_pbx_pbxs"), "call_attempts", "pbxs", ["pbx"], ["name"]
    )
    op.create_index(
        "ix_call_attempts_open_pbx",
        "call_attempts",
        ["pbx", "status"],
        postgresql_where=sa.text(OPEN),
    )
    op.create_index(
        "ix_call_attempts_pbx_failures",
        "call_attempts",
        ["pbx", "originate_response_at"],
        postgresql_where=sa.text("originate_response = 'Failure'"),
    )
    op.drop_constraint(op.f("ck_trunks_template_has_number"), "trunks", type_="check")
    op.drop_column("trunks", "channel_template")
    op.drop_column("trunks", "pbx")


def downgrade() -> None:
    op.add_column(
        "trunks", sa.Column("pbx", sa.Text(), server_default="default", nullable=False)
    )
    op.add_column(
        "trunks",
        sa.Column("channel_template", sa.Text(), server_default=DEFAULT_TEMPLATE, nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_trunks_template_has_number"),
        "trunks",
        "position('{number}' in channel_template) > 0",
    )
    # A trunk keeps one route: the one on `default` if it has one, else the first by name.
    op.execute(
        """
        UPDATE trunks t SET pbx = r.pbx, channel_template = r.channel_template
          FROM (SELECT DISTINCT ON (trunk_id) trunk_id, pbx, channel_template
                  FROM trunk_routes
                 ORDER BY trunk_id, pbx <> 'default', pbx) r
         WHERE r.trunk_id = t.id
        """
    )
    op.drop_index(
        "ix_call_attempts_pbx_failures",
        table_name="call_attempts",
        postgresql_where=sa.text("originate_response = 'Failure'"),
    )
    op.drop_index(
        "ix_call_attempts_open_pbx", table_name="call_attempts", postgresql_where=sa.text(OPEN)
    )
    op.drop_constraint(op.f("fk_call_attempts_pbx_pbxs"), "call_attempts", type_="foreignkey")
    op.drop_column("call_attempts", "originate_response_at")
    op.drop_column("call_attempts", "pbx")
    op.drop_table("trunk_routes")
    op.drop_table("pbxs")
