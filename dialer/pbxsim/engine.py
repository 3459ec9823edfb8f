"""The telephony core: creates and destroys channels, owns the calls' timers, reports failed
originates (`calls.originate` starts the calls), hangs everything up at a shutdown.

Everything runs on one event loop; a call's timeline is a chain of `loop.call_later` timers (no
task per call), so thousands of concurrent calls cost a heap entry each.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dialer.pbxsim import codes
from dialer.pbxsim.behaviour import DialTarget, Timings
from dialer.pbxsim.capacity import OriginateGate
from dialer.pbxsim.channels import Channel, ChannelRegistry
from dialer.pbxsim.config import SimConfig
from dialer.pbxsim.events import Events
from dialer.pbxsim.queues import Queues

if TYPE_CHECKING:
    from dialer.pbxsim.calls import Call
    from dialer.pbxsim.parties import Party

log = logging.getLogger(__name__)

ResultCallback = Callable[[bool], None]

# Timeline steps due within the same millisecond run in one loop iteration (in exact time
# order), so their events leave in one write instead of one per step.
TICK = 0.001


class Timer:
    __slots__ = ("deadline", "sequence", "callback", "args", "cancelled")

    def __init__(
        self, deadline: float, sequence: int, callback: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        self.deadline = deadline
        self.sequence = sequence
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def when(self) -> float:
        return self.deadline


@dataclass
class OriginateRequest:
    """An Originate as Asterisk's fast_originate keeps it until the call is placed."""

    target: DialTarget
    channel: str  # the Channel header as sent (a failed OriginateResponse echoes it)
    context: str = ""
    exten: str = ""
    priority: int = 0
    application: str = ""
    app_data: str = ""
    caller_num: str = ""
    caller_name: str = ""
    timeout_ms: int = 30000
    action_id: str = ""
    channel_id: str = ""
    other_channel_id: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    send_event: bool = True  # async originates report with an OriginateResponse event
    on_result: ResultCallback | None = None  # synchronous originates wait for this


