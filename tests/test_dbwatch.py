"""The round-trip watchdog (dialer.dbwatch) on real Postgres connections: a command left
waiting past the deadline has its connection cut, and the waiting call fails at once; idle
connections and commands within the deadline are left alone."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from dialer.dbwatch import RoundTripWatchdog
from dialer.dialing.celery_app import libpq_url


def running(conn: psycopg.Connection[Any], sql: str) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `sql` on `conn` in a thread; the outcome lands in the returned dict."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            conn.execute(sql)
            outcome["result"] = "answered"
        except psycopg.Error as exc:
            outcome["result"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.fixture
def conn(database_url: str):
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        yield connection


def test_a_command_past_the_deadline_is_cut(conn) -> None:
    # pg_sleep keeps the command in progress as an unanswering path does.
    watchdog = RoundTripWatchdog(0.5, interval_s=0.05)
    watchdog.watch(conn)
    thread, outcome = running(conn, "SELECT pg_sleep(30)")
    thread.join(10)
    assert isinstance(outcome["result"], psycopg.OperationalError), outcome
    assert outcome["seconds"] < 2.0, outcome  # the deadline and a look, not the 30 s
    assert conn.broken
    # The watchdog counts its cut just after it: on a loaded machine the command's thread can
    # see the error first.
    deadline = time.monotonic() + 5
    while watchdog.cuts == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watchdog.cuts == 1


def test_idle_connections_and_commands_within_the_deadline_are_left_alone(conn) -> None:
    watchdog = RoundTripWatchdog(1.0, interval_s=0.05)
    watchdog.watch(conn)
    time.sleep(1.5)  # idle for longer than the deadline
    thread, outcome = running(conn, "SELECT pg_sleep(0.6)")
    thread.join(10)
    assert outcome["result"] == "answered"
    assert conn.execute("SELECT 1").fetchone() == (1,)
    assert watchdog.cuts == 0


def test_a_closed_connection_is_forgotten(conn) -> None:
    watchdog = RoundTripWatchdog(0.5, interval_s=0.05)
    watchdog.watch(conn)
    conn.close()
    assert watchdog.look() == 0
    assert len(watchdog._busy_since) == 0


@pytest.mark.parametrize("deadline, interval", [(0, 1.0), (1.0, 0), (-1, 1.0)])
def test_the_deadline_and_interval_must_be_positive(deadline: float, interval: float) -> None:
    with pytest.raises(ValueError):
        RoundTripWatchdog(deadline, interval_s=interval)


def test_a_forked_child_never_cuts_its_parents_connections(conn) -> None:
    """The sockets are shared after a fork: the child's watchdog forgets the parent's."""
    import os

    watchdog = RoundTripWatchdog(0.2, interval_s=0.05)
    watchdog.watch(conn)
    pid = os.fork()
    if pid == 0:  # the child: watches a connection of its own, looks past the deadline
        code = 1
        try:
            with psycopg.connect(conn.info.dsn, autocommit=True) as own:
                watchdog.watch(own)
                code = 0 if conn not in watchdog._busy_since else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert conn.execute("SELECT 1").fetchone() == (1,)
