"""Channels, bridges and the registry that finds them by name or Uniqueid, like Asterisk."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from typing import Any

from dialer.pbxsim.codes import STATE_TEXT

UNKNOWN = "<unknown>"


class Channel:
    """One live channel. Its AMI snapshot block is cached until something in it changes."""

    __slots__ = (
        "name",
        "uniqueid",
        "linkedid",
        "linked_order",
        "tech",
        "state",
        "caller_num",
        "caller_name",
        "connected_num",
        "connected_name",
        "context",
        "exten",
        "priority",
        "variables",
        "channelvars",
        "created",
        "application",
        "app_data",
        "bridge",
        "owner",
        "alive",
        "mixmonitor",
        "dialed",
        "_blocks",
    )

    def __init__(
        self,
        *,
        name: str,
        uniqueid: str,
        linkedid: str,
        tech: str,
        state: int,
        context: str,
        exten: str,
        channelvars: tuple[str, ...],
        owner: Any = None,
    ) -> None:
        self.name = name
        self.uniqueid = uniqueid
        self.linkedid = linkedid
        # How old the Linkedid is (the creation order of the channel it is the Uniqueid of):
        # a bridge gives its members the oldest one. Set by the registry.
        self.linked_order = 0
        self.tech = tech
        self.state = state
        self.caller_num = UNKNOWN
        self.caller_name = UNKNOWN
        self.connected_num = UNKNOWN
        self.connected_name = UNKNOWN
        self.context = context
        self.exten = exten
        self.priority = 1
        self.variables: dict[str, str] = {}
        self.channelvars = channelvars
        self.created = time.monotonic()
        self.application = ""
        self.app_data = ""
        self.bridge: Bridge | None = None
        # The call (or transfer leg) whose timeline drives this channel.
        self.owner = owner
        self.alive = True
        self.mixmonitor = False
        self.dialed = ""
        self._blocks: dict[str, str] = {}

    def changed(self) -> None:
        self._blocks.clear()

    def set_state(self, state: int) -> None:
        self.state = state
        self._blocks.clear()

    def goto(self, context: str, exten: str, priority: int = 1) -> None:
        self.context, self.exten, self.priority = context, exten, priority
        self._blocks.clear()

    def at(self, priority: int, application: str = "", app_data: str = "") -> None:
        """The dialplan moved on: new priority (and the application running there)."""
        self.priority = priority
        if application:
            self.application, self.app_data = application, app_data
        self._blocks.clear()

    def set_vars(self, values: dict[str, str]) -> None:
        self.variables.update(values)
        self._blocks.clear()

    def block(self, prefix: str = "") -> str:
        """ast_manager_build_channel_state_string: the channel's headers, with a prefix."""
        cached = self._blocks.get(prefix)
        if cached is None:
            p = prefix
            variables = self.variables
            cached = (
                f"{p}Channel: {self.name}\r\n"
                f"{p}ChannelState: {self.state}\r\n"
                f"{p}ChannelStateDesc: {STATE_TEXT.get(self.state, 'Unknown')}\r\n"
                f"{p}CallerIDNum: {self.caller_num}\r\n"
                f"{p}CallerIDName: {self.caller_name}\r\n"
                f"{p}ConnectedLineNum: {self.connected_num}\r\n"
                f"{p}ConnectedLineName: {self.connected_name}\r\n"
                f"{p}Language: en\r\n"
                f"{p}AccountCode: \r\n"
                f"{p}Context: {self.context}\r\n"
                f"{p}Exten: {self.exten}\r\n"
                f"{p}Priority: {self.priority}\r\n"
                f"{p}Uniqueid: {self.uniqueid}\r\n"
                f"{p}Linkedid: {self.linkedid}\r\n"
            ) + "".join(
                f"{p}ChanVariable: {var}={variables.get(var, '')}\r\n" for var in self.channelvars
            )
            self._blocks[prefix] = cached
        return cached

    def chanvariable_lines(self) -> str:
        """The `ChanVariable(<name>): var=value` lines of a multi-channel event."""
        return "".join(
            f"ChanVariable({self.name}): {var}={self.variables.get(var, '')}\r\n"
            for var in self.channelvars
        )

    def duration(self) -> str:
        seconds = int(time.monotonic() - self.created)
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def __repr__(self) -> str:
        return f"<Channel {self.name} {self.uniqueid}>"


