"""`dialer listen` follows every configured PBX from one process, or those `--pbx` names.

Two simulators: the default PBX over plain TCP (so an MD5 login, by default), and `east` over TLS
with its own CA. Attempts are created on each, their Originates sent straight to their PBX, and
the one listener process must record the outcome of each call, whichever PBX it was on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from dialer.ami.client import AmiClient
from dialer.dialing.payload import CallSettings, TrunkRoute, build_originate_payload
from dialer.settings import AmiServer
from tests.support_listener import Attempt, add_attempts, add_campaign, fetch, wait_for
from tests.support_pbx import PbxSim, TlsFiles

BUSY_TAIL = "04"


@pytest.fixture
def two_pbxs(pbx_sim_factory: Callable[..., PbxSim], tls_files: TlsFiles) -> tuple[PbxSim, PbxSim]:
    default = pbx_sim_factory(secret="default-secret")
    east = pbx_sim_factory(secret="east-secret", tls_cert=tls_files.cert, tls_key=tls_files.key)
    return default, east


def environment(
    database_url: str, default: PbxSim, east: PbxSim, tls_files: TlsFiles, **overrides: str
) -> dict[str, str]:
    # Nothing of the machine's own DIALER_* settings: only the two PBXs of this test.
    base = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    return {
        **base,
        "DIALER_DATABASE_URL": database_url,
        "DIALER_LOG_LEVEL": "INFO",
        "DIALER_AMI_HOST": default.host,
        "DIALER_AMI_PORT": str(default.port),
        "DIALER_AMI_USERNAME": default.username,
        "DIALER_AMI_SECRET": default.secret,
        "DIALER_PBXS": "east",
        "DIALER_PBX_EAST_HOST": east.host,
        "DIALER_PBX_EAST_PORT": str(east.port),
        "DIALER_PBX_EAST_USERNAME": east.username,
        "DIALER_PBX_EAST_SECRET": east.secret,
        "DIALER_PBX_EAST_TLS": "true",
        "DIALER_PBX_EAST_TLS_CA": str(tls_files.ca),
        **overrides,
    }


@pytest.fixture
def listen(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], Path]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"listen-{len(started)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "dialer", "listen", "--flush-ms", "20", *args],
            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        started.append(proc)
        return proc, log

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def reconciled(sim: PbxSim) -> bool:
    """A listener logged in, installed its filters and checked its calls (CoreShowChannels)."""
    return any(r["action"] == "CoreShowChannels" for r in sim.records())


def attempts_on(engine: Engine, trunk: str, count: int, prefix: str) -> list[Attempt]:
    """Open attempts of a campaign on `trunk`. Calls end within the listener's reconciliation
    grace (30 s): only their events close them, whichever PBX the attempt names."""
    campaign = add_campaign(engine, trunk=trunk)
    return add_attempts(
        engine, campaign, [f"+1555{prefix}{n:04d}{BUSY_TAIL}" for n in range(count)]
    )


async def send(server: AmiServer, attempts: list[Attempt], trunk: str) -> None:
    async with AmiClient(server, events=False) as client:
        for attempt in attempts:
            await client.originate(
                build_originate_payload(
                    call_id=attempt.custom_call_id,
                    to_number=attempt.phone,
                    from_number="+15559990000",
                    settings=CallSettings(ivr_file="welcome_message"),
                    trunk=TrunkRoute(name=trunk),
                )
            )


def outcomes(engine: Engine, attempts: list[Attempt]) -> list[Any]:
    rows = fetch(
        engine,
        "SELECT id, status, outcome FROM call_attempts WHERE id = ANY(:ids) ORDER BY id",
        ids=[a.id for a in attempts],
    )
    return [(r.status, r.outcome) for r in rows]


def test_one_process_follows_every_configured_pbx(
    engine: Engine,
    database_url: str,
    two_pbxs: tuple[PbxSim, PbxSim],
    tls_files: TlsFiles,
    listen: Callable[..., tuple[subprocess.Popen[bytes], Path]],
) -> None:
    default, east = two_pbxs
    on_default = attempts_on(engine, "MC", 3, "10")
    on_east = attempts_on(engine, "EAST", 3, "20")
    proc, log = listen(environment(database_url, default, east, tls_files))
    wait_for(lambda: reconciled(default) and reconciled(east), 20, what="both PBXs followed")

    async def scenario() -> None:
        await send(default.server, on_default, "MC")
        await send(east.server_as("east", tls=True, tls_ca=str(tls_files.ca)), on_east, "EAST")

    asyncio.run(scenario())
    ended = [("ended", "busy")] * 3
    wait_for(
        lambda: outcomes(engine, on_default) == ended and outcomes(engine, on_east) == ended,
        20,
        what=f"every call's outcome; listener log:\n{log.read_text()}",
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    text_log = log.read_text()
    # Each listener's lines name its PBX.
    assert "AMI default: connected" in text_log and "AMI east: connected" in text_log
    assert "listener default stopped" in text_log and "listener east stopped" in text_log
    # The default PBX without TLS: an MD5 login, the secret never sent. East over TLS: plain.
    default_login, east_login = listener_logins(default), listener_logins(east)
    assert len(default_login) == 1 and "Secret" not in default_login[0]
    assert default_login[0][:3] == ["Action", "ActionID", "AuthType"]
    assert len(east_login) == 1 and "Secret" in east_login[0]


def listener_logins(sim: PbxSim) -> list[list[str]]:
    """Header names of the logins with events on (the test's own sender logs in without)."""
    logins = [r["headers"] for r in sim.records() if r["action"] == "Login"]
    return [[n for n, _ in h] for h in logins if ["Events", "on"] in h]


def test_pbx_option_restricts_the_listener(
    engine: Engine,
    database_url: str,
    two_pbxs: tuple[PbxSim, PbxSim],
    tls_files: TlsFiles,
    listen: Callable[..., tuple[subprocess.Popen[bytes], Path]],
) -> None:
    default, east = two_pbxs
    on_default = attempts_on(engine, "MC", 2, "30")
    on_east = attempts_on(engine, "EAST", 2, "40")
    proc, log = listen(environment(database_url, default, east, tls_files), "--pbx", "east")
    wait_for(lambda: reconciled(east), 20, what="east followed")

    async def scenario() -> None:
        await send(default.server, on_default, "MC")
        await send(east.server_as("east", tls=True, tls_ca=str(tls_files.ca)), on_east, "EAST")

    asyncio.run(scenario())
    wait_for(
        lambda: outcomes(engine, on_east) == [("ended", "busy")] * 2,
        20,
        what=f"east's outcomes; listener log:\n{log.read_text()}",
    )
    # Nobody follows the default PBX: its calls ended there, unrecorded.
    assert outcomes(engine, on_default) == [("originating", None)] * 2
    assert listener_logins(default) == []
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert "AMI default" not in log.read_text()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("default_up", [True, False], ids=["default-up", "default-unreachable"])
def test_a_pbx_refusing_the_login_stops_the_listener_naming_it(
    database_url: str,
    two_pbxs: tuple[PbxSim, PbxSim],
    tls_files: TlsFiles,
    listen: Callable[..., tuple[subprocess.Popen[bytes], Path]],
    default_up: bool,
) -> None:
    default, east = two_pbxs
    wrong = "not-the-east-secret"
    overrides = {"DIALER_PBX_EAST_SECRET": wrong}
    if not default_up:  # still being retried when east refuses: it must not hold the exit
        overrides["DIALER_AMI_PORT"] = str(closed_port())
    proc, log = listen(environment(database_url, default, east, tls_files, **overrides))
    assert proc.wait(20) == 1
    text_log = log.read_text()
    assert "refused login as 'dialer'" in text_log
    assert "check DIALER_PBX_EAST_USERNAME and DIALER_PBX_EAST_SECRET" in text_log
    assert wrong not in text_log
    # The default PBX's listener was stopped with it.
    if default_up:
        assert "listener default stopped:" in text_log
    else:
        assert "listener default stopped before it could connect" in text_log


def test_stopping_while_a_pbx_is_unreachable(
    database_url: str,
    two_pbxs: tuple[PbxSim, PbxSim],
    tls_files: TlsFiles,
    listen: Callable[..., tuple[subprocess.Popen[bytes], Path]],
) -> None:
    default, east = two_pbxs
    env = environment(database_url, default, east, tls_files, DIALER_AMI_PORT=str(closed_port()))
    proc, log = listen(env)
    wait_for(lambda: reconciled(east), 20, what="east followed")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0, log.read_text()
    text_log = log.read_text()
    assert "AMI default: cannot reach AMI default" in text_log  # it was being retried
    assert "listener default stopped before it could connect" in text_log
    assert "listener east stopped:" in text_log


def test_unknown_pbx_option_is_a_usage_error(
    database_url: str,
    two_pbxs: tuple[PbxSim, PbxSim],
    tls_files: TlsFiles,
    listen: Callable[..., tuple[subprocess.Popen[bytes], Path]],
) -> None:
    default, east = two_pbxs
    proc, log = listen(environment(database_url, default, east, tls_files), "--pbx", "west")
    assert proc.wait(20) == 2
    assert "no AMI server configured for PBX 'west'" in log.read_text()
