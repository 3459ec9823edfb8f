"""The `dialer` command: a thin layer over the library, one module per command group."""

from __future__ import annotations

import logging

import click

from dialer import __version__, logs
from dialer.cli import call as call_cli
from dialer.cli import callerid as callerid_cli
from dialer.cli import campaign as campaign_cli
from dialer.cli import contacts as contacts_cli
from dialer.cli import db, pbxsim
from dialer.cli import demo as demo_cli
from dialer.cli import dnc as dnc_cli
from dialer.cli import listen as listen_cli
from dialer.cli import payload as payload_cli
from dialer.cli import pbx as pbx_cli
from dialer.cli import queue as queue_cli
from dialer.cli import report as report_cli
from dialer.cli import rules as rules_cli
from dialer.cli import status as status_cli
from dialer.cli import trunk as trunk_cli
from dialer.cli import worker as worker_cli
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
    logs.configure(settings.log_level, settings.log_format)
    # Migration chatter is noise for operators unless they asked for debug output.
    if settings.log_level != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)


cli.add_command(db.db)
cli.add_command(demo_cli.demo)
cli.add_command(payload_cli.payload)
cli.add_command(report_cli.report)
cli.add_command(report_cli.calls)
cli.add_command(pbxsim.pbx_sim)
cli.add_command(worker_cli.worker)
cli.add_command(listen_cli.listen)
cli.add_command(listen_cli.asterisk_config)
cli.add_command(trunk_cli.trunk)
cli.add_command(pbx_cli.pbx)
cli.add_command(campaign_cli.campaign)
cli.add_command(contacts_cli.contacts)
cli.add_command(dnc_cli.dnc)
cli.add_command(call_cli.call)
cli.add_command(call_cli.channels)
cli.add_command(queue_cli.queue)
cli.add_command(status_cli.status)
cli.add_command(rules_cli.rules)
cli.add_command(callerid_cli.callerid)


def main() -> None:
    cli()
