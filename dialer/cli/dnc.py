"""`dialer dnc`: the do-not-call list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dialer.cli.common import echo_table, emit, encoding_option, json_option, unit_of_work
from dialer.contacts import dnc as dnc_list

campaign_option = click.option(
    "--campaign", help="The campaign's own list (default: the global list)."
)
region_option = click.option(
    "--region", help="Region for national-format numbers [default: the campaign's, or US]."
)


@click.group()
def dnc() -> None:
    """Do-not-call list: numbers never dialled, globally or for one campaign.

    \b
    Example:
        dialer dnc add +12125550123 --reason "asked by phone"
    """


@dnc.command()
@click.argument("numbers", nargs=-1, required=True)
@campaign_option
@click.option("--reason", help="Why (kept with the entry).")
@region_option
@json_option
def add(
    numbers: tuple[str, ...],
    campaign: str | None,
    reason: str | None,
    region: str | None,
    as_json: bool,
) -> None:
    """Add numbers; their pending contacts are marked dnc at once.

    One invalid number refuses the whole command (nothing is added).

    \b
    Example:
        dialer dnc add +12125550123 "(212) 555-0124" --reason "asked by phone"
        dialer dnc add 2125550125 --campaign spring
    """
    with unit_of_work() as session:
        result = dnc_list.add(
            session, list(numbers), campaign=campaign, reason=reason, region=region
        )
    data = result.as_dict()
    emit(data, as_json, lambda: _print_result(data))


@dnc.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@campaign_option
@click.option("--reason", help="Why (kept with every entry).")
@region_option
@click.option("--phone-column", default="phone", show_default=True, help="Header if CSV.")
@encoding_option
@json_option
def import_(
    file: Path,
    campaign: str | None,
    reason: str | None,
    region: str | None,
    phone_column: str,
    encoding: str,
    as_json: bool,
) -> None:
    """Add every number of a file (one per line, or a CSV with a phone column).

    Lines that are not valid numbers, or not text in the file's encoding (UTF-8 unless
    --encoding names another), are listed and skipped; the rest are added.

    \b
    Example:
        dialer dnc import national-dnc.txt --reason "national registry"
        dialer dnc import opt-outs.csv --campaign spring --encoding cp1252
    """
    with unit_of_work() as session:
        result = dnc_list.import_file(
            session,
            file,
            campaign=campaign,
            reason=reason,
            region=region,
            phone_column=phone_column,
            encoding=encoding,
        )
    data = result.as_dict()
    emit(data, as_json, lambda: _print_result(data))


def _print_result(data: dict[str, Any]) -> None:
    click.echo(
        f"added {data['added']}, already listed {data['already_listed']},"
        f" contacts marked dnc {data['contacts_marked']}"
    )
    for reject in data["rejected"]:
        click.echo(f"line {reject['line']}: {reject['reason']}: {reject['raw']}", err=True)
    if data["rejected"]:
        click.echo(f"{len(data['rejected'])} line(s) skipped", err=True)


@dnc.command("list")
@campaign_option
@click.option("--global", "global_only", is_flag=True, help="Only the global list.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
def list_(campaign: str | None, global_only: bool, limit: int, as_json: bool) -> None:
    """List entries, newest first (all lists unless --campaign or --global).

    \b
    Example:
        dialer dnc list --global --limit 20
    """
    if campaign and global_only:
        raise click.UsageError("--campaign and --global exclude each other")
    with unit_of_work() as session:
        rows = dnc_list.list_numbers(
            session, campaign=campaign, scope="global" if global_only else "all", limit=limit
        )
    columns = ("number", "campaign", "source", "reason", "added_at")
    emit(rows, as_json, lambda: echo_table(rows, columns))


@dnc.command()
@click.argument("number")
@campaign_option
@region_option
@json_option
def remove(number: str, campaign: str | None, region: str | None, as_json: bool) -> None:
    """Take a number off the global list (or a campaign's).

    Contacts already marked dnc stay so.

    \b
    Example:
        dialer dnc remove +12125550123
    """
    with unit_of_work() as session:
        e164 = dnc_list.remove(session, number, campaign=campaign, region=region)
    data = {"removed": e164, "campaign": campaign}
    emit(data, as_json, lambda: click.echo(f"removed {e164}"))
