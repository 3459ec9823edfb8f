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
    Date,
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
# A PBX's state as last reported (dialer.campaigns.pbxs): by its listener (up, down,
# shutting_down) or by a worker that could not use it (down, shutting_down, refusing).
PBX_STATES = ("up", "down", "shutting_down", "refusing", "unknown")
# A PBX's name: the settings' rule (DIALER_PBXS names), `default` included.
PBX_NAME_PATTERN = "^[a-z][a-z0-9_-]{0,30}$"
DEFAULT_CHANNEL_TEMPLATE = "PJSIP/{number}@{trunk}"
TRANSFER_SOURCES = ("ivr", "operator")
DTMF_KEY_PATTERN = "^[0-9*#]$"
# Where a region calling rule or holiday applies (dialer.campaigns.calling_rules), and the form
# of its value: an ISO 3166-1 country, an ISO 3166-2 region, an E.164 prefix.
RULE_SCOPES = ("country", "region", "area_code")
RULE_VALUE_CHECK = (
    "(scope = 'country' AND value ~ '^[A-Z]{2}$')"
    " OR (scope = 'region' AND value ~ '^[A-Z]{2}-[A-Z0-9]{1,3}$')"
    " OR (scope = 'area_code' AND value ~ '^\\+[1-9][0-9]{0,7}$')"
)


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
    """A SIP trunk (one carrier account), with its dialling limits and global pacing state.

    It is reachable through the PBXs of its routes (`TrunkRoute`); its limits hold across all
    of them together.
    """

    __tablename__ = "trunks"
    __table_args__ = (
        CheckConstraint("cps > 0", name="cps_positive"),
        CheckConstraint("max_channels > 0", name="max_channels_positive"),
        CheckConstraint("name ~ '^[A-Za-z0-9_.-]+$'", name="name_safe"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    cps: Mapped[float] = mapped_column(Float)
    max_channels: Mapped[int] = mapped_column(Integer)
    # Pacing: the next instant a call may start on this trunk (see dialer.dialing.pacing).
    next_slot_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))

    campaigns: Mapped[list[Campaign]] = relationship(back_populates="trunk")
    routes: Mapped[list[TrunkRoute]] = relationship(
        back_populates="trunk", order_by="TrunkRoute.pbx", cascade="all, delete-orphan"
    )


class Pbx(TimestampMixin, Base):
    """An Asterisk server calls are sent through: its limits, pacing and live state.

    Its AMI credentials are per host, in the settings (`DIALER_PBXS`); this row is what every
    host shares. Limits: originates per second (`max_cps`, of which back-pressure may allow
    only `rate`) and calls up at once (`max_channels`: its open attempts). The state is
    written by its listener and by workers that could not use it (`dialer.campaigns.pbxs`).
    """

    __tablename__ = "pbxs"
    __table_args__ = (
        CheckConstraint(f"name ~ '{PBX_NAME_PATTERN}'", name="name_format"),
        CheckConstraint("max_cps > 0", name="max_cps_positive"),
        CheckConstraint("max_channels > 0", name="max_channels_positive"),
        CheckConstraint("latency_threshold_ms > 0", name="latency_threshold_positive"),
        CheckConstraint("rate IS NULL OR rate > 0", name="rate_positive"),
        CheckConstraint(_in("state", PBX_STATES), name="state_known"),
    )

    name: Mapped[str] = mapped_column(primary_key=True)
    max_cps: Mapped[float] = mapped_column(Float, server_default="1000")
    max_channels: Mapped[int] = mapped_column(Integer, server_default="10000")
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    # Back-pressure: OriginateResponse latency (p90) above this lowers the rate.
    latency_threshold_ms: Mapped[int] = mapped_column(Integer, server_default="500")
    # Pacing: the next instant an Originate may go to this PBX.
    next_slot_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    # The send rate back-pressure allows now (NULL: max_cps), why it is lower, and when it was
    # last cut (cut at most once per measuring window).
    rate: Mapped[float | None] = mapped_column(Float)
    rate_reason: Mapped[str | None]
    decreased_at: Mapped[dt.datetime | None]
    # The last window's p90 OriginateResponse latency, over how many responses, and when.
    latency_ms: Mapped[float | None] = mapped_column(Float)
    latency_samples: Mapped[int | None] = mapped_column(Integer)
    measured_at: Mapped[dt.datetime | None]
    # Live state, see PBX_STATES: since when, last confirmed when, and why.
    state: Mapped[str] = mapped_column(server_default="unknown")
    state_reason: Mapped[str | None]
    state_since: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    state_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    # The listener's last sign of life (every few seconds while it runs).
    heartbeat_at: Mapped[dt.datetime | None]

    routes: Mapped[list[TrunkRoute]] = relationship(back_populates="pbx_row")


