"""The prompt's read status as a fact of the attempt

The listener used to find each closing call's read status (DialerDTMF `READSTATUS`) in
call_events, which needed an index on (call_attempt_id, event, id) that every stored event paid
for. The status is now written with the other facts, in `call_attempts.read_status`; existing
attempts are filled in from their events, then the index is dropped (an attempt's timeline is
still found through the (call_attempt_id, fingerprint) unique index).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("call_attempts", sa.Column("read_status", sa.Text(), nullable=True))
    op.execute(
        """
        UPDATE call_attempts a SET read_status = e.read_status
          FROM (SELECT DISTINCT ON (call_attempt_id) call_attempt_id,
                       data ->> 'READSTATUS' AS read_status
                  FROM call_events
                 WHERE event = 'DialerDTMF'
                 ORDER BY call_attempt_id, id) e
         WHERE a.id = e.call_attempt_id AND e.read_status IS NOT NULL
        """
    )
    op.drop_index("ix_call_events_call_attempt_id_event_id", table_name="call_events")


def downgrade() -> None:
    op.create_index(
        "ix_call_events_call_attempt_id_event_id",
        "call_events",
        ["call_attempt_id", "event", "id"],
    )
    op.drop_column("call_attempts", "read_status")
