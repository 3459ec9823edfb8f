"""A benchmark run's own dialer stack: a throwaway database, a broker namespace, and the
simulator, listener and worker processes it starts, all gone when the run ends, whether it
completed, failed, or was stopped (Ctrl-C, or SIGTERM through stopping.py).

soak.py, agent_pacing.py and pbx_cluster.py start the same stack; this is its one copy:

    with (
        broker_namespace(f"dialer-soak-{run_id}") as prefix,
        throwaway_database(f"dialer_soak_{run_id}") as database_url,
        Processes() as processes,
    ):
        port, sim = processes.simulator(work / "pbx-sim.log", "--speed", "5")
        env = dialer_env(database_url, prefix, ami_port=port)
        listener = processes.start(dialer("listen"), work / "listener.log", env)
        worker = processes.dialer_worker(work / "worker.log", env)

The `with` unwinds in reverse: the processes stop first (workers, listener, simulators), so
nothing writes while the database is dropped and the broker keys are deleted; then the
database goes, then the keys.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import psycopg
from dial_throughput import free_port, spawn, stop, wait_for_port, wait_for_text
from psycopg import sql
from sqlalchemy.engine import make_url

from dialer import migrate
from dialer.dialing.broker import delete_namespace

SERVER_URL = os.environ.get(
    "DIALER_BENCH_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BROKER_URL = os.environ.get("DIALER_BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
# libpq's form of the server's URL, for psycopg: CREATE and DROP DATABASE, pg_stat_activity.
ADMIN_URL = make_url(SERVER_URL).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def throwaway_database(name: str, *, keep: bool = False) -> Iterator[str]:
    """Database `name` on the benchmark server, migrated to the latest schema; its URL.

    Dropped on exit even if sessions are still open (WITH (FORCE)); with `keep`, left for
    inspection and its URL printed.
    """
    database_url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate.upgrade(database_url)
        yield database_url
    finally:
        if keep:
            print(f"database kept: {database_url}")
        else:
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@contextlib.contextmanager
def broker_namespace(prefix: str) -> Iterator[str]:
    """`prefix` for DIALER_BROKER_PREFIX; on exit whatever the run left under it on the broker
    is deleted (the run's processes must have stopped by then, or they write it again)."""
    try:
        yield prefix
    finally:
        delete_namespace(BROKER_URL, prefix)


def dialer_env(database_url: str, broker_prefix: str, *, ami_port: int) -> dict[str, str]:
    """The settings of a `dialer` command of the run: its database, its broker namespace, the
    simulator as the default PBX; warnings only, the rest would fill the logs."""
    return {
        "DIALER_DATABASE_URL": database_url,
        "DIALER_BROKER_URL": BROKER_URL,
        "DIALER_BROKER_PREFIX": broker_prefix,
        "DIALER_AMI_HOST": "127.0.0.1",
        "DIALER_AMI_PORT": str(ami_port),
        "DIALER_LOG_LEVEL": "WARNING",
    }


def dialer(*args: str) -> list[str]:
    """The command line of `dialer <args>`, run by this interpreter."""
    return [sys.executable, "-m", "dialer", *args]


class Processes:
    """The processes a run starts, each in its own session with its output in a log; on exit
    stopped in the reverse order of their start (workers before the listener before the
    simulators they talk to)."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for proc in reversed(self.started):
            # One that will not stop must not keep the others, the database or the keys.
            with contextlib.suppress(Exception):
                stop(proc)

    def start(
        self, argv: list[str], log_path: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        """`argv` with `env` over this environment, its output in `log_path` (spawn)."""
        proc = spawn(argv, log_path, env)
        self.started.append(proc)
        return proc

    def simulator(self, log_path: Path, *options: str) -> tuple[int, subprocess.Popen[bytes]]:
        """`dialer pbx-sim <options>` on a free local port, once it listens; the port and the
        process."""
        port = free_port()
        argv = dialer("pbx-sim", "--host", "127.0.0.1", "--port", str(port), *options)
        proc = self.start(argv, log_path, {"DIALER_LOG_LEVEL": "WARNING"})
        wait_for_port(port, proc)
        return port, proc

    def dialer_worker(self, log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """`dialer worker` as README starts it, once it is ready; at INFO, which is where Celery
        says "ready."."""
        proc = self.start(dialer("worker"), log_path, {**env, "DIALER_LOG_LEVEL": "INFO"})
        wait_for_text(log_path, "ready.", proc)
        return proc

    def check_running(self, logs: Path | None = None) -> None:
        """End the run if any of them exited: its figures would mean nothing."""
        for proc in self.started:
            if proc.poll() is not None:
                see = "" if logs is None else f"; see {logs}"
                raise SystemExit(f"{proc.args!r} exited with {proc.returncode}{see}")
