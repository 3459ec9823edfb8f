"""`dialer worker`: the dialing workers of one host, the dispatch tick among them."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from typing import Any

import click

from dialer.settings import get_settings

POOLS = ("auto", "solo", "threads", "prefork")
# Threads or pool processes of one worker process when --pool threads/prefork and no -c.
DEFAULT_POOL_SIZE = 6

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "-p",
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes, each a Celery worker with its own pool  [default: one per core, "
    "plus one]",
)
@click.option(
    "--pool",
    type=click.Choice(POOLS),
    default="auto",
    show_default=True,
    # One task at a time per process, one process per core: the fewest CPU cycles per call
    # (bench/dial_throughput.py, BENCHMARKS.md). `dialer.dialing.broker.worker_pool` says why
    # auto is solo on Redis and one thread on RabbitMQ.
    help="Pool of each worker process. auto: one task at a time (solo on Redis, one thread on "
    "RabbitMQ); solo runs it in the process itself; threads or prefork run -c at once.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help=f"Threads or pool processes per worker process with --pool threads or prefork "
    f"[default: {DEFAULT_POOL_SIZE}]; auto and solo run one.",
)
@click.option(
    "--beat/--no-beat",
    default=True,
    show_default=True,
    help="Run the dispatch tick (in the first worker process). One per deployment is enough; "
    "a second one is harmless (overlapping ticks skip) but wasted.",
)
@click.option("-n", "--hostname", default=None, help="Worker node name (Celery's -n).")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics on this port, at /metrics, the sum of every worker "
    "process's  [default: DIALER_WORKER_METRICS_PORT, else none]",
)
def worker(
    processes: int | None,
    pool: str,
    concurrency: int | None,
    beat: bool,
    hostname: str | None,
    metrics_port: int | None,
) -> None:
    """Run this host's dialing workers: originate tasks plus, by default, the dispatch tick.

    By default one worker process per core plus one, each a Celery worker running one task at
    a time (the most calls per CPU second), the first one also running the dispatch tick; a
    worker process that dies is started again. The one more than cores keeps the cores busy
    while the others wait for Postgres and the PBX, as each does for part of every call.
    `--processes 1` runs a single worker in this process, the same as `celery -A
    dialer.celery_app worker -B` with the dialer's settings. For several hosts run `celery -A
    dialer.celery_app beat` once and `dialer worker --no-beat` everywhere.

    Stopping: SIGTERM or Ctrl-C finishes the calls being sent and returns unstarted tasks to
    the broker (nothing is lost); a second Ctrl-C stops at once, and anything cut short is
    reconciled, never sent twice.

    \b
    Example:
        dialer worker
        dialer worker --processes 8
        dialer worker --processes 1 --pool threads -c 8
        dialer worker --no-beat --pool prefork -c 4
        dialer worker --metrics-port 9100
    """
    count = processes or default_processes()
    if pool == "auto":
        from dialer.dialing.broker import worker_pool

        pool, size = worker_pool(get_settings().broker_url), 1
    else:
        size = 1 if pool == "solo" else concurrency or DEFAULT_POOL_SIZE
    port = metrics_port or get_settings().worker_metrics_port
    if count == 1 and not port:
        run_celery_worker(pool, size, beat, hostname)
        return
    # With metrics, even one worker process runs under the supervisor: its pool may fork, and
    # the supervisor serves the sum of every process's counts (`dialer.metrics`).
    from dialer.dialing.supervisor import Supervisor

    commands = [
        [
            sys.executable, "-m", "dialer", "worker", "--processes", "1", "--pool", pool,
            "--concurrency", str(size), "--beat" if beat and n == 0 else "--no-beat",
            "--hostname", numbered(hostname, n),
        ]
        for n in range(count)
    ]  # fmt: skip
    log.info(
        "%d worker processes (pool %s%s)%s",
        count,
        pool,
        "" if pool == "solo" else f", {size} at once",
        ", the first with the dispatch tick" if beat else "",
    )
    if not port:
        sys.exit(Supervisor(commands).run())
    # Each process counts in files of its own here; the supervisor serves their sum.
    with tempfile.TemporaryDirectory(prefix="dialer-metrics-") as shared:
        from dialer import metrics

        metrics.serve(port, multiprocess_dir=shared, collectors=[deployment_collector()])
        log.info("metrics of every worker process on :%d/metrics", port)
        supervisor = Supervisor(
            commands,
            # Children count into `shared` and serve nothing themselves.
            env={
                **{k: v for k, v in os.environ.items() if k != "DIALER_WORKER_METRICS_PORT"},
                "PROMETHEUS_MULTIPROC_DIR": shared,
            },
            on_exit=lambda pid: metrics.process_exited(pid, shared),
        )
        sys.exit(supervisor.run())


def deployment_collector() -> Any:
    """The deployment's gauges (broker queue, stuck attempts, calls up, campaigns), read from
    Postgres and the broker at each scrape."""
    from dialer.db import make_engine
    from dialer.dialing.celery_app import make_celery_app
    from dialer.reports.live_metrics import DeploymentCollector

    settings = get_settings()
    return DeploymentCollector(
        make_engine(settings.database_url, pool_size=1), make_celery_app(settings)
    )


def default_processes() -> int:
    """One worker process per core, plus one (bench/dial_throughput.py on two cores: two
    processes gave 263-526 attempts/s, three 585-594, four 601-609)."""
    return (os.cpu_count() or 1) + 1


def numbered(hostname: str | None, n: int) -> str:
    """The node name of worker process `n`: `dialer<n>@%h`, or the given name with `-<n>`."""
    if not hostname:
        return f"dialer{n}@%h"
    name, at, host = hostname.partition("@")
    return f"{name}-{n}{at}{host}"


def run_celery_worker(pool: str, size: int, beat: bool, hostname: str | None) -> None:
    """One Celery worker in this process."""
    from dialer.dialing.celery_app import make_celery_app

    settings = get_settings()
    app = make_celery_app(settings)
    argv = [
        "worker",
        # The pool's size is also the prefetch: one holds no task it is not running.
        f"--concurrency={size}",
        f"--pool={pool}",
        f"--loglevel={settings.log_level}",
        # Nothing to synchronise with other workers at start-up.
        "--without-mingle",
        "--without-gossip",
    ]
    if beat:
        argv.append("--beat")
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)
