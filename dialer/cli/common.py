"""What the admin commands share: a database session per command, errors, output."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dialer.campaigns.service import IllegalTransition
from dialer.campaigns.validation import AlreadyExists, NotFound, SettingError
from dialer.contacts.csvsource import UTF8, file_encoding
from dialer.contacts.importer import ImportFailed
from dialer.contacts.rows import HeaderError
from dialer.db import make_engine, make_sessionmaker, transaction
from dialer.settings import get_settings

# Errors an operator can act on: shown as one line, exit status 1, no traceback.
OPERATOR_ERRORS = (
    SettingError,
    NotFound,
    AlreadyExists,
    IllegalTransition,
    ImportFailed,
    HeaderError,
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


class EncodingParam(click.ParamType):
    """A file encoding rows can be read in, checked before anything is done."""

    name = "NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return file_encoding(str(value))
        except SettingError as exc:
            self.fail(exc.message, param, ctx)


encoding_option = click.option(
    "--encoding",
    type=EncodingParam(),
    default=UTF8,
    show_default=True,
    help="The file's text encoding, e.g. cp1252 or latin-1 for a spreadsheet's CSV export.",
)


@contextmanager
def session_factory() -> Iterator[sessionmaker[Session]]:
    """A session factory on the configured database, its connections closed afterwards."""
    engine = make_engine(get_settings().database_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """One transaction for the whole command: all of it happens, or none of it."""
    with operator_errors(), session_factory() as factory, transaction(factory) as session:
        yield session


@contextmanager
def operator_errors() -> Iterator[None]:
    try:
        yield
    except OPERATOR_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    except IntegrityError as exc:
        detail = getattr(getattr(exc.orig, "diag", None), "message_primary", None) or exc.orig
        raise click.ClickException(f"refused by the database: {detail}") from None


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    """Print `data` as JSON, or call `human` to print it for people."""
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        human()


def warn(notes: Sequence[str]) -> None:
    """Warnings for the operator, one per line on stderr (the output stays parseable)."""
    for note in notes:
        click.echo(f"warning: {note}", err=True)


def echo_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Rows as aligned columns under a header; `-` for empty values."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def echo_fields(data: dict[str, Any]) -> None:
    """`key: value` lines, keys aligned."""
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        click.echo(f"{key.ljust(width)}  {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)
