"""Press-key transfers into an Asterisk queue, paced by its free agents

- `campaigns.transfer_queue`, `pace_by_queue` (needs a queue) and `abandon_target` (a ratio);
- `call_attempts.queue_joined_at`, `queue_wait_s` (app_queue's HoldTime: until an agent
  answered or the callee hung up) and `agent` (the member who took the call);
- `queue_members`: each PBX's queue members as its listener last saw them, which the dispatch
  tick paces queue campaigns by;
- `queue_agent_minutes`: per PBX, queue and minute, the agent-seconds staffed (logged in, not
  paused) and busy (ringing, in a call or wrapping up), for agent occupancy;
- `call_attempts_report` gets `queue_wait_s` and `agent` at its end.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REPORT_COMMENT = (
    "One row per call attempt: campaign, contact, times, ring/talk/transfer seconds, AMD, "
    "DTMF, transfer (and who made it: ivr or operator), voicemail, recording, hangup cause, "
    "outcome and who ended the call (ended_by: callee, ivr, operator, pbx, network, "
    "dialer), the PBX it went through, when its OriginateResponse came, the caller ID it "
    "went out with, the number it dialled (the contact phone or an alternate), and for a "
    "transfer into a queue the seconds the callee waited there and the agent who took it. "
    "answered: the call was answered; human: AMD HUMAN/NOTSURE or a human outcome; pressed: "
    "the press key was pressed."
)
AGENT_MINUTES_COMMENT = (
    "Agent time per PBX queue and minute: staffed_s, seconds of members logged in and not"
    " paused; busy_s, of those ringing, in a call or wrapping up. Occupancy: busy_s / staffed_s"
)


def _load(name: str):  # type: ignore[no-untyped-def]
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"dialer_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def report_view(extra: str = "") -> str:
    v13 = _load("0013_alternate_numbers.py")
    return v13.report_view(",\n    a.phone_e164 AS dialled_phone" + extra)


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("transfer_queue", sa.Text(), server_default="",
                                         nullable=False))  # fmt: skip
    op.add_column("campaigns", sa.Column("pace_by_queue", sa.Boolean(),
                                         server_default=sa.text("false"), nullable=False))  # fmt: skip
    op.add_column("campaigns", sa.Column("abandon_target", sa.Float(), server_default="0.03",
                                         nullable=False))  # fmt: skip
    op.create_check_constraint(
        op.f("ck_campaigns_abandon_target_ratio"), "campaigns",
        "abandon_target > 0 AND abandon_target < 1",
    )  # fmt: skip
    op.create_check_constraint(
        op.f("ck_campaigns_pace_by_queue_needs_queue"), "campaigns",
        "NOT pace_by_queue OR transfer_queue <> ''",
    )  # fmt: skip
    op.add_column("call_attempts", sa.Column("queue_joined_at", sa.DateTime(timezone=True)))
    op.add_column("call_attempts", sa.Column("queue_wait_s", sa.Integer()))
    op.add_column("call_attempts", sa.Column("agent", sa.Text()))
    op.create_table(
        "queue_members",
        sa.Column("pbx", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("interface", sa.Text(), nullable=False),
        sa.Column("member_name", sa.Text(), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("status", sa.Integer(), server_default="1", nullable=False),
        sa.Column("in_call", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("wrapup_s", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_call_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("call_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),  # fmt: skip
        sa.ForeignKeyConstraint(["pbx"], ["pbxs.name"], name=op.f("fk_queue_members_pbx_pbxs"),
                                ondelete="CASCADE"),  # fmt: skip
        sa.PrimaryKeyConstraint("pbx", "queue", "interface", name=op.f("pk_queue_members")),
    )
    op.execute(
        "COMMENT ON TABLE queue_members IS 'Members (agents) of each PBX queue as its listener"
        " last saw them: paused, device status (1 not in use, 2 in use, 6 ringing), in a call"
        " since call_started_at, wrap-up seconds after last_call_at'"
    )
    op.create_table(
        "queue_agent_minutes",
        sa.Column("pbx", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("staffed_s", sa.Float(), server_default="0", nullable=False),
        sa.Column("busy_s", sa.Float(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(["pbx"], ["pbxs.name"],
                                name=op.f("fk_queue_agent_minutes_pbx_pbxs"),
                                ondelete="CASCADE"),  # fmt: skip
        sa.PrimaryKeyConstraint("pbx", "queue", "minute", name=op.f("pk_queue_agent_minutes")),
        comment=AGENT_MINUTES_COMMENT,
    )
    op.execute(report_view(",\n    a.queue_wait_s,\n    a.agent"))
    op.execute(f"COMMENT ON VIEW call_attempts_report IS '{REPORT_COMMENT}'")


def downgrade() -> None:
    previous = _load("0013_alternate_numbers.py")
    op.execute("DROP VIEW call_attempts_report")
    op.execute(report_view())
    op.execute(f"COMMENT ON VIEW call_attempts_report IS '{previous.REPORT_COMMENT}'")
    op.drop_table("queue_agent_minutes")
    op.drop_table("queue_members")
    op.drop_column("call_attempts", "agent")
    op.drop_column("call_attempts", "queue_wait_s")
    op.drop_column("call_attempts", "queue_joined_at")
    op.drop_constraint("ck_campaigns_pace_by_queue_needs_queue", "campaigns")
    op.drop_constraint("ck_campaigns_abandon_target_ratio", "campaigns")
    op.drop_column("campaigns", "abandon_target")
    op.drop_column("campaigns", "pace_by_queue")
    op.drop_column("campaigns", "transfer_queue")
