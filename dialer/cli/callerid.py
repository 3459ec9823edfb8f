"""`dialer callerid`: caller-ID pools, their numbers, health and rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dialer.campaigns import caller_id_pools as pools
from dialer.cli.common import echo_fields, echo_table, emit, json_option, unit_of_work

region_option = click.option(
    "--region", default="US", show_default=True, help="Region for national-format numbers."
)


def pool_options(command: Any) -> Any:
    options = [
        click.option("--daily-cap", help="Calls per number and day, at most."),
        click.option("--cap-zone", help="Time zone whose midnight starts a day [default: UTC]."),
        click.option(
            "--rest-below",
            help="Rest a number under this x the pool's answer rate (0: never) [default: 0.5].",
        ),  # fmt: skip
        click.option("--rest-min-calls", help="Calls counted before judging [default: 50]."),
        click.option("--rest-window", help="Calls counted over this: 12h, 1d [default: 1d]."),
        click.option("--rest-for", help="How long a number rests: 12h, 2d [default: 1d]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group()
def callerid() -> None:
    """Caller-ID pools: each call of a campaign with a pool goes out with one of its numbers.

    The number is picked per call: one with the callee's area code, else in the callee's
    state or province, else in the callee's country, else the pool's default; among equals,
    the least used today; never one past its daily cap or resting.

    \b
    Example:
        dialer callerid pool add east --daily-cap 200 --cap-zone America/New_York
        dialer callerid add east +12125550100 +13055550100 +14155550100
        dialer callerid add east +12125550199 --default
        dialer campaign set spring --caller-id-pool east
    """


@callerid.group()
def pool() -> None:
    """Pools: their daily cap and when a number is rested.

    \b
    Example:
        dialer callerid pool add east --daily-cap 200
    """


@pool.command("add")
@click.argument("name")
@pool_options
@json_option
def pool_add(name: str, as_json: bool, **settings: Any) -> None:
    """Add pool NAME (--daily-cap is required).

    \b
    Example:
        dialer callerid pool add east --daily-cap 200 --cap-zone America/New_York
        dialer callerid pool add west --daily-cap 100 --rest-below 0.4 --rest-for 2d
    """
    with unit_of_work() as session:
        data = pools.describe_pool(
            session, pools.add_pool(session, name, pools.PoolSettings(**settings))
        )
    emit(data, as_json, lambda: click.echo(f"added caller ID pool {name}"))


@pool.command("set")
@click.argument("name")
@pool_options
@json_option
def pool_set(name: str, as_json: bool, **settings: Any) -> None:
    """Change pool NAME's settings.

    \b
    Example:
        dialer callerid pool set east --daily-cap 300
    """
    with unit_of_work() as session:
        data = pools.describe_pool(
            session, pools.update_pool(session, name, pools.PoolSettings(**settings))
        )
    emit(data, as_json, lambda: echo_fields(data))


@pool.command("list")
@json_option
def pool_list(as_json: bool) -> None:
    """Every pool, with its numbers and those resting.

    \b
    Example:
        dialer callerid pool list
    """
    with unit_of_work() as session:
        data = pools.list_pools(session)
    emit(data, as_json, lambda: echo_table(
        data, ["name", "daily_cap", "cap_zone", "numbers", "resting", "rest_below", "rest_for"]
    ))  # fmt: skip


@callerid.command("add")
@click.argument("pool_name")
@click.argument("numbers", nargs=-1, required=True)
@click.option("--default", "default", is_flag=True, help="Make the (one) number the default.")
@region_option
@json_option
def add(
    pool_name: str, numbers: tuple[str, ...], default: bool, region: str, as_json: bool
) -> None:
    """Add NUMBERS to pool POOL_NAME; one bad or repeated number refuses them all.

    \b
    Example:
        dialer callerid add east +12125550100 "(305) 555-0100"
        dialer callerid add east +12125550199 --default
    """
    with unit_of_work() as session:
        added = pools.add_numbers(session, pool_name, numbers, default=default, region=region)
        data = {"added": [n.number for n in added]}
    emit(data, as_json, lambda: click.echo(f"added {len(added)} number(s) to {pool_name}"))


@callerid.command("import")
@click.argument("pool_name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@region_option
@json_option
def import_(pool_name: str, path: Path, region: str, as_json: bool) -> None:
    """Add the numbers of a CSV file (columns: number, and optionally default): all or none.

    \b
    Example:
        dialer callerid import east numbers.csv
    """
    with unit_of_work() as session, path.open(newline="", encoding="utf-8-sig") as handle:
        result = pools.import_numbers(session, pool_name, handle, region=region)
        if result.errors:
            for error in result.errors:
                click.echo(f"{path}: {error}", err=True)
            raise click.ClickException(
                f"{len(result.errors)} bad row(s) in {path}: nothing was loaded"
            )
    emit({"added": result.added}, as_json,
         lambda: click.echo(f"added {result.added} number(s) to {pool_name}"))  # fmt: skip


@callerid.command("remove")
@click.argument("pool_name")
@click.argument("number")
@region_option
def remove(pool_name: str, number: str, region: str) -> None:
    """Remove NUMBER from pool POOL_NAME (its past calls keep it as their caller ID).

    \b
    Example:
        dialer callerid remove east +12125550100
    """
    with unit_of_work() as session:
        pools.remove_number(session, pool_name, number, region)
    click.echo(f"removed {number} from {pool_name}")


@callerid.command("list")
@click.argument("pool_name")
@json_option
def list_(pool_name: str, as_json: bool) -> None:
    """The numbers of pool POOL_NAME, their calls today and whether they rest.

    \b
    Example:
        dialer callerid list east --json
    """
    with unit_of_work() as session:
        data = pools.list_numbers(session, pool_name)
    emit(data, as_json, lambda: echo_table(
        data, ["number", "default", "country", "calls_today", "daily_cap", "resting", "rest_reason"]
    ))  # fmt: skip


@callerid.command()
@click.option("--pool", "pool_name", help="One pool [default: all].")
@json_option
def health(pool_name: str | None, as_json: bool) -> None:
    """Each number's answer rate over its pool's window, beside the pool's.

    A number far below its pool (--rest-below) after enough calls is rested automatically:
    often the sign of a "spam likely" label on it.

    \b
    Example:
        dialer callerid health --pool east
    """
    with unit_of_work() as session:
        data = pools.health(session.connection(), pool_name)
    emit(data, as_json, lambda: echo_table(
        data, ["pool", "number", "sent", "answered", "answer_rate", "pool_answer_rate",
               "resting", "rest_reason"]
    ))  # fmt: skip


@callerid.command("rest")
@click.argument("pool_name")
@click.argument("number")
@click.option("--for", "for_", default="1d", show_default=True, help="How long: 4h, 2d.")
@click.option("--reason", default="by hand", show_default=True, help="Why (shown with it).")
@region_option
def rest(pool_name: str, number: str, for_: str, reason: str, region: str) -> None:
    """Take NUMBER of POOL_NAME out of use for a while.

    \b
    Example:
        dialer callerid rest east +12125550100 --for 2d --reason "labelled spam by a carrier"
    """
    with unit_of_work() as session:
        row = pools.rest(session, pool_name, number, for_=for_, reason=reason, region=region)
        until = row.rested_until
    click.echo(f"{row.number} rests until {until:%Y-%m-%d %H:%M}Z")


@callerid.command("restore")
@click.argument("pool_name")
@click.argument("number")
@region_option
def restore(pool_name: str, number: str, region: str) -> None:
    """Put a resting NUMBER of POOL_NAME back in use now.

    \b
    Example:
        dialer callerid restore east +12125550100
    """
    with unit_of_work() as session:
        pools.restore(session, pool_name, number, region=region)
    click.echo(f"{number} is back in use")
