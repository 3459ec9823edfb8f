"""The database schema as typed SQLAlchemy 2 models.

Postgres is the single source of truth: contacts, call attempts, trunk pacing state and the
raw AMI events used for each call. CHECK constraints hold the rules that must never be broken
whatever code writes the row; constraint names follow `NAMING_CONVENTION` so migrations are
stable.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Interval,
    MetaData,
    SmallInteger,
    Table,
    Text,
    Time,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import DateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CAMPAIGN_STATUSES = ("draft", "scheduled", "running", "paused", "completed", "cancelled")
# pending: waiting for next_attempt_at; dialing: an attempt is open; the rest are final.
CONTACT_STATUSES = ("pending", "dialing", "completed", "exhausted", "dnc", "cancelled")
# queued: row committed, originate task enqueued; originating: the task took it (sent or
# being sent); up: answered; ended: outcome recorded; not_sent: the PBX could not be reached,
# nothing left the dialer.
ATTEMPT_STATUSES = ("queued", "originating", "up", "ended", "not_sent")
OPEN_ATTEMPT_STATUSES = ("queued", "originating", "up")
IMPORT_STATUSES = ("running", "completed", "failed")
# Who ended a call (dialer.outcomes.rules.EndedBy), and who moved it to a transfer.
ENDED_BY = ("callee", "ivr", "operator", "pbx", "network", "dialer")
TRANSFER_SOURCES = ("ivr", "operator")
DTMF_KEY_PATTERN = "^[0-9*#]$"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        str: Text,
    }


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Trunk(TimestampMixin, Base):
    """A SIP trunk on one PBX, with its dialling limits and global pacing state."""

    __tablename__ = "trunks"
    __table_args__ = (
        CheckConstraint("cps > 0", name="cps_positive"),
        CheckConstraint("max_channels > 0", name="max_channels_positive"),
        CheckConstraint("position('{number}' in channel_template) > 0", name="template_has_number"),
        CheckConstraint("name ~ '^[A-Za-z0-9_.-]+$'", name="name_safe"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    pbx: Mapped[str] = mapped_column(server_default="default")
    channel_template: Mapped[str] = mapped_column(server_default="PJSIP/{number}@{trunk}")
    cps: Mapped[float] = mapped_column(Float)
    max_channels: Mapped[int] = mapped_column(Integer)
    # Pacing: the next instant a call may start on this trunk (see dialer.dialing.pacing).
    next_slot_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))

    campaigns: Mapped[list[Campaign]] = relationship(back_populates="trunk")


class Campaign(TimestampMixin, Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(_in("status", CAMPAIGN_STATUSES), name="status_known"),
        CheckConstraint(f"press_key ~ '{DTMF_KEY_PATTERN}'", name="press_key_dtmf"),
        CheckConstraint(
            f"opt_out_key IS NULL OR (opt_out_key ~ '{DTMF_KEY_PATTERN}' AND opt_out_key <> press_key)",
            name="opt_out_key_dtmf",
        ),
        CheckConstraint("max_attempts >= 1", name="max_attempts_positive"),
        CheckConstraint("originate_timeout_ms > 0", name="timeout_positive"),
        CheckConstraint("priority >= 1", name="priority_positive"),
        CheckConstraint(
            "calling_days <> '{}' AND calling_days <@ '{1,2,3,4,5,6,7}'", name="calling_days_iso"
        ),
        CheckConstraint("calling_hours_start < calling_hours_end", name="calling_hours_order"),
        CheckConstraint(
            "end_at IS NULL OR start_at IS NULL OR end_at > start_at", name="end_after_start"
        ),
        CheckConstraint("jsonb_typeof(retry_delays) = 'object'", name="retry_delays_object"),
        CheckConstraint("region ~ '^[A-Z]{2}$'", name="region_iso"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    trunk_id: Mapped[int] = mapped_column(ForeignKey("trunks.id"))
    status: Mapped[str] = mapped_column(server_default="draft")
    caller_id_number: Mapped[str]
    caller_id_name: Mapped[str | None]
    context: Mapped[str] = mapped_column(server_default="DynamicIVR")
    exten: Mapped[str] = mapped_column(server_default="s")
    priority: Mapped[int] = mapped_column(Integer, server_default="1")
    originate_timeout_ms: Mapped[int] = mapped_column(Integer, server_default="30000")
    ivr_file: Mapped[str]
    ivr_vm_file: Mapped[str] = mapped_column(server_default="")
    transfer_number: Mapped[str] = mapped_column(server_default="")
    transfer_prefix: Mapped[str] = mapped_column(server_default="")
    press_key: Mapped[str] = mapped_column(server_default="1")
    wait_strategy: Mapped[str] = mapped_column(server_default="random")
    amd_enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    opt_out_key: Mapped[str | None]
    record_calls: Mapped[bool] = mapped_column(server_default=text("false"))
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="3")
    # {outcome: seconds before the next attempt}; outcomes absent here use dialer.outcomes.retry defaults.
    retry_delays: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    # Callee-local calling hours and ISO weekdays (1 = Monday).
    calling_hours_start: Mapped[dt.time] = mapped_column(Time, server_default="09:00")
    calling_hours_end: Mapped[dt.time] = mapped_column(Time, server_default="20:00")
    calling_days: Mapped[list[int]] = mapped_column(
        ARRAY(SmallInteger), server_default="{1,2,3,4,5}"
    )
    start_at: Mapped[dt.datetime | None]
    end_at: Mapped[dt.datetime | None]
    # Region for numbers written in national format (ISO 3166 alpha-2).
    region: Mapped[str] = mapped_column(server_default="US")

    trunk: Mapped[Trunk] = relationship(back_populates="campaigns")


class ContactImport(Base):
    """One uploaded contact file and what became of its rows."""

    __tablename__ = "contact_imports"
    __table_args__ = (
        CheckConstraint(_in("status", IMPORT_STATUSES), name="status_known"),
        CheckConstraint(
            "rows_total >= 0 AND accepted >= 0 AND rejected >= 0 AND duplicates >= 0 AND on_dnc >= 0",
            name="counts_not_negative",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str]
    checksum: Mapped[str]  # sha256 of the file's bytes
    status: Mapped[str] = mapped_column(server_default="running")
    rows_total: Mapped[int] = mapped_column(Integer, server_default="0")
    accepted: Mapped[int] = mapped_column(Integer, server_default="0")
    rejected: Mapped[int] = mapped_column(Integer, server_default="0")
    duplicates: Mapped[int] = mapped_column(Integer, server_default="0")
    on_dnc: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None]
    started_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[dt.datetime | None]


class ImportReject(Base):
    __tablename__ = "import_rejects"
    __table_args__ = (CheckConstraint("line_number >= 1", name="line_number_positive"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    import_id: Mapped[int] = mapped_column(
        ForeignKey("contact_imports.id", ondelete="CASCADE"), index=True
    )
    line_number: Mapped[int] = mapped_column(Integer)
    raw: Mapped[str]
    reason: Mapped[str]


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("campaign_id", "phone_e164"),
        CheckConstraint(_in("status", CONTACT_STATUSES), name="status_known"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        CheckConstraint("phone_e164 ~ '^\\+[1-9][0-9]{1,14}$'", name="phone_e164_format"),
        # "Due contacts of campaign X": an index scan in next_attempt_at order.
        Index(
            "ix_contacts_due",
            "campaign_id",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        # Contact counts per status for one campaign (reports).
        Index("ix_contacts_campaign_status", "campaign_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    import_id: Mapped[int | None] = mapped_column(
        ForeignKey("contact_imports.id", ondelete="SET NULL")
    )
    phone_e164: Mapped[str]
    phone_raw: Mapped[str]
    first_name: Mapped[str | None]
    last_name: Mapped[str | None]
    fields: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    # IANA zones the number's prefix may be in; calling windows must be open in all of them.
    timezones: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    status: Mapped[str] = mapped_column(server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    last_outcome: Mapped[str | None]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class CallAttempt(Base):
    """One Originate of one contact: created and committed before anything is sent."""

    __tablename__ = "call_attempts"
    __table_args__ = (
        UniqueConstraint("contact_id", "attempt_number"),
        CheckConstraint(_in("status", ATTEMPT_STATUSES), name="status_known"),
        CheckConstraint("attempt_number >= 1", name="attempt_number_positive"),
        CheckConstraint("custom_call_id ~ '^[0-9]+_[0-9]+$'", name="custom_call_id_shape"),
        CheckConstraint("dtmf IS NULL OR dtmf ~ '^[0-9*#]+$'", name="dtmf_digits"),
        CheckConstraint(
            "status <> 'ended' OR (outcome IS NOT NULL AND ended_at IS NOT NULL)",
            name="ended_has_outcome",
        ),
        CheckConstraint(f"ended_by IS NULL OR {_in('ended_by', ENDED_BY)}", name="ended_by_known"),
        CheckConstraint(
            f"transfer_source IS NULL OR {_in('transfer_source', TRANSFER_SOURCES)}",
            name="transfer_source_known",
        ),
        # Open attempts per trunk: the channel count the dispatcher and pacing read.
        Index(
            "ix_call_attempts_open_trunk",
            "trunk_id",
            "status",
            postgresql_where=text(_in("status", OPEN_ATTEMPT_STATUSES)),
        ),
        # Reports: one campaign's attempts as an index-only scan (see migration 0002).
        Index(
            "ix_call_attempts_campaign_queued",
            "campaign_id",
            "queued_at",
            postgresql_include=[
                "id",
                "status",
                "outcome",
                "amd_status",
                "dtmf",
                "sent_at",
                "answered_at",
                "ended_at",
            ],
        ),
        # Newest-first call lists across campaigns; recent sends per trunk.
        Index(
            "ix_call_attempts_queued_at",
            "queued_at",
            postgresql_include=["id", "trunk_id", "outcome", "sent_at"],
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    custom_call_id: Mapped[str] = mapped_column(unique=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    trunk_id: Mapped[int] = mapped_column(ForeignKey("trunks.id"))
    attempt_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(server_default="queued")
    payload: Mapped[dict[str, Any] | None]
    queued_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    sent_at: Mapped[dt.datetime | None]
    send_error: Mapped[str | None]
    answered_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    uniqueid: Mapped[str | None]
    channel: Mapped[str | None]
    originate_response: Mapped[str | None]  # Success | Failure
    originate_reason: Mapped[int | None] = mapped_column(Integer)
    dial_status: Mapped[str | None]
    amd_status: Mapped[str | None]
    amd_cause: Mapped[str | None]
    dtmf: Mapped[str | None]
    read_status: Mapped[str | None]  # the prompt's READSTATUS: OK, TIMEOUT, HANGUP...
    transfer_requested_at: Mapped[dt.datetime | None]
    transfer_answered_at: Mapped[dt.datetime | None]
    transfer_ended_at: Mapped[dt.datetime | None]
    transfer_status: Mapped[str | None]
    voicemail_left: Mapped[bool | None]
    recording_file: Mapped[str | None]
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    hangup_cause_txt: Mapped[str | None]
    transfer_source: Mapped[str | None]  # ivr (press key) | operator (dialer call transfer)
    transfer_queue: Mapped[str | None]  # the queue a transfer went into
    # What the dialer did that no event says: an operator's hang-up (and retry request), the
    # PBX going down while the call ended.
    operator_hangup_at: Mapped[dt.datetime | None]
    operator_retry: Mapped[bool | None]
    pbx_down_at: Mapped[dt.datetime | None]
    outcome: Mapped[str | None]
    ended_by: Mapped[str | None]  # who ended the call: see ENDED_BY


class CallEvent(Base):
    """A raw AMI event the listener used for a call, kept for audit and replay."""

    __tablename__ = "call_events"
    __table_args__ = (
        # Also finds an attempt's timeline (call_attempt_id leads).
        UniqueConstraint("call_attempt_id", "fingerprint"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # Not a foreign key, for the cost of its check on every stored event: triggers on
    # call_attempts delete (and truncate) the events with their attempts, and writers lock the
    # attempt while they add its events (migration 0006).
    call_attempt_id: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str]
    # Hash of the event's fields: the same event seen twice (replay, reconnect) is kept once.
    fingerprint: Mapped[str]
    received_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    data: Mapped[dict[str, Any]]


class DncNumber(Base):
    """Do-not-call: global when campaign_id is NULL, else for one campaign."""

    __tablename__ = "dnc_numbers"
    __table_args__ = (
        UniqueConstraint("phone_e164", "campaign_id", postgresql_nulls_not_distinct=True),
        CheckConstraint("phone_e164 ~ '^\\+[1-9][0-9]{1,14}$'", name="phone_e164_format"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    phone_e164: Mapped[str]
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(server_default="manual")
    reason: Mapped[str | None]
    added_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


# Counts of finished attempts, kept by triggers on call_attempts (migration 0004) and read by
# the campaign summary. Derived data: a Table, not a mapped class, since nothing writes it but
# the database itself.
campaign_attempt_stats = Table(
    "campaign_attempt_stats",
    Base.metadata,
    Column(
        "campaign_id",
        Integer,
        ForeignKey("campaigns.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("bucket", DateTime(timezone=True), nullable=False),  # 10 minutes of queued_at
    Column("outcome", Text),
    Column("amd_status", Text),
    Column("dtmf", Text),
    Column("ended_by", Text),
    Column("transfer_source", Text),
    Column("attempts", BigInteger, nullable=False),
    Column("sent", BigInteger, nullable=False),
    Column("answered_at", BigInteger, nullable=False),
    Column("talk_total", Interval, nullable=False),
    Column("talk_count", BigInteger, nullable=False),
    Column("first_sent_at", DateTime(timezone=True)),
    Column("last_sent_at", DateTime(timezone=True)),
    UniqueConstraint(
        "campaign_id",
        "bucket",
        "outcome",
        "amd_status",
        "dtmf",
        "ended_by",
        "transfer_source",
        name="uq_campaign_attempt_stats_key",
        postgresql_nulls_not_distinct=True,
    ),
    comment=(
        "Counts of finished attempts (ended, not_sent) per campaign, 10-minute bucket of "
        "queued_at, outcome, AMD status, DTMF, who ended the call and the transfer's source; "
        "kept by triggers on call_attempts. "
        "campaign_attempt_stats_rebuild() recomputes it."
    ),
)
