"""QueueAdd, QueueRemove, QueuePause, QueueStatus, QueueSummary with app_queue's messages."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dialer.pbxsim import codes
from dialer.pbxsim.queue_callers import longest_hold, serve_soon
from dialer.pbxsim.wire import (
    Message,
    ack,
    action_id_line,
    error,
    int_prefix,
    list_ack,
    list_complete,
)

if TYPE_CHECKING:
    from dialer.pbxsim.actions import Handler
    from dialer.pbxsim.session import AmiSession


def queue_add(session: AmiSession, message: Message) -> None:
    get = message.get
    name, interface = get("Queue"), get("Interface")
    if not name:
        session.send(error(message, "'Queue' not specified."))
        return
    if not interface:
        session.send(error(message, "'Interface' not specified."))
        return
    queue = session.sim.queues.get(name)
    if queue is None:
        session.send(error(message, "Unable to add interface to queue: No such queue"))
        return
    if interface in queue.members:
        session.send(error(message, "Unable to add interface: Already there"))
        return
    penalty = int_prefix(get("Penalty")) or 0
    wrapuptime = int_prefix(get("Wrapuptime")) or 0
    paused = codes.is_true(get("Paused"))
    member = session.sim.queues.add_member(
        queue,
        interface=interface,
        name=get("MemberName") or interface,
        state_interface=get("StateInterface") or interface,
        penalty=max(0, penalty),
        paused=paused,
        paused_reason=get("Reason") if paused else "",
        wrapuptime=max(0, wrapuptime),
    )
    session.send(ack(message, "Added interface to queue"))
    session.sim.events.queue("QueueMemberAdded", member.event_body(queue.name))
    serve_soon(session.sim.engine, queue)


def queue_remove(session: AmiSession, message: Message) -> None:
    name, interface = message.get("Queue"), message.get("Interface")
    if not name or not interface:
        session.send(error(message, "Need 'Queue' and 'Interface' parameters."))
        return
    queue = session.sim.queues.get(name)
    if queue is None:
        session.send(error(message, "Unable to remove interface from queue: No such queue"))
        return
    member = queue.members.pop(interface, None)
    if member is None:
        session.send(error(message, "Unable to remove interface: Not there"))
        return
    session.send(ack(message, "Removed interface from queue"))
    session.sim.events.queue("QueueMemberRemoved", member.event_body(queue.name))


def queue_pause(session: AmiSession, message: Message) -> None:
    """manager_pause_queue_member: the interface in the named queue, or in every queue it is in."""
    get = message.get
    interface, paused_text = get("Interface"), get("Paused")
    if not interface or not paused_text:
        session.send(error(message, "Need 'Interface' and 'Paused' parameters."))
        return
    paused, name, reason = codes.is_true(paused_text), get("Queue"), get("Reason")
    queues = session.sim.queues
    found = [
        (queue, member)
        for queue, member in queues.memberships(interface)
        if not name or queue.name.lower() == name.lower()
    ]
    if not found:
        session.send(error(message, "Interface not found"))
        return
    state = "paused" if paused else "unpaused"
    session.send(ack(message, f"Interface {state} successfully"))
    for queue, member in found:
        member.paused = paused
        member.paused_reason = reason
        member.last_pause = int(time.time())
        session.sim.events.queue("QueueMemberPause", member.event_body(queue.name))
        if not paused:
            serve_soon(session.sim.engine, queue)


def queue_status(session: AmiSession, message: Message) -> None:
    queue_filter, member_filter = message.get("Queue"), message.get("Member")
    session.send(list_ack(message, "Queue status will follow"))
    id_line = action_id_line(message)
    items = 0
    for queue in session.sim.queues.matching(queue_filter):
        session.send(queue.params(id_line).encode())
        items += 1
        for member in queue.members.values():
            if member_filter and member_filter not in (member.interface, member.name):
                continue
            session.send(queue.member_entry(member, id_line).encode())
            items += 1
        for position, channel in enumerate(queue.callers, start=1):
            session.send(queue.caller_entry(position, channel, id_line).encode())
            items += 1
    session.send(list_complete(message, "QueueStatusComplete", items))


def queue_summary(session: AmiSession, message: Message) -> None:
    session.send(list_ack(message, "Queue summary will follow"))
    id_line = action_id_line(message)
    queues = session.sim.queues.matching(message.get("Queue"))
    for queue in queues:
        longest = longest_hold(session.sim.engine, queue)
        session.send(
            (
                f"Event: QueueSummary\r\nQueue: {queue.name}\r\nLoggedIn: {len(queue.members)}\r\n"
                f"Available: {queue.available()}\r\nCallers: {len(queue.callers)}\r\n"
                f"HoldTime: {queue.hold_time}\r\nTalkTime: {queue.talk_time}\r\n"
                f"LongestHoldTime: {longest}\r\n{id_line}\r\n"
            ).encode()
        )
    session.send(list_complete(message, "QueueSummaryComplete", len(queues)))


ACTIONS: dict[str, tuple[Handler, str, str]] = {
    "QueueAdd": (queue_add, "Add interface to queue.", "agent,all"),
    "QueueRemove": (queue_remove, "Remove interface from queue.", "agent,all"),
    "QueuePause": (queue_pause, "Makes a queue member temporarily unavailable.", "agent,all"),
    "QueueStatus": (queue_status, "Show queue status.", "<none>"),
    "QueueSummary": (queue_summary, "Show queue summary.", "<none>"),
}
