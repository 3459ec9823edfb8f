"""`dialer pbx-sim`: run the PBX simulator (an Asterisk 22 AMI look-alike) until interrupted."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import click

from dialer.pbxsim import AgentModel, ConfigError, PbxSimulator, SimConfig
from dialer.pbxsim.capacity import DEFAULT_MAX_WAIT
from dialer.pbxsim.server import server_tls_context
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
    "--capacity-cps",
    type=click.FloatRange(min=0, min_open=True),
    help="Originates per second the PBX places; past it calls start late, then are refused.  "
    "[default: unlimited]",
)
@click.option(
    "--capacity-channels",
    type=click.IntRange(min=1),
    help="Concurrent calls the PBX carries; above 80% of it calls start late, when full new "
    "Originates are refused.  [default: unlimited]",
)
@click.option(
    "--capacity-wait",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_MAX_WAIT,
    show_default=True,
    help="Seconds an Originate may wait for the PBX past its capacity before it is refused.",
)
@click.option(
    "--capacity-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help='JSON read again at every SIGHUP to change the capacity while running: {"cps": 20, '
    '"channels": null, "wait": 2} (a key left out stays as it is, null is unlimited).',
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Serve TLS (as manager.conf tlsenable) with this certificate (PEM); needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The TLS certificate's private key (PEM).",
)
@click.option(
    "--restart-down",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Seconds a restart (SIGUSR2) stays down before listening again.",
)
@click.option(
    "--agents",
    "agent_count",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help='Agents PJSIP/agent1..N ("Agent 1"...) in every queue from the start.',
)
@click.option(
    "--agent-answer",
    type=click.FloatRange(min=0),
    help="Mean seconds an agent takes to answer when rung (turns the agent model on).  "
    "[default: 2]",
)
@click.option(
    "--agent-talk",
    type=click.FloatRange(min=0, min_open=True),
    help="Mean seconds an agent talks before hanging up (turns the agent model on).  [default: 60]",
)
@click.option(
    "--agent-wrapup",
    type=click.FloatRange(min=0),
    help="Mean seconds of after-call work before an agent takes another call (turns the "
    "agent model on).  [default: 5]",
)
@click.option(
    "--caller-patience",
    type=click.FloatRange(min=0, min_open=True),
    help="Mean seconds a callee waits in a queue before hanging up (turns the agent model "
    "on).  [default: waits until served]",
)
@click.option(
    "--agent-seed",
    type=int,
    help="Seed of the agent model's random draws (turns the agent model on).  [default: 0]",
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
    capacity_cps: float | None,
    capacity_channels: int | None,
    capacity_wait: float,
    capacity_file: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    restart_down: float,
    agent_count: int,
    agent_answer: float | None,
    agent_talk: float | None,
    agent_wrapup: float | None,
    caller_patience: float | None,
    agent_seed: int | None,
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
    seconds later. SIGHUP reads --capacity-file again.

    Past its capacity (--capacity-cps, --capacity-channels) the PBX behaves
    as a CPU-bound Asterisk: Originates are still queued at once, but their
    calls, events and OriginateResponse come late, later the further over;
    an Originate that would wait over --capacity-wait seconds, or finds
    every channel taken, fails (Reason 0, cause 34).

    Call queues serve waiting callees with free members, the one idle
    longest first. --agents N puts agents PJSIP/agent1..N in every queue.
    Any --agent-* or --caller-patience option turns on the agent model:
    members answer, talk and wrap up for random times around those means
    (seconds at speed 1), and callees left waiting past their patience hang
    up; without it members behave by their number like callees.

    \b
    Example:
        dialer pbx-sim --port 5038 --username dialer --secret dialerpass --speed 10
        dialer pbx-sim --port 0 --json --record /tmp/actions.jsonl --max-channels 200
        dialer pbx-sim --port 5039 --tls-cert pbx.pem --tls-key pbx.key --capacity-cps 50
        dialer pbx-sim --speed 20 --agents 10 --agent-talk 90 --agent-wrapup 10 \\
            --caller-patience 45 --agent-seed 7
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
            capacity_cps=capacity_cps,
            capacity_channels=capacity_channels,
            capacity_wait=capacity_wait,
            tls_cert=tls_cert,
            tls_key=tls_key,
            agents=agent_model(agent_answer, agent_talk, agent_wrapup, caller_patience, agent_seed),
            agent_count=agent_count,
        )
        if capacity_file is not None and capacity_file.exists():
            config = replace(config, **_config_capacity(read_capacity_file(capacity_file)))
        server_tls_context(config)  # a certificate and key that do not load: said now
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    # Its receive times are what rate checks measure: the collector's full passes over the
    # ~100k objects the imports left would stall the loop for tens of milliseconds, bunching
    # the actions read after each pause. Those objects live for good: exempt them.
    gc.freeze()
    try:
        asyncio.run(_serve(config, as_json, restart_down, capacity_file))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {config.host}:{config.port}: {exc}") from None


async def _serve(
    config: SimConfig, as_json: bool, restart_down: float, capacity_file: Path | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with PbxSimulator(config) as sim:
        loop.add_signal_handler(signal.SIGUSR1, lambda: _drop_sessions(sim))
        loop.add_signal_handler(signal.SIGUSR2, lambda: _restart(sim, restart_down))
        if capacity_file is not None:
            loop.add_signal_handler(signal.SIGHUP, lambda: _reload_capacity(sim, capacity_file))
        if as_json:
            ready = json.dumps(
                {
                    "host": sim.host,
                    "port": sim.port,
                    "speed": config.speed,
                    "username": config.username,
                    "tls": sim.tls,
                    "capacity": {k: v for k, v in sim.capacity().items() if k in _LIMITS},
                    "agents": config.agent_count,
                    "agent_model": asdict(config.agents) if config.agents else None,
                }
            )
        else:
            ready = (
                f"pbx-sim listening on {sim.host}:{sim.port}{' (TLS)' if sim.tls else ''} "
                f"(speed {config.speed:g})"
            )
        click.echo(ready)
        await stop.wait()


def agent_model(
    answer: float | None,
    talk: float | None,
    wrapup: float | None,
    patience: float | None,
    seed: int | None,
) -> AgentModel | None:
    """The agent model the options ask for: None when none of them is given, else the
    defaults for those left out."""
    given = {
        "answer": answer,
        "talk": talk,
        "wrapup": wrapup,
        "patience": patience,
        "seed": seed,
    }
    chosen = {name: value for name, value in given.items() if value is not None}
    return AgentModel(**chosen) if chosen else None


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


_LIMITS = ("cps", "channels", "max_wait")


def read_capacity_file(path: Path) -> dict[str, Any]:
    """The capacity a --capacity-file asks for, as `PbxSimulator.set_capacity` keywords (keys
    left out are not there); ConfigError if it is not such a file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--capacity-file {path}: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"cps", "channels", "wait"}:
        raise ConfigError(
            f'--capacity-file {path}: expected an object with "cps", "channels" and/or "wait"'
        )
    for key, value in data.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key == "channels" and number and not isinstance(value, int):
            number = False
        if not (number or (value is None and key != "wait")):
            raise ConfigError(f"--capacity-file {path}: {key!r} must be a number or null")
    limits = {"cps": "cps", "channels": "channels", "wait": "max_wait"}
    return {limits[k]: v for k, v in data.items()}


def _config_capacity(limits: dict[str, Any]) -> dict[str, Any]:
    names = {"cps": "capacity_cps", "channels": "capacity_channels", "max_wait": "capacity_wait"}
    return {names[k]: v for k, v in limits.items()}


def _reload_capacity(sim: PbxSimulator, path: Path) -> None:
    try:
        now = sim.set_capacity(**read_capacity_file(path))
    except ValueError as exc:  # ConfigError included
        click.echo(f"pbx-sim: SIGHUP: capacity unchanged: {exc}", err=True)
        return
    limits = ", ".join(f"{k} {now[k]}" for k in _LIMITS)
    click.echo(f"pbx-sim: SIGHUP: capacity {limits}")
