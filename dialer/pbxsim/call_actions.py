"""Call control actions: Originate, Hangup, Redirect, BlindTransfer, Atxfer, Bridge (manager.c's
and features.c's checks and messages, in the same order)."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from dialer.pbxsim import codes
from dialer.pbxsim.behaviour import parse_callerid, parse_dial_string
from dialer.pbxsim.calls import Call
from dialer.pbxsim.calls import originate as originate_call
from dialer.pbxsim.channels import Channel, ChannelRegistry
from dialer.pbxsim.engine import OriginateRequest
from dialer.pbxsim.legs import Leg
from dialer.pbxsim.parties import Party
from dialer.pbxsim.transfers import (
    AttendedTransfer,
    blind_transfer,
    blind_transfer_error,
    bridge_channels,
)
from dialer.pbxsim.wire import (
    Message,
    ack,
    action_id_line,
    error,
    int_prefix,
    list_ack,
    list_complete,
    originate_variables,
)

if TYPE_CHECKING:
    from dialer.pbxsim.actions import Handler
    from dialer.pbxsim.session import AmiSession

MAX_PUBLIC_UNIQUEID = 149
# features.conf `atxfer` of the reference Asterisk: the Atxfer action injects it as DTMF.
ATXFER_FEATURE_CODE = "*2"


# -- Originate ------------------------------------------------------------------------------------


def originate(session: AmiSession, message: Message) -> asyncio.Future[None] | None:
    get = message.get
    name, context, exten = get("Channel"), get("Context"), get("Exten")
    channel_id, other_id = get("ChannelId"), get("OtherChannelId")
    if len(channel_id) > MAX_PUBLIC_UNIQUEID or len(other_id) > MAX_PUBLIC_UNIQUEID:
        session.send(error(message, f"Uniqueid length exceeds maximum of {MAX_PUBLIC_UNIQUEID}"))
        return None
    if not name:
        session.send(error(message, "Channel not specified"))
        return None
    priority = 0
    if get("Priority"):
        parsed = int_prefix(get("Priority"))
        if parsed is None:  # priority labels are not simulated
            session.send(error(message, "Invalid priority"))
            return None
        priority = parsed
    timeout = 30000
    if get("Timeout"):
        parsed = int_prefix(get("Timeout"))
        if parsed is None:
            session.send(error(message, "Invalid timeout"))
            return None
        timeout = parsed
    target = parse_dial_string(name)
    if target is None:
        session.send(error(message, "Invalid channel"))
        return None
    caller_name, caller_num = parse_callerid(get("CallerID"))
    sim = session.sim
    if priority and not sim.engine.dialplan.exists(context, exten, sim.queues.names()):
        session.send(error(message, "Extension does not exist."))
        return None
    request = OriginateRequest(
        target=target,
        channel=name,
        context=context,
        exten=exten,
        priority=priority,
        application=get("Application"),
        app_data=get("Data"),
        caller_num=caller_num,
        caller_name=caller_name,
        timeout_ms=timeout,
        action_id=get("ActionID"),
        channel_id=channel_id,
        other_channel_id=other_id,
        variables=originate_variables(message),
    )
    if codes.is_true(get("Async")):
        session.send(ack(message, "Originate successfully queued"))
        originate_call(sim.engine, request)
        return None
    if not request.application and not priority:
        session.send(error(message, "Originate with 'Exten' requires 'Context' and 'Priority'"))
        return None
    # Synchronous: the session answers only when the call is answered or has failed.
    done: asyncio.Future[None] = sim.loop.create_future()

    def result(answered: bool) -> None:
        if answered:
            session.send(ack(message, "Originate successfully queued"))
        else:
            session.send(error(message, "Originate failed"))
        if not done.done():
            done.set_result(None)

    request.send_event = False
    request.on_result = result
    originate_call(sim.engine, request)
    return done


# -- Hangup ---------------------------------------------------------------------------------------


def hangup(session: AmiSession, message: Message) -> None:
    name = message.get("Channel")
    if not name:
        session.send(error(message, "No channel specified"))
        return
    cause: int | None = None
    cause_text = message.get("Cause")
    if cause_text:
        try:
            value = int(cause_text)
        except ValueError:
            value = 0  # an invalid Cause is ignored, the channel still hangs up
        cause = value if 0 < value <= 127 else None
    registry = session.sim.engine.registry
    if not name.startswith("/"):
        channel = registry.find(name)
        if channel is None:
            session.send(error(message, "No such channel"))
            return
        session.send(ack(message, "Channel Hungup"))
        _owner(channel).ami_hangup(channel, cause)
        return
    if len(name) < 2 or not name.endswith("/"):
        session.send(error(message, "Regex format invalid, Channel param should be /regex/"))
        return
    try:
        pattern = re.compile(name[1:-1])
    except re.error:
        session.send(error(message, f"Regex compile failed on: {name}"))
        return
    matched = [c for c in registry if pattern.search(c.name)]
    session.send(list_ack(message, "Channels hung up will follow"))
    id_line = action_id_line(message)
    for channel in matched:
        session.send(f"Event: ChannelHungup\r\nChannel: {channel.name}\r\n{id_line}\r\n".encode())
    session.send(list_complete(message, "ChannelsHungupListComplete", len(matched)))
    for channel in matched:
        if channel.alive:
            _owner(channel).ami_hangup(channel, cause)


def _owner(channel: Channel) -> Party:
    owner = channel.owner
    assert isinstance(owner, Party)
    return owner


# -- Redirect and transfers -----------------------------------------------------------------------


def redirect(session: AmiSession, message: Message) -> None:
    get = message.get
    name, context, exten, priority = get("Channel"), get("Context"), get("Exten"), get("Priority")
    for value, text in (
        (name, "Channel not specified"),
        (context, "Context not specified"),
        (exten, "Exten not specified"),
        (priority, "Priority not specified"),
    ):
        if not value:
            session.send(error(message, text))
            return
    parsed = int_prefix(priority)
    if parsed is None or parsed < 1:
        session.send(error(message, "Priority is invalid"))
        return
    registry = session.sim.engine.registry
    channel = registry.find(name)
    if channel is None:
        session.send(error(message, f"Channel does not exist: {name}"))
        return
    extra_name = get("ExtraChannel")
    extra = registry.find(extra_name) if extra_name else None
    if extra_name and extra is None:
        session.send(error(message, f"ExtraChannel does not exist: {extra_name}"))
        return
    owner = _owner(channel)
    if owner.ended or (isinstance(owner, Call) and owner.phase != "up"):
        session.send(error(message, "Redirect failed"))
        return
    session.send(ack(message, "Dual Redirect successful" if extra else "Redirect successful"))
    _redirect(owner, channel, context, exten)
    if extra is not None and extra.alive:
        _redirect(
            _owner(extra),
            extra,
            get("ExtraContext") or context,
            get("ExtraExten") or exten,
        )


def _redirect(owner: Party, channel: Channel, context: str, exten: str) -> None:
    if isinstance(owner, Call):
        owner.redirect(channel, context, exten)
        return
    if channel is not owner.near:
        owner.ami_hangup(channel, 0)
        return
    # A dialled leg sent elsewhere: its caller's Dial() returns, the leg runs the new context.
    owner.leave_dialplan()
    peer = owner.leave_bridge()
    if peer is not None:
        peer.peer_left()
    owner.enter(context, exten)


def blindtransfer(session: AmiSession, message: Message) -> None:
    name, exten, context = message.get("Channel"), message.get("Exten"), message.get("Context")
    if not name:
        session.send(error(message, "No channel specified"))
        return
    if not exten:
        session.send(error(message, "No extension specified"))
        return
    engine = session.sim.engine
    channel = engine.registry.find(name)
    if channel is None:
        session.send(error(message, "Channel specified does not exist"))
        return
    context = context or channel.context
    refusal = blind_transfer_error(engine, channel, context, exten)
    if refusal is not None:
        session.send(error(message, refusal))
    else:
        session.send(ack(message, "Transfer succeeded"))
    blind_transfer(engine, channel, context, exten)


def atxfer(session: AmiSession, message: Message) -> None:
    name, exten, context = message.get("Channel"), message.get("Exten"), message.get("Context")
    if not name:
        session.send(error(message, "No channel specified"))
        return
    if not exten:
        session.send(error(message, "No extension specified"))
        return
    engine = session.sim.engine
    channel = engine.registry.find(name)
    if channel is None:
        session.send(error(message, "Channel specified does not exist"))
        return
    code = ATXFER_FEATURE_CODE
    if context:
        channel.set_vars({"TRANSFER_CONTEXT": context})
    session.send(ack(message, "Atxfer successfully queued"))
    context = context or channel.variables.get("TRANSFER_CONTEXT") or channel.context
    if channel.bridge is not None and channel.bridge.peer_of(channel) is not None:
        AttendedTransfer(engine, channel, context, exten, code).start()
        return
    # Not bridged: the digits reach whatever the channel runs; the IVR's Read() takes one.
    owner = channel.owner
    ivr = owner.ivr if isinstance(owner, Call) else None
    if ivr is not None and ivr.reading:
        engine.events.dtmf_end(channel, code[0], 0)
        ivr.digit_received(code[0])
        return
    for digit in code + exten:
        engine.events.dtmf_end(channel, digit, 0)


def bridge(session: AmiSession, message: Message) -> None:
    one, two = message.get("Channel1"), message.get("Channel2")
    if not one or not two:
        session.send(error(message, "Missing channel parameter in request"))
        return
    registry = session.sim.engine.registry
    first = _by_name_prefix(registry, one)
    if first is None:
        session.send(error(message, f"Channel1 does not exist: {one}"))
        return
    second = _by_name_prefix(registry, two)
    if second is None:
        session.send(error(message, f"Channel2 does not exist: {two}"))
        return
    for index, channel in ((1, first), (2, second)):
        if not _bridgeable(channel):
            session.send(error(message, f"Unable to add Channel{index} to bridge: {channel.name}"))
            return
    session.send(ack(message, "Channels have been bridged"))
    bridge_channels(session.sim.engine, first, second)


def _by_name_prefix(registry: ChannelRegistry, name: str) -> Channel | None:
    """ast_channel_get_by_name_prefix: the channel of that name or Uniqueid, else the first
    whose name starts with it."""
    found = registry.find(name)
    if found is not None:
        return found
    prefix = name.lower()
    return next((c for c in registry if c.name.lower().startswith(prefix)), None)


def _bridgeable(channel: Channel) -> bool:
    """An answered channel that runs dialplan or sits in a bridge (not one still being dialled,
    nor the callee half of a Local pair, which the simulator does not move)."""
    owner = channel.owner
    if not isinstance(owner, Party) or owner.ended or channel is not owner.near:
        return False
    if isinstance(owner, Call):
        return owner.phase == "up"
    return isinstance(owner, Leg) and owner.answered


ACTIONS: dict[str, tuple[Handler, str, str]] = {
    "Originate": (originate, "Originate a call.", "originate,all"),
    "Hangup": (hangup, "Hangup channel.", "system,call,all"),
    "Redirect": (redirect, "Redirect (transfer) a call.", "call,all"),
    "BlindTransfer": (
        blindtransfer,
        "Blind transfer channel(s) to the given destination",
        "call,all",
    ),
    "Atxfer": (atxfer, "Attended transfer.", "call,all"),
    "Bridge": (bridge, "Bridge two channels already in the PBX.", "call,all"),
}
