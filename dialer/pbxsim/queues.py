"""In-memory call queues (app_queue): members, waiting callers, and their AMI frames."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dialer.pbxsim.channels import Channel

STATUS_NOT_INUSE = 1
STATUS_INUSE = 2


@dataclass
class Member:
    interface: str
    name: str
    state_interface: str
    penalty: int = 0
    paused: bool = False
    paused_reason: str = ""
    wrapuptime: int = 0
    calls_taken: int = 0
    last_call: int = 0
    last_pause: int = 0
    login_time: int = field(default_factory=lambda: int(time.time()))
    in_call: bool = False
    status: int = STATUS_NOT_INUSE

    def fields(self, *, name_key: str = "MemberName", location_key: str = "Interface") -> str:
        return (
            f"{name_key}: {self.name}\r\n"
            f"{location_key}: {self.interface}\r\n"
            f"StateInterface: {self.state_interface}\r\n"
            "Membership: dynamic\r\n"
            f"Penalty: {self.penalty}\r\n"
            f"CallsTaken: {self.calls_taken}\r\n"
            f"LastCall: {self.last_call}\r\n"
            f"LastPause: {self.last_pause}\r\n"
            f"LoginTime: {self.login_time}\r\n"
            f"InCall: {int(self.in_call)}\r\n"
            f"Status: {self.status}\r\n"
            f"Paused: {int(self.paused)}\r\n"
            f"PausedReason: {self.paused_reason}\r\n"
        )

    def event_body(self, queue: str) -> str:
        """QueueMemberAdded/Removed/Status."""
        return f"Queue: {queue}\r\n{self.fields()}Ringinuse: 0\r\nWrapuptime: {self.wrapuptime}\r\n"


@dataclass
class Queue:
    name: str
    members: dict[str, Member] = field(default_factory=dict)
    callers: list[Channel] = field(default_factory=list)
    completed: int = 0
    abandoned: int = 0
    talk_time: int = 0
    hold_time: int = 0

    def params(self, id_text: str) -> str:
        perf = 100.0 if self.completed else 0.0
        return (
            "Event: QueueParams\r\n"
            f"Queue: {self.name}\r\nMax: 0\r\nStrategy: ringall\r\nCalls: {len(self.callers)}\r\n"
            f"Holdtime: {self.hold_time}\r\nTalkTime: {self.talk_time}\r\n"
            f"Completed: {self.completed}\r\nAbandoned: {self.abandoned}\r\n"
            f"ServiceLevel: 0\r\nServicelevelPerf: {perf:.1f}\r\nServicelevelPerf2: {perf:.1f}\r\n"
            f"Weight: 0\r\n{id_text}\r\n"
        )

    def member_entry(self, member: Member, id_text: str) -> str:
        return (
            f"Event: QueueMember\r\nQueue: {self.name}\r\n"
            f"{member.fields(name_key='Name', location_key='Location')}"
            f"Wrapuptime: {member.wrapuptime}\r\n{id_text}\r\n"
        )

    def caller_entry(self, position: int, channel: Channel, id_text: str) -> str:
        return (
            f"Event: QueueEntry\r\nQueue: {self.name}\r\nPosition: {position}\r\n"
            f"Channel: {channel.name}\r\nUniqueid: {channel.uniqueid}\r\n"
            f"CallerIDNum: {channel.caller_num}\r\nCallerIDName: {channel.caller_name}\r\n"
            f"ConnectedLineNum: {channel.connected_num}\r\n"
            f"ConnectedLineName: {channel.connected_name}\r\n"
            f"Wait: {int(time.monotonic() - channel.created)}\r\nPriority: 0\r\n{id_text}\r\n"
        )

    def available_member(self) -> Member | None:
        for member in self.members.values():
            if not member.paused and not member.in_call:
                return member
        return None


class Queues:
    def __init__(self, names: tuple[str, ...]) -> None:
        self._queues = {name: Queue(name) for name in names}

    def names(self) -> frozenset[str]:
        return frozenset(self._queues)

    def get(self, name: str) -> Queue | None:
        return self._queues.get(name)

    def matching(self, name: str) -> list[Queue]:
        """Every queue, or the one named (any case), as QueueStatus filters them."""
        if not name:
            return list(self._queues.values())
        return [q for q in self._queues.values() if q.name.lower() == name.lower()]

    def reset_calls(self) -> None:
        for queue in self._queues.values():
            queue.callers.clear()
            for member in queue.members.values():
                member.in_call = False
                member.status = STATUS_NOT_INUSE
