"""Campaigns: settings, progress, and the lifecycle as a transition table.

Lifecycle (actions an operator, the scheduler or the dispatcher take):

    draft --schedule--> scheduled --start--> running --pause--> paused --resume--> running
    draft --start--> running            running --complete--> completed
    draft, scheduled, running, paused --stop--> cancelled

`completed` and `cancelled` are final. Only `running` campaigns are dialled.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dialer.campaigns import caller_id_pools, validation
from dialer.campaigns.trunks import get as get_trunk
from dialer.campaigns.validation import AlreadyExists, NotFound, SettingError
from dialer.models import (
    ATTEMPT_STATUSES,
    CONTACT_STATUSES,
    OPEN_ATTEMPT_STATUSES,
    CallAttempt,
    Campaign,
    Contact,
    ContactImport,
    Trunk,
    utcnow,
)

# action -> (statuses it may start from, status it leads to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "schedule": (frozenset({"draft", "scheduled"}), "scheduled"),
    "start": (frozenset({"draft", "scheduled"}), "running"),
    "pause": (frozenset({"running"}), "paused"),
    "resume": (frozenset({"paused"}), "running"),
    "complete": (frozenset({"running"}), "completed"),
    "stop": (frozenset({"draft", "scheduled", "running", "paused"}), "cancelled"),
}
FINAL_STATUSES = frozenset({"completed", "cancelled"})
# Contacts that may still be dialled; a campaign with none of them has nothing left to do.
LIVE_CONTACT_STATUSES = ("pending", "dialing")
DEFAULT_REGION = "US"
DEFAULT_PRESS_KEY = "1"


class IllegalTransition(ValueError):
    """The campaign's status does not allow the action; the message says what would."""


def next_status(name: str, status: str, action: str) -> str:
    """The status `action` leads to from `status`, or IllegalTransition explaining why not."""
    if action not in TRANSITIONS:
        raise ValueError(f"unknown campaign action {action!r}")
    allowed_from, target = TRANSITIONS[action]
    if status in allowed_from:
        return target
    raise IllegalTransition(
        f"cannot {action} campaign {name!r}: it is {status}{_hint(status, action)}"
    )


def _hint(status: str, action: str) -> str:
    if status in FINAL_STATUSES:
        return f"; a {status} campaign is final (create a new campaign to dial again)"
    if action == "start" and status == "paused":
        return "; use `resume` to continue it"
    if action == "resume" and status in ("draft", "scheduled"):
        return "; use `start` to begin dialling"
    if action in ("start", "schedule") and status == "running":
        return "; it is dialling already"
    if action == "schedule" and status == "paused":
        return "; use `resume` to continue it now"
    if action == "pause":
        return "; only a running campaign can be paused"
    if action == "complete":
        return "; only a running campaign completes"
    return ""


