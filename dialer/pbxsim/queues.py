"""In-memory call queues (app_queue): members, waiting callers, and their AMI frames."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dialer.pbxsim.channels import Channel

# Device states (ast_device_state) as QueueMemberStatus reports them.
STATUS_NOT_INUSE = 1
STATUS_INUSE = 2
STATUS_RINGING = 6


@dataclass
class Device:
    """An agent's phone, shared by its memberships in every queue (ringinuse=no,
    shared_lastcall): rung, talking or wrapping up for one queue, it takes no call from another."""

    interface: str
    ringing: bool = False
    in_call: bool = False
    wrapping_up: bool = False
    idle_since: float | None = None  # loop time its last call ended; None: never called
    status: int = STATUS_NOT_INUSE  # as last reported
    wrapup_timer: Any = field(default=None, repr=False)  # the engine timer ending the wrap-up

    @property
    def busy(self) -> bool:
        return self.ringing or self.in_call or self.wrapping_up

    def state(self) -> int:
        if self.in_call:
            return STATUS_INUSE
        return STATUS_RINGING if self.ringing else STATUS_NOT_INUSE

    def reset(self) -> None:
        if self.wrapup_timer is not None:
            self.wrapup_timer.cancel()
            self.wrapup_timer = None
        self.ringing = self.in_call = self.wrapping_up = False
        self.status = STATUS_NOT_INUSE


@dataclass
class Member:
    interface: str
    name: str
    state_interface: str
    device: Device = field(repr=False)
    penalty: int = 0
    paused: bool = False
    paused_reason: str = ""
    wrapuptime: int = 0
    calls_taken: int = 0
    last_call: int = 0
    last_pause: int = 0
    login_time: int = field(default_factory=lambda: int(time.time()))

    @property
    def in_call(self) -> bool:
        return self.device.in_call

    @property
    def status(self) -> int:
        return self.device.status

    @property
    def free(self) -> bool:
        """Can take a call now: not paused, not ringing, not in a call, not wrapping up."""
        return not self.paused and not self.device.busy

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
    serve_due: bool = False  # a pass over the waiting callers is scheduled

    def record_hold(self, seconds: int) -> None:
        """app_queue recalc_holdtime: a running average weighted 3:1 to the past."""
        self.hold_time = (self.hold_time * 3 + seconds) // 4

    def record_talk(self, seconds: int) -> None:
        self.completed += 1
        self.talk_time = (self.talk_time * 3 + seconds) // 4

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

    def available(self) -> int:
        return sum(1 for member in self.members.values() if member.free)

    def idlest_free(self) -> Member | None:
        """The free member whose last call ended longest ago (never called: idlest of all)."""
        free = [member for member in self.members.values() if member.free]
        if not free:
            return None
        return min(free, key=lambda m: (m.device.idle_since is not None, m.device.idle_since or 0))


class Queues:
    def __init__(
        self, names: tuple[str, ...], agents: Sequence[tuple[str, str]] = (), wrapuptime: int = 0
    ) -> None:
        self._queues = {name: Queue(name) for name in names}
        self._devices: dict[str, Device] = {}
        for queue in self._queues.values():
            for interface, name in agents:
                self.add_member(
                    queue, interface=interface, name=name, state_interface=interface,
                    wrapuptime=wrapuptime,
                )  # fmt: skip

    def add_member(self, queue: Queue, **fields: Any) -> Member:
        """A new member of `queue`, sharing the device of the interface's other memberships."""
        interface = fields["interface"]
        device = self._devices.setdefault(interface, Device(interface))
        member = Member(device=device, **fields)
        queue.members[interface] = member
        return member

    def memberships(self, interface: str) -> list[tuple[Queue, Member]]:
        return [
            (queue, queue.members[interface])
            for queue in self._queues.values()
            if interface in queue.members
        ]

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
            queue.serve_due = False
        for device in self._devices.values():
            device.reset()
