"""`dialer pbx`: the Asterisk servers calls go through, their limits and live state."""

from __future__ import annotations

from typing import Any

import click

from dialer.campaigns import pbxs
from dialer.cli.common import echo_fields, echo_table, emit, json_option, unit_of_work, warn
from dialer.settings import get_settings


def _configured() -> tuple[str, ...]:
    return tuple(get_settings().ami_servers)


@click.group()
def pbx() -> None:
    """PBXs (Asterisk servers): their limits, send rate, latency and state.

    Each PBX takes at most its originates per second and calls up at once, whatever trunks
    they are for; back-pressure lowers its rate when its OriginateResponses come late.

    \b
    Example:
        dialer pbx set east --cps 50 --max-channels 400
        dialer pbx list
    """


@pbx.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List PBXs: limits, current rate, latency, state and why, calls up, trunks served.

    STATE is the one calls are routed by: up (its listener is connected), down,
    shutting_down, refusing, unknown (no listener reports on it) or disabled.

    \b
    Example:
        dialer pbx list
        dialer pbx list --json
    """
    with unit_of_work() as session:
        rows = pbxs.list_pbxs(session, _configured())
    columns = (
        "name",
        "state",
        "max_cps",
        "rate",
        "latency_ms",
        "threshold_ms",
        "calls_up",
        "max_channels",
        "trunks",
        "why",
    )
    emit(rows, as_json, lambda: echo_table([_human(r) for r in rows], columns))


def _human(row: dict[str, Any]) -> dict[str, Any]:
    why = [row["state_reason"]] if row["state"] != "up" and row["state_reason"] else []
    if row["rate_reason"]:
        why.append(f"rate lowered: {row['rate_reason']}")
    if not row["configured_here"]:
        why.append("not configured on this host")
    return {
        **row,
        "rate": f"{row['rate']:g}",
        "threshold_ms": row["latency_threshold_ms"],
        "trunks": ", ".join(row["trunks"]),
        "why": "; ".join(why),
    }


@pbx.command("set")
@click.argument("name")
@click.option("--cps", help="Originates per second it may be sent, at most (e.g. 50).")
@click.option("--max-channels", help="Calls up on it at the same time, at most.")
@click.option(
    "--latency-threshold",
    metavar="MS",
    help="OriginateResponse latency (p90, ms) above which its rate is lowered.",
)
@click.option("--enable/--disable", "enabled", default=None, help="Send new calls to it or not.")
@json_option
def set_(
    name: str,
    cps: str | None,
    max_channels: str | None,
    latency_threshold: str | None,
    enabled: bool | None,
    as_json: bool,
) -> None:
    """Change a PBX's limits (only those given); a new name registers the PBX.

    A disabled PBX takes no new calls: its trunks' calls go through their other PBXs, and its
    calls up carry on.

    \b
    Example:
        dialer pbx set east --cps 50 --max-channels 400
        dialer pbx set default --latency-threshold 800
        dialer pbx set east --disable
    """
    changes = pbxs.PbxChanges(
        cps=cps,
        max_channels=max_channels,
        latency_threshold_ms=latency_threshold,
        enabled=enabled,
    )
    configured = _configured()
    with unit_of_work() as session:
        _, notes = pbxs.set_pbx(session, name, changes, configured)
        session.flush()
        data = pbxs.describe(session, name, configured)
    warn(notes)
    emit(data, as_json, lambda: echo_fields(_human(data)))
