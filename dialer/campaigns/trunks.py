"""Trunks: where calls leave, with their dialling limits (calls per second, channels)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dialer.campaigns import validation
from dialer.campaigns.validation import AlreadyExists, NotFound
from dialer.models import OPEN_ATTEMPT_STATUSES, CallAttempt, Trunk
from dialer.settings import DEFAULT_PBX

DEFAULT_CHANNEL_TEMPLATE = "PJSIP/{number}@{trunk}"


@dataclass(frozen=True)
class TrunkChanges:
    """Settings to apply to a trunk; None leaves a setting as it is."""

    cps: float | str | None = None
    max_channels: int | str | None = None
    channel_template: str | None = None
    pbx: str | None = None
    enabled: bool | None = None

    def validated(self) -> dict[str, Any]:
        """{column: value} for every given setting, or SettingError naming the first bad one."""
        values: dict[str, Any] = {}
        if self.cps is not None:
            values["cps"] = validation.positive_number(self.cps, "cps")
        if self.max_channels is not None:
            values["max_channels"] = validation.positive_int(self.max_channels, "max_channels")
        if self.channel_template is not None:
            values["channel_template"] = validation.channel_template(self.channel_template)
        if self.pbx is not None:
            values["pbx"] = validation.trunk_name(self.pbx, "pbx")
        if self.enabled is not None:
            values["enabled"] = self.enabled
        return values


def get(session: Session, name: str) -> Trunk:
    trunk = session.scalars(select(Trunk).where(Trunk.name == name)).one_or_none()
    if trunk is None:
        raise NotFound(f"no trunk named {name!r}")
    return trunk


def add(
    session: Session,
    name: str,
    *,
    cps: float | str,
    max_channels: int | str,
    channel_template: str = DEFAULT_CHANNEL_TEMPLATE,
    pbx: str = DEFAULT_PBX,
) -> Trunk:
    trunk_name = validation.trunk_name(name, "name")
    values = TrunkChanges(
        cps=cps, max_channels=max_channels, channel_template=channel_template, pbx=pbx
    ).validated()
    if session.scalar(select(Trunk.id).where(Trunk.name == trunk_name)) is not None:
        raise AlreadyExists(f"a trunk named {trunk_name!r} exists already")
    trunk = Trunk(name=trunk_name, **values)
    session.add(trunk)
    session.flush()
    return trunk


def update(session: Session, name: str, changes: TrunkChanges) -> Trunk:
    values = changes.validated()
    if not values:
        raise validation.SettingError("settings", "nothing to change")
    trunk = get(session, name)
    for column, value in values.items():
        setattr(trunk, column, value)
    session.flush()
    return trunk


def list_trunks(session: Session) -> list[dict[str, Any]]:
    """Every trunk with its settings and the channels its open attempts hold right now."""
    open_channels = (
        select(CallAttempt.trunk_id, func.count().label("n"))
        .where(CallAttempt.status.in_(OPEN_ATTEMPT_STATUSES))
        .group_by(CallAttempt.trunk_id)
        .subquery()
    )
    rows = session.execute(
        select(Trunk, func.coalesce(open_channels.c.n, 0))
        .outerjoin(open_channels, open_channels.c.trunk_id == Trunk.id)
        .order_by(Trunk.name)
    ).all()
    return [describe(trunk, channels_in_use=int(n)) for trunk, n in rows]


def describe(trunk: Trunk, *, channels_in_use: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": trunk.name,
        "pbx": trunk.pbx,
        "cps": trunk.cps,
        "max_channels": trunk.max_channels,
        "channel_template": trunk.channel_template,
        "enabled": trunk.enabled,
    }
    if channels_in_use is not None:
        data["channels_in_use"] = channels_in_use
    return data