class Bridge:
    __slots__ = ("uniqueid", "members")

    def __init__(self) -> None:
        self.uniqueid = str(uuid.uuid4())
        self.members: list[Channel] = []

    def block(self, prefix: str = "Bridge") -> str:
        p = prefix
        return (
            f"{p}Uniqueid: {self.uniqueid}\r\n"
            f"{p}Type: basic\r\n"
            f"{p}Technology: simple_bridge\r\n"
            f"{p}Creator: <unknown>\r\n"
            f"{p}Name: <unknown>\r\n"
            f"{p}NumChannels: {len(self.members)}\r\n"
            f"{p}VideoSourceMode: none\r\n"
        )

    def peer_of(self, channel: Channel) -> Channel | None:
        for member in self.members:
            if member is not channel:
                return member
        return None

    def share_linkedid(self) -> None:
        """bridge_basic push (ast_bridge_channel_update_linkedids): every member takes the
        oldest Linkedid among them, e.g. a consultation leg joined to a call by the Bridge
        action takes the call's (the other half of a Local leg keeps its own)."""
        if len(self.members) < 2:
            return
        oldest = min(self.members, key=lambda c: c.linked_order)
        for member in self.members:
            if member.linkedid != oldest.linkedid:
                member.linkedid = oldest.linkedid
                member.linked_order = oldest.linked_order
                member.changed()


class ChannelRegistry:
    """Live channels by name (case-insensitive) and by Uniqueid, in creation order."""

    def __init__(self) -> None:
        self._by_name: dict[str, Channel] = {}
        self._by_uid: dict[str, Channel] = {}
        self._sequence = itertools.count()
        self._names: dict[str, itertools.count[int]] = {}
        self._created = itertools.count(1)

    def next_uniqueid(self) -> str:
        # Asterisk: "%li.%d" of time(NULL) and a process-wide counter.
        return f"{int(time.time())}.{next(self._sequence)}"

    def next_suffix(self, tech: str) -> str:
        counter = self._names.get(tech)
        if counter is None:
            counter = self._names[tech] = itertools.count()
        return f"{next(counter):08x}"

    def in_use(self, uniqueid: str) -> bool:
        return uniqueid in self._by_uid

    def add(self, channel: Channel) -> None:
        origin = None
        if channel.linkedid != channel.uniqueid:
            origin = self._by_uid.get(channel.linkedid)
        channel.linked_order = origin.linked_order if origin is not None else next(self._created)
        self._by_name[channel.name.lower()] = channel
        self._by_uid[channel.uniqueid] = channel

    def remove(self, channel: Channel) -> None:
        channel.alive = False
        if self._by_name.get(channel.name.lower()) is channel:
            del self._by_name[channel.name.lower()]
        if self._by_uid.get(channel.uniqueid) is channel:
            del self._by_uid[channel.uniqueid]

    def find(self, name_or_uniqueid: str) -> Channel | None:
        """ast_channel_get_by_name: a channel name (any case), else a Uniqueid."""
        return self._by_name.get(name_or_uniqueid.lower()) or self._by_uid.get(name_or_uniqueid)

    def __iter__(self) -> Iterator[Channel]:
        return iter(list(self._by_uid.values()))

    def __len__(self) -> int:
        return len(self._by_uid)

    def clear(self) -> None:
        for channel in self._by_uid.values():
            channel.alive = False
        self._by_name.clear()
        self._by_uid.clear()
