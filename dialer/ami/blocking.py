"""The blocking AMI client of worker processes: one persistent connection, events off.

The originate task sends one Originate per call and waits for Asterisk's "queued" answer; in a
worker thread that is a socket write and a read. This client does exactly that on a blocking
socket, with the guarantees of `dialer.ami.client.AmiClient` (whose module doc lists the panoramisk
defects they answer) and without an event loop, so a call costs no hand-over between threads:

- Never written twice: nothing is queued for re-sending. A connection lost or an answer missing
  after the write raises `OriginateFateUnknown` (`ActionFateUnknown` for other actions); an
  error before any byte was written raises `AmiConnectionError` ("nothing sent").
- Every frame is built by `dialer.ami.wire` (CR/LF/NUL refused, order kept) before the socket is
  touched; answers are matched by ActionID, and anything else read meanwhile is dropped.
- Deadlines everywhere: connect (the TLS handshake included, done non-blocking so that it keeps
  the connect deadline as a whole), greeting, challenge and login, every answer; `send_by` is
  checked just before the write, after any wait for a connection.
- TLS and the MD5 challenge login as `dialer.ami.client` does them (`dialer.ami.login`): the
  secret is never written with `auth == "md5"`.
- A dead peer is noticed before writing: a closed connection (EOF pending) reconnects, and a
  connection idle for `ping_interval` is pinged first. Reconnects back off exponentially with
  jitter (`backoff_delay`); a refused login raises `AmiAuthenticationError` (a refused TLS
  certificate its subclass `AmiCertificateError`), again at every call for `reconnect_max`
  seconds before the next try.
- Thread-safe: one exchange at a time on the connection (a lock). After a fork the child opens
  its own connection on first use and never writes on the parent's.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from dialer.ami import login
from dialer.ami import wire as amiwire
from dialer.ami.client import (
    FRAME_END,
    GREETING_PREFIX,
    MAX_FRAME_BYTES,
    ActionFateUnknown,
    AmiAuthenticationError,
    AmiCertificateError,
    AmiConnectionError,
    AmiError,
    Event,
    OriginateFateUnknown,
    OriginateRejected,
    backoff_delay,
    connect_failure,
    md5_challenge,
    parse_frame,
)
from dialer.settings import AmiServer, pbx_variable

_CLIENTS: weakref.WeakSet[SyncAmiClient] = weakref.WeakSet()


class _Lost(Exception):
    """Internal: the connection ended or failed while reading."""


class SyncAmiClient:
    """Blocking AMI client (see the module doc). Connects on first use."""

    def __init__(
        self,
        server: AmiServer,
        *,
        connect_timeout: float = 5.0,
        login_timeout: float = 5.0,
        action_timeout: float = 10.0,
        ping_interval: float = 10.0,
        ping_timeout: float = 10.0,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 30.0,
    ) -> None:
        self.server = server
        self.connect_timeout = connect_timeout
        self.login_timeout = login_timeout
        self.action_timeout = action_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._last_used = 0.0  # monotonic time of the last answer read
        self._failures = 0  # connection attempts failed in a row
        self._retry_at = 0.0  # monotonic time before which no reconnect is tried
        self._refused: AmiAuthenticationError | None = None  # until _retry_at
        self._ids = itertools.count(1)
        self._id_prefix = f"dialer-sync-{os.getpid()}-{id(self):x}"
        _CLIENTS.add(self)

    @property
    def connected(self) -> bool:
        return self._sock is not None and self._pid == os.getpid()

    # -- the Originator protocol of dialer.dialing.originate ---------------------------------------

    def wait_connected(self, timeout: float) -> None:
        """Return once logged in; `AmiConnectionError` if still not after `timeout`,
        `AmiAuthenticationError` if Asterisk refused the login."""
        with self._lock:
            self._connection(time.monotonic() + timeout)

    def originate(
        self,
        payload: Mapping[str, Any],
        *,
        timeout: float | None = None,
        send_by: float | None = None,
    ) -> None:
        """Send the Originate for a payload built by `dialer.dialing.payload`; return once queued.

        Raises as `dialer.ami.client.AmiClient.originate` does: `UnsafeHeaderValue`/`ValueError` and
        `AmiConnectionError` (nothing sent), `OriginateRejected`, `OriginateFateUnknown`.
        """
        frame = amiwire.originate_frame(payload)
        response = self._exchange(
            frame, payload["actionid"], timeout, OriginateFateUnknown, send_by=send_by
        )
        if response.get("Response") != "Success":
            raise OriginateRejected(
                f"Originate {payload['actionid']} refused: {response.get('Message', 'error')}"
            )

    # -- other actions -----------------------------------------------------------------------

    def action(self, headers: Mapping[str, Any], *, timeout: float | None = None) -> Event:
        """Send one action and return its response (whatever its `Response` says)."""
        frame, action_id = self._encode(headers)
        return self._exchange(frame, action_id, timeout, ActionFateUnknown)

    def action_list(
        self, headers: Mapping[str, Any], *, timeout: float | None = None
    ) -> list[Event]:
        """Send an action answered by an event list and return the list's events, without
        the closing `...Complete` event. Raises `AmiError` if Asterisk answers with an error."""
        frame, action_id = self._encode(headers)
        result = self._exchange(frame, action_id, timeout, ActionFateUnknown, as_list=True)
        if isinstance(result, dict):
            if result.get("Response") == "Success":
                return []
            raise AmiError(f"{headers.get('Action')}: {result.get('Message', 'error')}")
        return result

    def close(self, timeout: float = 1.0) -> None:
        """Log off (best effort) and close the connection; a later call connects again."""
        with self._lock:
            if self._sock is None or self._pid != os.getpid():
                self._forget()
                return
            with contextlib.suppress(AmiError, OSError, _Lost):
                frame, action_id = self._encode({"Action": "Logoff"})
                self._sock.sendall(frame)
                self._read_answer(action_id, time.monotonic() + timeout, as_list=False)
            self._drop()

    # -- internals -----------------------------------------------------------------------------

    def _encode(self, headers: Mapping[str, Any]) -> tuple[bytes, str]:
        lines = amiwire.header_lines(headers)
        action_id = next((v for n, v in lines if n.lower() == "actionid"), None)
        if action_id is None:
            action_id = f"{self._id_prefix}-{next(self._ids)}"
            lines.insert(1, ("ActionID", action_id))
        return amiwire.encode_action(lines), action_id

    def _exchange(
        self,
        frame: bytes,
        action_id: str,
        timeout: float | None,
        unknown: type[ActionFateUnknown],
        *,
        send_by: float | None = None,
        as_list: bool = False,
    ) -> Any:
        timeout = self.action_timeout if timeout is None else timeout
        with self._lock:
            deadline = time.monotonic() + timeout
            connect_by = deadline
            if send_by is not None:
                connect_by = min(deadline, time.monotonic() + max(0.0, send_by - time.time()))
            sock = self._connection(connect_by)
            if send_by is not None and (late := time.time() - send_by) > 0:
                raise AmiConnectionError(
                    f"{action_id}: {late * 1000:.0f} ms past its send-by time; nothing sent"
                )
            try:
                sock.settimeout(timeout)
                sock.sendall(frame)
            except OSError as exc:
                self._drop()
                raise unknown(f"{action_id}: connection lost while writing ({exc})") from None
            try:
                return self._read_answer(action_id, deadline, as_list=as_list)
            except TimeoutError:
                raise unknown(
                    f"{action_id}: no response within {timeout:.1f}s (it may have been executed)"
                ) from None
            except _Lost as exc:
                raise unknown(f"{action_id}: connection lost before the response ({exc})") from None

    def _connection(self, deadline: float) -> socket.socket:
        """The logged-in socket, (re)connecting until `deadline` (monotonic)."""
        if self._pid != os.getpid():
            self._forget()
        if self._sock is not None and self._alive():
            return self._sock
        while True:
            now = time.monotonic()
            if self._refused is not None and self._retry_at > now:
                raise self._refused
            if self._retry_at > deadline:
                raise AmiConnectionError(
                    f"AMI {self.server.name}: not connected (reconnecting); nothing sent"
                )
            if self._retry_at > now:
                time.sleep(self._retry_at - now)
            try:
                self._sock = self._open(deadline)
            except AmiAuthenticationError as exc:
                # Retrying soon cannot help; the operator may fix the secret meanwhile.
                self._refused = exc
                self._retry_at = time.monotonic() + self.reconnect_max
                raise
            except AmiConnectionError:
                self._failures += 1
                self._retry_at = time.monotonic() + backoff_delay(
                    self._failures - 1, self.reconnect_initial, self.reconnect_max
                )
                if self._retry_at > deadline:
                    raise
                continue
            self._failures, self._refused = 0, None
            self._last_used = time.monotonic()
            return self._sock

    def _alive(self) -> bool:
        """Whether the connection can be written to: no EOF waiting, and a Ping answered when
        it has been idle for long. A dead connection is dropped (reconnect after a back-off)."""
        sock = self._sock
        assert sock is not None
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                # A TLS record may be arriving in parts: its own deadline, not a leftover one.
                sock.settimeout(self.ping_timeout)
                data = sock.recv(65536)  # an event, or a late answer: nothing we wait for
                if not data:
                    raise _Lost("closed by the server")
                self._buffer += data
            if time.monotonic() - self._last_used > self.ping_interval:
                # Its own deadline: a short one of the caller's must not drop a live connection
                # (the caller's send-by time is checked after this).
                frame, action_id = self._encode({"Action": "Ping"})
                sock.settimeout(self.ping_timeout)
                sock.sendall(frame)
                self._read_answer(action_id, time.monotonic() + self.ping_timeout, as_list=False)
        except (OSError, _Lost, TimeoutError):
            self._drop(lost=True)
            return False
        return True

    def _open(self, deadline: float) -> socket.socket:
        """Connect and log in: the new connection becomes `_sock` (None if this fails)."""
        server = self.server
        where = server.address
        md5 = login.uses_md5(server)
        # Encoded (and so checked) before connecting; the secret is never logged.
        login.login_frame(server, "check", events=False, challenge="" if md5 else None)
        try:
            context = login.tls_context(server)
        except (OSError, ValueError) as exc:  # an unreadable or malformed CA file
            raise AmiCertificateError(
                f"AMI {server.name}: cannot use the CA file {server.tls_ca!r} ({exc}); "
                f"check {pbx_variable(server.name, 'TLS_CA')}"
            ) from None
        budget = max(0.001, min(self.connect_timeout, deadline - time.monotonic()))
        connect_by = time.monotonic() + budget
        try:
            sock = socket.create_connection((server.host, server.port), timeout=budget)
        except OSError as exc:
            raise AmiConnectionError(f"cannot reach AMI {server.name} at {where}: {exc}") from None
        if context is not None:
            sock = _tls_handshake(sock, context, server, connect_by)
        self._sock, self._buffer = sock, b""
        # Never past the caller's deadline: a call due to leave now is not held by a login.
        login_by = min(time.monotonic() + self.login_timeout, deadline)
        try:
            greeting = self._read_until(b"\r\n", login_by)
            if not greeting.startswith(GREETING_PREFIX):
                raise AmiConnectionError(f"{where} is not an Asterisk Manager Interface")
            challenge = None
            if md5:
                action_id = f"{self._id_prefix}-{next(self._ids)}"
                sock.sendall(login.challenge_frame(action_id))
                answer = self._read_answer(action_id, login_by, as_list=False)
                challenge = md5_challenge(server, answer)
            action_id = f"{self._id_prefix}-{next(self._ids)}"
            sock.sendall(login.login_frame(server, action_id, events=False, challenge=challenge))
            response = self._read_answer(action_id, login_by, as_list=False)
        except (OSError, _Lost, TimeoutError) as exc:
            self._drop()
            hint = (
                ""
                if server.tls or not isinstance(exc, TimeoutError)
                else (f"; a TLS port? then set {pbx_variable(server.name, 'TLS')}=true")
            )
            raise AmiConnectionError(
                f"AMI {server.name} at {where}: no login ({exc or 'timed out'}{hint})"
            ) from None
        except AmiError:
            self._drop()
            raise
        if response.get("Response") != "Success":
            self._drop()
            raise AmiAuthenticationError(
                f"AMI {server.name} at {where} refused login as {server.username!r}: "
                f"{response.get('Message', response.get('Response'))}"
            )
        return sock

    def _read_answer(self, action_id: str, deadline: float, *, as_list: bool) -> Any:
        """The response to `action_id` (for a list: the events up to its Complete event);
        frames of anything else are dropped. Raises TimeoutError or _Lost."""
        items: list[Event] = []
        started = False
        while True:
            frame = parse_frame(self._read_until(FRAME_END, deadline))
            if frame is None or frame.get("ActionID") != action_id:
                continue
            if "Event" not in frame:
                if (
                    as_list
                    and frame.get("Response") == "Success"
                    and frame.get("EventList", "").lower() == "start"
                ):
                    started = True
                    continue
                self._last_used = time.monotonic()
                return frame
            if as_list and started:
                if frame.get("EventList", "").lower() == "complete":
                    self._last_used = time.monotonic()
                    return items
                items.append(frame)

    def _read_until(self, end: bytes, deadline: float) -> bytes:
        sock = self._sock
        assert sock is not None
        while True:
            found = self._buffer.find(end)
            if found >= 0:
                cut = found + len(end)
                data, self._buffer = self._buffer[:cut], self._buffer[cut:]
                return data
            if len(self._buffer) > MAX_FRAME_BYTES:
                self._drop()
                raise _Lost(f"frame larger than {MAX_FRAME_BYTES} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise
            except OSError as exc:
                self._drop(lost=True)
                raise _Lost(str(exc)) from None
            if not data:
                self._drop(lost=True)
                raise _Lost("closed by the server")
            self._buffer += data

    def _drop(self, *, lost: bool = False) -> None:
        """Close the connection; after a loss, the next connection waits for the back-off."""
        sock, self._sock, self._buffer = self._sock, None, b""
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        if lost:
            self._retry_at = time.monotonic() + backoff_delay(
                0, self.reconnect_initial, self.reconnect_max
            )

    def _forget(self) -> None:
        """In a forked child: never touch the parent's connection (its descriptor is closed
        here only; the parent's stays open)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        sock, self._sock, self._buffer = self._sock, None, b""
        if sock is not None:
            # Closes this process's descriptor only: the parent's connection stays open, and
            # nothing is written on it from here.
            with contextlib.suppress(OSError):
                sock.close()

    def _after_fork_in_child(self) -> None:
        # The parent's lock may have been held by another thread at fork time.
        self._lock = threading.Lock()
        self._forget()


def _tls_handshake(
    sock: socket.socket, context: ssl.SSLContext, server: AmiServer, deadline: float
) -> socket.socket:
    """The TLS handshake on a connected socket, within `deadline` (monotonic) as a whole: done
    non-blocking, so that no round trip of it gets a fresh timeout of its own."""
    try:
        tls = context.wrap_socket(sock, server_hostname=server.host, do_handshake_on_connect=False)
    except (OSError, ValueError) as exc:
        sock.close()
        raise connect_failure(server, exc) from None
    try:
        tls.setblocking(False)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                wait = ([tls], [])
            except ssl.SSLWantWriteError:
                wait = ([], [tls])
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not any(select.select(*wait, [], remaining)[:2]):
                raise TimeoutError("TLS handshake timed out")
        tls.settimeout(max(0.001, deadline - time.monotonic()))
    except (OSError, TimeoutError) as exc:
        tls.close()
        raise connect_failure(server, exc) from None
    return tls


def _reset_after_fork() -> None:
    for client in list(_CLIENTS):
        client._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_after_fork)