class Engine:
    def __init__(self, config: SimConfig, events: Events, queues: Queues) -> None:
        self.config = config
        self.events = events
        self.queues = queues
        self.timings: Timings = config.scaled_timings
        self.dialplan = config.dialplan
        self.registry = ChannelRegistry()
        self.calls: set[Call] = set()  # originated calls not yet ended (--max-channels)
        # What the PBX sustains (capacity_cps, capacity_channels): Originates past it wait or
        # are refused (calls.originate).
        self.capacity = OriginateGate(
            lambda: self.loop,
            lambda: len(self.calls),
            cps=config.capacity_cps,
            channels=config.capacity_channels,
            max_wait=config.capacity_wait,
        )
        self.parties: set[Party] = set()  # everything with a timeline, transfer legs included
        # Queue agents' draws (None: members behave by their number), and their endpoints.
        self.agent_draws = config.agents.draws() if config.agents is not None else None
        self.agent_endpoints = frozenset(f"agent{k}" for k in range(1, config.agent_count + 1))
        # Set while every call is being hung up: queues take no new calls to their members.
        self.closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._virtual_now: float | None = None
        self._ticks: dict[int, list[Timer]] = {}
        self._sequence = itertools.count()
        # Exceptions a timeline step raised (kept for tests; the other calls carry on).
        self.errors: list[str] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def later(self, delay: float, callback: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, callback, *args)

    def schedule(self, deadline: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run `callback(*args)` at `deadline` (loop time), batched per TICK."""
        timer = Timer(deadline, next(self._sequence), callback, args)
        tick = math.ceil(deadline / TICK)
        bucket = self._ticks.get(tick)
        if bucket is None:
            bucket = self._ticks[tick] = []
            self.loop.call_at(tick * TICK, self._run_tick, tick)
        bucket.append(timer)
        return timer

    def next_deadline(self) -> float | None:
        """Loop time of the earliest pending timeline step, None when every call is idle."""
        return min(self._ticks) * TICK if self._ticks else None

    def _run_tick(self, tick: int) -> None:
        bucket = self._ticks.pop(tick, None)
        if not bucket:
            return
        bucket.sort(key=_timer_order)
        for timer in bucket:
            if not timer.cancelled:
                try:
                    timer.callback(*timer.args)
                except Exception as exc:
                    self.record_error(exc)

    def record_error(self, exc: Exception) -> None:
        log.exception("PBX simulator step failed", exc_info=exc)
        self.errors.append(f"{type(exc).__name__}: {exc}")

    def now(self) -> float:
        """Loop time; inside a timeline step, the time the step was scheduled for."""
        if self._virtual_now is not None:
            return self._virtual_now
        return self.loop.time()

    @contextmanager
    def at_time(self, when: float | None) -> Iterator[None]:
        previous, self._virtual_now = self._virtual_now, when
        try:
            yield
        finally:
            self._virtual_now = previous

    def endpoint_exists(self, endpoint: str) -> bool:
        endpoints = self.config.endpoints
        return endpoints is None or endpoint in endpoints or endpoint in self.agent_endpoints

    # -- channels -------------------------------------------------------------------------------

    def new_channel(
        self,
        *,
        name: str,
        uniqueid: str,
        linkedid: str | None,
        state: int,
        context: str,
        exten: str,
        owner: Any,
    ) -> Channel:
        channel = Channel(
            name=name,
            uniqueid=uniqueid,
            linkedid=linkedid or uniqueid,
            tech=name.split("/", 1)[0],
            state=state,
            context=context,
            exten=exten,
            channelvars=self.config.channelvars,
            owner=owner,
        )
        self.registry.add(channel)
        self.events.newchannel(channel)
        return channel

    def set_variables(
        self, channel: Channel, values: dict[str, str], *, reverse: bool = True
    ) -> None:
        """Set channel variables, with a VarSet each when asked for. An Originate's list is
        applied reversed on the originated channel, in order on a Local channel's other half."""
        if not self.config.varset_events:
            channel.set_vars(values)
            return
        items = list(values.items())
        if reverse:
            items.reverse()
        for name, value in items:
            channel.set_vars({name: value})
            self.events.varset(channel, name, value)

    def destroy(self, channel: Channel, cause: int) -> None:
        if not channel.alive:
            return
        self.events.hangup(channel, cause)
        self.registry.remove(channel)

    def hangup_from(self, near: Channel, partner: Channel | None, cause: int) -> None:
        """`near` is hung up (its dialplan ended, or an AMI Hangup/Redirect ended it); a Local
        partner half follows. Cause 16 is the dialplan's Hangup(), AMI gives 0 or its Cause."""
        events = self.events
        events.soft_hangup_request(near, codes.CAUSE_NORMAL_CLEARING)
        if partner is not None and partner.alive:
            events.hangup_request(partner, cause)
        self.destroy(near, cause)
        if partner is not None and partner.alive:
            events.soft_hangup_request(partner, codes.CAUSE_NORMAL_CLEARING)
            self.destroy(partner, cause)

    # -- originate ------------------------------------------------------------------------------

    def fail_originate(self, request: OriginateRequest, reason: int) -> None:
        """The OriginateResponse of an originate that created no channel that survived."""
        if request.send_event:
            self.events.originate_response(
                action_id=request.action_id,
                success=False,
                channel_name=request.channel,
                target=originate_target(request),
                reason=reason,
                uniqueid=request.channel_id or "<unknown>",
                caller_num=request.caller_num or "<unknown>",
                caller_name=request.caller_name or "<unknown>",
                channel=None,
            )
        if request.on_result is not None:
            request.on_result(False)

    # -- shutdown -------------------------------------------------------------------------------

    def hang_up_everything(self) -> None:
        """ast_softhangup_all, as `core restart now` does it: every channel is asked to hang up
        at once (SoftHangupRequest, cause 4), then each call hangs up where it is, its channels
        taken in the order they were created (a caller before the legs it dialled)."""
        self.closing = True
        channels = list(self.registry)
        for channel in channels:
            self.events.soft_hangup_request(channel, codes.SOFTHANGUP_SHUTDOWN)
        # The parties owning a channel, in channel order (one that has ended is no longer in
        # self.parties: it has nothing left to hang up).
        parties: dict[Party, None] = {}
        for channel in channels:
            if channel.owner in self.parties:
                parties.setdefault(channel.owner)
        for party in [*parties, *self.parties]:
            party.shut_down()
        # Originates still waiting for the PBX's CPU never get a channel.
        for request in self.capacity.drain():
            self.fail_originate(request, codes.REASON_FAILED)

    def stop(self) -> None:
        """Drop every call without events: the PBX went away."""
        self.closing = True
        for party in list(self.parties):
            party.abandon()
        self.parties.clear()
        self.calls.clear()
        self.capacity.clear()
        self._ticks.clear()
        self.registry.clear()
        self.closing = False

    def reboot(self) -> None:
        """A new Asterisk process: no calls, and Uniqueids and channel names counted afresh."""
        self.stop()
        self.registry = ChannelRegistry()
        self.closing = False


def _timer_order(timer: Timer) -> tuple[float, int]:
    return timer.deadline, timer.sequence


def originate_target(request: OriginateRequest) -> list[tuple[str, str]]:
    if request.application:
        return [("Application", request.application), ("Data", request.app_data)]
    return [("Context", request.context), ("Exten", request.exten)]
