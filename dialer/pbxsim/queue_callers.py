"""Callers waiting in a queue (`QueueCaller`) and how a queue serves them (`serve_soon`).

app_queue with autofill, ringinuse=no and the leastrecent strategy: whenever a member may have
become free, each waiting caller in join order that is not ringing anyone rings the free member
idle longest, until no free member or no caller is left. A ring not answered frees the member
at once; its caller rings again after `Timings.queue_retry`. After a call the member wraps up
for the longer of its Wrapuptime and, with an agent model, a drawn wrap-up.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dialer.pbxsim.behaviour import dial_target
from dialer.pbxsim.legs import Leg, dial
from dialer.pbxsim.queues import Device, Member, Queue

if TYPE_CHECKING:
    from dialer.pbxsim.channels import Channel
    from dialer.pbxsim.engine import Engine
    from dialer.pbxsim.parties import Party

# The caller's own timers (cancelled with its dialplan when it is sent elsewhere).
PATIENCE = "queue-patience"
RETRY = "queue-retry"
# How a member's leg may end unanswered that app_queue reports as AgentRingNoAnswer.
RING_NO_ANSWER = {"NOANSWER", "BUSY", "CONGESTION"}


def simulated_seconds(engine: Engine, since: float) -> int:
    """Whole seconds since `since`, in the simulated (speed-scaled) time."""
    # The epsilon keeps a timer that ran exactly on time from rounding down a second.
    return int((engine.now() - since) * engine.config.speed + 1e-6)


class QueueCaller:
    """A party running Queue(): waits, rings one free member at a time (it is the leg's hooks),
    then talks to the member that answered."""

    def __init__(self, party: Party, queue: Queue) -> None:
        self.party = party
        self.engine = party.engine
        self.events = party.events
        self.queue = queue
        self.joined_at = 0.0
        self.original_position = 0
        self.member: Member | None = None  # rung, or talking
        self.leg: Leg | None = None
        self.rung_at = 0.0
        self.connected_at: float | None = None
        self.hold = 0
        self.retrying = False

    @property
    def waiting(self) -> bool:
        return self.party.near in self.queue.callers

    @property
    def ready(self) -> bool:
        """Waiting, and neither ringing a member nor pausing between rings."""
        return self.waiting and self.member is None and not self.retrying and not self.party.ended

    def _agent_fields(self, member: Member) -> str:
        return (
            f"Queue: {self.queue.name}\r\nInterface: {member.interface}\r\n"
            f"MemberName: {member.name}\r\n"
        )

    # -- waiting --------------------------------------------------------------------------------

    def join(self) -> None:
        engine, party, queue, near = self.engine, self.party, self.queue, self.party.near
        queue.callers.append(near)
        self.original_position = len(queue.callers)
        self.joined_at = engine.now()
        self.events.queue_channel(
            "QueueCallerJoin",
            near,
            f"Queue: {queue.name}\r\nPosition: {len(queue.callers)}\r\n"
            f"Count: {len(queue.callers)}\r\n",
        )
        draws = engine.agent_draws
        patience = draws.patience() if draws is not None else None
        if patience is not None:
            # The callee's own doing: it hangs up (QueueCallerAbandon, Hangup cause 16).
            party.after(PATIENCE, patience / engine.config.speed, party.remote_hang_up)
        serve_soon(engine, queue)

    def leave(self, *, abandoned: bool) -> None:
        queue, near = self.queue, self.party.near
        if near not in queue.callers:
            return
        position = queue.callers.index(near) + 1
        queue.callers.remove(near)
        self.party.cancel(PATIENCE, RETRY)
        self.retrying = False
        if abandoned:
            queue.abandoned += 1
            hold = simulated_seconds(self.engine, self.joined_at)
            self.events.queue_channel(
                "QueueCallerAbandon",
                near,
                f"Queue: {queue.name}\r\nPosition: {position}\r\n"
                f"OriginalPosition: {self.original_position}\r\nHoldTime: {hold}\r\n",
            )
        self.events.queue_channel(
            "QueueCallerLeave",
            near,
            f"Queue: {queue.name}\r\nPosition: {position}\r\nCount: {len(queue.callers)}\r\n",
        )

    def hanging_up(self) -> None:
        """The caller's channel is about to hang up."""
        if self.connected_at is not None:
            self.complete("caller")
        else:
            self.leave(abandoned=True)

    def sent_elsewhere(self) -> None:
        """Redirected or transferred out of the queue."""
        if self.connected_at is not None:
            self.complete("transfer")
        else:
            self.leave(abandoned=False)

    # -- ringing a member (the leg's hooks) -----------------------------------------------------

    def ring(self, member: Member) -> None:
        engine, speed = self.engine, self.engine.config.speed
        self.member = member
        self.rung_at = engine.now()
        member.device.ringing = True
        draws = engine.agent_draws
        answer = talk = None
        if draws is not None:
            answer, talk = draws.answer() / speed, draws.talk() / speed
        dial(
            self.party,
            dial_target(member.interface),
            engine.timings.transfer_timeout,
            self,
            answer_after=answer,
            talk=talk,
        )

    def dial_started(self, leg: Leg) -> None:
        member, near = self.member, self.party.near
        assert member is not None
        self.leg = leg
        # Dial() set the caller's application; it is still in Queue().
        near.application, near.app_data = "Queue", self.queue.name
        near.changed()
        self.events.queue(
            "AgentCalled", near.block() + leg.near.block("Dest") + self._agent_fields(member)
        )
        report(self.engine, member.device)

    def answered(self, leg: Leg) -> None:
        engine, member, near = self.engine, self.member, self.party.near
        assert member is not None
        member.device.ringing = False
        member.device.in_call = True
        report(engine, member.device)
        self.leave(abandoned=False)
        self.hold = simulated_seconds(engine, self.joined_at)
        self.queue.record_hold(self.hold)
        ring = simulated_seconds(engine, self.rung_at)
        self.events.queue(
            "AgentConnect",
            near.block()
            + leg.near.block("Dest")
            + self._agent_fields(member)
            + f"HoldTime: {self.hold}\r\nRingTime: {ring}\r\n",
        )
        self.connected_at = engine.now()

    def ended(self, leg: Leg, status: str) -> None:
        engine, member = self.engine, self.member
        if member is None:
            return
        self.member, self.leg = None, None
        if status in RING_NO_ANSWER:
            ring = simulated_seconds(engine, self.rung_at)
            self.events.queue(
                "AgentRingNoAnswer",
                self.party.near.block()
                + leg.near.block("Dest")
                + self._agent_fields(member)
                + f"RingTime: {ring}\r\n",
            )
        member.device.ringing = False
        report(engine, member.device)
        serve_device_queues(engine, member.device)
        if status != "CANCEL" and not self.party.ended and self.waiting:
            self.retrying = True
            self.party.after(RETRY, engine.timings.queue_retry, self._retry)

    def _retry(self) -> None:
        self.retrying = False
        serve_soon(self.engine, self.queue)

    # -- after the call -------------------------------------------------------------------------

    def complete(self, reason: str) -> None:
        """AgentComplete: `agent` or `caller` hung up, or the caller was `transfer`red."""
        engine, member, leg = self.engine, self.member, self.leg
        if self.connected_at is None or member is None or leg is None:
            return
        talk = simulated_seconds(engine, self.connected_at)
        self.connected_at = None
        self.member, self.leg = None, None
        self.queue.record_talk(talk)
        self.events.queue(
            "AgentComplete",
            self.party.near.block()
            + leg.near.block("Dest")
            + self._agent_fields(member)
            + f"HoldTime: {self.hold}\r\nTalkTime: {talk}\r\nReason: {reason}\r\n",
        )
        member.calls_taken += 1
        member.last_call = int(time.time())
        call_ended(engine, member)


# -- members ----------------------------------------------------------------------------------


def report(engine: Engine, device: Device) -> None:
    """QueueMemberStatus in each of the device's queues when its state changed."""
    state = device.state()
    if state == device.status:
        return
    device.status = state
    for queue, member in engine.queues.memberships(device.interface):
        engine.events.queue("QueueMemberStatus", member.event_body(queue.name))


def call_ended(engine: Engine, member: Member) -> None:
    device = member.device
    device.in_call = False
    device.idle_since = engine.now()
    report(engine, device)
    wrapup = float(member.wrapuptime)
    if engine.agent_draws is not None:
        wrapup = max(wrapup, engine.agent_draws.wrapup())
    if wrapup <= 0:
        serve_device_queues(engine, device)
        return
    device.wrapping_up = True
    if device.wrapup_timer is not None:
        device.wrapup_timer.cancel()
    device.wrapup_timer = engine.schedule(
        engine.now() + wrapup / engine.config.speed, _wrapped_up, engine, device
    )


def _wrapped_up(engine: Engine, device: Device) -> None:
    device.wrapping_up = False
    device.wrapup_timer = None
    serve_device_queues(engine, device)


def serve_device_queues(engine: Engine, device: Device) -> None:
    for queue, _ in engine.queues.memberships(device.interface):
        serve_soon(engine, queue)


# -- serving ----------------------------------------------------------------------------------


def waiting_caller(channel: Channel, queue: Queue) -> QueueCaller | None:
    caller = getattr(channel.owner, "queued", None)
    return caller if isinstance(caller, QueueCaller) and caller.queue is queue else None


def serve_soon(engine: Engine, queue: Queue) -> None:
    """Serve the queue once the current step is over (a member's leg still hanging up, or a
    caller still leaving, is out of the way by then)."""
    if queue.serve_due or engine.closing:
        return
    queue.serve_due = True
    when = engine.now()
    engine.schedule(when, _serve, engine, queue, when)


def _serve(engine: Engine, queue: Queue, when: float) -> None:
    queue.serve_due = False
    if engine.closing:
        return
    with engine.at_time(when):
        for channel in list(queue.callers):
            caller = waiting_caller(channel, queue)
            if caller is None or not caller.ready:
                continue
            member = queue.idlest_free()
            if member is None:
                return
            caller.ring(member)


def longest_hold(engine: Engine, queue: Queue) -> int:
    """The longest wait among the queue's callers, in simulated seconds."""
    holds = [
        simulated_seconds(engine, caller.joined_at)
        for channel in queue.callers
        if (caller := waiting_caller(channel, queue)) is not None
    ]
    return max(holds, default=0)
