"""Alternate numbers: a contact's other numbers, the one its next attempt goes to, and the
number each attempt dialled

- `contacts.alt_phones` (E.164, in the order they are tried) and `contacts.phone_index`;
- `campaigns.dial_alt_numbers`: after a busy, no-answer or failed call, the next number;
- `call_attempts.phone_e164`: the number dialled, filled in for the attempts already there,
  and indexed with `sent_at` (frequency rules read one number's attempts over all campaigns);
- `call_attempts_report` gets `dialled_phone` at its end.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REPORT_COMMENT = (
    "One row per call attempt: campaign, contact, times, ring/talk/transfer seconds, AMD, "
    "DTMF, transfer (and who made it: ivr or operator), voicemail, recording, hangup cause, "
    "outcome and who ended the call (ended_by: callee, ivr, operator, pbx, network, "
    "dialer), the PBX it went through, when its OriginateResponse came, the caller ID it "
    "went out with and the number it dialled (the contact phone or an alternate). "
    "answered: the call was answered; human: AMD HUMAN/NOTSURE or a human outcome; pressed: "
    "the press key was pressed."
)


def _load(name: str):  # type: ignore[no-untyped-def]
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"dialer_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def report_view(extra: str = "") -> str:
    v7, v9 = _load("0007_who_ended_the_call.py"), _load("0009_pbx_in_reports.py")
    columns = v7.REPORT_EXTRA + v9.EXTRA + ",\n    a.caller_id" + extra
    return v7._report_view(v7.REPORT_PRESSED, columns)


def upgrade() -> None:
    op.add_column("contacts", sa.Column("alt_phones", postgresql.ARRAY(sa.Text()),
                                        server_default="{}", nullable=False))  # fmt: skip
    op.add_column("contacts", sa.Column("phone_index", sa.SmallInteger(), server_default="0",
                                        nullable=False))  # fmt: skip
    op.create_check_constraint(
        op.f("ck_contacts_phone_index_range"), "contacts",
        "phone_index >= 0 AND phone_index <= cardinality(alt_phones)",
    )  # fmt: skip
    op.add_column("campaigns", sa.Column("dial_alt_numbers", sa.Boolean(),
                                         server_default=sa.text("false"), nullable=False))  # fmt: skip
    op.add_column("call_attempts", sa.Column("phone_e164", sa.Text(), nullable=True))
    op.execute(
        "UPDATE call_attempts a SET phone_e164 = k.phone_e164 FROM contacts k"
        " WHERE k.id = a.contact_id"
    )
    op.create_index("ix_call_attempts_phone_sent", "call_attempts", ["phone_e164", "sent_at"])
    op.execute(report_view(",\n    a.phone_e164 AS dialled_phone"))
    op.execute(f"COMMENT ON VIEW call_attempts_report IS '{REPORT_COMMENT}'")


def downgrade() -> None:
    previous = _load("0012_caller_id_pools.py")
    op.execute("DROP VIEW call_attempts_report")
    op.execute(report_view())
    op.execute(f"COMMENT ON VIEW call_attempts_report IS '{previous.REPORT_COMMENT}'")
    op.drop_index("ix_call_attempts_phone_sent", table_name="call_attempts")
    op.drop_column("call_attempts", "phone_e164")
    op.drop_column("campaigns", "dial_alt_numbers")
    op.drop_constraint("ck_contacts_phone_index_range", "contacts")
    op.drop_column("contacts", "phone_index")
    op.drop_column("contacts", "alt_phones")
