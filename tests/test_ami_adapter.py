"""The AMI adapter over real TCP: faults no PBX produces on demand are played by small peers here.

`FaultPeer` is a real asyncio TCP server speaking enough AMI for the adapter (greeting, Login,
Ping, Originate, lists) whose misbehaviour is chosen per connection: drop the socket right after
an Originate arrives, stop answering after login, refuse the secret, split a UTF-8 character
across two TCP segments. Tests against the PBX simulator are at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from dialer.ami.blocking import SyncAmiClient
from dialer.ami.client import (
    CONNECTED_EVENT,
    DISCONNECTED_EVENT,
    ActionFateUnknown,
    AmiAuthenticationError,
    AmiClient,
    AmiConnectionError,
    AmiError,
    OriginateFateUnknown,
    OriginateRejected,
    backoff_delay,
    parse_frame,
)
from dialer.ami.wire import UnsafeHeaderValue
from dialer.dialing.payload import CallSettings, TrunkRoute, build_originate_payload
from dialer.settings import AmiServer

SECRET = "peer-secret"
Frame = dict[str, Any]


def payload_for(n: int, *, ivr_file: str = "welcome_message", local: bool = False) -> dict:
    template = "Local/{number}@pstn-sim" if local else "PJSIP/{number}@{trunk}"
    return build_originate_payload(
        call_id=f"1704067200000_{n}",
        to_number="+15550000002",
        from_number="+15559990000",
        settings=CallSettings(ivr_file=ivr_file),
        trunk=TrunkRoute(channel_template=template),
    )


def wire(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class FaultPeer:
    """A scripted AMI peer. `behaviour(conn, frame, writer)` may answer a frame itself."""

    secret: str = SECRET
    behaviour: Callable[[int, Frame, asyncio.StreamWriter], Awaitable[bool]] | None = None
    greeting: bytes = b"Asterisk Call Manager/11.0.0\r\n"
    frames: list[tuple[int, Frame]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    # Connections numbered from here on are closed as soon as they are accepted.
    refuse_from: int | None = None
    accepted_at: list[float] = field(default_factory=list)
    connections: int = 0
    server: asyncio.AbstractServer | None = None

    async def start(self) -> FaultPeer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def ami(self, secret: str | None = None) -> AmiServer:
        return AmiServer("test", "127.0.0.1", self.port, "dialer", secret or self.secret)

    def actions(self, name: str) -> list[tuple[int, Frame]]:
        return [(c, f) for c, f in self.frames if f.get("Action") == name]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.connections
        self.connections += 1
        self.accepted_at.append(time.monotonic())
        if self.refuse_from is not None and conn >= self.refuse_from:
            writer.close()
            return
        try:
            writer.write(self.greeting)
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                self.raw.append(raw)
                frame = _peer_parse(raw)
                self.frames.append((conn, frame))
                if self.behaviour is not None and await self.behaviour(conn, frame, writer):
                    continue
                if not await self._standard(frame, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _standard(self, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        action, action_id = frame.get("Action", ""), frame.get("ActionID", "")
        if action == "Login":
            if frame.get("Secret") != self.secret:
                await asyncio.sleep(0.2)  # Asterisk waits about 1 s before refusing
                writer.write(wire("Response: Error", f"ActionID: {action_id}",
                                  "Message: Authentication failed"))  # fmt: skip
                await writer.drain()
                return False
            writer.write(wire("Response: Success", f"ActionID: {action_id}",
                              "Message: Authentication accepted"))  # fmt: skip
        elif action == "Ping":
            writer.write(wire("Response: Success", f"ActionID: {action_id}", "Ping: Pong"))
        elif action == "Originate":
            writer.write(wire("Response: Success", f"ActionID: {action_id}",
                              "Message: Originate successfully queued"))  # fmt: skip
        elif action == "Logoff":
            writer.write(wire("Response: Goodbye", f"ActionID: {action_id}"))
            await writer.drain()
            return False
        else:
            writer.write(wire("Response: Success", f"ActionID: {action_id}"))
        await writer.drain()
        return True


def _peer_parse(raw: bytes) -> Frame:
    frame: Frame = {}
    for line in raw.decode().split("\r\n"):
        name, sep, value = line.partition(": ")
        if sep:
            frame.setdefault(name, value) if name != "Variable" else frame.setdefault(
                "Variable", []
            ).append(value)
    return frame


def run(coro: Coroutine[Any, Any, Any], timeout: float = 15.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def next_event(client: AmiClient, events: Any, timeout: float = 3.0) -> Frame:
    return await asyncio.wait_for(anext(events), timeout)


def fast_client(server: AmiServer, **options: Any) -> AmiClient:
    defaults: dict[str, Any] = {
        "events": True,
        "connect_timeout": 2.0,
        "login_timeout": 2.0,
        "action_timeout": 2.0,
        "ping_interval": 5.0,
        "ping_timeout": 1.0,
        "reconnect_initial": 0.05,
        "reconnect_max": 0.2,
    }
    return AmiClient(server, **{**defaults, **options})


# -- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (0, 0.0, 0.25),
        (0, 1.0, 0.5),
        (1, 1.0, 1.0),
        (3, 0.5, 3.0),
        (6, 1.0, 30.0),  # capped
        (1000, 0.0, 15.0),  # no overflow, still capped
    ],
)
def test_backoff_doubles_with_jitter_and_is_capped(attempt: int, rand: float, expected: float):
    assert backoff_delay(attempt, 0.5, 30.0, rng=lambda: rand) == pytest.approx(expected)


def test_parse_frame_shapes() -> None:
    event = parse_frame(
        wire(
            "Event: Newchannel",
            "Uniqueid: 1704067200000_5",
            "AccountCode: ",
            "ChanVariable: custom_call_id=1704067200000_5",
            "ChanVariable: CUSTOM_CALL_ID=",
            "ChanVariable: odd=a=b",
            "DestChanVariable: custom_call_id=",
        )
    )
    assert event == {
        "Event": "Newchannel",
        "Uniqueid": "1704067200000_5",
        "AccountCode": "",
        "ChanVariable": {"custom_call_id": "1704067200000_5", "CUSTOM_CALL_ID": "", "odd": "a=b"},
        "DestChanVariable": {"custom_call_id": ""},
    }
    # OriginateResponse names the channel in its ChanVariable headers; a single one is a dict too.
    result = parse_frame(
        wire(
            "Event: OriginateResponse",
            "Response: Success",
            "ChanVariable(Local/+15550000001@pstn-sim-00000000;1): custom_call_id=1_2",
        )
    )
    assert result is not None and result["ChanVariable"] == {"custom_call_id": "1_2"}
    output = parse_frame(wire("Response: Success", "ActionID: 7", "Output: a", "Output: b"))
    assert output == {"Response": "Success", "ActionID": "7", "Output": "a\nb"}
    # panoramisk takes the last line of a Fail/Follows frame as a body; it comes back as a header.
    fail = parse_frame(wire("Response: Fail", "ActionID: 8", "Message: No such channel"))
    assert fail == {"Response": "Fail", "ActionID": "8", "Message": "No such channel"}
    assert parse_frame(wire("Hello: world")) is None


# -- fault peers ------------------------------------------------------------------------------


@pytest.mark.parametrize("event_first", [False, True], ids=["queued-first", "event-first"])
def test_originate_returns_on_queued_and_the_result_arrives_as_an_event(event_first: bool):
    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        if frame.get("Action") != "Originate":
            return False
        queued = wire("Response: Success", f"ActionID: {frame['ActionID']}",
                      "Message: Originate successfully queued")  # fmt: skip
        # The event carries `Response` and the same ActionID: it must not pass for the answer.
        result = wire("Event: OriginateResponse", f"ActionID: {frame['ActionID']}",
                      "Response: Failure", "Reason: 5", "Uniqueid: <unknown>")  # fmt: skip
        writer.write(result + queued if event_first else queued + result)
        await writer.drain()
        return True

    async def scenario() -> None:
        peer = await FaultPeer(behaviour=behaviour).start()
        client = fast_client(peer.ami())
        await client.connect()
        events = client.events()
        assert (await next_event(client, events))["Event"] == CONNECTED_EVENT
        await client.originate(payload_for(1, local=True))
        result = await next_event(client, events)
        assert result["Event"] == "OriginateResponse"
        assert result["ActionID"] == "1704067200000_1" and result["Reason"] == "5"
        (_, sent), = peer.actions("Originate")  # fmt: skip
        assert sent["Async"] == "true"
        assert sent["ChannelId"] == "1704067200000_1"
        assert sent["OtherChannelId"] == "1704067200000_1-2"
        assert sent["Variable"][0] == "to=+15550000002"
        await client.close()
        await peer.stop()

    run(scenario())


def test_connection_dropped_after_originate_is_written_is_never_resent() -> None:
    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        if frame.get("Action") == "Originate" and conn == 0:
            writer.transport.abort()  # the frame arrived; the answer never will
            return True
        return False

    async def scenario() -> None:
        peer = await FaultPeer(behaviour=behaviour).start()
        client = fast_client(peer.ami())
        await client.connect()
        events = client.events()
        assert (await next_event(client, events))["Event"] == CONNECTED_EVENT
        with pytest.raises(OriginateFateUnknown, match="1704067200000_1"):
            await client.originate(payload_for(1))
        assert (await next_event(client, events))["Event"] == DISCONNECTED_EVENT
        assert (await next_event(client, events))["Event"] == CONNECTED_EVENT
        # The reconnected session works and carries no leftover of the lost Originate.
        assert (await client.action({"Action": "Ping"}))["Ping"] == "Pong"
        await client.originate(payload_for(2))
        await asyncio.sleep(0.3)
        originates = [(c, f["ActionID"]) for c, f in peer.actions("Originate")]
        assert originates == [(0, "1704067200000_1"), (1, "1704067200000_2")]
        assert peer.connections == 2
        await client.close()
        await peer.stop()

    run(scenario())


def test_wrong_secret_is_a_clear_error_and_not_retried() -> None:
    async def scenario() -> None:
        peer = await FaultPeer().start()
        client = fast_client(peer.ami(secret="wrong-secret"))
        started = time.monotonic()
        with pytest.raises(AmiAuthenticationError) as raised:
            await client.connect()
        assert time.monotonic() - started < 2.0
        assert "refused login as 'dialer'" in str(raised.value)
        assert "wrong-secret" not in str(raised.value)
        await asyncio.sleep(0.5)
        assert len(peer.actions("Login")) == 1 and peer.connections == 1
        with pytest.raises(AmiConnectionError):
            await client.action({"Action": "Ping"})
        await peer.stop()

    run(scenario())


def test_refused_relogin_stops_the_client_instead_of_looping() -> None:
    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        if frame.get("Action") == "Ping" and conn == 0:
            peer.secret = "rotated"  # the PBX's secret changed; then it restarts
            writer.transport.abort()
            return True
        return False

    peer = FaultPeer(behaviour=behaviour)

    async def scenario() -> None:
        await peer.start()
        client = fast_client(peer.ami(secret=SECRET))
        await client.connect()
        events = client.events()
        assert (await next_event(client, events))["Event"] == CONNECTED_EVENT
        with pytest.raises(ActionFateUnknown):
            await client.action({"Action": "Ping"})
        assert (await next_event(client, events))["Event"] == DISCONNECTED_EVENT
        with pytest.raises(AmiAuthenticationError):
            await next_event(client, events)
        await asyncio.sleep(0.5)
        assert len(peer.actions("Login")) == 2
        assert client.stopped
        await client.close()
        await peer.stop()

    run(scenario())


def test_unreachable_server_and_non_ami_peer_fail_fast() -> None:
    async def scenario() -> None:
        peer = await FaultPeer(greeting=b"HTTP/1.1 400 Bad Request\r\n").start()
        with pytest.raises(AmiConnectionError, match="not an Asterisk Manager Interface"):
            await fast_client(peer.ami()).connect()
        port = peer.port
        await peer.stop()
        await asyncio.sleep(0.05)
        dead = AmiServer("dead", "127.0.0.1", port, "dialer", "x")
        with pytest.raises(AmiConnectionError, match="cannot reach"):
            await fast_client(dead).connect()

    run(scenario())


def test_login_without_answer_times_out() -> None:
    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        return True  # reads everything, answers nothing

    async def scenario() -> None:
        peer = await FaultPeer(behaviour=behaviour).start()
        started = time.monotonic()
        with pytest.raises(AmiConnectionError, match="no login answer within 0.3s"):
            await fast_client(peer.ami(), login_timeout=0.3).connect()
        assert time.monotonic() - started < 1.5
        await peer.stop()

    run(scenario())


def test_watchdog_drops_a_silent_peer_and_reconnects() -> None:
    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        # First connection: logs in, then never answers anything again.
        return conn == 0 and frame.get("Action") != "Login"

    async def scenario() -> None:
        peer = await FaultPeer(behaviour=behaviour).start()
        client = fast_client(peer.ami(), ping_interval=0.2, ping_timeout=0.3)
        await client.connect()
        events = client.events()
        assert (await next_event(client, events))["Event"] == CONNECTED_EVENT
        started = time.monotonic()
        lost = await next_event(client, events)
        assert lost["Event"] == DISCONNECTED_EVENT
        assert "Ping" in lost["Reason"]
        assert time.monotonic() - started < 1.5
        assert (await next_event(client, events))["Event"] == CONNECTED_EVENT
        assert (await client.action({"Action": "Ping"}))["Response"] == "Success"
        assert [c for c, _ in peer.actions("Ping")][0] == 0
        await client.close()
        await peer.stop()

    run(scenario())


def test_originate_without_answer_is_fate_unknown_within_its_timeout() -> None:
    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        return frame.get("Action") == "Originate"

    async def scenario() -> None:
        peer = await FaultPeer(behaviour=behaviour).start()
        client = fast_client(peer.ami())
        await client.connect()
        started = time.monotonic()
        with pytest.raises(OriginateFateUnknown, match="no response within 0.3s"):
            await client.originate(payload_for(1), timeout=0.3)
        assert time.monotonic() - started < 1.0
        assert len(peer.actions("Originate")) == 1
        await client.close()
        await peer.stop()

    run(scenario())


def test_originate_error_response_is_rejected_not_unknown() -> None:
    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        if frame.get("Action") != "Originate":
            return False
        writer.write(wire("Response: Error", f"ActionID: {frame['ActionID']}",
                          "Message: Failed to parse message: line too long"))  # fmt: skip
        return True

    async def scenario() -> None:
        peer = await FaultPeer(behaviour=behaviour).start()
        client = fast_client(peer.ami())
        await client.connect()
        with pytest.raises(OriginateRejected, match="line too long"):
            await client.originate(payload_for(1))
        await client.close()
        await peer.stop()

    run(scenario())


INJECTIONS = {
    "CR": "welcome\rVariable: x=1",
    "LF": "welcome\nVariable: x=1",
    "CRLFCRLF": "welcome\r\n\r\nAction: Hangup\r\nChannel: PJSIP/MC-00000001",
    "NUL": "welcome\x00",
    "overlong": "L" * 1100,
}


def test_unsafe_values_are_refused_and_nothing_is_sent() -> None:
    async def scenario() -> None:
        peer = await FaultPeer().start()
        client = fast_client(peer.ami())
        await client.connect()
        for value in INJECTIONS.values():
            with pytest.raises(UnsafeHeaderValue):
                await client.originate(payload_for(1, ivr_file=value))
            with pytest.raises(UnsafeHeaderValue):
                await client.action({"Action": "Hangup", "Channel": value})
        assert (await client.action({"Action": "Ping"}))["Response"] == "Success"
        assert [f["Action"] for _, f in peer.frames] == ["Login", "Ping"]
        assert not any(b"welcome" in raw or b"Hangup" in raw for raw in peer.raw)
        await client.close()
        await peer.stop()

    run(scenario())


def test_split_utf8_character_survives() -> None:
    name = "José Müller 日本"
    event = wire("Event: Newchannel", f"CallerIDName: {name}", "Uniqueid: 1704067200000_9")

    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        if frame.get("Action") != "Ping" or frame["ActionID"] != "send-split":
            return False
        cut = event.index("é".encode()) + 1  # between the two bytes of é
        for chunk in (event[:cut], event[cut : cut + 20], event[cut + 20 :]):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.05)  # separate TCP segments, separate reads
        writer.write(wire("Response: Success", "ActionID: send-split", "Ping: Pong"))
        return True

    async def scenario() -> None:
        peer = await FaultPeer(behaviour=behaviour).start()
        client = fast_client(peer.ami())
        await client.connect()
        events = client.events()
        assert (await next_event(client, events))["Event"] == CONNECTED_EVENT
        await client.action({"Action": "Ping", "ActionID": "send-split"})
        received = await next_event(client, events)
        assert received["CallerIDName"] == name
        await client.close()
        await peer.stop()

    run(scenario())


def test_events_keep_order_and_lists_are_collected_apart() -> None:
    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        if frame.get("Action") != "CoreShowChannels":
            return False
        action_id = frame["ActionID"]
        out = [wire("Event: Newstate", f"Uniqueid: u{i}") for i in range(50)]
        out.insert(10, wire("Response: Success", f"ActionID: {action_id}", "EventList: start",
                            "Message: Channels will follow"))  # fmt: skip
        out.insert(20, wire("Event: CoreShowChannel", f"ActionID: {action_id}", "Channel: a"))
        out.insert(30, wire("Event: CoreShowChannel", f"ActionID: {action_id}", "Channel: b"))
        out.insert(40, wire("Event: CoreShowChannelsComplete", f"ActionID: {action_id}",
                            "EventList: Complete", "ListItems: 2"))  # fmt: skip
        writer.write(b"".join(out))
        return True

    async def scenario() -> None:
        peer = await FaultPeer(behaviour=behaviour).start()
        client = fast_client(peer.ami())
        await client.connect()
        events = client.events()
        assert (await next_event(client, events))["Event"] == CONNECTED_EVENT
        channels = await client.action_list({"Action": "CoreShowChannels"})
        assert [c["Channel"] for c in channels] == ["a", "b"]
        received = [await next_event(client, events) for _ in range(50)]
        assert [e["Uniqueid"] for e in received] == [f"u{i}" for i in range(50)]
        await client.close()
        await peer.stop()

    run(scenario())


def test_reconnect_backs_off_instead_of_hammering() -> None:
    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        if frame.get("ActionID") == "drop-me":
            writer.transport.abort()
            return True
        return False

    async def scenario() -> None:
        peer = await FaultPeer(behaviour=behaviour, refuse_from=1).start()
        client = fast_client(peer.ami(), reconnect_initial=0.05, reconnect_max=0.2)
        await client.connect()
        with pytest.raises(ActionFateUnknown):
            await client.action({"Action": "Ping", "ActionID": "drop-me"})
        await asyncio.sleep(1.2)
        await client.close()
        attempts = peer.accepted_at[1:]
        # Delays 0.025-0.05, 0.05-0.1, 0.1-0.2, then 0.1-0.2 each: about 7-11 in 1.2 s.
        # Without back-off it would be thousands.
        assert 4 <= len(attempts) <= 16, len(attempts)
        gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
        assert all(gap >= 0.08 for gap in gaps[3:]), gaps
        await peer.stop()

    run(scenario())


def test_actions_while_reconnecting_wait_then_fail_without_sending() -> None:
    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        if frame.get("ActionID") == "drop-me":
            writer.transport.abort()
            return True
        return False

    async def scenario() -> None:
        peer = await FaultPeer(behaviour=behaviour, refuse_from=1).start()
        client = fast_client(peer.ami())
        await client.connect()
        with pytest.raises(ActionFateUnknown):
            await client.action({"Action": "Ping", "ActionID": "drop-me"})
        with pytest.raises(AmiConnectionError, match="nothing sent"):
            await client.originate(payload_for(1), timeout=0.3)
        peer.refuse_from = None  # the PBX is back
        await client.originate(payload_for(2), timeout=2.0)
        assert [f["ActionID"] for _, f in peer.actions("Originate")] == ["1704067200000_2"]
        await client.close()
        await peer.stop()

    run(scenario())


def test_send_by_bounds_the_wait_for_a_reconnection_and_wait_connected_waits() -> None:
    """A paced Originate gives up at once rather than going out whenever the link is back."""

    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        if frame.get("ActionID") == "drop-me":
            writer.transport.abort()
            return True
        return False

    async def scenario() -> None:
        peer = await FaultPeer(behaviour=behaviour, refuse_from=1).start()
        client = fast_client(peer.ami())
        await client.connect()
        with pytest.raises(ActionFateUnknown):
            await client.action({"Action": "Ping", "ActionID": "drop-me"})
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(AmiConnectionError, match="nothing sent"):
            await client.originate(payload_for(1), timeout=5.0, send_by=time.time() + 0.02)
        assert loop.time() - started < 0.1
        with pytest.raises(AmiConnectionError):
            await client.wait_connected(0.2)
        peer.refuse_from = None  # the PBX is back
        await client.wait_connected(2.0)
        assert client.connected
        await client.originate(payload_for(2), timeout=2.0, send_by=time.time() + 1.0)
        with pytest.raises(AmiConnectionError, match="past its send-by time; nothing sent"):
            await client.originate(payload_for(3), timeout=2.0, send_by=time.time() - 0.001)
        assert [f["ActionID"] for _, f in peer.actions("Originate")] == ["1704067200000_2"]
        await client.close()
        await peer.stop()

    run(scenario())


def test_sync_client_wait_connected_and_send_by() -> None:
    client = SyncAmiClient(AmiServer("dead", "127.0.0.1", 1, "u", "s"), connect_timeout=1.0)
    with pytest.raises(AmiConnectionError):
        client.wait_connected(0.5)
    with pytest.raises(AmiConnectionError):
        client.originate(payload_for(1), send_by=time.time())
    client.close()


def test_connect_with_retry_waits_for_a_late_server() -> None:
    async def scenario() -> None:
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        client = fast_client(AmiServer("late", "127.0.0.1", port, "dialer", SECRET))
        connecting = asyncio.create_task(client.connect(retry=True))
        await asyncio.sleep(0.4)
        assert not connecting.done()
        peer = FaultPeer()
        peer.server = await asyncio.start_server(peer._handle, "127.0.0.1", port)
        await asyncio.wait_for(connecting, 2.0)
        assert client.connected
        await client.close()
        await peer.stop()

    run(scenario())


def test_duplicate_in_flight_action_id_is_refused() -> None:
    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        return frame.get("Action") == "Originate"  # never answered

    async def scenario() -> None:
        peer = await FaultPeer(behaviour=behaviour).start()
        client = fast_client(peer.ami())
        await client.connect()
        first = asyncio.create_task(client.originate(payload_for(1), timeout=0.5))
        await asyncio.sleep(0.1)
        with pytest.raises(AmiError, match="already waiting"):
            await client.originate(payload_for(1))
        with pytest.raises(OriginateFateUnknown):
            await first
        assert len(peer.actions("Originate")) == 1
        await client.close()
        await peer.stop()

    run(scenario())


# -- the blocking facade ----------------------------------------------------------------------


class PeerThread:
    """A FaultPeer on its own event loop thread, for code that blocks."""

    def __init__(self, peer: FaultPeer) -> None:
        self.peer = peer
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FaultPeer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.peer.start(), self.loop).result(5)
        return self.peer

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.peer.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def test_sync_client_from_plain_threads_shares_one_connection() -> None:
    with PeerThread(FaultPeer()) as peer:
        client = SyncAmiClient(peer.ami(), action_timeout=2.0)
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                client.originate(payload_for(n))
            except BaseException as exc:  # collected for the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 9)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert errors == []
        assert client.action({"Action": "Ping"})["Ping"] == "Pong"
        logins = peer.actions("Login")
        assert len(logins) == 1 and logins[0][1]["Events"] == "off"
        ids = sorted(f["ActionID"] for _, f in peer.actions("Originate"))
        assert ids == sorted(f"1704067200000_{n}" for n in range(1, 9))
        with pytest.raises(UnsafeHeaderValue):
            client.originate(payload_for(99, ivr_file="x\r\nAction: Hangup"))
        client.close()
        assert len(peer.actions("Originate")) == 8


def test_sync_client_reconnects_in_a_forked_child() -> None:
    with PeerThread(FaultPeer()) as peer:
        client = SyncAmiClient(peer.ami(), action_timeout=2.0)
        client.originate(payload_for(1))
        pid = os.fork()
        if pid == 0:  # child: must not reuse the parent's socket or loop thread
            code = 1
            try:
                client.originate(payload_for(2))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        client.originate(payload_for(3))  # the parent's connection is untouched
        client.close()
        assert len(peer.actions("Login")) == 2
        assert sorted((c, f["ActionID"]) for c, f in peer.actions("Originate")) == [
            (0, "1704067200000_1"),
            (0, "1704067200000_3"),
            (1, "1704067200000_2"),
        ]


def test_sync_client_reconnects_after_the_server_closed_and_sends_each_call_once() -> None:
    """A connection closed by the PBX between two calls is noticed before the next write:
    reconnect (after the back-off), then send; nothing is written twice or lost."""

    async def close_after_first(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        if conn == 0 and frame.get("Action") == "Originate":
            writer.write(wire("Response: Success", f"ActionID: {frame['ActionID']}"))
            await writer.drain()
            writer.close()  # the PBX restarts
            return True
        return False

    with PeerThread(FaultPeer(behaviour=close_after_first)) as peer:
        client = SyncAmiClient(peer.ami(), action_timeout=2.0, reconnect_initial=0.05)
        client.originate(payload_for(1))
        time.sleep(0.1)  # the close has arrived
        client.originate(payload_for(2), send_by=time.time() + 2.0)
        client.close()
        assert [(c, f["ActionID"]) for c, f in peer.actions("Originate")] == [
            (0, "1704067200000_1"),
            (1, "1704067200000_2"),
        ]
        assert len(peer.actions("Login")) == 2


def test_sync_client_unanswered_originate_is_fate_unknown_and_never_resent() -> None:
    async def silent_once(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        return frame.get("ActionID") == "1704067200000_1"  # written, never answered

    with PeerThread(FaultPeer(behaviour=silent_once)) as peer:
        client = SyncAmiClient(peer.ami(), action_timeout=0.3)
        with pytest.raises(OriginateFateUnknown):
            client.originate(payload_for(1))
        client.originate(payload_for(2))  # the connection is still good
        client.close()
        ids = [f["ActionID"] for _, f in peer.actions("Originate")]
        assert ids == ["1704067200000_1", "1704067200000_2"]


def test_sync_client_pings_an_idle_connection_before_writing() -> None:
    """A PBX that stopped answering is found out by a Ping after a quiet spell, so the
    Originate is not written into the void (nothing sent, not fate unknown)."""
    hung = threading.Event()

    async def hang(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        return hung.is_set()  # swallow everything

    with PeerThread(FaultPeer(behaviour=hang)) as peer:
        client = SyncAmiClient(peer.ami(), action_timeout=1.0, ping_interval=0.2, ping_timeout=0.2)
        client.originate(payload_for(1))
        hung.set()
        time.sleep(0.3)
        started = time.monotonic()
        # Not connected (whether the reconnect is still backing off or its login timed out):
        # nothing sent, and not past the send-by time.
        with pytest.raises(AmiConnectionError):
            client.originate(payload_for(2), send_by=time.time() + 0.5)
        assert time.monotonic() - started < 1.0
        client.close()
        assert [f["ActionID"] for _, f in peer.actions("Originate")] == ["1704067200000_1"]
        assert len(peer.actions("Ping")) == 1


def test_sync_client_refused_login_is_not_retried_at_every_call() -> None:
    with PeerThread(FaultPeer()) as peer:
        client = SyncAmiClient(peer.ami(secret="wrong"), reconnect_max=30.0)
        for _ in range(3):
            with pytest.raises(AmiAuthenticationError, match="refused login"):
                client.originate(payload_for(1))
        client.close()
        assert len(peer.actions("Login")) == 1
        assert peer.actions("Originate") == []


def test_sync_client_reports_unreachable_server() -> None:
    client = SyncAmiClient(AmiServer("dead", "127.0.0.1", 1, "u", "s"), connect_timeout=1.0)
    with pytest.raises(AmiConnectionError):
        client.originate(payload_for(1))
    client.close()


# -- against the PBX simulator ----------------------------------------------------------------


def test_comma_and_special_values_arrive_whole_at_the_simulator(pbx_sim: Any) -> None:
    value = 'promo,spring (2024) "v2" [a] back\\slash'

    async def scenario() -> None:
        client = fast_client(pbx_sim.server, events=False)
        await client.connect()
        await client.originate(payload_for(41, ivr_file=value))
        await client.close()

    run(scenario())
    originates = [r for r in pbx_sim.records() if r["action"] == "Originate"]
    assert len(originates) == 1
    assert originates[0]["variables"]["ivr_file"] == value
    assert originates[0]["variables"]["IVR_FILE"] == value
    assert originates[0]["channel_id"] == "1704067200000_41"


def test_originate_result_and_call_events_reach_the_event_stream(pbx_sim: Any) -> None:
    call_id = "1704067200000_42"
    payload = build_originate_payload(
        call_id=call_id,
        to_number="+15550000004",  # busy
        from_number="+15559990000",
        settings=CallSettings(ivr_file="welcome_message"),
        trunk=TrunkRoute(),
    )

    async def scenario() -> list[Frame]:
        listener = fast_client(pbx_sim.server, events=True)
        dialer = fast_client(pbx_sim.server, events=False)
        await listener.connect()
        await dialer.connect()
        events = listener.events()
        seen = [await next_event(listener, events)]
        await dialer.originate(payload)
        for _ in range(1000):
            if seen[-1].get("Event") == "OriginateResponse":
                break
            seen.append(await next_event(listener, events, timeout=10.0))
        await dialer.close()
        await listener.close()
        return seen

    seen = run(scenario())
    assert seen[0]["Event"] == CONNECTED_EVENT
    result = seen[-1]
    assert result["Event"] == "OriginateResponse"
    assert result["ActionID"] == call_id and result["Response"] == "Failure"
    # ChannelId made the call's id its Uniqueid and every leg's Linkedid.
    channel_events = [e for e in seen if e.get("Event") == "Newchannel"]
    assert channel_events and all(e["Linkedid"] == call_id for e in channel_events)
    assert any(e["Uniqueid"] == call_id for e in channel_events)
    originates = [r for r in pbx_sim.records() if r["action"] == "Originate"]
    assert len(originates) == 1
    assert dict(map(tuple, originates[0]["headers"]))["Async"] == "true"


def test_wrong_secret_at_the_simulator_is_a_clear_error(pbx_sim: Any) -> None:
    server = AmiServer("sim", pbx_sim.host, pbx_sim.port, pbx_sim.username, "wrong-secret")

    async def scenario() -> None:
        client = fast_client(server, login_timeout=5.0)
        started = time.monotonic()
        with pytest.raises(AmiAuthenticationError, match="refused login"):
            await client.connect()
        assert time.monotonic() - started < 3.0
        await asyncio.sleep(0.3)

    run(scenario())
    logins = [r for r in pbx_sim.records() if r["action"] == "Login"]
    assert len(logins) == 1
    assert "wrong-secret" not in json.dumps(pbx_sim.records())


def test_sync_client_from_a_plain_thread_against_the_simulator(pbx_sim: Any) -> None:
    client = SyncAmiClient(pbx_sim.server, action_timeout=5.0)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            client.originate(payload_for(43))
            assert client.action({"Action": "Ping"})["Response"] == "Success"
        except BaseException as exc:  # collected for the assertion below
            failures.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(15)
    client.close()
    assert failures == []
    records = pbx_sim.records()
    assert [r["action_id"] for r in records if r["action"] == "Originate"] == ["1704067200000_43"]
    login = next(r for r in records if r["action"] == "Login")
    assert dict(map(tuple, login["headers"]))["Events"] == "off"


def test_a_full_event_queue_stops_the_reading_and_loses_nothing() -> None:
    """With `max_queued_events`, the client stops reading the socket while that many events
    wait (TCP holds the rest: the peer's writes back up), and reads on as they are taken:
    every event arrives, in order."""
    total, bound = 50_000, 100

    async def behaviour(conn: int, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        if frame.get("Action") != "Flood":
            return False
        writer.write(wire("Response: Success", f"ActionID: {frame['ActionID']}"))
        writer.write(b"".join(wire("Event: UserEvent", f"Seq: {i:06d}") for i in range(total)))
        return True

    async def scenario() -> None:
        peer = await FaultPeer(behaviour=behaviour).start()
        client = fast_client(peer.ami(), max_queued_events=bound)
        await client.connect()
        events = client.events()
        assert (await next_event(client, events))["Event"] == CONNECTED_EVENT
        await client.action({"Action": "Flood"})
        await asyncio.sleep(0.5)  # nobody takes events: the reader must stop at the bound
        # Unbounded, all 50,000 would be queued by now; the rest waits in the socket.
        assert 0 < client.queued_events <= bound
        received = [(await next_event(client, events))["Seq"] for _ in range(total)]
        assert received == [f"{i:06d}" for i in range(total)]
        assert client.connected  # the pause cost no reconnect
        await client.close()
        await peer.stop()

    run(scenario(), timeout=60)
