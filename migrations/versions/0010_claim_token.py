"""call_attempts.claim_token: which run of the originate task claimed the attempt

A claim whose answer was lost with its connection (a Postgres restart or a partition after the
commit) left the attempt `originating` with nobody to send it, until reconciliation closed it
a minute on. The claim now writes a token drawn by the task's run, which that run, and only
that run, may claim again on a fresh connection.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


COMMENT = (
    "The originate task run that claimed the attempt (a random number it drew): only that run"
    " may claim it again"
)


def upgrade() -> None:
    op.add_column(
        "call_attempts",
        sa.Column("claim_token", sa.BigInteger(), nullable=True, comment=COMMENT),
    )


def downgrade() -> None:
    op.drop_column("call_attempts", "claim_token")
