"""`dialer status` against real parts: healthy; the simulator stopped; the listener stopped;
Postgres unreachable. Each gives its exit code and a line naming the broken part."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from dialer.cli import cli
from dialer.reports.health import Check, Level, overall, pbx_checks
from dialer.settings import AmiServer, Settings, get_settings
from tests.support_celery import in_process_worker, rows, wait_until
from tests.test_dialing_e2e import running_listener

OK, DEGRADED, DOWN = Level.OK, Level.DEGRADED, Level.DOWN


@pytest.mark.parametrize(
    "levels, expected",
    [([], OK), ([OK, OK], OK), ([OK, DEGRADED], DEGRADED), ([DEGRADED, DOWN, OK], DOWN)],
)
def test_the_deployment_is_as_bad_as_its_worst_part(levels: list[Level], expected: Level) -> None:
    assert overall(Check(str(n), level, "") for n, level in enumerate(levels)) is expected


@pytest.mark.parametrize(
    "levels, expected",
    [
        ([OK], [OK]),
        ([DOWN], [DOWN]),  # the only PBX: no call can be made
        ([OK, DOWN], [OK, DEGRADED]),  # another takes the calls
        ([DOWN, DOWN], [DOWN, DOWN]),
    ],
)
def test_a_pbx_down_is_degraded_while_another_takes_calls(
    levels: list[Level], expected: list[Level]
) -> None:
    found = pbx_checks([Check(f"pbx {n}", level, "") for n, level in enumerate(levels)])
    assert [c.level for c in found] == expected


@pytest.fixture
def status(
    settings: Settings, broker_prefix: str, pbx_sim: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[int, str]]]:
    """Runs `dialer status` with this test's database, broker namespace and simulator."""
    env = {
        "DIALER_DATABASE_URL": settings.database_url,
        "DIALER_BROKER_URL": settings.broker_url,
        "DIALER_BROKER_PREFIX": broker_prefix,
        "DIALER_AMI_HOST": pbx_sim.host,
        "DIALER_AMI_PORT": str(pbx_sim.port),
        "DIALER_AMI_USERNAME": pbx_sim.username,
        "DIALER_AMI_SECRET": pbx_sim.secret,
    }

    def run(*args: str, **overrides: str) -> tuple[int, str]:
        for name, value in {**env, **overrides}.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        result = CliRunner().invoke(cli, ["status", *args])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output

    yield run
    get_settings.cache_clear()


def server_of(pbx_sim: Any) -> AmiServer:
    return AmiServer("default", pbx_sim.host, pbx_sim.port, pbx_sim.username, pbx_sim.secret)


def line_of(output: str, component: str) -> str:
    found = [line for line in output.splitlines() if line.startswith(component + " ")]
    assert found, output
    return found[0]


def listener_beating(session_factory: Any) -> bool:
    return bool(rows(session_factory, "SELECT 1 FROM pbxs WHERE heartbeat_at IS NOT NULL"))


def test_all_healthy(status, make_app, engine, session_factory, pbx_sim) -> None:
    with in_process_worker(make_app()), running_listener(engine, server_of(pbx_sim)):
        wait_until(lambda: listener_beating(session_factory), 10, message="the listener's beat")
        code, output = status()
        json_code, as_json = status("--json")
    assert code == 0, output
    for component in ("database", "broker", "workers", "pbx default", "listener default", "calls"):
        assert " ok " in line_of(output, component), output
    assert "Asterisk 22" in line_of(output, "pbx default")
    assert output.rstrip().endswith("dialer: ok")
    report = json.loads(as_json)
    assert json_code == 0 and report["status"] == "ok"
    assert {c["status"] for c in report["checks"]} == {"ok"}


def test_the_simulator_stopped(status, make_app, engine, session_factory, pbx_sim) -> None:
    with in_process_worker(make_app()), running_listener(engine, server_of(pbx_sim)):
        wait_until(lambda: listener_beating(session_factory), 10, message="the listener's beat")
        address = f"{pbx_sim.host}:{pbx_sim.port}"
        pbx_sim.stop()
        code, output = status()
    assert code == 2, output  # its only PBX: no call can be made
    assert " down " in line_of(output, "pbx default"), output
    assert address in line_of(output, "pbx default")
    assert " ok " in line_of(output, "database") and " ok " in line_of(output, "workers")


def test_the_listener_stopped(status, make_app, engine, session_factory, pbx_sim) -> None:
    with in_process_worker(make_app()):
        with running_listener(engine, server_of(pbx_sim)):
            wait_until(lambda: listener_beating(session_factory), 10, message="the listener's beat")
        # Stopped longer ago than HEARTBEAT_STALE_S (10 s): its last beat a minute old.
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE pbxs SET heartbeat_at = now() - interval '1 minute'")
        code, output = status()
    assert code == 1, output
    listener = line_of(output, "listener default")
    assert " degraded " in listener and "dialer listen" in listener, output
    assert " ok " in line_of(output, "pbx default") and " ok " in line_of(output, "workers")


def test_postgres_unreachable(status, make_app) -> None:
    unreachable = "postgresql+psycopg://dialer:n0t-for-logs@127.0.0.1:1/dialer"
    with in_process_worker(make_app()):
        code, output = status(DIALER_DATABASE_URL=unreachable)
    assert code == 2, output
    database = line_of(output, "database")
    assert " down " in database and "127.0.0.1:1" in database, output
    assert "n0t-for-logs" not in output  # the password is never shown
    assert " ok " in line_of(output, "workers")
