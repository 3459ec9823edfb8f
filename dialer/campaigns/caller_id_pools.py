"""Caller-ID pools: their numbers, daily use, health and rest.

A campaign with a pool sends each call with a number picked from it by the dispatch tick
(`dialer.campaigns.caller_ids`). What is here:
- admin: pools and their numbers (added by hand or from CSV, all of a file or none), resting
  and restoring a number by hand;
- the tick's side: each pool's numbers with their calls today (`choosers`), and the calls it
  gave them (`record_usage`); an attempt that ends not sent gives its call back (a trigger);
- health: each number's answer rate over its pool's `rest_window` (calls sent since its last
  rest ended), beside the pool's; `rest_low_answer_rates` rests the numbers far below their
  pool's (a sign of a "spam likely" label), with the reason kept on the number and logged.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, func, select, text
from sqlalchemy.orm import Session

from dialer.campaigns import validation
from dialer.campaigns.caller_ids import PoolChooser, PoolNumber, where_is
from dialer.campaigns.rules import duration, format_duration
from dialer.campaigns.validation import AlreadyExists, NotFound, SettingError
from dialer.models import CallerId, CallerIdPool

log = logging.getLogger(__name__)

TRUE_WORDS = frozenset({"1", "yes", "y", "true", "default"})


# -- pools ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSettings:
    """Pool settings as typed by an operator; None leaves one as it is."""

    daily_cap: str | int | None = None
    cap_zone: str | None = None
    rest_below: str | float | None = None
    rest_min_calls: str | int | None = None
    rest_window: str | None = None
    rest_for: str | None = None

    def validated(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self.daily_cap is not None:
            values["daily_cap"] = validation.positive_int(self.daily_cap, "daily_cap")
        if self.cap_zone is not None:
            values["cap_zone"] = _zone(self.cap_zone)
        if self.rest_below is not None:
            values["rest_below"] = _ratio(self.rest_below)
        if self.rest_min_calls is not None:
            values["rest_min_calls"] = validation.positive_int(
                self.rest_min_calls, "rest_min_calls"
            )
        if self.rest_window is not None:
            values["rest_window"] = duration(self.rest_window, "rest_window")
        if self.rest_for is not None:
            values["rest_for"] = duration(self.rest_for, "rest_for")
        return values


def add_pool(session: Session, name: str, settings: PoolSettings) -> CallerIdPool:
    name = validation.name(name, "pool")
    if settings.daily_cap is None:
        raise SettingError("daily_cap", "is required (calls per number and day)")
    if session.scalar(select(CallerIdPool.id).where(CallerIdPool.name == name)) is not None:
        raise AlreadyExists(f"a caller ID pool named {name!r} exists already")
    pool = CallerIdPool(name=name, **settings.validated())
    session.add(pool)
    session.flush()
    session.refresh(pool)
    return pool


def update_pool(session: Session, name: str, settings: PoolSettings) -> CallerIdPool:
    values = settings.validated()
    if not values:
        raise SettingError("settings", "nothing to change")
    pool = get_pool(session, name)
    for column, value in values.items():
        setattr(pool, column, value)
    session.flush()
    return pool


def get_pool(session: Session, name: str) -> CallerIdPool:
    pool = session.scalars(select(CallerIdPool).where(CallerIdPool.name == name)).one_or_none()
    if pool is None:
        raise NotFound(f"no caller ID pool named {name!r}")
    return pool


def usable_numbers(session: Session, pool: CallerIdPool, now: dt.datetime | None = None) -> int:
    """Numbers of the pool not resting (whatever their calls today)."""
    now = now or dt.datetime.now(dt.UTC)
    return (
        session.scalar(
            select(func.count()).where(
                CallerId.pool_id == pool.id,
                (CallerId.rested_until.is_(None)) | (CallerId.rested_until <= now),
            )
        )
        or 0
    )


def list_pools(session: Session) -> list[dict[str, Any]]:
    pools = session.scalars(select(CallerIdPool).order_by(CallerIdPool.name))
    return [describe_pool(session, p) for p in pools]


def describe_pool(session: Session, pool: CallerIdPool) -> dict[str, Any]:
    counts = session.execute(
        text(
            "SELECT count(*) AS numbers,"
            " count(*) FILTER (WHERE rested_until > now()) AS resting"
            " FROM caller_ids WHERE pool_id = :id"
        ),
        {"id": pool.id},
    ).one()
    return {
        "name": pool.name,
        "daily_cap": pool.daily_cap,
        "cap_zone": pool.cap_zone,
        "numbers": counts.numbers,
        "resting": counts.resting,
        "rest_below": pool.rest_below,
        "rest_min_calls": pool.rest_min_calls,
        "rest_window": format_duration(pool.rest_window),
        "rest_for": format_duration(pool.rest_for),
    }


# -- numbers ----------------------------------------------------------------------------------


def add_numbers(
    session: Session, pool_name: str, numbers: Iterable[str], *, default: bool = False,
    region: str = "US",
) -> list[CallerId]:  # fmt: skip
    """Add numbers to a pool; any bad or repeated number refuses them all. `default`: the
    (single) number becomes the pool's default, in place of the one before."""
    pool = get_pool(session, pool_name)
    given = list(numbers)
    if default and len(given) != 1:
        raise SettingError("default", "give exactly one number to make the default")
    rows = [_number_row(pool, raw, region, "number") for raw in given]
    _refuse_repeats(session, pool, [(None, r) for r in rows])
    if default:
        _clear_default(session, pool)
        rows[0].is_default = True
    session.add_all(rows)
    session.flush()
    return rows


