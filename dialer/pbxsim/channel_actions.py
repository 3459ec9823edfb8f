"""Channel inspection and recording actions: Getvar, Setvar, CoreShowChannels, Status,
MixMonitor, StopMixMonitor (manager.c and app_mixmonitor messages)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from dialer.pbxsim import codes
from dialer.pbxsim.channels import Channel
from dialer.pbxsim.wire import (
    Message,
    ack,
    action_id_line,
    error,
    frame,
    list_ack,
    list_complete,
)

if TYPE_CHECKING:
    from dialer.pbxsim.actions import Handler
    from dialer.pbxsim.session import AmiSession


# -- variables ------------------------------------------------------------------------------------


def _function_value(channel: Channel | None, expression: str) -> str:
    if channel is None:
        return ""
    match = re.fullmatch(r"(\w+)\((.*)\)", expression)
    if not match:
        return ""
    function, argument = match.group(1).upper(), match.group(2).strip().lower()
    if function == "CHANNEL":
        values = {
            "state": codes.STATE_TEXT.get(channel.state, "Unknown"),
            "linkedid": channel.linkedid,
            "uniqueid": channel.uniqueid,
            "name": channel.name,
            "channeltype": channel.tech,
            "context": channel.context,
            "exten": channel.exten,
            "priority": str(channel.priority),
            "language": "en",
        }
        return values.get(argument, "")
    if function == "CALLERID":
        return {"num": channel.caller_num, "name": channel.caller_name}.get(argument, "")
    return ""


def _variable_value(session: AmiSession, channel: Channel | None, name: str) -> str:
    if name.endswith(")"):
        return _function_value(channel, name)
    if channel is not None:
        builtin = {
            "UNIQUEID": channel.uniqueid,
            "CHANNEL": channel.name,
            "CONTEXT": channel.context,
            "EXTEN": channel.exten,
            "PRIORITY": str(channel.priority),
        }
        if name in builtin:
            return builtin[name]
        if name == "BRIDGEPEER":
            peer = channel.bridge.peer_of(channel) if channel.bridge else None
            return peer.name if peer is not None else ""
        if name in channel.variables:
            return channel.variables[name]
    return session.sim.globals.get(name, "")


def getvar(session: AmiSession, message: Message) -> None:
    name, variable = message.get("Channel"), message.get("Variable")
    if not variable:
        session.send(error(message, "No variable specified"))
        return
    channel = None
    if name:
        channel = session.sim.engine.registry.find(name)
        if channel is None:
            session.send(error(message, "No such channel"))
            return
    value = _variable_value(session, channel, variable)
    pairs = [("Response", "Success")]
    if message.get("ActionID"):
        pairs.append(("ActionID", message.get("ActionID")))
    pairs += [("Variable", variable), ("Value", value)]
    session.send(frame(pairs))


def setvar(session: AmiSession, message: Message) -> None:
    name, variable, value = message.get("Channel"), message.get("Variable"), message.get("Value")
    if not variable:
        session.send(error(message, "No variable specified"))
        return
    engine = session.sim.engine
    if name:
        channel = engine.registry.find(name)
        if channel is None:
            session.send(error(message, "No such channel"))
            return
        engine.set_variables(channel, {variable: value})
    else:
        session.sim.globals[variable] = value
    session.send(ack(message, "Variable Set"))


# -- listings -------------------------------------------------------------------------------------


def coreshowchannels(session: AmiSession, message: Message) -> None:
    channels = list(session.sim.engine.registry)
    session.send(list_ack(message, "Channels will follow"))
    id_line = action_id_line(message)
    for channel in channels:
        bridge = channel.bridge.uniqueid if channel.bridge else ""
        session.send(
            (
                f"Event: CoreShowChannel\r\n{id_line}{channel.block()}"
                f"Application: {channel.application}\r\nApplicationData: {channel.app_data}\r\n"
                f"Duration: {channel.duration()}\r\nBridgeId: {bridge}\r\n\r\n"
            ).encode("utf-8", "surrogateescape")
        )
    session.send(list_complete(message, "CoreShowChannelsComplete", len(channels)))


def status(session: AmiSession, message: Message) -> None:
    name = message.get("Channel")
    registry = session.sim.engine.registry
    if name:
        channel = registry.find(name)
        if channel is None:
            session.send(error(message, "No such channel"))
            return
        channels = [channel]
    else:
        channels = list(registry)
    session.send(list_ack(message, "Channel status will follow"))
    id_line = action_id_line(message)
    wanted = [v for v in message.get("Variables").split(",") if v.strip()]
    for channel in channels:
        variables = [(v.strip(), _variable_value(session, channel, v.strip())) for v in wanted]
        if codes.is_true(message.get("AllVariables")):
            variables += list(channel.variables.items())
        bridge = channel.bridge.uniqueid if channel.bridge else ""
        seconds = channel.duration().split(":")
        elapsed = int(seconds[0]) * 3600 + int(seconds[1]) * 60 + int(seconds[2])
        body = (
            f"Event: Status\r\nPrivilege: Call\r\n{channel.block()}"
            f"Type: {channel.tech}\r\nDNID: {channel.dialed}\r\n"
            f"EffectiveConnectedLineNum: {channel.connected_num}\r\n"
            f"EffectiveConnectedLineName: {channel.connected_name}\r\n"
            f"TimeToHangup: 0\r\nBridgeID: {bridge}\r\n"
            f"Application: {channel.application}\r\nData: {channel.app_data}\r\n"
            "Nativeformats: (ulaw)\r\nReadformat: ulaw\r\nReadtrans: \r\n"
            "Writeformat: ulaw\r\nWritetrans: \r\nCallgroup: 0\r\nPickupgroup: 0\r\n"
            f"Seconds: {elapsed}\r\n"
            + "".join(f"Variable: {k}={v}\r\n" for k, v in variables)
            + f"{id_line}\r\n"
        )
        session.send(body.encode("utf-8", "surrogateescape"))
    session.send(
        list_complete(message, "StatusComplete", len(channels), [("Items", str(len(channels)))])
    )


# -- recording ------------------------------------------------------------------------------------


def mixmonitor(session: AmiSession, message: Message) -> None:
    name = message.get("Channel")
    if not name:
        session.send(error(message, "No channel specified"))
        return
    engine = session.sim.engine
    channel = engine.registry.find(name)
    if channel is None:
        session.send(error(message, "No such channel"))
        return
    if not message.get("File"):
        session.send(error(message, "Could not start monitoring channel"))
        return
    channel.mixmonitor = True
    session.send(ack(message))
    engine.events.mixmonitor(channel, True)


def stopmixmonitor(session: AmiSession, message: Message) -> None:
    name = message.get("Channel")
    if not name:
        session.send(error(message, "No channel specified"))
        return
    engine = session.sim.engine
    channel = engine.registry.find(name)
    if channel is None:
        session.send(error(message, "No such channel"))
        return
    if not channel.mixmonitor:
        session.send(error(message, "Could not stop monitoring channel"))
        return
    channel.mixmonitor = False
    session.send(ack(message))
    engine.events.mixmonitor(channel, False)


ACTIONS: dict[str, tuple[Handler, str, str]] = {
    "Getvar": (getvar, "Gets a channel variable or function value.", "call,reporting,all"),
    "Setvar": (setvar, "Sets a channel variable or function value.", "call,all"),
    "CoreShowChannels": (
        coreshowchannels,
        "List currently active channels.",
        "system,reporting,all",
    ),
    "Status": (status, "List channel status.", "system,call,reporting,all"),
    "MixMonitor": (
        mixmonitor,
        "Record a call and mix the audio during the recording.",
        "system,all",
    ),
    "StopMixMonitor": (
        stopmixmonitor,
        "Stop recording a call through MixMonitor.",
        "system,call,all",
    ),
}
