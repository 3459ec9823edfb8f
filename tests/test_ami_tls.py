"""Both AMI clients over TLS and with Asterisk's MD5 challenge login, against the PBX simulator.

Certificates are made for the test with the `openssl` command line (`tls_files`): a CA, a
certificate it signed for localhost and 127.0.0.1, one it signed for another name, and a CA that
signed nothing here. What is checked: a verified connection works; an unknown CA or another
host's certificate is refused at once with a clear error and never retried like a network
blip; verification off works on purpose; an MD5 login never writes the secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from dialer.ami.blocking import SyncAmiClient
from dialer.ami.client import (
    CONNECTED_EVENT,
    AmiAuthenticationError,
    AmiCertificateError,
    AmiClient,
    AmiConnectionError,
)
from dialer.ami.login import md5_key
from dialer.dialing.payload import CallSettings, TrunkRoute, build_originate_payload
from dialer.settings import AmiServer
from tests.support_pbx import PbxSim, TlsFiles

CLIENT_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": 2.0,
    "login_timeout": 2.0,
    "action_timeout": 3.0,
    "reconnect_initial": 0.05,
    "reconnect_max": 0.2,
}


def run(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def client(server: AmiServer, *, events: bool = True, **options: Any) -> AmiClient:
    return AmiClient(server, events=events, **{**CLIENT_TIMEOUTS, **options})


def sync_client(server: AmiServer, **options: Any) -> SyncAmiClient:
    return SyncAmiClient(server, **{**CLIENT_TIMEOUTS, **options})


def payload(n: int) -> dict[str, Any]:
    return build_originate_payload(
        call_id=f"1704067200000_{n}",
        to_number="+15550000004",  # busy: the OriginateResponse comes at once
        from_number="+15559990000",
        settings=CallSettings(ivr_file="welcome_message"),
        trunk=TrunkRoute(),
    )


def header_names(sim: PbxSim, action: str) -> list[list[str]]:
    return [[name for name, _ in r["headers"]] for r in sim.records() if r["action"] == action]


@pytest.fixture
def tls_sim(pbx_sim_factory: Callable[..., PbxSim], tls_files: TlsFiles) -> PbxSim:
    return pbx_sim_factory(tls_cert=tls_files.cert, tls_key=tls_files.key)


def tls_server(sim: PbxSim, files: TlsFiles, **fields: Any) -> AmiServer:
    values: dict[str, Any] = {"tls": True, "tls_ca": str(files.ca), "auth": "plain", **fields}
    return sim.server_as("east", **values)


# -- TLS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_verified_tls_with_both_clients(tls_sim: PbxSim, tls_files: TlsFiles, host: str) -> None:
    server = tls_server(tls_sim, tls_files, host=host)

    async def scenario() -> list[dict[str, Any]]:
        async with client(server) as ami:
            events = ami.events()
            assert (await anext(events))["Event"] == CONNECTED_EVENT
            await ami.originate(payload(1))
            seen = []
            while not seen or seen[-1].get("Event") != "OriginateResponse":
                seen.append(await asyncio.wait_for(anext(events), 5.0))
            return seen

    seen = run(scenario())
    assert seen[-1]["ActionID"] == "1704067200000_1"
    blocking = sync_client(server)
    try:
        blocking.originate(payload(2))
        assert blocking.action({"Action": "Ping"})["Ping"] == "Pong"
    finally:
        blocking.close()
    originates = [r["action_id"] for r in tls_sim.records() if r["action"] == "Originate"]
    assert originates == ["1704067200000_1", "1704067200000_2"]


@pytest.mark.parametrize(
    ("which", "hint"),
    [("unknown CA", "DIALER_PBX_EAST_TLS_CA"), ("other host", "DIALER_PBX_EAST_HOST")],
)
def test_refused_certificate_is_a_clear_error_and_not_retried(
    pbx_sim_factory: Callable[..., PbxSim], tls_files: TlsFiles, which: str, hint: str
) -> None:
    if which == "unknown CA":
        sim = pbx_sim_factory(tls_cert=tls_files.cert, tls_key=tls_files.key)
        server = tls_server(sim, tls_files, tls_ca=str(tls_files.other_ca))
    else:  # signed by the right CA, for pbx.invalid only
        sim = pbx_sim_factory(tls_cert=tls_files.other_name_cert, tls_key=tls_files.other_name_key)
        server = tls_server(sim, tls_files)

    async def scenario() -> None:
        ami = client(server)
        started = time.monotonic()
        # retry=True keeps trying through network blips; a certificate is not one.
        with pytest.raises(AmiCertificateError) as raised:
            await ami.connect(retry=True)
        assert time.monotonic() - started < 1.5
        message = str(raised.value)
        assert "TLS certificate not accepted" in message and hint in message, message
        assert isinstance(raised.value, AmiAuthenticationError)
        await asyncio.sleep(0.5)
        with pytest.raises(AmiConnectionError):
            await ami.action({"Action": "Ping"}, timeout=0.2)

    run(scenario())
    blocking = sync_client(server, reconnect_max=30.0)
    for _ in range(3):
        with pytest.raises(AmiCertificateError, match=hint):
            blocking.originate(payload(1))
    blocking.close()
    # Nothing ever reached the AMI: not a single action, the login included.
    assert sim.records() == []


def test_verification_off_on_purpose(
    pbx_sim_factory: Callable[..., PbxSim], tls_files: TlsFiles
) -> None:
    sim = pbx_sim_factory(tls_cert=tls_files.other_name_cert, tls_key=tls_files.other_name_key)
    server = tls_server(sim, tls_files, tls_ca=str(tls_files.other_ca), tls_verify=False)

    async def scenario() -> None:
        async with client(server) as ami:
            assert (await ami.action({"Action": "Ping"}))["Ping"] == "Pong"

    run(scenario())
    blocking = sync_client(server)
    try:
        assert blocking.action({"Action": "Ping"})["Ping"] == "Pong"
    finally:
        blocking.close()
    assert len(header_names(sim, "Login")) == 2


def test_tls_and_plain_mixed_up_say_so(
    pbx_sim_factory: Callable[..., PbxSim], tls_sim: PbxSim, tls_files: TlsFiles
) -> None:
    plain_sim = pbx_sim_factory()
    tls_to_plain = tls_server(plain_sim, tls_files)
    plain_to_tls = tls_sim.server_as("east", tls=False)

    async def scenario() -> None:
        with pytest.raises(AmiConnectionError, match="TLS handshake failed"):
            await client(tls_to_plain).connect()
        with pytest.raises(AmiConnectionError, match="DIALER_PBX_EAST_TLS=true"):
            await client(plain_to_tls, login_timeout=0.5).connect()

    run(scenario())
    with pytest.raises(AmiConnectionError, match="DIALER_PBX_EAST_TLS=true"):
        sync_client(plain_to_tls, login_timeout=0.5).wait_connected(2.0)


def test_tls_handshake_keeps_the_connect_deadline(tls_files: TlsFiles) -> None:
    """A peer that accepts TCP and never answers the handshake: both clients give up in time."""

    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: asyncio.sleep(30), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ami = AmiServer(
            "east", "127.0.0.1", port, "dialer", "x", tls=True, tls_ca=str(tls_files.ca)
        )
        started = time.monotonic()
        with pytest.raises(AmiConnectionError):
            await client(ami, connect_timeout=0.5).connect()
        assert time.monotonic() - started < 1.5
        started = time.monotonic()
        with pytest.raises(AmiConnectionError):
            await asyncio.to_thread(
                sync_client(ami, connect_timeout=0.5, reconnect_initial=5.0).wait_connected, 0.5
            )
        assert time.monotonic() - started < 1.5
        server.close()

    run(scenario())


# -- MD5 login ------------------------------------------------------------------------------------


@pytest.mark.parametrize("over_tls", [False, True], ids=["tcp", "tls"])
def test_md5_login_never_sends_the_secret(
    pbx_sim_factory: Callable[..., PbxSim], tls_files: TlsFiles, over_tls: bool
) -> None:
    if over_tls:
        sim = pbx_sim_factory(tls_cert=tls_files.cert, tls_key=tls_files.key)
        server = tls_server(sim, tls_files, auth="md5")
    else:
        sim = pbx_sim_factory()
        server = sim.server_as("east", auth="md5")

    async def scenario() -> None:
        async with client(server) as ami:
            assert (await ami.action({"Action": "Ping"}))["Ping"] == "Pong"

    run(scenario())
    blocking = sync_client(server)
    try:
        blocking.originate(payload(3))
    finally:
        blocking.close()
    logins = header_names(sim, "Login")
    assert len(logins) == 2 and len(header_names(sim, "Challenge")) == 2
    for names in logins:
        assert "Secret" not in names
        assert names[:5] == ["Action", "ActionID", "AuthType", "Username", "Key"]
    assert "Secret" not in json.dumps(sim.records())


def test_plain_login_does_send_the_secret(pbx_sim: PbxSim) -> None:
    """The control of the test above: a plain Login carries `Secret`, and no Challenge."""

    async def scenario() -> None:
        async with client(pbx_sim.server_as("east", auth="plain")) as ami:
            await ami.action({"Action": "Ping"})

    run(scenario())
    assert [n for n in header_names(pbx_sim, "Login")[0] if n == "Secret"] == ["Secret"]
    assert header_names(pbx_sim, "Challenge") == []


def test_md5_login_with_a_wrong_secret_is_refused_and_not_retried(pbx_sim: PbxSim) -> None:
    server = pbx_sim.server_as("east", auth="md5", secret="wrong-secret")

    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises(AmiAuthenticationError, match="refused login as 'dialer'") as raised:
            await client(server, login_timeout=5.0).connect(retry=True)
        assert "wrong-secret" not in str(raised.value)
        assert time.monotonic() - started < 3.0

    run(scenario())
    with pytest.raises(AmiAuthenticationError):
        sync_client(server, login_timeout=5.0, reconnect_max=30.0).wait_connected(5.0)
    assert len(header_names(pbx_sim, "Login")) == 2


def test_md5_login_to_a_peer_without_challenges_is_a_clear_error() -> None:
    """A peer that answers `Challenge` without one: refused, the way to fix it named."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        frame = (await reader.readuntil(b"\r\n\r\n")).decode()
        action_id = next(line[10:] for line in frame.split("\r\n") if line.startswith("ActionID: "))
        writer.write(f"Response: Success\r\nActionID: {action_id}\r\n\r\n".encode())
        await writer.drain()
        await asyncio.sleep(5)

    async def scenario() -> None:
        peer = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = peer.sockets[0].getsockname()[1]
        server = AmiServer("east", "127.0.0.1", port, "dialer", "x", auth="md5")
        with pytest.raises(AmiAuthenticationError, match="DIALER_PBX_EAST_AUTH=plain"):
            await client(server).connect()
        with pytest.raises(AmiAuthenticationError, match="no MD5 challenge"):
            await asyncio.to_thread(sync_client(server).wait_connected, 3.0)
        peer.close()

    run(scenario())


