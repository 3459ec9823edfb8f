"""Event frames in Asterisk 22's header order, broadcast once-formatted to every listening session."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from dialer.pbxsim.channels import Bridge, Channel
from dialer.pbxsim.codes import (
    AGENT,
    CALL,
    DIALPLAN,
    DTMF,
    SYSTEM,
    USER,
    cause_text,
    privilege,
)
from dialer.pbxsim.wire import ENCODING, ERRORS


class Listener(Protocol):
    """A logged-in session as the bus sees it."""

    send_events: int

    def wants(self, text: str) -> bool: ...

    def send_event(self, data: bytes) -> None: ...


class EventBus:
    """Delivers each event to the sessions whose event mask and filters accept it.

    The frame is formatted and encoded once, and not at all when nobody listens to its
    category, so an idle bus costs next to nothing per call.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.mask = 0

    def subscribe(self, listener: Listener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)
        self._recompute()

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
        self._recompute()

    def _recompute(self) -> None:
        mask = 0
        for listener in self._listeners:
            mask |= listener.send_events
        self.mask = mask

    def publish(self, category: int, text: str) -> None:
        data: bytes | None = None
        for listener in self._listeners:
            if listener.send_events & category and listener.wants(text):
                if data is None:
                    data = text.encode(ENCODING, ERRORS)
                listener.send_event(data)


_PRIV = {category: privilege(category) for category in (SYSTEM, CALL, AGENT, USER, DTMF, DIALPLAN)}


def _lines(pairs: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in pairs)


