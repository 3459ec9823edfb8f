"""Index call events by attempt and kind.

The listener reads one kind of event of many attempts when it closes them (the DTMF read
status), and `dialer calls show` reads one attempt's timeline. Without this index the planner
answers "first DialerDTMF event of attempt X by id" by walking the primary key of every event
ever stored, which made closing a batch of calls take minutes on a few hundred thousand events.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_call_events_call_attempt_id_event_id",
        "call_events",
        ["call_attempt_id", "event", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_call_events_call_attempt_id_event_id", table_name="call_events")