@dataclass
class NumbersImport:
    added: int = 0
    errors: list[str] = field(default_factory=list)


def import_numbers(
    session: Session, pool_name: str, handle: io.TextIOBase | Any, *, region: str = "US"
) -> NumbersImport:
    """Numbers from CSV (`number`, optional `default` column): all of them or none; each bad
    line named with its reason."""
    pool = get_pool(session, pool_name)
    result = NumbersImport()
    reader = csv.DictReader(handle)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "number" not in header or set(header) - {"number", "default"}:
        raise SettingError("header", f"expected columns number[,default], got {header}")
    reader.fieldnames = header
    rows: list[tuple[int, CallerId]] = []
    for record in reader:
        line = reader.line_num
        try:
            if None in record:
                raise SettingError("row", "more cells than columns")
            row = _number_row(pool, (record.get("number") or "").strip(), region, "number")
            row.is_default = (record.get("default") or "").strip().lower() in TRUE_WORDS
            rows.append((line, row))
        except SettingError as exc:
            result.errors.append(f"line {line}: {exc}")
    defaults = [line for line, r in rows if r.is_default]
    if len(defaults) > 1:
        result.errors.append(f"line {defaults[1]}: default: only one default per pool")
    try:
        _refuse_repeats(session, pool, rows)
    except SettingError as exc:
        result.errors.append(str(exc))
    if result.errors:
        return result
    if defaults:
        _clear_default(session, pool)
    session.add_all([r for _, r in rows])
    session.flush()
    result.added = len(rows)
    return result


def remove_number(session: Session, pool_name: str, number: str, region: str = "US") -> None:
    row = _find(session, pool_name, number, region)
    session.delete(row)
    session.flush()


def rest(
    session: Session, pool_name: str, number: str, *, for_: str, reason: str = "by hand",
    region: str = "US", now: dt.datetime | None = None,
) -> CallerId:  # fmt: skip
    """Take a number out of use until `for_` from now."""
    row = _find(session, pool_name, number, region)
    now = now or dt.datetime.now(dt.UTC)
    row.rested_until = now + duration(for_, "for")
    row.rest_reason = validation.single_line(reason, "reason") or "by hand"
    row.counted_since = row.rested_until
    session.flush()
    return row


def restore(session: Session, pool_name: str, number: str, *, region: str = "US") -> CallerId:
    """Put a resting number back in use now; its answer rate is counted afresh."""
    row = _find(session, pool_name, number, region)
    now = dt.datetime.now(dt.UTC)
    row.rested_until, row.rest_reason, row.counted_since = None, None, now
    session.flush()
    return row


