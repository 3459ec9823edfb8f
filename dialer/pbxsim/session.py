"""One AMI connection: reads actions in order, answers them, and carries the events it wants.

Output is gathered per loop iteration and written in one go; an action that has to wait (a
failed login's delay, a synchronous Originate) holds back the following ones, as Asterisk's
one-thread-per-session does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from dialer.pbxsim.actions import dispatch
from dialer.pbxsim.filters import FilterSet
from dialer.pbxsim.wire import LineReader, Message, error

if TYPE_CHECKING:
    from dialer.pbxsim.server import PbxSimulator

log = logging.getLogger(__name__)

GREETING = b"Asterisk Call Manager/11.0.0\r\n"
# A client that stops reading is disconnected once this much output waits for it.
MAX_PENDING_OUTPUT = 64 * 1024 * 1024
# Stop reading a client's socket while this many of its actions wait their turn.
MAX_QUEUED_ACTIONS = 10_000
# manager.c process_message, while a shutdown or restart is under way.
SHUTTING_DOWN = "Asterisk is shutting down"


class AmiSession(asyncio.Protocol):
    def __init__(self, sim: PbxSimulator, number: int) -> None:
        self.sim = sim
        self.number = number
        self.transport: asyncio.Transport | None = None
        self.reader = LineReader()
        self.queue: deque[Message] = deque()
        self.waiting: asyncio.Future[None] | None = None
        self.authenticated = False
        self.username = ""
        self.send_events = 0
        self.filters = FilterSet()
        self.challenge = ""
        self.closing = False
        self.transport_name = "TLS" if sim.tls else "TCP"  # security events' addresses
        self.local = ("127.0.0.1", 0)
        self.remote = ("127.0.0.1", 0)
        self.started = 0.0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._paused = False

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.local = transport.get_extra_info("sockname") or self.local
        self.remote = transport.get_extra_info("peername") or self.remote
        self.started = self.sim.wall_time()
        self.sim.sessions.add(self)
        transport.write(GREETING)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.queue.extend(self.reader.feed(data))
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.sim.sessions.discard(self)
        self.sim.bus.unsubscribe(self)
        if self.waiting is not None and not self.waiting.done():
            self.waiting.cancel()
        self.queue.clear()
        self._out.clear()

    # -- actions --------------------------------------------------------------------------------

    def _process(self) -> None:
        while self.queue and self.waiting is None and not self.closing:
            message = self.queue.popleft()
            if self.sim.recorder is not None:
                self.sim.recorder.record(message, session=self.number)
            if self.sim.shutting_down and _refused_in_shutdown(message):
                self.send(error(message, SHUTTING_DOWN))
                continue
            try:
                waiting = dispatch(self, message)
            except Exception as exc:
                self.sim.engine.record_error(exc)
                self.send(error(message, "Internal error"))
                continue
            if waiting is not None and not waiting.done():
                self.waiting = waiting
                waiting.add_done_callback(self._resume)
        transport = self.transport
        if transport is None:
            return
        backlog = len(self.queue) > MAX_QUEUED_ACTIONS
        if backlog and not self._paused:
            transport.pause_reading()
            self._paused = True
        elif not backlog and self._paused:
            transport.resume_reading()
            self._paused = False

    def _resume(self, future: asyncio.Future[None]) -> None:
        self.waiting = None
        if not self.closing:
            self._process()

    # -- output ---------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue output; everything queued in one loop iteration leaves in one write."""
        if self.closing:
            return
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.sim.loop.call_soon(self._flush)

    send_event = send

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self.transport
        if not self._out or transport is None or transport.is_closing():
            self._out.clear()
            return
        transport.write(b"".join(self._out))
        self._out.clear()
        if transport.get_write_buffer_size() > MAX_PENDING_OUTPUT:
            log.warning("AMI session %d is not reading its events; disconnecting it", self.number)
            self.abort()

    def wants(self, text: str) -> bool:
        """Event filter check (the bus has already matched the event mask)."""
        return not self.filters or self.filters.allows(text)

    def set_event_mask(self, mask: int) -> None:
        self.send_events = mask
        if self.authenticated and mask:
            self.sim.bus.subscribe(self)
        else:
            self.sim.bus.unsubscribe(self)

    def close_after_output(self) -> None:
        """Logoff / failed login: send what is pending, then close the socket."""
        self._flush()
        self.closing = True
        self.sim.bus.unsubscribe(self)
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self.sim.bus.unsubscribe(self)
        if self.transport is not None:
            self.transport.abort()


def _refused_in_shutdown(message: Message) -> bool:
    """process_message refuses every action once shutdown has begun, Login included; only a
    frame it cannot read, or one without an Action, is answered as usual first."""
    return message.error is None and any(message.get_all("Action"))
