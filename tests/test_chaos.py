"""The fault-injection run, short: bench/chaos.py with 400 contacts and every kind of fault.

The script is run as a command (it starts its own database, private Redis, simulator, workers,
beat and listener); its JSON results are checked here one invariant at a time. Whatever
happens, everything the run started is gone afterwards: the script cleans up after itself, and
`chaos.py --cleanup <run>` is called again here in case it was killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from tests.support_celery import REPO

CHAOS = REPO / "bench" / "chaos.py"
SERVER_URL = os.environ.get(
    "DIALER_TEST_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
FAULTS = {
    "worker_child",
    "worker_group",
    "listener",
    "ami_cut",
    "sim_restart",
    "redis_restart",
    "pg_terminate",
}
RUN_TIMEOUT_S = 220


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_a_short_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (the run restarts a private Redis)")
    run_id = f"t{uuid.uuid4().hex[:8]}"
    results_path = tmp_path / "results.json"
    argv = [
        sys.executable, str(CHAOS), "--contacts", "400", "--cps", "10,15", "--seed", "11",
        "--fault-gap", "3,4", "--timeout", str(RUN_TIMEOUT_S - 30), "--run-id", run_id,
        "--work-dir", str(tmp_path / "work"), "--json", str(results_path),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "DIALER_BENCH_SERVER_URL": SERVER_URL},
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script stops its children on SIGTERM
        output, _ = proc.communicate(timeout=30)
        pytest.fail(f"the chaos run did not finish in {RUN_TIMEOUT_S}s:\n{output[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        subprocess.run(
            [sys.executable, str(CHAOS), "--cleanup", run_id],
            cwd=REPO,
            env={**os.environ, "DIALER_BENCH_SERVER_URL": SERVER_URL},
            timeout=60,
        )

    assert proc.returncode == 0, output[-6000:]
    results = json.loads(results_path.read_text())
    assert {kind for kind, count in results["faults"].items() if count} == FAULTS, results["faults"]

    sent = results["originates_per_attempt"]
    assert sent["originates_without_attempt"] == 0
    assert sent["channel_id_not_action_id"] == 0
    classes = sent["classes"]
    assert classes["received_more"] == 0, "an attempt was dialled twice"
    assert classes["received_not_sent"] == 0, "an attempt recorded as not sent was dialled"
    assert classes["recorded_sent"] == 0, "an attempt recorded as sent never reached the PBX"
    assert classes["received_once"] > 300

    final = results["final_outcomes"]
    assert (final["open"], final["ended_without_outcome"], final["contacts_dialing"]) == (0, 0, 0)

    compliance = results["window_and_dnc"]
    assert compliance["outside_window"] == 0, compliance["examples"]
    assert compliance["on_dnc"] == 0, compliance["examples"]
    assert compliance["dnc_added_during_run"] > 0
    groups = compliance["contacts_by_group"]
    assert groups["window_closed"] == {"pending": sum(groups["window_closed"].values())}
    assert set(groups["dnc_before"]) == {"dnc"}
    assert compliance["pending_not_waiting_for_window"] == 0

    for trunk, rate in results["rate"]["trunks"].items():
        assert rate["max_in_1s"] <= rate["limit"], (trunk, rate)

    # Nothing of the run is left: processes, database, broker keys (it used its own Redis).
    assert not _marked_processes(run_id)
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        assert (
            conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (f"dialer_chaos_{run_id}",)
            ).fetchone()
            is None
        )
    shared = redis.Redis.from_url(
        os.environ.get("DIALER_TEST_BROKER_URL", "redis://127.0.0.1:6379/0")
    )
    try:
        assert not list(shared.scan_iter(match=f"*dialer-chaos:{run_id}*", count=1000))
    finally:
        shared.close()


def _marked_processes(run_id: str) -> list[int]:
    marker = f"DIALER_CHAOS_RUN={run_id}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
    return found


def _admin_url() -> str:
    return make_url(SERVER_URL).set(drivername="postgresql").render_as_string(hide_password=False)