class TrunkRoute(Base):
    """A trunk reachable through one PBX, with the dial string template used there."""

    __tablename__ = "trunk_routes"
    __table_args__ = (
        CheckConstraint("position('{number}' in channel_template) > 0", name="template_has_number"),
    )

    trunk_id: Mapped[int] = mapped_column(
        ForeignKey("trunks.id", ondelete="CASCADE"), primary_key=True
    )
    pbx: Mapped[str] = mapped_column(ForeignKey("pbxs.name"), primary_key=True)
    channel_template: Mapped[str] = mapped_column(server_default=DEFAULT_CHANNEL_TEMPLATE)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())

    trunk: Mapped[Trunk] = relationship(back_populates="routes")
    pbx_row: Mapped[Pbx] = relationship(back_populates="routes")


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
        CheckConstraint("abandon_target > 0 AND abandon_target < 1", name="abandon_target_ratio"),
        CheckConstraint(
            "NOT pace_by_queue OR transfer_queue <> ''", name="pace_by_queue_needs_queue"
        ),
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
    # With a pool, each call's caller ID is picked from it (dialer.campaigns.caller_ids);
    # caller_id_number is then the pool's default when the campaign was set up.
    caller_id_pool_id: Mapped[int | None] = mapped_column(ForeignKey("caller_id_pools.id"))
    # After a busy, no-answer or failed call, the next attempt goes to the contact's next
    # number (its alternates, then its first again).
    dial_alt_numbers: Mapped[bool] = mapped_column(server_default=text("false"))
    # Press-key transfers go into this Asterisk queue (the reference dialplan's Queue()) instead
    # of to transfer_number; with pace_by_queue the tick starts calls by the queue's free agents
    # (dialer.dialing.agent_pacing), keeping abandoned transfers under abandon_target.
    transfer_queue: Mapped[str] = mapped_column(server_default="")
    pace_by_queue: Mapped[bool] = mapped_column(server_default=text("false"))
    abandon_target: Mapped[float] = mapped_column(Float, server_default="0.03")

    trunk: Mapped[Trunk] = relationship(back_populates="campaigns")
    caller_id_pool: Mapped[CallerIdPool | None] = relationship()


