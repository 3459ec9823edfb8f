"""call_events follow their attempts by trigger, not by foreign key

The foreign key from call_events to call_attempts checked and share-locked the attempt's row
for every stored event, one statement per row: about a fifth of the database's work when the
listener stores a batch (bench/event_ingest.py). Its two jobs are kept another way:
- deleting attempts (a campaign deleted, its attempts by cascade) deletes their events, and
  truncating call_attempts truncates call_events: statement triggers on call_attempts;
- no event is stored for an attempt that is gone: the listener locks (FOR KEY SHARE) the
  attempts of a batch before storing its events, once per attempt rather than once per event,
  so a concurrent delete waits for the batch and then takes its events too. Other writers
  insert events only with a row of the attempt in the same statement.

Downgrading deletes events whose attempt is gone and puts the foreign key back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK = "fk_call_events_call_attempt_id_call_attempts"


def upgrade() -> None:
    op.drop_constraint(FK, "call_events", type_="foreignkey")
    op.execute(
        """
        CREATE FUNCTION call_events_follow_deleted_attempts() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM call_events e USING gone g WHERE e.call_attempt_id = g.id;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER call_attempts_delete_events
            AFTER DELETE ON call_attempts REFERENCING OLD TABLE AS gone
            FOR EACH STATEMENT EXECUTE FUNCTION call_events_follow_deleted_attempts()
        """
    )
    op.execute(
        """
        CREATE FUNCTION call_events_follow_truncated_attempts() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            TRUNCATE call_events;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER call_attempts_truncate_events
            AFTER TRUNCATE ON call_attempts
            FOR EACH STATEMENT EXECUTE FUNCTION call_events_follow_truncated_attempts()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER call_attempts_truncate_events ON call_attempts")
    op.execute("DROP FUNCTION call_events_follow_truncated_attempts()")
    op.execute("DROP TRIGGER call_attempts_delete_events ON call_attempts")
    op.execute("DROP FUNCTION call_events_follow_deleted_attempts()")
    op.execute(
        "DELETE FROM call_events e WHERE NOT EXISTS "
        "(SELECT 1 FROM call_attempts a WHERE a.id = e.call_attempt_id)"
    )
    op.create_foreign_key(
        FK, "call_events", "call_attempts", ["call_attempt_id"], ["id"], ondelete="CASCADE"
    )
