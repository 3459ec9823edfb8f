"""call_attempts_report: the PBX each attempt went through, and when its OriginateResponse came

Two columns at the view's end (a view's columns can only be added there): `pbx` and
`originate_response_at`. Nothing else changes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXTRA = """,
    a.pbx,
    a.originate_response_at"""
COMMENT = (
    "One row per call attempt: campaign, contact, times, ring/talk/transfer seconds, AMD, "
    "DTMF, transfer (and who made it: ivr or operator), voicemail, recording, hangup cause, "
    "outcome and who ended the call (ended_by: callee, ivr, operator, pbx, network, "
    "dialer), the PBX it went through and when its OriginateResponse came. answered: the "
    "call was answered; human: AMD HUMAN/NOTSURE or a human outcome; pressed: the press key "
    "was pressed."
)


def _load(name: str):  # type: ignore[no-untyped-def]
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"dialer_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    previous = _load("0007_who_ended_the_call.py")
    op.execute(previous._report_view(previous.REPORT_PRESSED, previous.REPORT_EXTRA + EXTRA))
    op.execute(f"COMMENT ON VIEW call_attempts_report IS '{COMMENT}'")


def downgrade() -> None:
    previous = _load("0007_who_ended_the_call.py")
    # Columns cannot be taken off a view: it is made again as revision 0007 left it.
    op.execute("DROP VIEW call_attempts_report")
    op.execute(previous._report_view(previous.REPORT_PRESSED, previous.REPORT_EXTRA))
    comment = previous.COMMENTS["VIEW call_attempts_report"]
    op.execute(f"COMMENT ON VIEW call_attempts_report IS '{comment}'")