def list_numbers(session: Session, pool_name: str) -> list[dict[str, Any]]:
    pool = get_pool(session, pool_name)
    found = session.execute(
        text(
            """
            SELECT ci.number, ci.country, ci.regions, ci.area, ci.is_default,
                   ci.rested_until > now() AS resting, ci.rested_until, ci.rest_reason,
                   coalesce(u.calls, 0) AS calls_today
              FROM caller_ids ci
              JOIN caller_id_pools p ON p.id = ci.pool_id
              LEFT JOIN caller_id_usage u
                ON u.caller_id_id = ci.id AND u.day = (now() AT TIME ZONE p.cap_zone)::date
             WHERE ci.pool_id = :pool
             ORDER BY ci.number
            """
        ),
        {"pool": pool.id},
    )
    return [
        {
            "number": r.number,
            "default": r.is_default,
            "country": r.country,
            "regions": list(r.regions),
            "calls_today": r.calls_today,
            "daily_cap": pool.daily_cap,
            "resting": bool(r.resting),
            "rested_until": r.rested_until if r.resting else None,
            "rest_reason": r.rest_reason if r.resting else None,
        }  # fmt: skip
        for r in found
    ]


def _number_row(pool: CallerIdPool, raw: str, region: str, field_name: str) -> CallerId:
    number = validation.phone_number(raw, field_name, region)
    country, regions, area = where_is(number)
    return CallerId(pool_id=pool.id, number=number, country=country, regions=sorted(regions),
                    area=area)  # fmt: skip


def _refuse_repeats(
    session: Session, pool: CallerIdPool, rows: list[tuple[int | None, CallerId]]
) -> None:
    seen: set[str] = set()
    stored = set(session.scalars(select(CallerId.number).where(CallerId.pool_id == pool.id)))
    for line, row in rows:
        where = f"line {line}: " if line is not None else ""
        if row.number in seen or row.number in stored:
            raise SettingError(f"{where}number", f"{row.number} is already in pool {pool.name!r}")
        seen.add(row.number)


def _clear_default(session: Session, pool: CallerIdPool) -> None:
    session.execute(
        text("UPDATE caller_ids SET is_default = false WHERE pool_id = :p AND is_default"),
        {"p": pool.id},
    )


def _find(session: Session, pool_name: str, number: str, region: str) -> CallerId:
    pool = get_pool(session, pool_name)
    e164 = validation.phone_number(number, "number", region)
    row = session.scalars(
        select(CallerId).where(CallerId.pool_id == pool.id, CallerId.number == e164)
    ).one_or_none()
    if row is None:
        raise NotFound(f"{e164} is not in pool {pool.name!r}")
    return row


def _zone(value: str) -> str:
    validation.single_line(value, "cap_zone")
    try:
        ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingError(
            "cap_zone", f"{value!r} is not a time zone (e.g. America/New_York)"
        ) from None
    return value.strip()


def _ratio(value: str | float) -> float:
    try:
        ratio = float(value)
    except ValueError:
        raise SettingError("rest_below", f"{value!r} is not a number between 0 and 1") from None
    if not 0 <= ratio < 1:
        raise SettingError("rest_below", f"{value!r} must be at least 0 (never rest) and below 1")
    return ratio


# -- the dispatch tick's side -----------------------------------------------------------------

_POOL_NUMBERS = text(
    """
    SELECT ci.id, ci.pool_id, ci.number, ci.country, ci.regions, ci.area, ci.is_default,
           coalesce(ci.rested_until > :now, false) AS resting, coalesce(u.calls, 0) AS calls,
           p.daily_cap, p.cap_zone
      FROM caller_ids ci
      JOIN caller_id_pools p ON p.id = ci.pool_id
      LEFT JOIN caller_id_usage u
        ON u.caller_id_id = ci.id AND u.day = (CAST(:now AS timestamptz) AT TIME ZONE p.cap_zone)::date
     WHERE ci.pool_id = ANY(:pools)
    """
)


@dataclass
class PoolDay:
    """One pool's numbers for one tick, and the calls the tick gave each."""

    chooser: PoolChooser
    zone: str
    picked: dict[int, int] = field(default_factory=dict)  # attempts created, by number id


