"""Trunks: where calls leave, with their dialling limits (calls per second, channels), and the
PBXs each is reachable through (its routes, each with its own dial string template).

A trunk's limits hold across all its routes together; each PBX adds its own limits
(`dialer.campaigns.pbxs`). The dispatcher sends each call through the route whose PBX has the
most free capacity among those that can take calls (`dialer.dialing.routing`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from dialer.campaigns import pbxs, validation
from dialer.campaigns.validation import AlreadyExists, NotFound
from dialer.models import DEFAULT_CHANNEL_TEMPLATE, OPEN_ATTEMPT_STATUSES, CallAttempt, Trunk
from dialer.models import TrunkRoute as Route
from dialer.settings import DEFAULT_PBX


@dataclass(frozen=True)
class TrunkChanges:
    """Settings to apply to a trunk; None leaves a setting as it is.

    `channel_template` and `pbx` change its route: the one on `pbx` (or its only route) gets
    the template; `pbx` alone moves a trunk's only route to that PBX.
    """

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
            values["pbx"] = validation.pbx_name(self.pbx, "pbx")
        if self.enabled is not None:
            values["enabled"] = self.enabled
        return values


def get(session: Session, name: str) -> Trunk:
    trunk = session.scalars(
        select(Trunk).where(Trunk.name == name).options(selectinload(Trunk.routes))
    ).one_or_none()
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
    configured: Collection[str] = (DEFAULT_PBX,),
    notes: list[str] | None = None,
) -> Trunk:
    """A new trunk with its first route (on `pbx`, with `channel_template`). `configured`: the
    PBXs this host's settings know; `notes` gets the warnings for the operator."""
    trunk_name = validation.trunk_name(name, "name")
    values = TrunkChanges(
        cps=cps, max_channels=max_channels, channel_template=channel_template, pbx=pbx
    ).validated()
    if session.scalar(select(Trunk.id).where(Trunk.name == trunk_name)) is not None:
        raise AlreadyExists(f"a trunk named {trunk_name!r} exists already")
    _, warnings = pbxs.ensure_known(session, values["pbx"], configured)
    trunk = Trunk(name=trunk_name, cps=values["cps"], max_channels=values["max_channels"])
    trunk.routes.append(Route(pbx=values["pbx"], channel_template=values["channel_template"]))
    session.add(trunk)
    session.flush()
    if notes is not None:
        notes.extend(warnings)
    return trunk


def update(
    session: Session,
    name: str,
    changes: TrunkChanges,
    *,
    configured: Collection[str] = (DEFAULT_PBX,),
    notes: list[str] | None = None,
) -> Trunk:
    values = changes.validated()
    if not values:
        raise validation.SettingError("settings", "nothing to change")
    trunk = get(session, name)
    template = values.pop("channel_template", None)
    pbx = values.pop("pbx", None)
    for column, value in values.items():
        setattr(trunk, column, value)
    if template is not None or pbx is not None:
        _change_route(session, trunk, pbx, template, configured, notes)
    session.flush()
    return trunk


def _change_route(
    session: Session,
    trunk: Trunk,
    pbx: str | None,
    template: str | None,
    configured: Collection[str],
    notes: list[str] | None,
) -> None:
    routes = {r.pbx: r for r in trunk.routes}
    if pbx is not None and pbx in routes:
        if template is not None:
            routes[pbx].channel_template = template
        return
    if len(routes) != 1:
        on = ", ".join(sorted(routes)) or "no PBX"
        if pbx is None:
            raise validation.SettingError(
                "pbx", f"trunk {trunk.name} has routes on {on}: say which with --pbx"
            )
        raise validation.SettingError(
            "pbx",
            f"trunk {trunk.name} has routes on {on}, none on {pbx}: add one with "
            f"`dialer trunk route add {trunk.name} {pbx}`",
        )
    (route,) = routes.values()
    if pbx is None:
        assert template is not None
        route.channel_template = template
        return
    # The trunk's only route moves to another PBX (`--pbx` as it was before routes).
    _, warnings = pbxs.ensure_known(session, pbx, configured)
    kept = template if template is not None else route.channel_template
    trunk.routes.remove(route)
    session.flush()
    trunk.routes.append(Route(pbx=pbx, channel_template=kept))
    if notes is not None:
        notes.extend(warnings)


def route_add(
    session: Session,
    trunk_name: str,
    pbx: str,
    *,
    channel_template: str = DEFAULT_CHANNEL_TEMPLATE,
    configured: Collection[str] = (DEFAULT_PBX,),
    notes: list[str] | None = None,
) -> Trunk:
    """Make trunk `trunk_name` reachable through `pbx` too, with that PBX's dial string."""
    template = validation.channel_template(channel_template)
    trunk = get(session, trunk_name)
    pbx = validation.pbx_name(pbx, "pbx")
    if any(r.pbx == pbx for r in trunk.routes):
        raise AlreadyExists(f"trunk {trunk.name} already has a route on PBX {pbx}")
    _, warnings = pbxs.ensure_known(session, pbx, configured)
    trunk.routes.append(Route(pbx=pbx, channel_template=template))
    session.flush()
    if notes is not None:
        notes.extend(warnings)
    return trunk


def route_remove(
    session: Session, trunk_name: str, pbx: str, *, notes: list[str] | None = None
) -> Trunk:
    """Stop sending the trunk's new calls through `pbx` (calls up there carry on)."""
    trunk = get(session, trunk_name)
    route = next((r for r in trunk.routes if r.pbx == pbx), None)
    if route is None:
        on = ", ".join(r.pbx for r in trunk.routes) or "no PBX"
        raise NotFound(f"trunk {trunk.name} has no route on PBX {pbx!r} (it has: {on})")
    trunk.routes.remove(route)
    session.flush()
    if not trunk.routes and notes is not None:
        notes.append(
            f"trunk {trunk.name} has no route left: its campaigns' calls wait until one is added"
        )
    return trunk


def list_trunks(session: Session) -> list[dict[str, Any]]:
    """Every trunk with its settings, routes and the channels its open attempts hold now."""
    open_channels = (
        select(CallAttempt.trunk_id, func.count().label("n"))
        .where(CallAttempt.status.in_(OPEN_ATTEMPT_STATUSES))
        .group_by(CallAttempt.trunk_id)
        .subquery()
    )
    rows = session.execute(
        select(Trunk, func.coalesce(open_channels.c.n, 0))
        .outerjoin(open_channels, open_channels.c.trunk_id == Trunk.id)
        .options(selectinload(Trunk.routes))
        .order_by(Trunk.name)
    ).all()
    return [describe(trunk, channels_in_use=int(n)) for trunk, n in rows]


def describe(trunk: Trunk, *, channels_in_use: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": trunk.name,
        "cps": trunk.cps,
        "max_channels": trunk.max_channels,
        "enabled": trunk.enabled,
        "routes": [
            {"pbx": r.pbx, "channel_template": r.channel_template}
            for r in sorted(trunk.routes, key=lambda r: r.pbx)
        ],
    }
    if channels_in_use is not None:
        data["channels_in_use"] = channels_in_use
    return data
