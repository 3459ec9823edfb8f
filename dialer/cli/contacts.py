"""`dialer contacts`: load contact lists into campaigns."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from dialer.cli.common import emit, encoding_option, json_option, operator_errors, session_factory
from dialer.contacts import importer


@click.group()
def contacts() -> None:
    """Contact lists: import CSV files into a campaign.

    \b
    Example:
        dialer contacts import spring contacts.csv --rejects rejects.csv
    """


@contacts.command("import")
@click.argument("campaign")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--phone-column", default="phone", show_default=True, help="Header of the number column."
)
@click.option(
    "--alt-phone-columns",
    default="",
    help="Headers of the contact's other numbers, comma-separated, in the order to try them.",
)
@click.option("--region", help="Region for national-format numbers [default: the campaign's].")
@encoding_option
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write rejected rows (line, reason, raw text) to this CSV file (UTF-8).",
)
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes [default: cores].")
@json_option
def import_(
    campaign: str,
    file: Path,
    phone_column: str,
    alt_phone_columns: str,
    region: str | None,
    encoding: str,
    rejects_path: Path | None,
    workers: int | None,
    as_json: bool,
) -> None:
    """Import a CSV file (with a header row) into a campaign's contacts.

    UTF-8 with or without BOM, or the encoding --encoding names (cp1252 or latin-1 for a
    file a spreadsheet saved as "CSV"); comma, semicolon or tab separated. The phone column
    is required; first_name/last_name (or name) columns become the contact's name,
    --alt-phone-columns its other numbers (each normalised on its own; a bad one rejects the
    row), and every other column is kept in its fields. Invalid or missing numbers and malformed rows
    (including rows that are not text in the encoding) are rejected with their line number;
    numbers already in the campaign are counted as duplicates; numbers on the do-not-call
    list are loaded as dnc and never dialled. Importing the same file again adds nothing.
    The rejects file is UTF-8; its cells a spreadsheet would run as formulas start with '.

    \b
    Example:
        dialer contacts import spring contacts.csv --rejects rejects.csv
        dialer contacts import spring export.csv --phone-column Mobile --region GB --json
        dialer contacts import spring excel-export.csv --encoding cp1252
        dialer contacts import spring crm.csv --phone-column phone --alt-phone-columns mobile,work
    """
    alternates = [c.strip() for c in alt_phone_columns.split(",") if c.strip()]
    show_bar = not as_json and sys.stderr.isatty()
    with operator_errors(), session_factory() as factory:
        if show_bar:
            with click.progressbar(
                length=file.stat().st_size, label="importing", file=sys.stderr
            ) as bar:
                summary = importer.import_contacts(
                    factory,
                    campaign,
                    file,
                    phone_column=phone_column,
                    alt_phone_columns=alternates,
                    region=region,
                    encoding=encoding,
                    rejects_path=rejects_path,
                    workers=workers,
                    progress=_advance(bar),
                )
        else:
            summary = importer.import_contacts(
                factory,
                campaign,
                file,
                phone_column=phone_column,
                alt_phone_columns=alternates,
                region=region,
                encoding=encoding,
                rejects_path=rejects_path,
                workers=workers,
            )
    data = summary.as_dict()
    emit(data, as_json, lambda: _print_summary(data))


def _advance(bar: Any):
    done = 0

    def update(position: int) -> None:
        nonlocal done
        bar.update(position - done)
        done = position

    return update


def _print_summary(data: dict[str, Any]) -> None:
    click.echo(
        f"import #{data['import_id']} into {data['campaign']}: {data['rows_total']} rows in"
        f" {data['seconds']:.1f} s"
    )
    click.echo(f"  loaded to dial  {data['accepted']}")
    click.echo(f"  loaded as DNC   {data['on_dnc']}")
    click.echo(f"  duplicates      {data['duplicates']}")
    click.echo(f"  rejected        {data['rejected']}")
    if data["blank_lines"]:
        click.echo(f"  blank lines     {data['blank_lines']} (skipped)")
    if data["rejects_file"]:
        click.echo(f"rejected rows written to {data['rejects_file']}")
    if data["previous_import_id"]:
        click.echo(f"note: import #{data['previous_import_id']} loaded this same file before")