def choosers(
    connection: Connection, pool_ids: Iterable[int], now: dt.datetime
) -> dict[int, PoolDay]:
    ids = sorted(set(pool_ids))
    if not ids:
        return {}
    numbers: dict[int, list[PoolNumber]] = {i: [] for i in ids}
    caps: dict[int, tuple[int, str]] = {}
    for r in connection.execute(_POOL_NUMBERS, {"pools": ids, "now": now}):
        numbers[r.pool_id].append(PoolNumber(
            r.id, r.number, r.country, frozenset(r.regions), r.area, r.is_default, r.calls,
            r.resting,
        ))  # fmt: skip
        caps[r.pool_id] = (r.daily_cap, r.cap_zone)
    return {
        pool: PoolDay(PoolChooser(numbers[pool], caps[pool][0]), caps[pool][1])
        for pool in ids
        if pool in caps
    }


_RECORD_USAGE = text(
    """
    INSERT INTO caller_id_usage (caller_id_id, day, calls)
    SELECT v.id, (CAST(:now AS timestamptz) AT TIME ZONE :zone)::date, v.calls
      FROM unnest(CAST(:ids AS integer[]), CAST(:calls AS integer[])) AS v(id, calls)
    ON CONFLICT (caller_id_id, day) DO UPDATE SET calls = caller_id_usage.calls + EXCLUDED.calls
    """
)


def record_usage(connection: Connection, days: Mapping[int, PoolDay], now: dt.datetime) -> None:
    """Add the tick's picks to each number's calls today (in the tick's transaction)."""
    for day in days.values():
        if day.picked:
            ids, calls = zip(*sorted(day.picked.items()), strict=True)
            connection.execute(_RECORD_USAGE, {"ids": list(ids), "calls": list(calls),
                                               "zone": day.zone, "now": now})  # fmt: skip
            day.picked.clear()


# -- health -----------------------------------------------------------------------------------

# The view (migration 0012): each number's answer rate over its pool's window, since its last
# rest ended, beside its pool's.
HEALTH_SQL = "SELECT * FROM caller_id_health {where} ORDER BY pool, number"


def health(connection: Connection, pool: str | None = None) -> list[dict[str, Any]]:
    """Each number's answer rate over its pool's window (since its last rest), beside the
    pool's, and whether it rests."""
    where = "WHERE pool = :pool" if pool is not None else ""
    rows = connection.execute(text(HEALTH_SQL.format(where=where)), {"pool": pool})
    return [
        {
            "pool": r.pool,
            "number": r.number,
            "sent": r.sent,
            "answered": r.answered,
            "answer_rate": r.answer_rate,
            "pool_answer_rate": r.pool_answer_rate,
            "resting": bool(r.resting),
            "rested_until": r.rested_until if r.resting else None,
            "rest_reason": r.rest_reason if r.resting else None,
        }  # fmt: skip
        for r in rows
    ]


def should_rest(sent: int, rate: float | None, pool_rate: float | None, *, below: float,
                min_calls: int) -> bool:  # fmt: skip
    """A number with at least `min_calls` counted whose answer rate is under `below` times its
    pool's (pure)."""
    if below <= 0 or sent < min_calls or rate is None or not pool_rate:
        return False
    return rate < pool_rate * below


_REST = text(
    """
    UPDATE caller_ids SET rested_until = now() + :rest_for, rest_reason = :reason,
                          counted_since = now() + :rest_for
     WHERE id = :id AND (rested_until IS NULL OR rested_until <= now())
    """
)


def rest_low_answer_rates(connection: Connection) -> list[str]:
    """Rest every number whose answer rate has fallen far below its pool's; returns what was
    done, one line per number (also logged)."""
    done: list[str] = []
    for r in connection.execute(text(HEALTH_SQL.format(where=""))):
        if r.resting or not should_rest(r.sent, r.answer_rate, r.pool_answer_rate,
                                        below=r.rest_below, min_calls=r.rest_min_calls):  # fmt: skip
            continue
        reason = (
            f"answer rate {r.answer_rate:.1%} over {r.sent} calls, under"
            f" {r.rest_below:g} x the pool's {r.pool_answer_rate:.1%}"
        )
        if connection.execute(_REST, {"id": r.caller_id_id, "rest_for": r.rest_for,
                                      "reason": reason}).rowcount:  # fmt: skip
            line = f"caller ID {r.number} (pool {r.pool}) rested for {format_duration(r.rest_for)}: {reason}"
            log.warning("%s", line)
            done.append(line)
    return done
