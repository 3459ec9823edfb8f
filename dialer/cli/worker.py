"""`dialer worker`: a Celery worker with the dispatch tick embedded, for a single host."""

from __future__ import annotations

import click

from dialer.settings import get_settings

POOLS = ("threads", "prefork", "solo")


@click.command()
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=6,
    show_default=True,
    help="Originate tasks run at once (threads or pool processes).",
)
@click.option(
    "--pool",
    type=click.Choice(POOLS),
    default="threads",
    show_default=True,
    # Threads let one process wait for many calls' pacing slots at once, beside the embedded
    # tick. For the most calls per second per CPU run several `--pool solo --no-beat` workers
    # and one beat (see bench/dial_throughput.py and BENCHMARKS.md).
    help="Pool kind.",
)
@click.option(
    "--beat/--no-beat",
    default=True,
    show_default=True,
    help="Run the dispatch tick in this worker. One per deployment is enough; a second one is "
    "harmless (overlapping ticks skip) but wasted.",
)
@click.option("-n", "--hostname", default=None, help="Worker node name (Celery's -n).")
def worker(concurrency: int, pool: str, beat: bool, hostname: str | None) -> None:
    """Run a dialing worker: originate tasks plus, by default, the dispatch tick.

    The same as `celery -A dialer.celery_app worker -B`, with the dialer's settings. For
    several hosts run `celery -A dialer.celery_app beat` once and `worker` everywhere.

    Stopping: SIGTERM or Ctrl-C finishes the calls being sent and returns unstarted tasks to
    the broker (nothing is lost); a second Ctrl-C stops at once, and anything cut short is
    reconciled, never sent twice.

    \b
    Example:
        dialer worker
        dialer worker --no-beat --pool prefork -c 4
    """
    from dialer.dialing.celery_app import make_celery_app

    settings = get_settings()
    app = make_celery_app(settings)
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--loglevel={settings.log_level}",
        # One host: nothing to synchronise with other workers at start-up.
        "--without-mingle",
        "--without-gossip",
    ]
    if beat:
        argv.append("--beat")
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)
