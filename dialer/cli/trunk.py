"""`dialer trunk`: the SIP trunks calls leave through, their limits, and the PBXs (routes)
each is reachable through."""

from __future__ import annotations

from typing import Any

import click

from dialer.campaigns import trunks
from dialer.cli.common import echo_fields, echo_table, emit, json_option, unit_of_work, warn
from dialer.settings import get_settings


def _configured() -> tuple[str, ...]:
    return tuple(get_settings().ami_servers)


@click.group()
def trunk() -> None:
    """SIP trunks: add, change and list them with their dialling limits and routes.

    A trunk (one carrier account) is reachable through one or more PBXs, each with its own
    dial string: its routes. Its limits hold across all of them together.

    \b
    Example:
        dialer trunk add MC --cps 10 --max-channels 30
        dialer trunk route add MC east --channel-template 'PJSIP/{number}@mc-east'
    """


@trunk.command()
@click.argument("name")
@click.option("--cps", required=True, help="Calls started per second, at most (e.g. 10, 0.5).")
@click.option("--max-channels", required=True, help="Calls up at the same time, at most.")
@click.option(
    "--channel-template",
    default=trunks.DEFAULT_CHANNEL_TEMPLATE,
    show_default=True,
    help="Asterisk dial string on its first PBX; {number} and {trunk} are filled in.",
)
@click.option("--pbx", default="default", show_default=True, help="The PBX of its first route.")
@json_option
def add(
    name: str, cps: str, max_channels: str, channel_template: str, pbx: str, as_json: bool
) -> None:
    """Add a trunk named as its PJSIP endpoint, with its first route.

    \b
    Example:
        dialer trunk add MC --cps 10 --max-channels 30
        dialer trunk add local --cps 5 --max-channels 5 --channel-template 'Local/{number}@outbound'
        dialer trunk add MC --cps 10 --max-channels 30 --pbx east
    """
    notes: list[str] = []
    with unit_of_work() as session:
        data = trunks.describe(
            trunks.add(
                session,
                name,
                cps=cps,
                max_channels=max_channels,
                channel_template=channel_template,
                pbx=pbx,
                configured=_configured(),
                notes=notes,
            )
        )
    warn(notes)
    emit(data, as_json, lambda: click.echo(f"added trunk {name} (route on PBX {pbx})"))


@trunk.command("set")
@click.argument("name")
@click.option("--cps", help="Calls started per second, at most.")
@click.option("--max-channels", help="Calls up at the same time, at most.")
@click.option(
    "--channel-template",
    help="Asterisk dial string with {number}, for its route on --pbx (or its only route).",
)
@click.option(
    "--pbx",
    help="With --channel-template: which route. Alone: move the trunk's only route there.",
)
@click.option("--enable/--disable", "enabled", default=None, help="Allow or stop calls on it.")
@json_option
def set_(
    name: str,
    cps: str | None,
    max_channels: str | None,
    channel_template: str | None,
    pbx: str | None,
    enabled: bool | None,
    as_json: bool,
) -> None:
    """Change a trunk's settings (only those given).

    \b
    Example:
        dialer trunk set MC --cps 20
        dialer trunk set MC --disable
        dialer trunk set MC --pbx east --channel-template 'PJSIP/{number}@mc-east'
    """
    changes = trunks.TrunkChanges(
        cps=cps,
        max_channels=max_channels,
        channel_template=channel_template,
        pbx=pbx,
        enabled=enabled,
    )
    notes: list[str] = []
    with unit_of_work() as session:
        updated = trunks.update(session, name, changes, configured=_configured(), notes=notes)
        data = trunks.describe(updated)
    warn(notes)
    emit(data, as_json, lambda: echo_fields(_human(data)))


@trunk.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List trunks with their limits, routes and the channels in use now.

    \b
    Example:
        dialer trunk list --json
    """
    with unit_of_work() as session:
        rows = trunks.list_trunks(session)
    columns = ("name", "cps", "max_channels", "channels_in_use", "enabled", "routes")
    emit(rows, as_json, lambda: echo_table([_human(r) for r in rows], columns))


def _human(data: dict[str, Any]) -> dict[str, Any]:
    routes = ", ".join(f"{r['pbx']}: {r['channel_template']}" for r in data["routes"])
    return {**data, "routes": routes or "none (its calls wait)"}


@trunk.group()
def route() -> None:
    """The PBXs a trunk is reachable through, each with its own dial string.

    A call goes through the route whose PBX has the most free capacity among those that can
    take calls now; with none, the trunk's calls wait.

    \b
    Example:
        dialer trunk route add MC east --channel-template 'PJSIP/{number}@mc-east'
        dialer trunk route remove MC default
    """


@route.command("add")
@click.argument("trunk_name", metavar="TRUNK")
@click.argument("pbx")
@click.option(
    "--channel-template",
    default=trunks.DEFAULT_CHANNEL_TEMPLATE,
    show_default=True,
    help="Asterisk dial string on that PBX; {number} and {trunk} are filled in.",
)
@json_option
def route_add(trunk_name: str, pbx: str, channel_template: str, as_json: bool) -> None:
    """Make TRUNK reachable through PBX too.

    The PBX must be registered (`dialer pbx set`) or configured on this host; one that this
    host has no AMI settings for is accepted with a warning (another host may send its calls).

    \b
    Example:
        dialer trunk route add MC east --channel-template 'PJSIP/{number}@mc-east'
    """
    notes: list[str] = []
    with unit_of_work() as session:
        data = trunks.describe(
            trunks.route_add(
                session,
                trunk_name,
                pbx,
                channel_template=channel_template,
                configured=_configured(),
                notes=notes,
            )
        )
    warn(notes)
    emit(data, as_json, lambda: click.echo(f"trunk {trunk_name}: route added on PBX {pbx}"))


@route.command("remove")
@click.argument("trunk_name", metavar="TRUNK")
@click.argument("pbx")
@json_option
def route_remove(trunk_name: str, pbx: str, as_json: bool) -> None:
    """Stop sending TRUNK's new calls through PBX (calls up there carry on).

    \b
    Example:
        dialer trunk route remove MC default
    """
    notes: list[str] = []
    with unit_of_work() as session:
        data = trunks.describe(trunks.route_remove(session, trunk_name, pbx, notes=notes))
    warn(notes)
    emit(data, as_json, lambda: click.echo(f"trunk {trunk_name}: route on PBX {pbx} removed"))
