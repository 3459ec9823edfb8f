"""The `dialer` command: a thin layer over the library, one module per command group."""

from __future__ import annotations

import logging
import sys

import click

from dialer import __version__
from dialer.cli import db
from dialer.settings import SettingsError, get_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dialer")
def cli() -> None:
    """Outbound IVR campaign dialer for Asterisk.

    Configuration comes from DIALER_* environment variables (see README).

    \b
    Example:
        dialer db upgrade
    """
    try:
        settings = get_settings()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Migration chatter is noise for operators unless they asked for debug output.
    if settings.log_level != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)


cli.add_command(db.db)


def main() -> None:
    cli()
