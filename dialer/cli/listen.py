"""`dialer listen` (the event listener of every configured PBX, or of those named) and
`dialer asterisk-config`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal

import click

from dialer.ami.client import AmiAuthenticationError, AmiCertificateError
from dialer.asterisk import FILES, reference_file
from dialer.db import make_engine
from dialer.outcomes.listener import (
    Listener,
    ListenerFailed,
    ListenerOptions,
    run_listeners,
    tune_collector,
)
from dialer.outcomes.reconcile import ReconcileOptions
from dialer.settings import SettingsError, get_settings, pbx_variable

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "--pbx",
    "pbxs",
    multiple=True,
    help="Follow only this PBX (repeat for several).  [default: every configured PBX: "
    "default and those of DIALER_PBXS]",
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
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics on this port, at /metrics  [default: "
    "DIALER_LISTENER_METRICS_PORT, else none]",
)
def listen(
    pbxs: tuple[str, ...],
    flush_ms: int,
    batch: int,
    writers: int,
    reconcile_every: float,
    grace: float,
    min_age: float,
    filter_events: bool,
    metrics_port: int | None,
) -> None:
    """Follow PBXs' events: record each call's facts and outcome, schedule retries.

    Follows every configured PBX (`default`, the one of DIALER_AMI_*, and each
    one DIALER_PBXS lists) from one process, each over its own AMI connection
    with its own reconnects, reconciliation and database writers; --pbx
    restricts it. Runs until SIGINT or SIGTERM. A PBX that refuses the login
    or whose TLS certificate is not accepted stops it, naming the PBX.

    \b
    Example:
        dialer listen
        dialer listen --pbx east --pbx west --flush-ms 20
        dialer listen --metrics-port 9101
    """
    settings = get_settings()
    try:
        names = list(dict.fromkeys(pbxs)) or list(settings.ami_servers)
        servers = [settings.ami_for(name) for name in names]
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
    port = metrics_port or settings.listener_metrics_port
    if port:
        from dialer import metrics

        metrics.serve(port)
        log.info("metrics on :%d/metrics", port)
    engine = make_engine(settings.database_url, service=True, role="dialer listener")
    tune_collector()
    listeners = [Listener(engine, server, options=options) for server in servers]
    log.info("listening to %s", ", ".join(f"{s.name} at {s.address}" for s in servers))
    try:
        asyncio.run(_run(listeners))
    except ListenerFailed as exc:
        error = exc.error
        if isinstance(error, AmiCertificateError):
            raise click.ClickException(str(error)) from None
        if isinstance(error, AmiAuthenticationError):
            # Retrying a refused login cannot help: say so and stop.
            raise click.ClickException(
                f"{error}; check {pbx_variable(exc.pbx, 'USERNAME')} and "
                f"{pbx_variable(exc.pbx, 'SECRET')}"
            ) from None
        raise
    finally:
        engine.dispose()


async def _run(listeners: list[Listener]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    reports = [asyncio.create_task(_report(listener)) for listener in listeners]
    try:
        await run_listeners(listeners, stop)
    finally:
        for report in reports:
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
