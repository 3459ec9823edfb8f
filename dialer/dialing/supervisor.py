"""Several worker processes on one host, kept running and stopped together (`dialer worker`).

`Supervisor(commands).run()` starts one child process per command and then:
- restarts a child that exits while the supervisor runs, with the same command (the child that
  carries the dispatch tick keeps carrying it), after `RESTART_DELAY_S`, doubling up to
  `MAX_RESTART_DELAY_S` while it keeps exiting within `MIN_UPTIME_S` of its start; what the
  child left running in its process group (the embedded beat's process, pool processes) is
  killed first, so that no second tick or orphan stays behind;
- on SIGTERM or SIGINT (Ctrl-C) sends each child SIGTERM, Celery's warm shutdown (the
  Originates being sent finish, unstarted tasks go back to the broker), and waits for them all;
  a second SIGTERM or SIGINT, or a SIGQUIT, sends SIGQUIT: Celery's cold shutdown, at once
  (a task cut short is redelivered and finds its attempt taken: nothing is sent twice);
- returns 0 when every child ended cleanly after a stop.

Each child runs in a process group of its own, so a Ctrl-C typed in a terminal reaches the
supervisor alone, and each child passes it on once (a terminal would signal the children too,
and the supervisor's relay would then be their second, cold, signal). On Linux each child gets
SIGTERM from the kernel if the supervisor dies without stopping it (`PR_SET_PDEATHSIG`), so
no worker outlives its supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
# A child that ran at least this long before exiting is restarted after RESTART_DELAY_S again.
MIN_UPTIME_S = 60.0
POLL_S = 0.1

_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    index: int
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = 0  # consecutive exits within MIN_UPTIME_S of a start
    restart_at: float | None = None
    restarts: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Supervisor:
    commands: Sequence[Sequence[str]]
    env: dict[str, str] | None = None
    clock: Callable[[], float] = time.monotonic
    # Told the pid of each child that exited (to forget what it left, e.g. its metrics).
    on_exit: Callable[[int], None] | None = None
    children: list[Child] = field(init=False)
    stopping: bool = field(default=False, init=False)
    _signals: list[int] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.children = [Child(n, list(argv)) for n, argv in enumerate(self.commands)]

    def run(self) -> int:
        """Start the children and supervise them until a stop signal; the exit status."""
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            for child in self.children:
                self._start(child)
            while not (self.stopping and not any(c.running for c in self.children)):
                self._handle_signals()
                if not self.stopping:
                    self._keep_running()
                time.sleep(POLL_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for child in self.children:
                # Only on an error of the supervisor itself: nothing should outlive it.
                if child.running:
                    assert child.process is not None
                    child.process.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.process.wait(10)
                _kill_leftovers(child)
        codes = [c.process.returncode for c in self.children if c.process is not None]
        return 0 if all(code == 0 for code in codes) else 1

    def stop(self, cold: bool = False) -> None:
        """What a stop signal does (see the module doc)."""
        sig = signal.SIGQUIT if cold or self.stopping else signal.SIGTERM
        if not self.stopping:
            log.info("stopping %d worker processes", len(self.children))
        self.stopping = True
        for child in self.children:
            if child.running:
                assert child.process is not None
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(sig)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _handle_signals(self) -> None:
        while self._signals:
            self.stop(cold=self._signals.pop(0) == signal.SIGQUIT)

    def _keep_running(self) -> None:
        now = self.clock()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restart_at = None
                    child.restarts += 1
                    self._start(child)
                continue
            if child.process is None or child.running:
                continue
            _kill_leftovers(child)
            self._exited(child.process.pid)
            code = child.process.returncode
            quick = now - child.started_at < MIN_UPTIME_S
            child.quick_exits = child.quick_exits + 1 if quick else 0
            delay = min(MAX_RESTART_DELAY_S, RESTART_DELAY_S * 2 ** max(0, child.quick_exits - 1))
            log.warning(
                "worker process %d (pid %d) exited with %s; starting it again in %.0f s",
                child.index,
                child.process.pid,
                f"signal {-code}" if code < 0 else f"status {code}",
                delay,
            )
            child.restart_at = now + delay

    def _exited(self, pid: int) -> None:
        if self.on_exit is not None:
            try:
                self.on_exit(pid)
            except Exception:
                log.exception("could not clear what worker process %d left", pid)

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            process_group=0,
            preexec_fn=_die_with_parent(os.getpid()),
        )
        child.started_at = self.clock()
        log.debug("worker process %d started: pid %d", child.index, child.process.pid)


def _kill_leftovers(child: Child) -> None:
    """SIGKILL what is left in the process group of a child that has exited (and been reaped:
    while any member is left, the group's id cannot be given to another process)."""
    if child.process is not None and child.process.returncode is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, signal.SIGKILL)


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A preexec function asking the kernel for SIGTERM when `parent` dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    except (OSError, AttributeError):
        return None

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it died before the request was made
            os.kill(os.getpid(), signal.SIGTERM)

    return setup
