"""`dialer pbx-sim`: run the PBX simulator (an Asterisk 22 AMI look-alike) until interrupted."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
from pathlib import Path

import click

from dialer.pbxsim import ConfigError, PbxSimulator, SimConfig
from dialer.settings import get_settings


@click.command("pbx-sim")
@click.option("--host", help="Address to listen on.  [default: DIALER_AMI_HOST]")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="0 picks a free port.  [default: DIALER_AMI_PORT]"
)
@click.option("--username", help="AMI user accepted at Login.  [default: DIALER_AMI_USERNAME]")
@click.option("--secret", help="That user's secret.  [default: DIALER_AMI_SECRET]")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Divide every call duration (and the Originate Timeout) by this.",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append one JSON line per action received to this file.",
)
@click.option(
    "--max-channels",
    type=click.IntRange(min=0),
    help="Concurrent calls allowed; beyond it an Originate fails (Reason 0, cause 34).",
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    help="A call queue that exists (repeat for several).  [default: support]",
)
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    help="Only these PJSIP endpoints (trunks) exist (repeat for several).  [default: any]",
)
@click.option("--varset", is_flag=True, help="Also send a VarSet event per Originate variable.")
@click.option(
    "--restart-down",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Seconds a restart (SIGUSR2) stays down before listening again.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the listening address as JSON.")
def pbx_sim(
    host: str | None,
    port: int | None,
    username: str | None,
    secret: str | None,
    speed: float,
    record: Path | None,
    max_channels: int | None,
    queues: tuple[str, ...],
    endpoints: tuple[str, ...],
    varset: bool,
    restart_down: float,
    as_json: bool,
) -> None:
    """Run the PBX simulator: an AMI server that behaves like Asterisk 22.

    Originated calls behave by the last two digits of the number: 01 presses
    the press key, 02 presses nothing, 03 answering machine, 04 busy, 05 no
    answer, 06 congestion, 07 hangs up after 1 s, 08 presses 2, 09 silence;
    others answer and hang up after a few seconds. Stops on SIGINT/SIGTERM.

    SIGUSR1 cuts every AMI connection at once (calls stay up), to test how
    clients survive a network failure. SIGUSR2 restarts the PBX as `core
    restart now` does: actions refused, every call hung up (cause 0), the
    Shutdown event, connections closed, listening again --restart-down
    seconds later.

    \b
    Example:
        dialer pbx-sim --port 5038 --username dialer --secret dialerpass --speed 10
        dialer pbx-sim --port 0 --json --record /tmp/actions.jsonl --max-channels 200
    """
    ami = get_settings().ami
    try:
        config = SimConfig(
            host=host or ami.host,
            port=ami.port if port is None else port,
            username=username or ami.username,
            secret=ami.secret if secret is None else secret,
            speed=speed,
            record=record,
            max_channels=max_channels,
            queues=queues or ("support",),
            endpoints=frozenset(endpoints) if endpoints else None,
            varset_events=varset,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    # Its receive times are what rate checks measure: the collector's full passes over the
    # ~100k objects the imports left would stall the loop for tens of milliseconds, bunching
    # the actions read after each pause. Those objects live for good: exempt them.
    gc.freeze()
    try:
        asyncio.run(_serve(config, as_json, restart_down))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {config.host}:{config.port}: {exc}") from None


async def _serve(config: SimConfig, as_json: bool, restart_down: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with PbxSimulator(config) as sim:
        loop.add_signal_handler(signal.SIGUSR1, lambda: _drop_sessions(sim))
        loop.add_signal_handler(signal.SIGUSR2, lambda: _restart(sim, restart_down))
        if as_json:
            ready = json.dumps(
                {
                    "host": sim.host,
                    "port": sim.port,
                    "speed": config.speed,
                    "username": config.username,
                }
            )
        else:
            ready = f"pbx-sim listening on {sim.host}:{sim.port} (speed {config.speed:g})"
        click.echo(ready)
        await stop.wait()


def _drop_sessions(sim: PbxSimulator) -> None:
    dropped = sim.drop_sessions()
    click.echo(
        f"pbx-sim: SIGUSR1: dropped {dropped} AMI connections, {sim.active_calls()} calls up"
    )


def _restart(sim: PbxSimulator, down_for: float) -> None:
    calls = sim.active_calls()
    restart = sim.restart(down_for)
    click.echo(f"pbx-sim: SIGUSR2: restarting, {calls} calls hung up; back in {down_for:g} s")

    def back(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is None:
            click.echo(f"pbx-sim: listening again on {sim.host}:{sim.port}")

    restart.add_done_callback(back)
