"""Do-not-call list: numbers never to dial, globally or for one campaign.

Adding a number also marks the matching pending contacts `dnc` at once (every campaign's for a
global entry), so a list imported earlier stops being dialled. Contacts being dialled right now
are left to finish; the dispatcher checks the list again at dial time.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from dialer.campaigns import validation
from dialer.campaigns.service import DEFAULT_REGION
from dialer.campaigns.service import get as get_campaign
from dialer.campaigns.validation import NotFound, SettingError
from dialer.contacts.bulkphone import BulkNormalizer
from dialer.contacts.csvsource import (
    UTF8,
    detect_delimiter,
    encoding_label,
    file_encoding,
    parse_record,
    physical_lines,
    split_records,
)
from dialer.models import Campaign, Contact, DncNumber
from dialer.phone import InvalidNumber

# Reading a DNC file: numbers are batched into one statement each.
BATCH = 5000


@dataclass
class DncResult:
    added: int = 0
    already_listed: int = 0
    contacts_marked: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {line, raw, reason}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scope(session: Session, campaign: str | None, region: str | None) -> tuple[int | None, str]:
    """(campaign id or None for global, region to read national numbers with)."""
    if campaign is None:
        return None, validation.region(region) if region else DEFAULT_REGION
    found = get_campaign(session, campaign)
    return found.id, validation.region(region) if region else found.region


def add(
    session: Session,
    numbers: Sequence[str],
    *,
    campaign: str | None = None,
    reason: str | None = None,
    region: str | None = None,
    source: str = "manual",
) -> DncResult:
    """Add numbers; all of them are checked first, so one bad number adds nothing."""
    if not numbers:
        raise SettingError("number", "give at least one number")
    campaign_id, number_region = _scope(session, campaign, region)
    if reason is not None:
        validation.single_line(reason, "reason")
    e164s = [validation.phone_number(n, "number", number_region) for n in numbers]
    return add_e164(session, e164s, campaign_id=campaign_id, reason=reason, source=source)


def add_e164(
    session: Session,
    e164s: Iterable[str],
    *,
    campaign_id: int | None,
    reason: str | None = None,
    source: str = "manual",
) -> DncResult:
    """Add already-normalised numbers (e.g. an opt-out key press) and mark their contacts.

    Calls to these numbers being sent right now are waited for first (their contact rows are
    locked while the worker's last check and send run, see `dialer.dialing.originate`), and the entry
    is stamped after that wait: no call reaches the PBX after `added_at`.
    """
    unique = sorted(set(e164s))
    result = DncResult()
    if not unique:
        return result
    _wait_for_sends(session, unique, campaign_id)
    inserted = session.scalars(
        insert(DncNumber)
        .values(
            [
                {
                    "phone_e164": n,
                    "campaign_id": campaign_id,
                    "source": source,
                    "reason": reason,
                    # The time now, after the wait, not when the transaction began.
                    "added_at": func.clock_timestamp(),
                }
                for n in unique
            ]
        )
        .on_conflict_do_nothing()
        .returning(DncNumber.phone_e164)
    ).all()
    result.added = len(inserted)
    result.already_listed = len(unique) - len(inserted)
    result.contacts_marked = _mark_contacts(session, unique, campaign_id)
    return result


# The advisory lock space of phone numbers ("dnu"): a worker sending to a contact's alternate
# number, or under frequency rules, holds its number's lock from its last checks to its send.
NUMBER_LOCK_KEY = 0x646E75
LOCK_NUMBERS_SQL = f"""
    SELECT pg_advisory_xact_lock({NUMBER_LOCK_KEY}, hashtext(n))
      FROM unnest(CAST(:phones AS text[])) AS n ORDER BY n
"""


def _wait_for_sends(session: Session, e164s: list[str], campaign_id: int | None) -> None:
    """Lock the contacts these entries cover (in id order: concurrent adds cannot deadlock),
    then the numbers themselves, for the calls to contacts' alternates."""
    query = (
        select(Contact.id)
        .where(Contact.phone_e164.in_(e164s))
        .order_by(Contact.id)
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE, as the worker takes it
    )
    if campaign_id is not None:
        query = query.where(Contact.campaign_id == campaign_id)
    session.execute(query).all()
    session.execute(text(LOCK_NUMBERS_SQL), {"phones": e164s})


def _mark_contacts(session: Session, e164s: list[str], campaign_id: int | None) -> int:
    query = (
        update(Contact)
        .where(Contact.phone_e164.in_(e164s), Contact.status == "pending")
        .values(status="dnc")
    )
    if campaign_id is not None:
        query = query.where(Contact.campaign_id == campaign_id)
    return session.execute(query, execution_options={"synchronize_session": False}).rowcount


def import_file(
    session: Session,
    path: str | Path,
    *,
    campaign: str | None = None,
    reason: str | None = None,
    region: str | None = None,
    phone_column: str = "phone",
    encoding: str = UTF8,
) -> DncResult:
    """Add every number of a file: one per line, or a CSV whose header has a phone column.

    Lines that are not valid numbers, or not text in `encoding` (utf-8 unless given, e.g.
    cp1252), are reported, not added; the valid ones are added.
    """
    codec = file_encoding(encoding)
    campaign_id, number_region = _scope(session, campaign, region)
    if reason is not None:
        validation.single_line(reason, "reason")
    result = DncResult()
    try:
        with Path(path).open("rb") as stream:
            normalizer = BulkNormalizer(number_region)
            numbers = _numbers(stream, normalizer, phone_column, codec, result)
            while batch := list(itertools.islice(numbers, BATCH)):
                part = add_e164(
                    session, batch, campaign_id=campaign_id, reason=reason, source="import"
                )
                _merge(result, part)
    except OSError as exc:
        raise SettingError("file", f"cannot read {path}: {exc.strerror or exc}") from None
    return result


def _numbers(
    stream: BinaryIO,
    normalizer: BulkNormalizer,
    phone_column: str,
    encoding: str,
    result: DncResult,
) -> Iterator[str]:
    """The file's numbers in E.164; unusable lines are appended to `result.rejected`."""
    column: int | None = None
    delimiter = ","

    def reject(line_no: int, data: bytes, why: str) -> None:
        raw = data.decode(encoding, "replace").rstrip("\r\n")
        result.rejected.append({"line": line_no, "raw": raw, "reason": why})

    for line_no, data, complete in split_records(physical_lines(stream), ","):
        try:
            line = data.decode(encoding)
        except UnicodeDecodeError:
            reject(line_no, data, f"not {encoding_label(encoding)} text")
            continue
        if not line.strip():
            continue
        if not complete:
            reject(line_no, data, "a quoted field is never closed")
            continue
        if column is None:
            column, delimiter, is_header = _first_line(line, phone_column)
            if is_header:
                continue
        try:
            values = parse_record(line, delimiter)
        except csv.Error as exc:
            reject(line_no, data, f"malformed line: {exc}")
            continue
        try:
            yield normalizer.normalize(values[column] if column < len(values) else "").e164
        except InvalidNumber as exc:
            reject(line_no, data, str(exc))


def _first_line(line: str, phone_column: str) -> tuple[int, str, bool]:
    """(phone column index, delimiter, is it a header?) from a file's first line."""
    delimiter = detect_delimiter(line)
    names = [v.strip().lower() for v in next(csv.reader(io.StringIO(line), delimiter=delimiter))]
    if phone_column.lower() in names:
        return names.index(phone_column.lower()), delimiter, True
    # No header: the number is the first field; a first line that is not a number is a header.
    first = names[0] if names else ""
    looks_like_header = not any(ch.isdigit() for ch in first)
    return 0, delimiter, looks_like_header


def _merge(total: DncResult, part: DncResult) -> None:
    total.added += part.added
    total.already_listed += part.already_listed
    total.contacts_marked += part.contacts_marked


def remove(
    session: Session, number: str, *, campaign: str | None = None, region: str | None = None
) -> str:
    """Take a number off the list (global, or the campaign's); returns its E.164 form.

    Contacts already marked `dnc` stay so: re-import them to dial them again.
    """
    campaign_id, number_region = _scope(session, campaign, region)
    e164 = validation.phone_number(number, "number", number_region)
    scope = (
        DncNumber.campaign_id.is_(None)
        if campaign_id is None
        else DncNumber.campaign_id == campaign_id
    )
    removed = session.execute(delete(DncNumber).where(DncNumber.phone_e164 == e164, scope))
    if not removed.rowcount:
        where = f"campaign {campaign!r}'s list" if campaign else "the global list"
        raise NotFound(f"{e164} is not on {where}")
    return e164


def list_numbers(
    session: Session,
    *,
    campaign: str | None = None,
    scope: str = "all",
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Entries, newest first: scope `all`, `global`, or one campaign's (`campaign`)."""
    query = (
        select(DncNumber, Campaign.name)
        .outerjoin(Campaign, Campaign.id == DncNumber.campaign_id)
        .order_by(DncNumber.added_at.desc(), DncNumber.id.desc())
    )
    if campaign is not None:
        query = query.where(DncNumber.campaign_id == get_campaign(session, campaign).id)
    elif scope == "global":
        query = query.where(DncNumber.campaign_id.is_(None))
    if limit is not None:
        query = query.limit(limit)
    return [
        {
            "number": entry.phone_e164,
            "campaign": campaign_name,
            "source": entry.source,
            "reason": entry.reason,
            "added_at": entry.added_at.isoformat(),
        }
        for entry, campaign_name in session.execute(query).all()
    ]
