"""`dialer trunk`: the SIP trunks calls leave through, and their limits."""

from __future__ import annotations

import click

from dialer.campaigns import trunks
from dialer.cli.common import echo_fields, echo_table, emit, json_option, unit_of_work


@click.group()
def trunk() -> None:
    """SIP trunks: add, change and list them with their dialling limits.

    \b
    Example:
        dialer trunk add MC --cps 10 --max-channels 30
    """


@trunk.command()
@click.argument("name")
@click.option("--cps", required=True, help="Calls started per second, at most (e.g. 10, 0.5).")
@click.option("--max-channels", required=True, help="Calls up at the same time, at most.")
@click.option(
    "--channel-template",
    default=trunks.DEFAULT_CHANNEL_TEMPLATE,
    show_default=True,
    help="Asterisk dial string; {number} and {trunk} are filled in.",
)
@click.option("--pbx", default="default", show_default=True, help="Asterisk server it is on.")
@json_option
def add(
    name: str, cps: str, max_channels: str, channel_template: str, pbx: str, as_json: bool
) -> None:
    """Add a trunk named as its PJSIP endpoint.

    \b
    Example:
        dialer trunk add MC --cps 10 --max-channels 30
        dialer trunk add local --cps 5 --max-channels 5 --channel-template 'Local/{number}@outbound'
    """
    with unit_of_work() as session:
        data = trunks.describe(
            trunks.add(
                session,
                name,
                cps=cps,
                max_channels=max_channels,
                channel_template=channel_template,
                pbx=pbx,
            )
        )
    emit(data, as_json, lambda: click.echo(f"added trunk {name}"))


@trunk.command("set")
@click.argument("name")
@click.option("--cps", help="Calls started per second, at most.")
@click.option("--max-channels", help="Calls up at the same time, at most.")
@click.option("--channel-template", help="Asterisk dial string with {number}.")
@click.option("--pbx", help="Asterisk server it is on.")
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
    """
    changes = trunks.TrunkChanges(
        cps=cps,
        max_channels=max_channels,
        channel_template=channel_template,
        pbx=pbx,
        enabled=enabled,
    )
    with unit_of_work() as session:
        data = trunks.describe(trunks.update(session, name, changes))
    emit(data, as_json, lambda: echo_fields(data))


@trunk.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List trunks with their limits and the channels in use now.

    \b
    Example:
        dialer trunk list --json
    """
    with unit_of_work() as session:
        rows = trunks.list_trunks(session)
    columns = ("name", "pbx", "cps", "max_channels", "channels_in_use", "enabled")
    emit(rows, as_json, lambda: echo_table(rows, (*columns, "channel_template")))