class Events:
    """The events a call produces, each a method, formatted only when someone listens."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def _on(self, category: int) -> bool:
        return bool(self.bus.mask & category)

    def channel(self, event: str, channel: Channel, extra: str = "", category: int = CALL) -> None:
        if self.bus.mask & category:
            self.bus.publish(
                category,
                f"Event: {event}\r\nPrivilege: {_PRIV[category]}\r\n{channel.block()}{extra}\r\n",
            )

    def raw(self, event: str, body: str, category: int = CALL) -> None:
        if self.bus.mask & category:
            self.bus.publish(
                category, f"Event: {event}\r\nPrivilege: {_PRIV[category]}\r\n{body}\r\n"
            )

    # -- channel life ---------------------------------------------------------------------------

    def newchannel(self, channel: Channel) -> None:
        self.channel("Newchannel", channel)

    def newstate(self, channel: Channel) -> None:
        self.channel("Newstate", channel)

    def hangup_request(self, channel: Channel, cause: int) -> None:
        self.channel("HangupRequest", channel, f"Cause: {cause}\r\n")

    def soft_hangup_request(self, channel: Channel, cause: int = 16) -> None:
        self.channel("SoftHangupRequest", channel, f"Cause: {cause}\r\n")

    def hangup(self, channel: Channel, cause: int) -> None:
        self.channel("Hangup", channel, f"Cause: {cause}\r\nCause-txt: {cause_text(cause)}\r\n")

    def varset(self, channel: Channel, name: str, value: str) -> None:
        self.channel("VarSet", channel, f"Variable: {name}\r\nValue: {value}\r\n", DIALPLAN)

    def hold(self, channel: Channel) -> None:
        self.channel("Hold", channel)

    def unhold(self, channel: Channel) -> None:
        self.channel("Unhold", channel)

    def mixmonitor(self, channel: Channel, started: bool) -> None:
        self.channel("MixMonitorStart" if started else "MixMonitorStop", channel)

    def dtmf_begin(self, channel: Channel, digit: str) -> None:
        self.channel("DTMFBegin", channel, f"Digit: {digit}\r\nDirection: Received\r\n", DTMF)

    def dtmf_end(self, channel: Channel, digit: str, duration_ms: int) -> None:
        self.channel(
            "DTMFEnd",
            channel,
            f"Digit: {digit}\r\nDurationMs: {duration_ms}\r\nDirection: Received\r\n",
            DTMF,
        )

    def user_event(self, channel: Channel, name: str, fields: Sequence[tuple[str, str]]) -> None:
        self.channel("UserEvent", channel, f"UserEvent: {name}\r\n{_lines(fields)}", USER)

    # -- dialing --------------------------------------------------------------------------------

    def local_bridge(self, one: Channel, two: Channel, context: str, exten: str) -> None:
        if self._on(CALL):
            self.raw(
                "LocalBridge",
                f"{one.block('LocalOne')}{two.block('LocalTwo')}"
                f"Context: {context}\r\nExten: {exten}\r\nLocalOptimization: Yes\r\n",
            )

    def _dial(self, event: str, caller: Channel | None, dest: Channel, tail: str) -> None:
        if self._on(CALL):
            head = caller.block() if caller is not None else ""
            self.raw(event, f"{head}{dest.block('Dest')}{tail}")

    def dial_begin(self, caller: Channel | None, dest: Channel, dial_string: str) -> None:
        self._dial("DialBegin", caller, dest, f"DialString: {dial_string}\r\n")

    def dial_state(self, caller: Channel | None, dest: Channel, status: str) -> None:
        self._dial("DialState", caller, dest, f"DialStatus: {status}\r\n")

    def dial_end(self, caller: Channel | None, dest: Channel, status: str) -> None:
        self._dial("DialEnd", caller, dest, f"DialStatus: {status}\r\n")

    def originate_response(
        self,
        *,
        action_id: str,
        success: bool,
        channel_name: str,
        target: Sequence[tuple[str, str]],
        reason: int,
        uniqueid: str,
        caller_num: str,
        caller_name: str,
        channel: Channel | None,
    ) -> None:
        if not self._on(CALL):
            return
        head = f"ActionID: {action_id}\r\n" if action_id else ""
        tail = channel.chanvariable_lines() if channel is not None else ""
        self.raw(
            "OriginateResponse",
            f"{head}Response: {'Success' if success else 'Failure'}\r\n"
            f"Channel: {channel_name}\r\n{_lines(target)}"
            f"Reason: {reason}\r\nUniqueid: {uniqueid}\r\n"
            f"CallerIDNum: {caller_num}\r\nCallerIDName: {caller_name}\r\n{tail}",
        )

    # -- bridges and transfers ------------------------------------------------------------------

    def bridge_create(self, bridge: Bridge) -> None:
        if self._on(CALL):
            self.raw("BridgeCreate", bridge.block())

    def bridge_destroy(self, bridge: Bridge) -> None:
        if self._on(CALL):
            self.raw("BridgeDestroy", bridge.block())

    def bridge_enter(self, bridge: Bridge, channel: Channel) -> None:
        if self._on(CALL):
            self.raw("BridgeEnter", bridge.block() + channel.block())

    def bridge_leave(self, bridge: Bridge, channel: Channel) -> None:
        if self._on(CALL):
            self.raw("BridgeLeave", bridge.block() + channel.block())

    def bridge_merge(self, into: Bridge, source: Bridge) -> None:
        if self._on(CALL):
            self.raw("BridgeMerge", into.block("ToBridge") + source.block("FromBridge"))

    def blind_transfer(
        self,
        result: str,
        transferer: Channel,
        transferee: Channel | None,
        bridge_block: str,
        context: str,
        exten: str,
    ) -> None:
        if not self._on(CALL):
            return
        body = f"Result: {result}\r\n{transferer.block('Transferer')}"
        if transferee is not None:
            body += transferee.block("Transferee")
        body += f"{bridge_block}IsExternal: Yes\r\nContext: {context}\r\nExtension: {exten}\r\n"
        self.raw("BlindTransfer", body)

    def attended_transfer(
        self,
        transferer: Channel,
        original: Bridge,
        second: Bridge,
        transferee: Channel,
        target: Channel,
    ) -> None:
        if not self._on(CALL):
            return
        self.raw(
            "AttendedTransfer",
            "Result: Success\r\n"
            f"{transferer.block('OrigTransferer')}{original.block('OrigBridge')}"
            f"{transferer.block('SecondTransferer')}{second.block('SecondBridge')}"
            f"{transferee.block('Transferee')}{target.block('TransferTarget')}"
            f"IsExternal: No\r\nDestType: Bridge\r\nDestBridgeUniqueid: {original.uniqueid}\r\n",
        )

    # -- the PBX itself -------------------------------------------------------------------------

    def shutdown(self, *, cleanly: bool, restart: bool) -> None:
        """asterisk.c really_quit: Uncleanly when channels were still up."""
        self.raw(
            "Shutdown",
            f"Shutdown: {'Cleanly' if cleanly else 'Uncleanly'}\r\n"
            f"Restart: {'True' if restart else 'False'}\r\n",
            SYSTEM,
        )

    # -- queues ---------------------------------------------------------------------------------

    def queue(self, event: str, body: str) -> None:
        self.raw(event, body, AGENT)

    def queue_channel(self, event: str, channel: Channel, extra: str) -> None:
        self.channel(event, channel, extra, AGENT)
