"""`dialer listen` (the event listener of one PBX) and `dialer asterisk-config`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal

import click

from dialer.ami.client import AmiAuthenticationError
from dialer.asterisk import FILES, reference_file
from dialer.db import make_engine
from dialer.outcomes.listener import Listener, ListenerOptions, tune_collector
from dialer.outcomes.reconcile import ReconcileOptions
from dialer.settings import SettingsError, get_settings

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "--pbx", default="default", show_default=True, help="Which PBX (AMI server) to follow."
)
@click.option(
    "--flush-ms",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="Write buffered events to the database at least this often.",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 1_000_000),
    default=5000,
    show_default=True,
    help="Write as soon as this many events are buffered.",
)
@click.option(
    "--writers",
    type=click.IntRange(1, 8),
    default=2,
    show_default=True,
    help="Database connections writing batches, each for its share of the calls.",
)
@click.option(
    "--reconcile-every",
    type=click.FloatRange(1.0),
    default=30.0,
    show_default=True,
    help="Seconds between checks of open attempts against the PBX's channels.",
)
@click.option(
    "--grace",
    type=click.FloatRange(0.0),
    default=30.0,
    show_default=True,
    help="Seconds past its Originate timeout before an open attempt is checked.",
)
@click.option(
    "--min-age",
    type=click.FloatRange(0.0),
    default=10.0,
    show_default=True,
    help="After a (re)connect, attempts sent longer ago than this are checked at once.",
)
@click.option(
    "--filter/--no-filter",
    "filter_events",
    default=True,
    show_default=True,
    help="Ask Asterisk (Filter action) for the used events only.",
)
def listen(
    pbx: str,
    flush_ms: int,
    batch: int,
    writers: int,
    reconcile_every: float,
    grace: float,
    min_age: float,
    filter_events: bool,
) -> None:
    """Follow a PBX's events: record each call's facts and outcome, schedule retries.

    Runs until SIGINT or SIGTERM. Run one per Asterisk server.

    \b
    Example:
        dialer listen
        dialer listen --pbx default --flush-ms 20
    """
    settings = get_settings()
    try:
        server = settings.ami_for(pbx)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    options = ListenerOptions(
        flush_interval=flush_ms / 1000,
        max_batch=batch,
        writers=writers,
        reconcile_interval=reconcile_every,
        reconcile=ReconcileOptions(grace_s=grace, min_age_s=min_age),
        filter_events=filter_events,
    )
    engine = make_engine(settings.database_url)
    tune_collector()
    try:
        asyncio.run(_run(Listener(engine, server, options=options)))
    except AmiAuthenticationError as exc:
        # Retrying a refused login cannot help: say so and stop.
        raise click.ClickException(
            f"{exc}; check DIALER_AMI_USERNAME and DIALER_AMI_SECRET"
        ) from None
    finally:
        engine.dispose()


async def _run(listener: Listener) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    report = asyncio.create_task(_report(listener))
    try:
        await listener.run(stop)
    finally:
        report.cancel()


async def _report(listener: Listener, every: float = 60.0) -> None:
    while True:
        await asyncio.sleep(every)
        log.info("listener %s: %s", listener.pbx, json.dumps(listener.stats.summary()))


@click.command("asterisk-config")
@click.argument("name", required=False, type=click.Choice(FILES))
@click.option("--json", "as_json", is_flag=True, help="Print {file name: text} as JSON.")
def asterisk_config(name: str | None, as_json: bool) -> None:
    """Print the reference Asterisk configuration: the IVR dialplan and manager.conf.

    dialer-ivr.conf holds the DynamicIVR context for an extensions.conf `#include`;
    manager.conf the dialer's AMI user with least privilege and its event filters.

    \b
    Example:
        dialer asterisk-config dialer-ivr.conf > /etc/asterisk/dialer-ivr.conf
        dialer asterisk-config --json
    """
    names = [name] if name else list(FILES)
    files = {n: reference_file(n) for n in names}
    if as_json:
        click.echo(json.dumps(files, indent=2))
        return
    for n, text in files.items():
        if len(files) > 1:
            click.echo(f";; ---- {n} ----")
        click.echo(text, nl=False)
