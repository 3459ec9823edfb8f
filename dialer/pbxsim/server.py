"""The simulator as a server: in-process (`async with PbxSimulator(config)`), on a thread of
its own (`start_in_thread(config)`), or from the `dialer pbx-sim` command."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from dialer.pbxsim.config import SimConfig
from dialer.pbxsim.engine import Engine
from dialer.pbxsim.events import EventBus, Events
from dialer.pbxsim.queues import Queues
from dialer.pbxsim.record import ActionRecorder, read_records
from dialer.pbxsim.session import AmiSession


class PbxSimulator:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.bus = EventBus()
        self.events = Events(self.bus)
        self.queues = Queues(self.config.queues)
        self.engine = Engine(self.config, self.events, self.queues)
        self.globals: dict[str, str] = {}
        self.sessions: set[AmiSession] = set()
        self.recorder: ActionRecorder | None = None
        self.started_at = time.time()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._numbers = itertools.count(1)
        self.host = self.config.host
        self.port = self.config.port

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
        self._server = await self._loop.create_server(
            lambda: AmiSession(self, next(self._numbers)),
            self.config.host,
            self.config.port,
            reuse_address=True,
            backlog=1024,
        )
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]

    async def stop(self) -> None:
        """Close the listener, drop every session and every call (a PBX restart)."""
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

    @property
    def host(self) -> str:
        return self._sim.host

    @property
    def port(self) -> int:
        return self._sim.port

    def records(self) -> list[dict[str, Any]]:
        return self._sim.records()

    def __enter__(self) -> SimulatorThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(config: SimConfig | None = None, **options: Any) -> SimulatorThread:
    """Start a simulator on a background thread; options override fields of `config`.

    >>> sim = start_in_thread(port=0, speed=50)   # doctest: +SKIP
    >>> sim.host, sim.port                         # doctest: +SKIP
    """
    base = config or SimConfig()
    if "record" in options and options["record"] is not None:
        options["record"] = Path(options["record"])
    return SimulatorThread(replace(base, **options)).start()
