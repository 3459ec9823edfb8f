"""A client-side deadline on the Postgres round trips of the long-running processes.

The server's timeouts end a statement the server runs; TCP keepalives and `tcp_user_timeout`
end a connection whose peer stops acknowledging (`dialer.db`). Neither helps when something
on the path acknowledges and never answers: a hung pooler or proxy, a stateful firewall that
lost the connection's state behind a proxy, a stopped server whose kernel still takes the
bytes. libpq, and psycopg's blocking API over it, then wait for the answer without end, and
a worker thread or the listener's writer hangs with them.

So workers and the listener hand their connections to a `RoundTripWatchdog`. Its thread looks
at each connection every `interval_s`; one found with a command in progress
(`transaction_status` ACTIVE) at every look for `deadline_s` has its socket shut down. The
waiting call then fails at once with `OperationalError`, as on any lost connection, and the
process's own recovery takes over: a fresh connection, the attempt given back or claimed
again, the listener's batch written again.

The deadline (`dialer.db.ROUND_TRIP_DEADLINE_S`) is the server's `statement_timeout` plus a margin: on a healthy path the server
ends any statement before then, and says so. Looking cannot tell one long command from short
ones back to back; the dialer's connections are idle between their statements (the Python
work, the pacing sleep, the AMI send), so a healthy one is not seen busy at every look for
that long.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from psycopg import pq

log = logging.getLogger(__name__)

INTERVAL_S = 0.25


class RoundTripWatchdog:
    """Cuts the connections whose command has gone unanswered for `deadline_s` (module doc)."""

    def __init__(
        self,
        deadline_s: float,
        *,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if deadline_s <= 0 or interval_s <= 0:
            raise ValueError("deadline_s and interval_s must be positive")
        self.deadline_s = deadline_s
        self.interval_s = interval_s
        self.cuts = 0
        self._clock = clock
        # Connection -> when it was first seen busy in the current run of busy looks.
        self._busy_since: weakref.WeakKeyDictionary[Any, float | None] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def watch(self, conn: Any) -> None:
        """Watch `conn` (a psycopg connection) until it is closed or collected."""
        with self._lock:
            if self._thread is None or self._pid != os.getpid():
                # First use in this process. A forked child has no thread of its parent's,
                # and must never cut the parent's connections: their sockets are shared.
                self._busy_since = weakref.WeakKeyDictionary()
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="postgres-round-trip-watchdog", daemon=True
                )
                self._thread.start()
            self._busy_since[conn] = None

    def look(self) -> int:
        """One look at every watched connection; returns how many were cut."""
        now = self._clock()
        with self._lock:
            watched = list(self._busy_since.items())
        overdue = []
        for conn, since in watched:
            if conn.closed:
                with self._lock:
                    self._busy_since.pop(conn, None)
                continue
            try:
                # The C implementation reads and closes libpq's connection under the
                # interpreter lock: a read never meets a close half done.
                busy = conn.info.transaction_status == pq.TransactionStatus.ACTIVE
            except Exception:  # closed between the two looks
                busy = False
            if not busy:
                since = None
            elif since is None:
                since = now
            elif now - since >= self.deadline_s:
                overdue.append(conn)
                since = None
            with self._lock:
                if conn in self._busy_since:
                    self._busy_since[conn] = since
        for conn in overdue:
            if cut(conn):
                self.cuts += 1
                log.warning(
                    "no answer from Postgres at %s:%s for %.0f s: connection cut, to be"
                    " replaced",
                    conn.info.host, conn.info.port, self.deadline_s,
                )  # fmt: skip
        return len(overdue)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self.look()
            except Exception:  # the watchdog must outlive any surprise
                log.exception("the Postgres round-trip watchdog failed a look")


def cut(conn: Any) -> bool:
    """Shut down `conn`'s socket so the call waiting on it fails now; False if already gone."""
    if conn.closed:
        return False
    try:
        fd = conn.fileno()
        # A duplicate of the descriptor: shutting it down ends the connection for the thread
        # waiting on the original; closing the duplicate leaves the original to its owner.
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError) as error:
        log.debug("could not cut a Postgres connection: %s", error)
        return False
    return True


_WATCHDOGS: dict[float, RoundTripWatchdog] = {}
_WATCHDOGS_LOCK = threading.Lock()


def watchdog(deadline_s: float) -> RoundTripWatchdog:
    """This process's watchdog for `deadline_s` (one thread per deadline in use)."""
    with _WATCHDOGS_LOCK:
        found = _WATCHDOGS.get(deadline_s)
        if found is None:
            found = _WATCHDOGS[deadline_s] = RoundTripWatchdog(deadline_s)
        return found


def watch(conn: Any, deadline_s: float) -> None:
    """Put `conn` under this process's watchdog for `deadline_s`."""
    watchdog(deadline_s).watch(conn)
