"""The AMI adapter: the only module that talks to Asterisk's Manager Interface.

`AmiClient` is the asyncio client (the listener and the live call control commands use it);
Celery worker processes use the blocking `dialer.ami.blocking.SyncAmiClient`, which keeps the same
guarantees without an event loop.

How a PBX is reached and logged in to comes from its `AmiServer` (`dialer.ami.login` builds
both): over TLS when `tls` is set, the server's certificate checked against `tls_ca` (or the
system's CAs) with its host name, unless `tls_verify` is off; a certificate that fails raises
`AmiCertificateError`, an `AmiAuthenticationError`, so it is never retried like a network
failure (the handshake is part of the connect deadline). With `auth == "md5"` the login is
Asterisk's challenge and response: `Action: Challenge` (`AuthType: MD5`) answered with
`Challenge: <c>`, then `Action: Login` with `AuthType: MD5`, `Username` and `Key: md5(c +
secret)`; the secret itself is never written. Both exchanges share the login deadline.

panoramisk 1.4 was the starting point, and it is no longer imported here. Its connection manager
is not used, because each of its verified defects would hurt a dialer, and each is handled here
instead (below). Its frame parser, `Message.from_line`, was used until the listener's ingest
benchmark showed parsing to be the bottleneck: with the folding a dialer needs on top, frames
parsed at ~23k/s; `parse_frame` does the same in one pass at ~90k/s. panoramisk stays the
reference parser of the fuzz tests (tests/test_fuzz_ami.py).

- Pending actions re-sent after a reconnect (`forgetable_actions` holds only ping and login):
  nothing is ever queued for re-sending. When a connection is lost every action still waiting
  for its response fails: an Originate with `OriginateFateUnknown`, any other action with
  `ActionFateUnknown`. Callers reconcile; the adapter never writes an action twice.
- No CR/LF/NUL checks, header order lost (`Action.__str__` sorts), dict values sent as repr:
  every frame is built by `dialer.ami.wire.encode_action`, which keeps order and refuses unsafe
  values with `UnsafeHeaderValue` before any byte exists.
- Each TCP chunk decoded with `errors='ignore'` (a UTF-8 character split across reads is lost):
  frames are read as bytes up to their blank line and decoded whole, so a split character is
  joined first; an invalid byte becomes U+FFFD instead of vanishing.
- `Async: true` Originates resolve only on the OriginateResponse (never, if the connection drops;
  and that event is then hidden from event handlers); a bool `Async` hangs: responses are matched
  here by ActionID, so an Originate completes on Asterisk's "successfully queued" response and
  the later OriginateResponse is an ordinary event. `Async` is always the string `true`.
- Fixed reconnect delay truncated to an int (0 s for fractions), and a failed login that silently
  loops: reconnects back off exponentially with jitter; a refused login (or a refused TLS
  certificate, `AmiCertificateError`) raises `AmiAuthenticationError` and is never retried.
- Ping replies never checked: a watchdog sends Ping every `ping_interval` and drops the
  connection (then reconnects) when no answer arrives within `ping_timeout`.
- No timeouts anywhere: connect (with the TLS handshake), greeting, challenge and login, every
  write (drain) and every response wait has a deadline.
- Event callbacks run detached (`ensure_future`), losing order and errors: one reader task per
  connection puts events on an asyncio.Queue in arrival order; `events()` yields them, with the
  markers `DialerConnected` and `DialerDisconnected` around every connection.
- `Action` objects need a running event loop: no `Action` is made; worker threads use the
  blocking `dialer.ami.blocking.SyncAmiClient`.
- `Message.from_line` takes the last line of a `Response: Follows`/`Fail` frame apart as a
  body and drops the other lines without `: `: `parse_frame` keeps every line, headers as
  headers and raw body lines under `Output`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dialer.ami import login
from dialer.ami import wire as amiwire
from dialer.settings import AmiServer, pbx_variable

log = logging.getLogger(__name__)

FRAME_END = b"\r\n\r\n"
GREETING_PREFIX = b"Asterisk Call Manager/"
MAX_FRAME_BYTES = 8 * 1024 * 1024
CONNECTED_EVENT = "DialerConnected"
DISCONNECTED_EVENT = "DialerDisconnected"
# Queued among the events when the response of an action sent with `mark_events` arrives.
RESPONSE_MARK_EVENT = "DialerResponse"

Event = dict[str, Any]
T = TypeVar("T")


class AmiError(Exception):
    """Anything that went wrong talking to the AMI."""


class AmiAuthenticationError(AmiError):
    """Asterisk refused the username/secret; retrying would not help."""


class AmiCertificateError(AmiAuthenticationError):
    """The server's TLS certificate failed verification (unknown CA, another host's name,
    expired), or the CA file is unusable. Like a refused login it is a matter of configuration:
    never retried like a network blip."""


class AmiConnectionError(AmiError):
    """Not connected, or the server could not be reached or logged in to: nothing was sent."""


class ActionFateUnknown(AmiError):
    """The action may have been written, but no response arrived; never resend it blindly."""


class OriginateFateUnknown(ActionFateUnknown):
    """The Originate may have reached Asterisk; the call attempt must be reconciled, not retried."""


class OriginateRejected(AmiError):
    """Asterisk answered the Originate with an error: no call was queued."""

    @property
    def pbx_shutting_down(self) -> bool:
        """Refused because the PBX is going down (`core restart now`): nothing about the call
        itself, which may be sent again once a PBX takes calls."""
        return "shutting down" in str(self).lower()


class AmiActionRefused(AmiError):
    """Asterisk answered a list action with an error; `response` is its answer (`Message`
    says why: "Permission denied", "Did not find context X"...)."""

    def __init__(self, message: str, response: Event) -> None:
        super().__init__(message)
        self.response = response


def backoff_delay(
    attempt: int, initial: float, maximum: float, rng: Callable[[], float] = random.random
) -> float:
    """Seconds before reconnect attempt `attempt` (0-based): doubling, capped, with jitter.

    The delay is drawn from [d/2, d] with d = min(maximum, initial * 2**attempt), so many
    dialer processes that lost the same PBX do not reconnect in lockstep.
    """
    ceiling = min(maximum, initial * 2 ** min(attempt, 30))
    return ceiling / 2 + rng() * ceiling / 2


def parse_frame(raw: bytes) -> Event | None:
    """A received frame as a plain dict, or None if it is neither a response nor an event.

    Each `Name: value` line is a header. `ChanVariable: name=value` headers (manager.conf
    `channelvars`) become one dict, as do the prefixed forms of multi-channel events
    (`DestChanVariable`, `LocalOneChanVariable`...); OriginateResponse's
    `ChanVariable(<channel>)` form is folded into `ChanVariable`. Other repeated headers are
    joined with newlines, and so are the raw lines of a `Response: Follows` (or `Fail`) body,
    under `Output`. Other lines without `: ` carry nothing and are skipped.

    This runs once per event the listener reads: it is a single pass over the lines, about six
    times faster than panoramisk's `Message.from_line` plus the same folding (see the module doc).
    """
    # Asterisk writes C strings, so a NUL is never data; Postgres could not store it either.
    text = raw.decode("utf-8", errors="replace")
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    event: Event = {}
    body = text.startswith(_BODY_RESPONSES)
    for line in text.split("\r\n"):
        name, sep, value = line.partition(": ")
        if not sep:
            if not (body and line):
                continue
            name, value = "Output", line
        # `in` first: most names are no channel variable, and it is cheaper than two calls.
        if "ChanVariable" in name and (
            name.endswith("ChanVariable") or name.startswith("ChanVariable(")
        ):
            folded = "ChanVariable" if name.startswith("ChanVariable(") else name
            variables = event.get(folded)
            if not isinstance(variables, dict):
                variables = event[folded] = {}
            var_name, _, var_value = value.partition("=")
            variables[var_name] = var_value
        elif name in event:
            event[name] = f"{event[name]}\n{value}"
        else:
            event[name] = value
    if "Event" not in event and "Response" not in event:
        return None
    return event


_BODY_RESPONSES = ("Response: Follows", "Response: Fail")


class _ConnectionLost(Exception):
    """Internal: the connection ended while an action waited for its response."""


@dataclass(eq=False)
class _Pending:
    future: asyncio.Future[Any]
    as_list: bool
    items: list[Event] = field(default_factory=list)
    started: bool = False
    mark: bool = False  # queue a RESPONSE_MARK_EVENT when the response arrives


class _Session:
    """One logged-in TCP connection: its reader task, its watchdog, its pending actions."""

    def __init__(
        self,
        client: AmiClient,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.client = client
        self.reader = reader
        self.writer = writer
        self.pending: dict[str, _Pending] = {}
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="ami-reader"),
            asyncio.create_task(self._watchdog(), name="ami-watchdog"),
        ]

    @property
    def usable(self) -> bool:
        return not self.closed.is_set() and not self.writer.is_closing()

    async def _read_loop(self) -> None:
        reason = "connection closed by the server"
        try:
            while True:
                raw = await self.reader.readuntil(FRAME_END)
                frame = parse_frame(raw)
                if frame is not None:
                    self.client._dispatch(self, frame)
                    if not self.client._room.is_set():
                        await self.client._room.wait()
        except asyncio.IncompleteReadError:
            pass
        except asyncio.LimitOverrunError:
            reason = f"frame larger than {MAX_FRAME_BYTES} bytes"
        except OSError as exc:
            reason = f"connection error: {exc}"
        except Exception as exc:  # a bug must not leave callers waiting on a dead reader
            log.exception("AMI %s: reader failed", self.client.server.name)
            reason = f"reader failed: {exc!r}"
        self.close(reason)

    async def _watchdog(self) -> None:
        client = self.client
        while self.usable:
            await asyncio.sleep(client.ping_interval)
            try:
                await client._exchange(
                    self, {"Action": "Ping"}, timeout=client.ping_timeout, as_list=False
                )
            except AmiConnectionError:
                return
            except ActionFateUnknown:
                if self.usable:
                    log.warning(
                        "AMI %s: no answer to Ping within %.1fs; dropping the connection",
                        client.server.name,
                        client.ping_timeout,
                    )
                    self.close("peer stopped answering Ping")
                return

    def close(self, reason: str) -> None:
        """Idempotent: fail every pending action and abort the socket (unsent bytes dropped)."""
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        for pending in self.pending.values():
            if not pending.future.done():
                pending.future.set_exception(_ConnectionLost(reason))
                pending.future.exception()  # retrieved: no warning if its waiter is gone
        self.pending.clear()
        self.writer.transport.abort()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()


_STOP = object()


class AmiClient:
    """An asyncio AMI client with reconnect, watchdog and per-action deadlines.

    `await connect()` connects and logs in once (raising `AmiConnectionError` or
    `AmiAuthenticationError`); afterwards the client reconnects by itself until `close()`.
    Actions issued while it is reconnecting wait for the connection until their deadline, then
    fail with `AmiConnectionError` (nothing sent).
    """

    def __init__(
        self,
        server: AmiServer,
        *,
        events: bool,
        connect_timeout: float = 5.0,
        login_timeout: float = 5.0,
        action_timeout: float = 10.0,
        ping_interval: float = 10.0,
        # Generous: a loaded Asterisk answers late, and a false alarm costs a reconnect.
        ping_timeout: float = 10.0,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 30.0,
        max_queued_events: int | None = None,
    ) -> None:
        self.server = server
        self.events_enabled = events
        self.connect_timeout = connect_timeout
        self.login_timeout = login_timeout
        self.action_timeout = action_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self._session: _Session | None = None
        self._ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._fatal: AmiError | None = None
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        # With a bound, the reader stops reading the socket while that many events wait for
        # `events()`, and reads on once half of them are taken: TCP holds the rest (and a PBX
        # whose writes time out drops the session; reconnecting reconciles). Never dropped here.
        self.max_queued_events = max_queued_events
        self._room = asyncio.Event()
        self._room.set()
        self._ids = itertools.count(1)
        self._id_prefix = f"dialer-{os.getpid()}-{id(self):x}"

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.usable

    @property
    def stopped(self) -> bool:
        """Closed, or given up after Asterisk refused a re-login."""
        return self._stopped.is_set()

    async def connect(self, *, retry: bool = False) -> None:
        """Connect and log in; afterwards the client keeps itself connected until `close()`.

        retry: keep trying (with the reconnect back-off) while the server cannot be reached,
        e.g. for a long-running process started before Asterisk. A refused login is never retried.
        """
        if self._supervisor is not None:
            if self._stopped.is_set():
                raise AmiConnectionError("client is closed")
            return
        try:
            session = await self._open_session()
        except AmiConnectionError as exc:
            if not retry:
                raise
            log.warning("AMI %s: %s; retrying", self.server.name, exc)
            session = await self._reconnect()
        self._adopt(session)
        self._supervisor = asyncio.create_task(self._supervise(session), name="ami-supervisor")

    async def close(self) -> None:
        """Log off (best effort, 1 s), close the connection and end `events()`."""
        if self._closing:
            return
        self._closing = True
        session = self._session
        if session is not None and session.usable:
            with contextlib.suppress(AmiError):
                await self._exchange(session, {"Action": "Logoff"}, timeout=1.0, as_list=False)
            session.close("closed by the dialer")
        supervisor = self._supervisor
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.wait({supervisor}, timeout=1.0)
        self._stop()

    async def __aenter__(self) -> AmiClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _open_session(self) -> _Session:
        server = self.server
        where = server.address
        # Encoded (and so checked) before connecting; the secret is never logged.
        login.login_frame(
            server, "check", events=self.events_enabled,
            challenge="" if login.uses_md5(server) else None,
        )  # fmt: skip
        try:
            context = login.tls_context(server)
        except (OSError, ValueError) as exc:  # an unreadable or malformed CA file
            raise AmiCertificateError(
                f"AMI {server.name}: cannot use the CA file {server.tls_ca!r} ({exc}); "
                f"check {pbx_variable(server.name, 'TLS_CA')}"
            ) from None
        tls: dict[str, Any] = {}
        if context is not None:
            tls = {
                "ssl": context,
                "server_hostname": server.host,
                "ssl_handshake_timeout": self.connect_timeout,
            }
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(server.host, server.port, limit=MAX_FRAME_BYTES, **tls),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise connect_failure(server, exc) from None
        logged_in = False
        try:
            async with asyncio.timeout(self.login_timeout):
                greeting = await reader.readline()
                if not greeting.startswith(GREETING_PREFIX):
                    raise AmiConnectionError(f"{where} is not an Asterisk Manager Interface")
                challenge = None
                if login.uses_md5(server):
                    action_id = self._next_id()
                    writer.write(login.challenge_frame(action_id))
                    await writer.drain()
                    challenge = md5_challenge(server, await _read_response(reader, action_id))
                action_id = self._next_id()
                writer.write(
                    login.login_frame(
                        server, action_id, events=self.events_enabled, challenge=challenge
                    )
                )
                await writer.drain()
                response = await _read_response(reader, action_id)
            if response.get("Response") != "Success":
                raise AmiAuthenticationError(
                    f"AMI {server.name} at {where} refused login as {server.username!r}: "
                    f"{response.get('Message', response.get('Response'))}"
                )
            logged_in = True
        except TimeoutError:
            raise AmiConnectionError(
                f"AMI {server.name} at {where}: no login answer within {self.login_timeout}s"
                + _plain_on_tls_hint(server)
            ) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise AmiConnectionError(
                f"AMI {server.name} at {where}: connection lost during login ({exc!r})"
            ) from None
        finally:
            if not logged_in:  # refused, failed or cancelled: never leave the socket open
                writer.transport.abort()
        log.info("AMI %s: logged in at %s (%s login)", server.name, where, server.auth)
        return _Session(self, reader, writer)

    def _adopt(self, session: _Session) -> None:
        """Make `session` current; its marker is queued before any of its events."""
        self._session = session
        self._ready.set()
        self._emit({"Event": CONNECTED_EVENT, "Server": self.server.name})
        session.start()

    async def _supervise(self, session: _Session) -> None:
        try:
            while True:
                await session.closed.wait()
                self._ready.clear()
                self._session = None
                self._emit(
                    {
                        "Event": DISCONNECTED_EVENT,
                        "Server": self.server.name,
                        "Reason": session.close_reason,
                    }
                )
                if self._closing:
                    return
                log.warning(
                    "AMI %s: connection lost (%s); reconnecting",
                    self.server.name,
                    session.close_reason,
                )
                session = await self._reconnect()
                self._adopt(session)
        except AmiAuthenticationError as exc:
            log.error("AMI %s: %s; giving up", self.server.name, exc)
            self._fatal = exc
        finally:
            if self._session is not None:
                self._session.close("client stopped")
            self._ready.clear()
            self._session = None
            self._stop()

    async def _reconnect(self) -> _Session:
        for attempt in itertools.count():
            await asyncio.sleep(backoff_delay(attempt, self.reconnect_initial, self.reconnect_max))
            try:
                return await self._open_session()
            except AmiAuthenticationError:
                raise
            except AmiConnectionError as exc:
                log.info("AMI %s: reconnect attempt %d failed: %s", self.server.name, attempt, exc)
        raise AssertionError("unreachable")

    def _stop(self) -> None:
        if not self._stopped.is_set():
            self._stopped.set()
            self._events.put_nowait(_STOP)

    # -- actions ---------------------------------------------------------------------------

    async def action(
        self,
        headers: Mapping[str, Any] | list[tuple[str, str]],
        *,
        timeout: float | None = None,
        mark_events: bool = False,
    ) -> Event:
        """Send one action and return its response (whatever its `Response` says).

        mark_events: queue a `DialerResponse` marker (with the action's ActionID) among the
        events at the point where the response arrived, so that a caller following the
        action's own events can tell them from older ones (`skip_events_before`).

        Raises `AmiConnectionError` (nothing sent), `ActionFateUnknown` (sent, no answer in
        time or connection lost) or `UnsafeHeaderValue`.
        """
        return await self._request(
            headers, timeout, as_list=False, unknown=ActionFateUnknown, mark=mark_events
        )

    async def action_list(
        self,
        headers: Mapping[str, Any] | list[tuple[str, str]],
        *,
        timeout: float | None = None,
    ) -> list[Event]:
        """Send an action answered by an event list (CoreShowChannels, QueueStatus, Status...)
        and return the list's events, without the closing `...Complete` event.
        Raises `AmiActionRefused` (an `AmiError`) if Asterisk answers with an error, even after
        the list started (ShowDialPlan does that).
        """
        result = await self._request(headers, timeout, as_list=True, unknown=ActionFateUnknown)
        if isinstance(result, dict):
            if result.get("Response") == "Success":
                return []
            action = _action_name(headers)
            raise AmiActionRefused(f"{action}: {result.get('Message', 'error')}", result)
        return result

    async def originate(
        self,
        payload: Mapping[str, Any],
        *,
        timeout: float | None = None,
        send_by: float | None = None,
    ) -> None:
        """Send the Originate for a payload built by `dialer.dialing.payload`; return once queued.

        The call's result arrives later as an OriginateResponse event (ActionID = the call's
        custom_call_id). Raises `UnsafeHeaderValue`/`ValueError` (refused, nothing sent),
        `AmiConnectionError` (nothing sent), `OriginateRejected` (Asterisk refused; no call),
        `OriginateFateUnknown` (sent, fate unknown: reconcile, never resend).

        send_by: a Unix time. The frame is written only if that time has not passed, checked
        just before the write (after any wait for a reconnection); otherwise
        `AmiConnectionError`, nothing sent. A paced call must go out in its slot or not at
        all: sent late, it bunches with the calls after it.
        """
        headers = amiwire.originate_headers(payload)
        response = await self._request(
            headers, timeout, as_list=False, unknown=OriginateFateUnknown, send_by=send_by
        )
        if response.get("Response") != "Success":
            raise OriginateRejected(
                f"Originate {payload['actionid']} refused: {response.get('Message', 'error')}"
            )

    async def _request(
        self,
        headers: Mapping[str, Any] | list[tuple[str, str]],
        timeout: float | None,
        *,
        as_list: bool,
        unknown: type[ActionFateUnknown],
        mark: bool = False,
        send_by: float | None = None,
    ) -> Any:
        timeout = self.action_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        lines = amiwire.header_lines(headers)
        amiwire.encode_action(lines)  # refuse unsafe input before waiting for anything
        connected_by = deadline
        if send_by is not None:
            connected_by = min(deadline, loop.time() + max(0.0, send_by - time.time()))
        session = await self._live_session(connected_by)
        return await self._exchange(
            session, lines, timeout=max(0.0, deadline - loop.time()), as_list=as_list,
            unknown=unknown, mark=mark, send_by=send_by,
        )  # fmt: skip

    async def wait_connected(self, timeout: float) -> None:
        """Return once logged in; `AmiConnectionError` if still reconnecting after `timeout`."""
        await self._live_session(asyncio.get_running_loop().time() + timeout)

    async def _live_session(self, deadline: float) -> _Session:
        if self._supervisor is None:
            raise AmiConnectionError(f"AMI {self.server.name}: not connected")
        loop = asyncio.get_running_loop()
        while True:
            session = self._session
            if session is not None and session.usable:
                return session
            if self._stopped.is_set():
                raise AmiConnectionError(
                    f"AMI {self.server.name}: client stopped"
                    + (f" ({self._fatal})" if self._fatal else "")
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AmiConnectionError(
                    f"AMI {self.server.name}: not connected (reconnecting); nothing sent"
                )
            waiters = [
                asyncio.ensure_future(self._ready.wait()),
                asyncio.ensure_future(self._stopped.wait()),
            ]
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when="FIRST_COMPLETED")
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def _exchange(
        self,
        session: _Session,
        headers: Mapping[str, Any] | list[tuple[str, str]],
        *,
        timeout: float,
        as_list: bool,
        unknown: type[ActionFateUnknown] = ActionFateUnknown,
        mark: bool = False,
        send_by: float | None = None,
    ) -> Any:
        """Write one action on `session` and wait for its answer; at most one write, ever."""
        lines = amiwire.header_lines(headers)
        action_id = next((v for n, v in lines if n.lower() == "actionid"), None)
        if action_id is None:
            action_id = self._next_id()
            lines.insert(1, ("ActionID", action_id))
        frame = amiwire.encode_action(lines)
        action = next((v for n, v in lines if n.lower() == "action"), "?")
        if not session.usable:
            raise AmiConnectionError(f"AMI {self.server.name}: not connected; nothing sent")
        if action_id in session.pending:
            raise AmiError(f"an action with ActionID {action_id!r} is already waiting; not sent")
        if send_by is not None and (late := time.time() - send_by) > 0:
            raise AmiConnectionError(
                f"{action} {action_id}: {late * 1000:.0f} ms past its send-by time; nothing sent"
            )
        pending = _Pending(asyncio.get_running_loop().create_future(), as_list, mark=mark)
        session.pending[action_id] = pending
        drained = False
        try:
            async with asyncio.timeout(timeout):
                session.writer.write(frame)
                await session.writer.drain()
                drained = True
                return await pending.future
        except TimeoutError:
            if not drained:
                # A half-written frame would corrupt whatever is sent next on this socket.
                session.close(f"{action} write not completed within {timeout:.1f}s")
            raise unknown(
                f"{action} {action_id}: no response within {timeout:.1f}s (it may have been executed)"
            ) from None
        except (_ConnectionLost, OSError) as exc:
            raise unknown(
                f"{action} {action_id}: connection lost before the response ({exc})"
            ) from None
        finally:
            if session.pending.get(action_id) is pending:
                del session.pending[action_id]

    def _dispatch(self, session: _Session, frame: Event) -> None:
        action_id = frame.get("ActionID")
        pending = session.pending.get(action_id) if action_id is not None else None
        if pending is not None and not pending.future.done():
            # OriginateResponse is an event carrying `Response` and the Originate's ActionID.
            if "Response" in frame and "Event" not in frame:
                if (
                    pending.as_list
                    and frame["Response"] == "Success"
                    and frame.get("EventList", "").lower() == "start"
                ):
                    pending.started = True
                else:
                    pending.future.set_result(frame)
                    if pending.mark:
                        self._emit({"Event": RESPONSE_MARK_EVENT, "ActionID": action_id})
                return
            if pending.as_list and pending.started:
                if frame.get("EventList", "").lower() == "complete":
                    pending.future.set_result(pending.items)
                else:
                    pending.items.append(frame)
                return
        if "Event" in frame:
            self._emit(frame)
        elif "Response" in frame:
            log.debug("AMI %s: late response for %s ignored", self.server.name, action_id)

    # -- events ----------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        if self.events_enabled:
            self._events.put_nowait(event)
            bound = self.max_queued_events
            if bound is not None and self._events.qsize() >= bound:
                self._room.clear()

    def _taken(self) -> None:
        """An event was taken from the queue: let the reader go on once half are taken."""
        if not self._room.is_set() and self._events.qsize() <= (self.max_queued_events or 0) // 2:
            self._room.set()

    @property
    def queued_events(self) -> int:
        return self._events.qsize()

    async def events(self) -> AsyncIterator[Event]:
        """Every event in arrival order, with `DialerConnected`/`DialerDisconnected` markers.

        Ends after `close()`; raises `AmiAuthenticationError` if a re-login was refused.
        Meant for one consumer.
        """
        if not self.events_enabled:
            raise AmiError("this client was created with events=False")
        while True:
            item = await self._events.get()
            self._taken()
            if item is _STOP:
                self._events.put_nowait(_STOP)  # later calls end too
                if self._fatal is not None:
                    raise self._fatal
                return
            yield item

    async def next_event(self, timeout: float) -> Event | None:
        """The next event within `timeout` seconds; None if none came, or the client stopped.
        For a command that follows a few events itself (not together with `events()`)."""
        if not self.events_enabled:
            raise AmiError("this client was created with events=False")
        try:
            item = await asyncio.wait_for(self._events.get(), max(0.0, timeout))
        except TimeoutError:
            return None
        self._taken()
        if item is _STOP:
            self._events.put_nowait(_STOP)
            return None
        return item

    def skip_events_before(self, action_id: str) -> int:
        """Drop the queued events that arrived before the response of `action_id` (sent with
        `mark_events`), and its marker; how many were dropped. Asterisk writes the events an
        action causes after its response, so those are what remains queued."""
        dropped = 0
        while not self._events.empty():
            item = self._events.get_nowait()
            self._taken()
            if item is _STOP:
                self._events.put_nowait(_STOP)
                break
            if item.get("Event") == RESPONSE_MARK_EVENT and item.get("ActionID") == action_id:
                break
            dropped += 1
        return dropped

    def _next_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"


def _action_name(headers: Mapping[str, Any] | list[tuple[str, str]]) -> str:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return next((str(v) for k, v in pairs if k.lower() == "action"), "?")


async def _read_response(reader: asyncio.StreamReader, action_id: str) -> Event:
    while True:
        frame = parse_frame(await reader.readuntil(FRAME_END))
        if frame is not None and frame.get("ActionID") == action_id and "Response" in frame:
            return frame


def md5_challenge(server: AmiServer, response: Event) -> str:
    """The MD5 challenge from the answer to `Action: Challenge`; a server that gives none
    cannot take an MD5 login (not retried: `AmiAuthenticationError`)."""
    challenge = response.get("Challenge")
    if response.get("Response") != "Success" or not challenge:
        raise AmiAuthenticationError(
            f"AMI {server.name} at {server.address} gave no MD5 challenge "
            f"({response.get('Message', response.get('Response'))}); to send the secret "
            f"instead set {pbx_variable(server.name, 'AUTH')}=plain, over TLS"
        )
    return str(challenge)


def connect_failure(server: AmiServer, exc: BaseException) -> AmiError:
    """What a failed connect (TCP, then the TLS handshake) means: a certificate that is not
    accepted is `AmiCertificateError` (not retried), anything else `AmiConnectionError`."""
    problem = login.certificate_problem(exc)
    if problem is not None:
        if login.wrong_host_name(exc):
            hint = f"{pbx_variable(server.name, 'HOST')} must be a name the certificate carries"
        else:
            hint = f"check {pbx_variable(server.name, 'TLS_CA')} (the CA that signed it)"
        return AmiCertificateError(
            f"AMI {server.name} at {server.address}: TLS certificate not accepted: "
            f"{problem}; {hint}"
        )
    if isinstance(exc, ssl.SSLError):
        return AmiConnectionError(
            f"AMI {server.name} at {server.address}: TLS handshake failed ({exc.reason or exc}); "
            f"is {server.port} the AMI's TLS port (manager.conf tlsbindaddr)?"
        )
    return AmiConnectionError(f"cannot reach AMI {server.name} at {server.address}: {exc}")


def _plain_on_tls_hint(server: AmiServer) -> str:
    if server.tls:
        return ""
    return f" (a TLS port? then set {pbx_variable(server.name, 'TLS')}=true)"