class CallerIdPool(Base):
    """Caller IDs a campaign's calls go out with, one picked per call: local presence first,
    the least used today among equals, none past `daily_cap` calls a day (days in
    `cap_zone`). A number whose answer rate falls below `rest_below` times the pool's, over
    `rest_window` and at least `rest_min_calls` calls, is rested for `rest_for`."""

    __tablename__ = "caller_id_pools"
    __table_args__ = (
        CheckConstraint("daily_cap > 0", name="daily_cap_positive"),
        CheckConstraint("rest_below >= 0 AND rest_below < 1", name="rest_below_ratio"),
        CheckConstraint("rest_min_calls > 0", name="rest_min_calls_positive"),
        CheckConstraint("rest_window > interval '0'", name="rest_window_positive"),
        CheckConstraint("rest_for > interval '0'", name="rest_for_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    daily_cap: Mapped[int] = mapped_column(Integer)
    cap_zone: Mapped[str] = mapped_column(server_default="UTC")
    rest_below: Mapped[float] = mapped_column(Float, server_default="0.5")
    rest_min_calls: Mapped[int] = mapped_column(Integer, server_default="50")
    rest_window: Mapped[dt.timedelta] = mapped_column(Interval, server_default="24:00:00")
    rest_for: Mapped[dt.timedelta] = mapped_column(Interval, server_default="24:00:00")
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())

    numbers: Mapped[list[CallerId]] = relationship(
        back_populates="pool", order_by="CallerId.number", cascade="all, delete-orphan"
    )


class CallerId(Base):
    """One number of a pool, with where it is (for local presence) and whether it rests."""

    __tablename__ = "caller_ids"
    __table_args__ = (
        UniqueConstraint("pool_id", "number"),
        CheckConstraint("number ~ '^\\+[1-9][0-9]{1,14}$'", name="number_e164"),
        # One default per pool.
        Index("uq_caller_ids_default", "pool_id", unique=True, postgresql_where=text("is_default")),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("caller_id_pools.id", ondelete="CASCADE"))
    number: Mapped[str]
    # Where the number is: its country (ISO 3166-1), regions (US-CA) and NANP area (+1415).
    country: Mapped[str | None]
    regions: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    area: Mapped[str | None]
    is_default: Mapped[bool] = mapped_column(server_default=text("false"))
    # Resting: not used until then, and why (by hand, or a low answer rate).
    rested_until: Mapped[dt.datetime | None]
    rest_reason: Mapped[str | None]
    # Its answer rate is judged on calls sent since then (the end of its last rest).
    counted_since: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())

    pool: Mapped[CallerIdPool] = relationship(back_populates="numbers")