# -- the simulator's side: manager.c action_challenge and authenticate ----------------------------


def test_simulator_challenge_and_md5_login_follow_asterisk(pbx_sim: PbxSim) -> None:
    with pbx_sim.connect(login=False) as ami:
        refused = ami.action("Challenge")
        assert (refused["Response"], refused["Message"]) == ("Error", "Must specify AuthType")
        first = ami.action("Challenge", ("AuthType", "md5"))  # strcasecmp
        assert first.lines[:2] == [("Response", "Success"), ("ActionID", first["ActionID"])]
        challenge = first["Challenge"]
        assert challenge.isdigit()
        # The session keeps its challenge.
        assert ami.action("Challenge", ("AuthType", "MD5"))["Challenge"] == challenge
        key = hashlib.md5((challenge + pbx_sim.secret).encode()).hexdigest()
        assert key == md5_key(challenge, pbx_sim.secret)
        reply = ami.action(
            "Login", ("AuthType", "MD5"), ("Username", pbx_sim.username), ("Key", key),
            ("Events", "off"),
        )  # fmt: skip
        assert (reply["Response"], reply["Message"]) == ("Success", "Authentication accepted")


@pytest.mark.parametrize(
    "login",
    [
        "upper-case key",  # strcmp against lower-case hex
        "no challenge asked",
        "secret instead of key",
    ],
)
def test_simulator_refuses_md5_logins_asterisk_refuses(pbx_sim: PbxSim, login: str) -> None:
    with pbx_sim.connect(login=False) as ami:
        headers: list[tuple[str, str]] = [("AuthType", "MD5"), ("Username", pbx_sim.username)]
        if login == "no challenge asked":
            headers.append(("Key", md5_key("", pbx_sim.secret)))
        else:
            challenge = ami.action("Challenge", ("AuthType", "MD5"))["Challenge"]
            if login == "upper-case key":
                headers.append(("Key", md5_key(challenge, pbx_sim.secret).upper()))
            else:
                headers.append(("Secret", pbx_sim.secret))
        reply = ami.action("Login", *headers, timeout=5.0)
        assert (reply["Response"], reply["Message"]) == ("Error", "Authentication failed")


def test_unusable_ca_file_is_a_certificate_error(tls_sim: PbxSim, tmp_path: Any) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    server = tls_sim.server_as("east", tls=True, tls_ca=str(bogus))

    async def scenario() -> None:
        with pytest.raises(AmiCertificateError, match="DIALER_PBX_EAST_TLS_CA"):
            await client(server).connect(retry=True)

    run(scenario())
    with pytest.raises(AmiCertificateError, match="cannot use the CA file"):
        sync_client(server).wait_connected(2.0)
    assert tls_sim.records() == []