@dataclass(frozen=True)
class CampaignChanges:
    """Campaign settings as typed by an operator; None leaves a setting as it is.

    Empty text clears the optional settings (caller name, voicemail file, transfer number,
    transfer prefix, opt-out key).
    """

    trunk: str | None = None
    caller_id: str | None = None
    caller_name: str | None = None
    ivr_file: str | None = None
    ivr_vm_file: str | None = None
    transfer_number: str | None = None
    transfer_prefix: str | None = None
    press_key: str | None = None
    opt_out_key: str | None = None
    amd: bool | None = None
    record_calls: bool | None = None
    wait_strategy: str | None = None
    context: str | None = None
    exten: str | None = None
    priority: int | str | None = None
    timeout_ms: int | str | None = None
    max_attempts: int | str | None = None
    retry: Sequence[str] | None = None
    hours: str | None = None
    days: str | None = None
    region: str | None = None
    caller_id_pool: str | None = None  # '' clears it
    alt_numbers: bool | None = None
    transfer_queue: str | None = None  # '' clears it
    pace_by_queue: bool | None = None
    abandon_target: float | str | None = None

    def given(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def validated(self, current: Campaign | None) -> dict[str, Any]:
        """{column: value} for every given setting (trunk excluded), checked together."""
        values: dict[str, Any] = {}
        region = current.region if current is not None else DEFAULT_REGION
        if self.region is not None:
            region = values["region"] = validation.region(self.region)
        if self.caller_id is not None:
            values["caller_id_number"] = validation.phone_number(
                self.caller_id, "caller_id", region
            )
        if self.caller_name is not None:
            values["caller_id_name"] = validation.caller_name(self.caller_name) or None
        if self.ivr_file is not None:
            values["ivr_file"] = validation.sound_file(self.ivr_file, "ivr_file")
        if self.ivr_vm_file is not None:
            values["ivr_vm_file"] = validation.optional_sound_file(self.ivr_vm_file, "ivr_vm_file")
        if self.transfer_number is not None:
            values["transfer_number"] = validation.optional_phone_number(
                self.transfer_number, "transfer_number", region
            )
        if self.transfer_prefix is not None:
            values["transfer_prefix"] = validation.dial_prefix(self.transfer_prefix)
        if self.press_key is not None:
            values["press_key"] = validation.dtmf_key(self.press_key, "press_key")
        if self.opt_out_key is not None:
            values["opt_out_key"] = (
                validation.dtmf_key(self.opt_out_key, "opt_out_key") if self.opt_out_key else None
            )
        if self.amd is not None:
            values["amd_enabled"] = self.amd
        if self.record_calls is not None:
            values["record_calls"] = self.record_calls
        if self.alt_numbers is not None:
            values["dial_alt_numbers"] = self.alt_numbers
        if self.transfer_queue is not None:
            values["transfer_queue"] = validation.queue_name(self.transfer_queue)
        if self.pace_by_queue is not None:
            values["pace_by_queue"] = self.pace_by_queue
        if self.abandon_target is not None:
            values["abandon_target"] = validation.ratio(self.abandon_target, "abandon_target")
        if self.wait_strategy is not None:
            values["wait_strategy"] = validation.keyword(self.wait_strategy, "wait_strategy")
        if self.context is not None:
            values["context"] = validation.dialplan_name(self.context, "context")
        if self.exten is not None:
            values["exten"] = validation.dialplan_name(self.exten, "exten")
        if self.priority is not None:
            values["priority"] = validation.positive_int(self.priority, "priority")
        if self.timeout_ms is not None:
            values["originate_timeout_ms"] = validation.positive_int(self.timeout_ms, "timeout_ms")
        if self.max_attempts is not None:
            values["max_attempts"] = validation.positive_int(self.max_attempts, "max_attempts")
        if self.retry is not None:
            values["retry_delays"] = validation.retry_rules(list(self.retry))
        if self.hours is not None:
            start, end = validation.calling_hours(self.hours)
            values["calling_hours_start"], values["calling_hours_end"] = start, end
        if self.days is not None:
            values["calling_days"] = validation.calling_days(self.days)
        press = values.get("press_key", current.press_key if current else DEFAULT_PRESS_KEY)
        opt_out = values.get("opt_out_key", current.opt_out_key if current else None)
        if opt_out is not None and opt_out == press:
            raise SettingError("opt_out_key", f"must differ from the press key ({press!r})")
        queue = values.get("transfer_queue", current.transfer_queue if current else "")
        pace = values.get("pace_by_queue", current.pace_by_queue if current else False)
        if pace and not queue:
            field = "pace_by_queue" if "pace_by_queue" in values else "transfer_queue"
            raise SettingError(field, "pacing by a queue needs a transfer queue (--transfer-queue)")
        return values


def _pool_values(
    session: Session, changes: CampaignChanges, values: dict[str, Any]
) -> dict[str, Any]:
    """The pool's columns: its id, and the campaign's own caller ID from the pool's default
    (or first) number when none is given."""
    if changes.caller_id_pool is None:
        return {}
    if changes.caller_id_pool == "":
        return {"caller_id_pool_id": None}
    try:
        pool = caller_id_pools.get_pool(session, changes.caller_id_pool)
    except NotFound as exc:
        raise SettingError("caller_id_pool", str(exc)) from None
    found: dict[str, Any] = {"caller_id_pool_id": pool.id}
    numbers = sorted(pool.numbers, key=lambda n: (not n.is_default, n.number))
    if not numbers:
        raise SettingError("caller_id_pool", f"pool {pool.name!r} has no numbers; add some first")
    if "caller_id_number" not in values:
        found["caller_id_number"] = numbers[0].number
    return found


def get(session: Session, name: str, *, lock: bool = False) -> Campaign:
    query = select(Campaign).where(Campaign.name == name)
    if lock:
        query = query.with_for_update()
    campaign = session.scalars(query).one_or_none()
    if campaign is None:
        raise NotFound(f"no campaign named {name!r}")
    return campaign


def create(session: Session, name: str, changes: CampaignChanges) -> Campaign:
    """A new draft campaign; defaults are the Originate spec's (DynamicIVR, s, 1, 30000 ms)."""
    campaign_name = validation.name(name)
    if changes.trunk is None:
        raise SettingError("trunk", "is required")
    if changes.caller_id is None and not changes.caller_id_pool:
        raise SettingError("caller_id", "is required (or a caller ID pool)")
    if changes.ivr_file is None:
        raise SettingError("ivr_file", "is required")
    values = changes.validated(None)
    trunk = get_trunk(session, validation.trunk_name(changes.trunk))
    if session.scalar(select(Campaign.id).where(Campaign.name == campaign_name)) is not None:
        raise AlreadyExists(f"a campaign named {campaign_name!r} exists already")
    values.update(_pool_values(session, changes, values))
    campaign = Campaign(name=campaign_name, trunk_id=trunk.id, **values)
    session.add(campaign)
    session.flush()
    session.refresh(campaign)  # server defaults
    return campaign


def update_settings(session: Session, name: str, changes: CampaignChanges) -> Campaign:
    """Change settings; refused while the campaign is running (pause it first)."""
    if not changes.given():
        raise SettingError("settings", "nothing to change")
    campaign = get(session, name, lock=True)
    if campaign.status == "running":
        raise IllegalTransition(
            f"cannot change campaign {name!r} while it is running; pause it first"
        )
    values = changes.validated(campaign)
    if changes.trunk is not None:
        values["trunk_id"] = get_trunk(session, validation.trunk_name(changes.trunk)).id
    values.update(_pool_values(session, changes, values))
    for column, value in values.items():
        setattr(campaign, column, value)
    session.flush()
    return campaign


def transition(session: Session, name: str, action: str) -> Campaign:
    """Apply a lifecycle action under a row lock (two operators cannot race)."""
    campaign = get(session, name, lock=True)
    campaign.status = next_status(campaign.name, campaign.status, action)
    session.flush()
    return campaign


def schedule(
    session: Session,
    name: str,
    start: dt.datetime,
    end: dt.datetime | None = None,
    *,
    now: dt.datetime | None = None,
) -> Campaign:
    now = now or utcnow()
    if start <= now:
        raise SettingError("start", "is in the past; use `start` to begin dialling now")
    if end is not None and end <= start:
        raise SettingError("end", "must be after the start")
    campaign = transition(session, name, "schedule")
    campaign.start_at, campaign.end_at = start, end
    session.flush()
    return campaign


def start(session: Session, name: str) -> Campaign:
    """Begin dialling now; refused when no contact is waiting to be dialled."""
    campaign = get(session, name, lock=True)
    next_status(campaign.name, campaign.status, "start")
    if not _live_contacts(session, campaign.id):
        total = session.scalar(select(func.count()).where(Contact.campaign_id == campaign.id))
        detail = (
            "it has no contacts; import a list first"
            if not total
            else f"none of its {total} contacts is waiting to be dialled"
        )
        raise IllegalTransition(f"cannot start campaign {name!r}: {detail}")
    _require_usable_pool(session, campaign)
    campaign.status = "running"
    if campaign.start_at is None or campaign.start_at > utcnow():
        campaign.start_at = utcnow()
    session.flush()
    return campaign


def _require_usable_pool(session: Session, campaign: Campaign) -> None:
    pool = campaign.caller_id_pool
    if pool is not None and not caller_id_pools.usable_numbers(session, pool):
        raise SettingError(
            "caller_id_pool",
            f"pool {pool.name!r} has no number that can be used (none, or all resting);"
            " add or restore one first",
        )


def resume(session: Session, name: str) -> Campaign:
    """Continue a paused campaign; one with nothing left to dial completes instead."""
    _require_usable_pool(session, get(session, name))
    campaign = transition(session, name, "resume")
    complete_if_exhausted(session, campaign.id)
    return campaign


def complete_if_exhausted(session: Session, campaign_id: int) -> bool:
    """Mark a running campaign completed when nothing is left to dial; True if it was.

    Nothing left: no contact pending or dialling and no attempt still open. Safe to call from
    any process: the campaign row is locked and re-read.
    """
    campaign = session.scalars(
        select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    ).one_or_none()
    if campaign is None or campaign.status != "running":
        return False
    if _live_contacts(session, campaign_id):
        return False
    open_attempt = session.scalar(
        select(CallAttempt.id)
        .where(
            CallAttempt.campaign_id == campaign_id,
            CallAttempt.status.in_(OPEN_ATTEMPT_STATUSES),
        )
        .limit(1)
    )
    if open_attempt is not None:
        return False
    campaign.status = next_status(campaign.name, campaign.status, "complete")
    session.flush()
    return True


def advance_schedules(session: Session, now: dt.datetime | None = None) -> dict[str, list[str]]:
    """Start scheduled campaigns whose start time has come; complete running ones past their end.

    Returns the names moved, by new status. Meant for the dispatcher's periodic tick.
    """
    now = now or utcnow()
    started = session.scalars(
        update(Campaign)
        .where(Campaign.status == "scheduled", Campaign.start_at <= now)
        .values(status="running")
        .returning(Campaign.name)
    ).all()
    ended = session.scalars(
        update(Campaign)
        .where(Campaign.status == "running", Campaign.end_at <= now)
        .values(status="completed")
        .returning(Campaign.name)
    ).all()
    return {"running": sorted(started), "completed": sorted(ended)}


def _live_contacts(session: Session, campaign_id: int) -> bool:
    return (
        session.scalar(
            select(Contact.id)
            .where(Contact.campaign_id == campaign_id, Contact.status.in_(LIVE_CONTACT_STATUSES))
            .limit(1)
        )
        is not None
    )


def list_campaigns(session: Session) -> list[dict[str, Any]]:
    """Every campaign with its status, trunk and contact counts."""
    counts = (
        select(
            Contact.campaign_id,
            func.count().label("contacts"),
            func.count().filter(Contact.status == "pending").label("pending"),
        )
        .group_by(Contact.campaign_id)
        .subquery()
    )
    rows = session.execute(
        select(Campaign, Trunk.name, counts.c.contacts, counts.c.pending)
        .join(Trunk, Trunk.id == Campaign.trunk_id)
        .outerjoin(counts, counts.c.campaign_id == Campaign.id)
        .order_by(Campaign.name)
    ).all()
    return [
        {
            "name": campaign.name,
            "status": campaign.status,
            "trunk": trunk_name,
            "region": campaign.region,
            "contacts": contacts or 0,
            "pending": pending or 0,
            "start_at": _iso(campaign.start_at),
            "end_at": _iso(campaign.end_at),
        }
        for campaign, trunk_name, contacts, pending in rows
    ]


def show(session: Session, name: str) -> dict[str, Any]:
    """Settings and progress: contacts by status, attempts by status, outcomes, imports."""
    campaign = get(session, name)
    trunk_name = session.scalar(select(Trunk.name).where(Trunk.id == campaign.trunk_id))
    contacts = dict.fromkeys(CONTACT_STATUSES, 0)
    contacts.update(
        session.execute(
            select(Contact.status, func.count())
            .where(Contact.campaign_id == campaign.id)
            .group_by(Contact.status)
        ).all()
    )
    attempts = dict.fromkeys(ATTEMPT_STATUSES, 0)
    attempts.update(
        session.execute(
            select(CallAttempt.status, func.count())
            .where(CallAttempt.campaign_id == campaign.id)
            .group_by(CallAttempt.status)
        ).all()
    )
    outcomes = dict(
        session.execute(
            select(CallAttempt.outcome, func.count())
            .where(CallAttempt.campaign_id == campaign.id, CallAttempt.outcome.is_not(None))
            .group_by(CallAttempt.outcome)
            .order_by(func.count().desc(), CallAttempt.outcome)
        ).all()
    )
    imports = session.scalars(
        select(ContactImport)
        .where(ContactImport.campaign_id == campaign.id)
        .order_by(ContactImport.id.desc())
        .limit(5)
    ).all()
    return {
        "settings": settings_of(campaign, trunk_name or ""),
        "progress": {
            "contacts": {**contacts, "total": sum(contacts.values())},
            "attempts": {**attempts, "total": sum(attempts.values())},
            "outcomes": outcomes,
        },
        "imports": [import_summary(i) for i in imports],
    }


def settings_of(campaign: Campaign, trunk_name: str) -> dict[str, Any]:
    return {
        "name": campaign.name,
        "status": campaign.status,
        "trunk": trunk_name,
        "caller_id": campaign.caller_id_number,
        "caller_id_pool": campaign.caller_id_pool.name if campaign.caller_id_pool else None,
        "caller_name": campaign.caller_id_name,
        "ivr_file": campaign.ivr_file,
        "ivr_vm_file": campaign.ivr_vm_file,
        "transfer_number": campaign.transfer_number,
        "transfer_prefix": campaign.transfer_prefix,
        "press_key": campaign.press_key,
        "opt_out_key": campaign.opt_out_key,
        "amd": campaign.amd_enabled,
        "record_calls": campaign.record_calls,
        "alt_numbers": campaign.dial_alt_numbers,
        "transfer_queue": campaign.transfer_queue,
        "pace_by_queue": campaign.pace_by_queue,
        "abandon_target": campaign.abandon_target,
        "wait_strategy": campaign.wait_strategy,
        "context": campaign.context,
        "exten": campaign.exten,
        "priority": campaign.priority,
        "timeout_ms": campaign.originate_timeout_ms,
        "max_attempts": campaign.max_attempts,
        "retry": dict(campaign.retry_delays),
        "hours": (f"{campaign.calling_hours_start:%H:%M}-{campaign.calling_hours_end:%H:%M}"),
        "days": validation.format_days(list(campaign.calling_days)),
        "region": campaign.region,
        "start_at": _iso(campaign.start_at),
        "end_at": _iso(campaign.end_at),
    }


def import_summary(record: ContactImport) -> dict[str, Any]:
    return {
        "id": record.id,
        "filename": record.filename,
        "status": record.status,
        "rows_total": record.rows_total,
        "accepted": record.accepted,
        "on_dnc": record.on_dnc,
        "duplicates": record.duplicates,
        "rejected": record.rejected,
        "error": record.error,
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
    }


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