# Calls per caller ID and day (in its pool's cap_zone): added by the dispatch tick for the
# attempts it creates, taken back by a trigger when an attempt ends not sent (migration 0012).
caller_id_usage = Table(
    "caller_id_usage",
    Base.metadata,
    Column(
        "caller_id_id",
        Integer,
        ForeignKey("caller_ids.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("day", Date, primary_key=True),
    Column("calls", Integer, nullable=False),
    CheckConstraint("calls >= 0", name="calls_not_negative"),
    comment="Calls per caller ID and day (its pool's cap_zone): what daily caps are held to",
)


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
        CheckConstraint(
            "phone_index >= 0 AND phone_index <= cardinality(alt_phones)", name="phone_index_range"
        ),
        # "Due contacts of campaign X": an index scan in next_attempt_at order.
        Index(
            "ix_contacts_due",
            "campaign_id",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        # Contact counts per status for one campaign (reports).
        Index("ix_contacts_campaign_status", "campaign_id", "status"),
        # One number's attempts over all campaigns (frequency rules).
        Index("ix_contacts_phone_e164", "phone_e164"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    import_id: Mapped[int | None] = mapped_column(
        ForeignKey("contact_imports.id", ondelete="SET NULL")
    )
    phone_e164: Mapped[str]
    phone_raw: Mapped[str]
    # Its other numbers (E.164), in the order they are tried after phone_e164, and which one
    # the next attempt goes to (0: phone_e164, n: alt_phones[n]).
    alt_phones: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    phone_index: Mapped[int] = mapped_column(SmallInteger, server_default="0")
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
        # Open attempts per PBX: its calls up (dispatch, pacing) and reconciliation.
        Index(
            "ix_call_attempts_open_pbx",
            "pbx",
            "status",
            postgresql_where=text(_in("status", OPEN_ATTEMPT_STATUSES)),
        ),
        # Back-pressure: a PBX's recent failed OriginateResponses (the ones without ringing).
        Index(
            "ix_call_attempts_pbx_failures",
            "pbx",
            "originate_response_at",
            postgresql_where=text("originate_response = 'Failure'"),
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
        # One number's attempts over all campaigns (frequency rules).
        Index("ix_call_attempts_phone_sent", "phone_e164", "sent_at"),
        # Caller-ID health: a pool number's recent sends and answers.
        Index(
            "ix_call_attempts_caller_id_sent",
            "caller_id_id",
            "sent_at",
            postgresql_include=["answered_at"],
            postgresql_where=text("caller_id_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    custom_call_id: Mapped[str] = mapped_column(unique=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    trunk_id: Mapped[int] = mapped_column(ForeignKey("trunks.id"))
    # The PBX the dispatcher routed the attempt through (and the worker sends it to).
    pbx: Mapped[str] = mapped_column(ForeignKey("pbxs.name"), server_default="default")
    attempt_number: Mapped[int] = mapped_column(Integer)
    # The number dialled: the contact's first, or one of its alternates.
    phone_e164: Mapped[str | None]
    status: Mapped[str] = mapped_column(server_default="queued")
    payload: Mapped[dict[str, Any] | None]
    queued_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    sent_at: Mapped[dt.datetime | None]
    send_error: Mapped[str | None]
    # Drawn by the originate task's run that claimed the attempt: that run alone may claim it
    # again when its claim's answer was lost with the connection.
    claim_token: Mapped[int | None] = mapped_column(
        BigInteger,
        comment=(
            "The originate task run that claimed the attempt (a random number it drew): only"
            " that run may claim it again"
        ),
    )
    answered_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    uniqueid: Mapped[str | None]
    channel: Mapped[str | None]
    originate_response: Mapped[str | None]  # Success | Failure
    originate_reason: Mapped[int | None] = mapped_column(Integer)
    originate_response_at: Mapped[dt.datetime | None]  # when the OriginateResponse came
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
    # In that queue: when the callee joined it, how long it waited (until an agent answered or
    # it hung up: app_queue's HoldTime) and the agent (member name) who took it.
    queue_joined_at: Mapped[dt.datetime | None]
    queue_wait_s: Mapped[int | None] = mapped_column(Integer)
    agent: Mapped[str | None]
    # What the dialer did that no event says: an operator's hang-up (and retry request), the
    # PBX going down while the call ended.
    operator_hangup_at: Mapped[dt.datetime | None]
    operator_retry: Mapped[bool | None]
    pbx_down_at: Mapped[dt.datetime | None]
    outcome: Mapped[str | None]
    ended_by: Mapped[str | None]  # who ended the call: see ENDED_BY
    # The caller ID the call went out with, and the pool number it was picked from (if any).
    caller_id: Mapped[str | None]
    caller_id_id: Mapped[int | None] = mapped_column(
        ForeignKey("caller_ids.id", ondelete="SET NULL")
    )


class QueueMember(Base):
    """An agent of an Asterisk queue as its PBX last reported it (the listener follows
    app_queue's member events and a QueueStatus snapshot after each connect); the dispatch
    tick paces queue campaigns by it."""

    __tablename__ = "queue_members"
    __table_args__ = {
        "comment": (
            "Members (agents) of each PBX queue as its listener last saw them: paused, device"
            " status (1 not in use, 2 in use, 6 ringing), in a call since call_started_at,"
            " wrap-up seconds after last_call_at"
        )
    }

    pbx: Mapped[str] = mapped_column(ForeignKey("pbxs.name", ondelete="CASCADE"), primary_key=True)
    queue: Mapped[str] = mapped_column(primary_key=True)
    interface: Mapped[str] = mapped_column(primary_key=True)
    member_name: Mapped[str]
    paused: Mapped[bool] = mapped_column(server_default=text("false"))
    # app_queue's device status: 1 not in use, 2 in use, 6 ringing... (AST_DEVICE_*)
    status: Mapped[int] = mapped_column(Integer, server_default="1")
    in_call: Mapped[bool] = mapped_column(server_default=text("false"))
    # After a call the member takes none for wrapup_s seconds from its end (last_call_at).
    wrapup_s: Mapped[int] = mapped_column(Integer, server_default="0")
    last_call_at: Mapped[dt.datetime | None]
    # When its current call was answered (in_call), to tell how soon it may end.
    call_started_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class QueueAgentMinute(Base):
    """Agent time of a PBX queue in one minute, written by its listener (occupancy)."""

    __tablename__ = "queue_agent_minutes"
    __table_args__ = {
        "comment": (
            "Agent time per PBX queue and minute: staffed_s, seconds of members logged in and not"
            " paused; busy_s, of those ringing, in a call or wrapping up. Occupancy: busy_s /"
            " staffed_s"
        )
    }

    pbx: Mapped[str] = mapped_column(ForeignKey("pbxs.name", ondelete="CASCADE"), primary_key=True)
    queue: Mapped[str] = mapped_column(primary_key=True)
    minute: Mapped[dt.datetime] = mapped_column(primary_key=True)
    staffed_s: Mapped[float] = mapped_column(Float, server_default="0")
    busy_s: Mapped[float] = mapped_column(Float, server_default="0")


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


class CallingRule(Base):
    """Hours calls are allowed on some weekdays, in a country, a region or an area code.

    A scope's rules add up (Mon-Fri 09:00-20:00 and Sat 10:00-16:00); a weekday none of them
    names is closed there. Across scopes, and with the campaign's hours, the strictest applies
    (`dialer.campaigns.calling_rules`). Triggers bump `rules_version` on every change.
    """

    __tablename__ = "calling_rules"
    __table_args__ = (
        CheckConstraint(_in("scope", RULE_SCOPES), name="scope_known"),
        CheckConstraint(RULE_VALUE_CHECK, name="value_format"),
        CheckConstraint("days <> '{}' AND days <@ '{1,2,3,4,5,6,7}'", name="days_iso"),
        CheckConstraint("hours_start < hours_end", name="hours_order"),
        Index("ix_calling_rules_scope_value", "scope", "value"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    scope: Mapped[str]
    value: Mapped[str]
    days: Mapped[list[int]] = mapped_column(ARRAY(SmallInteger))
    hours_start: Mapped[dt.time] = mapped_column(Time)
    hours_end: Mapped[dt.time] = mapped_column(Time)
    note: Mapped[str] = mapped_column(server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class CallingHoliday(Base):
    """A local date with no calls at all in a country, a region or an area code."""

    __tablename__ = "calling_holidays"
    __table_args__ = (
        UniqueConstraint("scope", "value", "day"),
        CheckConstraint(_in("scope", RULE_SCOPES), name="scope_known"),
        CheckConstraint(RULE_VALUE_CHECK, name="value_format"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    scope: Mapped[str]
    value: Mapped[str]
    day: Mapped[dt.date] = mapped_column(Date)
    name: Mapped[str] = mapped_column(server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class FrequencyRule(Base):
    """A limit on calls to one number over all campaigns (`dialer.campaigns.frequency`):
    at most `max_attempts` sent in `period`, or none within `after_conversation` of a call a
    person answered."""

    __tablename__ = "frequency_rules"
    __table_args__ = (
        CheckConstraint(
            "(max_attempts IS NOT NULL AND period IS NOT NULL AND after_conversation IS NULL)"
            " OR (max_attempts IS NULL AND period IS NULL AND after_conversation IS NOT NULL)",
            name="one_kind",
        ),
        CheckConstraint("max_attempts IS NULL OR max_attempts >= 1", name="max_attempts_positive"),
        CheckConstraint("period IS NULL OR period > interval '0'", name="period_positive"),
        CheckConstraint(
            "after_conversation IS NULL OR after_conversation > interval '0'",
            name="after_conversation_positive",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    max_attempts: Mapped[int | None] = mapped_column(Integer)
    period: Mapped[dt.timedelta | None] = mapped_column(Interval)
    after_conversation: Mapped[dt.timedelta | None] = mapped_column(Interval)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


# Bumped by triggers on every change to calling_rules, calling_holidays and frequency_rules
# (migration 0011): workers reload their rules when the number they last read moves.
rules_version = Table(
    "rules_version",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("version", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="one_row"),
    comment="One row: a number bumped on every change to the calling and frequency rules",
)


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
