"""`dialer worker`'s supervisor (`dialer.dialing.supervisor`) with stand-in children: restarts,
stop signals passed on once, nothing left behind; and the command's defaults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dialer.dialing import broker
from tests.support_celery import REPO, wait_until

# A stand-in worker: writes "<n> start <pid>", then "<n> <signal name>" for each signal it gets;
# exits 0 on SIGTERM after `grace` seconds (a warm shutdown), 1 at once on SIGQUIT.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    n, log, grace = sys.argv[1], sys.argv[2], float(sys.argv[3])
    def note(text):
        with open(log, "a") as f:
            f.write(f"{n} {text}\\n")
    stopping = []
    def on_signal(signum, frame):
        note(signal.Signals(signum).name)
        if signum == signal.SIGQUIT:
            os._exit(1)
        stopping.append(time.monotonic())
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, on_signal)
    note(f"start {os.getpid()}")
    while not stopping or time.monotonic() - stopping[0] < grace:
        time.sleep(0.02)
    sys.exit(0)
    """
)

SUPERVISOR = textwrap.dedent(
    """
    import logging, sys
    from dialer.dialing import supervisor
    logging.basicConfig(level=logging.INFO)
    supervisor.RESTART_DELAY_S = 0.2
    child, log, grace, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    commands = [[sys.executable, child, str(n), log, grace] for n in range(count)]
    sys.exit(supervisor.Supervisor(commands).run())
    """
)


def start(tmp_path: Path, *, children: int = 2, grace: float = 0.0) -> subprocess.Popen[bytes]:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    script = tmp_path / "supervisor.py"
    script.write_text(SUPERVISOR)
    log = tmp_path / "signals.log"
    log.touch()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(child), str(log), str(grace), str(children)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "supervisor.log").open("wb"),
    )
    wait_until(lambda: len(starts(tmp_path)) == children, 20, message="children started")
    return proc


def lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "signals.log").read_text().splitlines()


def starts(tmp_path: Path) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for line in lines(tmp_path):
        n, what, *rest = line.split()
        if what == "start":
            found.setdefault(n, []).append(int(rest[0]))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_reaches_each_child_once_and_waits_for_them(tmp_path: Path) -> None:
    proc = start(tmp_path, grace=1.0)
    pids = [p for started in starts(tmp_path).values() for p in started]
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert time.monotonic() - began >= 0.9, "the supervisor left before its children"
    assert sorted(line for line in lines(tmp_path) if "SIG" in line) == ["0 SIGTERM", "1 SIGTERM"]
    assert not any(alive(p) for p in pids)


def test_a_second_ctrl_c_stops_the_children_at_once(tmp_path: Path) -> None:
    proc = start(tmp_path, grace=30.0)
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: sum("SIGTERM" in x for x in lines(tmp_path)) == 2, 10, message="SIGTERM")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 1  # the children ended by a cold shutdown
    signals = sorted(line for line in lines(tmp_path) if "SIG" in line)
    assert signals == ["0 SIGQUIT", "0 SIGTERM", "1 SIGQUIT", "1 SIGTERM"]


def test_a_child_that_dies_is_started_again_alone(tmp_path: Path) -> None:
    proc = start(tmp_path)
    first = starts(tmp_path)
    os.kill(first["1"][0], signal.SIGKILL)
    wait_until(lambda: len(starts(tmp_path)["1"]) == 2, 10, message="child 1 started again")
    assert starts(tmp_path)["0"] == first["0"]  # the other one was left alone
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert "worker process 1" in (tmp_path / "supervisor.log").read_text()


def test_children_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    proc = start(tmp_path)
    pids = [p for started in starts(tmp_path).values() for p in started]
    proc.kill()
    proc.wait(5)
    wait_until(lambda: not any(alive(p) for p in pids), 10, message="the children to end")
    assert sorted(line for line in lines(tmp_path) if "SIG" in line) == ["0 SIGTERM", "1 SIGTERM"]


@pytest.mark.parametrize(
    ("url", "pool"),
    [("redis://127.0.0.1:6379/0", "solo"), ("amqp://guest:guest@127.0.0.1:5672//", "threads")],
)
def test_dialer_worker_defaults_to_a_process_per_core_and_one_more_one_task_each(
    monkeypatch: pytest.MonkeyPatch, url: str, pool: str
) -> None:
    from dialer.cli import worker as worker_cli
    from dialer.dialing import supervisor

    monkeypatch.setenv("DIALER_BROKER_URL", url)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    started: list[list[list[str]]] = []

    class Recorder:
        def __init__(self, commands: list[list[str]]) -> None:
            started.append(commands)

        def run(self) -> int:
            return 0

    monkeypatch.setattr(supervisor, "Supervisor", Recorder)
    from dialer.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(worker_cli.worker, [])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    (commands,) = started
    assert len(commands) == 3
    assert broker.worker_pool(url) == pool
    for n, argv in enumerate(commands):
        options = argv[argv.index("worker") + 1 :]
        assert options[:6] == ["--processes", "1", "--pool", pool, "--concurrency", "1"]
        assert ("--beat" in options) == (n == 0) and ("--no-beat" in options) == (n != 0)
    assert len({argv[-1] for argv in commands}) == 3  # distinct node names
