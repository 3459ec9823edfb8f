"""`dialer demo` end to end (real child processes, Postgres, Redis, simulator), and its parts."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from dialer.campaigns.validation import retry_rules
from dialer.demo.contacts import BEHAVIOURS, DNC_SUFFIX, demo_contacts, pick_region
from dialer.demo.run import (
    DEMO_MARKER,
    DemoError,
    Progress,
    demo_retry_rules,
    recreate_database,
    render_progress,
)
from dialer.outcomes.rules import RETRYABLE
from tests.conftest import SERVER_URL, create_database, drop_database, new_database_name


@pytest.fixture
def demo_database() -> str:
    name = new_database_name("demo")
    yield name
    drop_database(name)


def _demo_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DIALER_DATABASE_URL": make_url(SERVER_URL).render_as_string(hide_password=False),
        "DIALER_LOG_LEVEL": "WARNING",
    }


def _rows(database: str, query: str) -> list[tuple]:
    url = make_url(SERVER_URL).set(drivername="postgresql", database=database)
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        return conn.execute(query).fetchall()


def test_demo_dials_every_behaviour_to_its_outcome(demo_database: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dialer", "demo", "--speed", "50", "--database", demo_database,
         "--timeout", "120", "--log-dir", str(tmp_path / "logs")],
        env=_demo_env(tmp_path), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "each as the behaviour table says" in result.stdout
    assert "FROM call_attempts_report" in result.stdout  # the SQL to query it

    contacts = _rows(
        demo_database, "SELECT right(phone_e164, 2), status, last_outcome, attempts FROM contacts"
    )
    by_suffix = {suffix: (status, outcome, n) for suffix, status, outcome, n in contacts}
    assert set(by_suffix) == {*BEHAVIOURS, DNC_SUFFIX}
    for suffix, (_, outcome, status) in BEHAVIOURS.items():
        assert by_suffix[suffix][:2] == (status, outcome), suffix
        # Retried outcomes used both attempts, final ones one.
        assert by_suffix[suffix][2] == (2 if status == "exhausted" else 1), suffix
    assert by_suffix[DNC_SUFFIX] == ("dnc", None, 0)

    outcomes = Counter(
        o
        for (o,) in _rows(demo_database, "SELECT outcome FROM call_attempts WHERE status = 'ended'")
    )
    expected = Counter()
    for _, outcome, status in BEHAVIOURS.values():
        expected[outcome] += 2 if status == "exhausted" else 1
    assert outcomes == expected
    # The never-dialled DNC number has no attempt, and every attempt was sent once.
    assert _rows(
        demo_database,
        f"SELECT count(*) FROM call_attempts a JOIN contacts k ON k.id = a.contact_id "
        f"WHERE right(k.phone_e164, 2) = '{DNC_SUFFIX}' OR a.sent_at IS NULL",
    ) == [(0,)]
    # The demo's children are gone, and so are its broker keys.
    assert not _processes_using(demo_database)
    (status,) = _rows(demo_database, "SELECT status FROM campaigns")[0]
    assert status == "completed"


def test_ctrl_c_stops_every_process_the_demo_started(demo_database: str, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "dialer", "demo", "--speed", "1", "--database", demo_database,
         "--log-dir", str(tmp_path / "logs")],
        env=_demo_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # As in a terminal: Ctrl-C interrupts. A shell's background job (a CI runner, nohup)
        # starts with SIGINT ignored, and Python then keeps ignoring it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + 60
    for line in process.stdout:
        seen.append(line)
        if line.startswith("campaign ") and "started" in line:
            break
        assert time.monotonic() < deadline, "".join(seen)
    assert _processes_using(demo_database), "the simulator, worker and listener should run"
    time.sleep(1.0)  # calls in progress at speed 1
    process.send_signal(signal.SIGINT)
    try:
        rest, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired as exc:  # say where it hangs: its output, its children's logs
        process.kill()
        for pid in _processes_using(demo_database):  # and leave nothing running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        logs = "\n".join(
            f"--- {log.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            for log in sorted((tmp_path / "logs").glob("*"))
        )
        pytest.fail(f"the demo did not stop within 60 s of Ctrl-C: {exc.output!r}\n{logs}")
    assert process.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest
    assert not _processes_using(demo_database)


def _processes_using(database: str) -> list[int]:
    """Processes whose environment names this database (the demo's children)."""
    found = []
    needle = f"/{database}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"DIALER_DATABASE_URL=" in environ and needle in environ:
            state = (entry / "stat").read_text().split()[2]
            if state != "Z":
                found.append(int(entry.name))
    return found


def test_a_database_the_demo_did_not_create_is_never_dropped(demo_database: str) -> None:
    create_database(demo_database)
    _rows(demo_database, "SELECT 1")  # it exists and answers
    url = make_url(SERVER_URL).render_as_string(hide_password=False)
    with pytest.raises(DemoError, match="not created by the demo"):
        recreate_database(url, demo_database)
    assert _rows(demo_database, "SELECT 1") == [(1,)]


def test_an_earlier_demo_database_is_recreated_empty(demo_database: str) -> None:
    url = make_url(SERVER_URL).render_as_string(hide_password=False)
    recreate_database(url, demo_database)
    _rows(
        demo_database,
        "INSERT INTO trunks (name, cps, max_channels) VALUES ('old', 1, 1) RETURNING id",
    )
    recreate_database(url, demo_database)
    assert _rows(demo_database, "SELECT count(*) FROM trunks") == [(0,)]
    (comment,) = _rows(
        demo_database,
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname = current_database()",
    )[0]
    assert comment == DEMO_MARKER


def test_demo_retries_cover_every_retryable_outcome() -> None:
    rules = retry_rules(demo_retry_rules(3))
    assert set(rules) >= RETRYABLE
    assert set(rules.values()) == {3}


@pytest.mark.parametrize("hour", range(24))
def test_a_demo_region_is_open_at_every_hour(hour: int) -> None:
    region, _ = pick_region(dt.datetime(2026, 3, 29, hour, 30, tzinfo=dt.UTC))
    phones = [c.phone for c in demo_contacts(region)]
    assert len(set(phones)) == len(BEHAVIOURS) + 1
    assert {p[-2:] for p in phones} == {*BEHAVIOURS, DNC_SUFFIX}


def test_progress_line_shows_counts_and_outcomes() -> None:
    line = render_progress(Progress(3.3, "running", 11, 4, 9, 2, {"busy": 1, "transferred": 3}))
    assert line == (
        "[  3.3s] running   contacts 4/11 done, attempts 9 (2 open)  | transferred 3, busy 1"
    )
