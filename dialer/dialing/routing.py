"""Which PBX each new call goes through: the PBXs' load, and the choice by free capacity.

The dispatch tick reads, in one query each, the routes of the trunks it dials and the PBXs
they lead to: state in effect (`dialer.campaigns.pbxs`), limits, the rate back-pressure
allows, and their open attempts (calls up, and those still queued). Then each new attempt
goes to the PBX with the most free capacity among those serving its trunk that can take calls:
`up` ones, or, for a trunk none of whose PBXs is up, `unknown` ones (no listener reports on
them). A PBX's capacity is what `TrunkUsage.spare_capacity` is for a trunk: its channels, and
the calls it can be sent within the tick's lookahead at its current rate; what is in use is
its open calls, and those already waiting for it. Free capacity is compared as a share of
each PBX's own limits (the larger of the two shares in use), so that PBXs of different sizes,
or one slowed by back-pressure, are given calls in proportion to what they take: compared in
calls, a PBX cut to a quarter of the others' rate would always have fewer free and get none.
Every attempt routed in the tick counts at once. Ties go to the PBX given fewer calls in this
tick, then by name.

Each routed attempt also gets the time, from now, at which its PBX's pacing can send it (the
calls already waiting for that PBX and those routed before it, at its current rate): the tick
hands its attempts out in that order. A call takes its trunk's slot and its PBX's together
(`dialer.dialing.pacing`), in the order workers ask; a call for a slower PBX asked for ahead of
its turn would hold the trunk's next slots back until its PBX's comes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

from dialer.campaigns.pbxs import UNKNOWN, UP, current_rate_sql, effective_state_sql
from dialer.models import OPEN_ATTEMPT_STATUSES

DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Route:
    pbx: str
    channel_template: str


@dataclass(slots=True)
class PbxLoad:
    name: str
    state: str  # in effect; `disabled` when not enabled
    reason: str | None
    max_channels: int
    rate: float  # originates per second allowed now
    open: int  # attempts queued, originating or up through it
    queued: int  # of which not yet taken by a worker
    assigned: int = 0  # routed to it by this tick

    def spare(self, lookahead_s: float) -> int:
        """How many more new attempts it may be given now."""
        free_channels = self.max_channels - self.open - self.assigned
        backlog_limit = _backlog_limit(self.rate, lookahead_s) - self.queued
        return max(0, min(free_channels, backlog_limit - self.assigned))

    def used(self, lookahead_s: float) -> float:
        """How full it is, as the larger share of its two limits in use: its channels, and
        the calls it can be sent within the lookahead at its current rate."""
        channels = (self.open + self.assigned) / max(1, self.max_channels)
        backlog = (self.queued + self.assigned) / _backlog_limit(self.rate, lookahead_s)
        return max(channels, backlog)


def _backlog_limit(rate: float, lookahead_s: float) -> int:
    return max(1, math.ceil(rate * lookahead_s - 1e-9))


_ROUTES = text(
    """
    SELECT trunk_id, pbx, channel_template FROM trunk_routes
     WHERE trunk_id = ANY(:trunk_ids) ORDER BY trunk_id, pbx
    """
)

_LOADS = text(
    f"""
    SELECT p.name, p.enabled, p.state_reason, p.max_channels,
           {effective_state_sql("p")} AS state, {current_rate_sql("p")} AS rate,
           coalesce(o.open, 0) AS open, coalesce(o.queued, 0) AS queued
      FROM pbxs p
      LEFT JOIN (SELECT a.pbx, count(*) AS open,
                        count(*) FILTER (WHERE a.status = 'queued') AS queued
                   FROM call_attempts a
                  WHERE a.pbx = ANY(:names) AND a.status = ANY(:open_statuses)
                  GROUP BY a.pbx) o ON o.pbx = p.name
     WHERE p.name = ANY(:names)
    """
)


def trunk_routes(connection: Connection, trunk_ids: Iterable[int]) -> dict[int, list[Route]]:
    ids = sorted(set(trunk_ids))
    routes: dict[int, list[Route]] = defaultdict(list)
    if ids:
        for row in connection.execute(_ROUTES, {"trunk_ids": ids}):
            routes[row.trunk_id].append(Route(row.pbx, row.channel_template))
    return routes


def pbx_loads(connection: Connection, names: Iterable[str]) -> dict[str, PbxLoad]:
    wanted = sorted(set(names))
    if not wanted:
        return {}
    rows = connection.execute(
        _LOADS, {"names": wanted, "open_statuses": list(OPEN_ATTEMPT_STATUSES)}
    )
    return {
        row.name: PbxLoad(
            name=row.name,
            state=row.state if row.enabled else DISABLED,
            reason=row.state_reason,
            max_channels=row.max_channels,
            rate=float(row.rate),
            open=row.open,
            queued=row.queued,
        )
        for row in rows
    }


class Chooser:
    """Routes the tick's attempts: which PBX each goes through (see the module doc)."""

    def __init__(self, loads: dict[str, PbxLoad], lookahead_s: float) -> None:
        self.loads = loads
        self.lookahead_s = lookahead_s
        self.last_turn = 0.0

    def usable(self, routes: Sequence[Route]) -> list[Route]:
        """The routes a new call of this trunk may take now: through PBXs that are up, or
        (none up) whose state is unknown."""
        for wanted in (UP, UNKNOWN):
            found = [r for r in routes if r.pbx in self.loads and self.loads[r.pbx].state == wanted]
            if found:
                return found
        return []

    def why_none(self, routes: Sequence[Route]) -> str:
        """Why `usable(routes)` is empty, for the operator."""
        if not routes:
            return "no route to any PBX (dialer trunk route add)"
        parts = []
        for route in routes:
            load = self.loads.get(route.pbx)
            if load is None:
                parts.append(f"{route.pbx}: not registered")
            else:
                detail = f" ({load.reason})" if load.reason and load.state != DISABLED else ""
                parts.append(f"{route.pbx} {load.state}{detail}")
        return "no PBX can take calls: " + ", ".join(parts)

    def spare(self, routes: Sequence[Route]) -> int:
        return sum(self.loads[r.pbx].spare(self.lookahead_s) for r in routes)

    def pick(self, routes: Sequence[Route]) -> Route | None:
        """The route for one new attempt (its PBX then counts it), or None if all are full;
        `last_turn` is then when its PBX's pacing can send it, in seconds from now."""
        best: Route | None = None
        best_key: tuple[float, int, str] | None = None
        for route in routes:
            load = self.loads[route.pbx]
            if load.spare(self.lookahead_s) <= 0:
                continue
            key = (load.used(self.lookahead_s), load.assigned, route.pbx)
            if best_key is None or key < best_key:
                best, best_key = route, key
        if best is not None:
            load = self.loads[best.pbx]
            self.last_turn = (load.queued + load.assigned) / load.rate
            load.assigned += 1
        return best

    def unpick(self, route: Route) -> None:
        """An attempt routed by `pick` was not created after all."""
        self.loads[route.pbx].assigned -= 1
