"""The simulator as a server: in-process (`async with PbxSimulator(config)`), on a thread of
its own (`start_in_thread(config)`), or from the `dialer pbx-sim` command.

With `SimConfig.tls_cert` and `tls_key` it serves TLS only (manager.conf `tlsenable` on its own
port), the greeting and everything after it inside TLS. `set_capacity` changes what the PBX
sustains while it runs (`dialer.pbxsim.capacity`).

Two ways for the PBX to go away: `stop()` drops everything at once without a word (a crash, a
killed process), `restart(down_for)` is Asterisk's `core restart now`, which tells the calls and
the AMI sessions before it goes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from dialer.pbxsim.agents import agent_interfaces
from dialer.pbxsim.capacity import KEEP
from dialer.pbxsim.config import ConfigError, SimConfig
from dialer.pbxsim.engine import Engine
from dialer.pbxsim.events import EventBus, Events
from dialer.pbxsim.queues import Queues
from dialer.pbxsim.record import ActionRecorder, read_records
from dialer.pbxsim.session import AmiSession

log = logging.getLogger(__name__)


class PbxSimulator:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.bus = EventBus()
        self.events = Events(self.bus)
        # The agents it starts with have the model's mean wrap-up as their queues.conf
        # wrapuptime: what the PBX reports, the drawn wrap-up being at least that.
        model = self.config.agents
        self.queues = Queues(
            self.config.queues,
            agent_interfaces(self.config.agent_count),
            wrapuptime=round(model.wrapup) if model is not None else 0,
        )
        self.engine = Engine(self.config, self.events, self.queues)
        self.globals: dict[str, str] = {}
        self.sessions: set[AmiSession] = set()
        self.recorder: ActionRecorder | None = None
        self.started_at = time.time()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._numbers = itertools.count(1)
        self._restart: asyncio.Task[None] | None = None
        # Between the start of a shutdown and the process going away every action is refused.
        self.shutting_down = False
        self.host = self.config.host
        self.port = self.config.port
        self.ssl_context = server_tls_context(self.config)

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the simulator is not running"
        return self._loop

    def wall_time(self) -> float:
        return time.time()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.config.record is not None:
            self.recorder = ActionRecorder(self.config.record)
        await self._listen()

    async def _listen(self) -> None:
        # The port bound first (config.port 0: a free one) is kept across restarts.
        self._server = await self.loop.create_server(
            lambda: AmiSession(self, next(self._numbers)),
            self.config.host,
            self.port,
            reuse_address=True,
            backlog=1024,
            ssl=self.ssl_context,
        )
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]

    async def stop(self) -> None:
        """Close the listener, drop every session and every call without any event (the PBX
        process killed; `restart` is the orderly way)."""
        restart, self._restart = self._restart, None
        if restart is not None and not restart.done():
            restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await restart
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for session in list(self.sessions):
            session.abort()
        self.sessions.clear()
        self.engine.stop()
        self.queues.reset_calls()
        if server is not None:
            await server.wait_closed()
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    async def __aenter__(self) -> PbxSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def restart(self, down_for: float = 1.0) -> asyncio.Task[None]:
        """`core restart now` with calls up, in Asterisk 22's order (asterisk.c can_safely_quit
        and really_quit, SHUTDOWN_NORMAL):

        1. the shutdown begins: from now on every AMI action, Originate included, is answered
           `Response: Error`, `Message: Asterisk is shutting down` (manager.c process_message);
        2. every channel is hung up where it is (`Engine.hang_up_everything`): answered calls end
           with Hangup cause 0 (16 for a channel in a bridge), calls still ringing with DialEnd
           NOANSWER, Hangup cause 0 and a failed OriginateResponse (Reason 0);
        3. `Timings.shutdown_settle` later (Asterisk's wait for the channels, then its 1 s sleep),
           the Shutdown event (`Shutdown: Cleanly`, `Restart: True`, class system: only sessions
           whose event mask has `system` and whose filters let it through get it; the
           simulator has no per-user `read` privileges), then every AMI connection is closed
           and the port stops listening;
        4. `down_for` seconds later (wall-clock time, not divided by the speed) a new PBX listens
           on the same port: no channels, Uniqueids and channel names counted afresh, uptime
           from zero, FullyBooted again at each login.

        Steps 1 and 2 are done when this returns; the task returned ends with step 4. A restart
        asked for while one is under way is that one ("already in progress").
        """
        if self._restart is not None and not self._restart.done():
            return self._restart
        if down_for < 0:
            raise ValueError(f"down_for must be 0 or more, got {down_for}")
        self.shutting_down = True
        had_channels = len(self.engine.registry) > 0
        self.engine.hang_up_everything()
        self._restart = self.loop.create_task(self._finish_restart(down_for, had_channels))
        return self._restart

    async def _finish_restart(self, down_for: float, had_channels: bool) -> None:
        if had_channels:
            # Asterisk sleeps only when it had channels to wait for.
            await asyncio.sleep(self.engine.timings.shutdown_settle)
        self.events.shutdown(cleanly=len(self.engine.registry) == 0, restart=True)
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for session in list(self.sessions):
            session.close_after_output()
        self.sessions.clear()
        if server is not None:
            await server.wait_closed()
        self.engine.reboot()
        self.queues.reset_calls()
        self.globals.clear()
        await asyncio.sleep(down_for)
        self.started_at = time.time()
        self.shutting_down = False
        try:
            await self._listen()
        except OSError:
            log.exception("PBX simulator could not listen again on %s:%s", self.host, self.port)
            raise

    def drop_sessions(self) -> int:
        """Cut every AMI connection at once, as a network failure would; returns how many.

        The calls, and the listening socket, stay up: clients reconnect and find their calls
        still there (`dialer pbx-sim` does this on SIGUSR1).
        """
        sessions = list(self.sessions)
        for session in sessions:
            session.abort()
        return len(sessions)

    def active_calls(self) -> int:
        return len(self.engine.calls)

    def set_capacity(
        self, *, cps: Any = KEEP, channels: Any = KEEP, max_wait: Any = KEEP
    ) -> dict[str, Any]:
        """Change what the PBX sustains (None: unlimited; KEEP, the default: unchanged); on
        the simulator's loop (`SimulatorThread.set_capacity` from other threads). Returns the
        capacity now in force. ValueError for a limit out of range."""
        self.engine.capacity.set(cps=cps, channels=channels, max_wait=max_wait)
        return self.capacity()

    def capacity(self) -> dict[str, Any]:
        """The limits in force and what they did: Originates waiting now, placed late,
        refused, the longest wait (seconds)."""
        gate = self.engine.capacity
        return {
            "cps": gate.cps,
            "channels": gate.channels,
            "max_wait": gate.max_wait,
            **gate.stats.as_dict(),
        }

    @property
    def errors(self) -> list[str]:
        """Exceptions raised by actions or call steps (logged; the simulator kept going)."""
        return list(self.engine.errors)

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.config.record) if self.config.record else []


class SimulatorThread:
    """A simulator running on its own event loop in a daemon thread."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._sim = PbxSimulator(config)
        self._thread = threading.Thread(target=self._run, name="pbx-sim", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._sim.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._sim.stop())
        self._loop.close()

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the PBX simulator did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def call(self, function: Callable[[PbxSimulator], Any], timeout: float = 10.0) -> Any:
        """Run `function(simulator)` on the simulator's loop and return its result."""

        async def run() -> Any:
            return function(self._sim)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def restart(
        self, down_for: float = 1.0, timeout: float = 10.0
    ) -> concurrent.futures.Future[None]:
        """`PbxSimulator.restart` from another thread: returns once the shutdown has begun
        (actions refused, every call hung up); the future is done when it listens again."""
        task: asyncio.Task[None] = self.call(lambda sim: sim.restart(down_for), timeout)

        async def listening() -> None:
            await task

        return asyncio.run_coroutine_threadsafe(listening(), self._loop)

    @property
    def host(self) -> str:
        return self._sim.host

    @property
    def port(self) -> int:
        return self._sim.port

    def records(self) -> list[dict[str, Any]]:
        return self._sim.records()

    def set_capacity(
        self, *, cps: Any = KEEP, channels: Any = KEEP, max_wait: Any = KEEP
    ) -> dict[str, Any]:
        """`PbxSimulator.set_capacity` from any thread; returns once it is in force."""
        return self.call(
            lambda sim: sim.set_capacity(cps=cps, channels=channels, max_wait=max_wait)
        )

    def capacity(self) -> dict[str, Any]:
        return self.call(lambda sim: sim.capacity())

    @property
    def tls(self) -> bool:
        return self._sim.tls

    def __enter__(self) -> SimulatorThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_tls_context(config: SimConfig) -> ssl.SSLContext | None:
    """The server side of TLS (None without a certificate); ConfigError if the certificate
    or key cannot be loaded."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate and key: {exc}") from None
    return context


def start_in_thread(config: SimConfig | None = None, **options: Any) -> SimulatorThread:
    """Start a simulator on a background thread; options override fields of `config`.

    >>> sim = start_in_thread(port=0, speed=50)   # doctest: +SKIP
    >>> sim.host, sim.port                         # doctest: +SKIP
    """
    base = config or SimConfig()
    if "record" in options and options["record"] is not None:
        options["record"] = Path(options["record"])
    return SimulatorThread(replace(base, **options)).start()
