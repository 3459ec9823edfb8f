"""A party: the channel that runs dialplan (`near`) plus, for Local channels, its other half.

Originated calls (`calls.Call`) and the legs they dial (`legs.Leg`) are both parties. A party
can dial another (`legs.dial`; it is then the *caller* of that leg), sit in a bridge with it, and
hang up in the ways Asterisk does. When a bridge member leaves and one party is left alone, that
party continues its dialplan (`peer_left`): a dialling party's Dial() returns, a dialled party
hangs up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dialer.pbxsim import codes
from dialer.pbxsim.channels import Bridge, Channel

if TYPE_CHECKING:
    from dialer.pbxsim.engine import Engine, Timer
    from dialer.pbxsim.legs import Leg
    from dialer.pbxsim.transfers import AttendedTransfer


# The timer of the far end's own doing (the callee or target hanging up): a Redirect or a
# transfer changes the dialplan, not that.
FAR_END = "far"


class Party:
    near: Channel
    partner: Channel | None

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.events = engine.events
        self.t = engine.timings
        self._timers: dict[str, Timer] = {}
        self.dialing: Leg | None = None  # the leg this party is dialling (ringing)
        self.dial_answered_at: float | None = None  # set while bridged to a leg it dialled
        self.atxfer: AttendedTransfer | None = None
        # What a returning Dial() leads to: "ivr" (report, hang up), "queue", "redirect".
        self.dial_mode = "redirect"
        self.ended = False
        engine.parties.add(self)

    # -- timers ---------------------------------------------------------------------------------

    def after(self, name: str, delay: float, callback: Callable[..., Any], *args: Any) -> None:
        """Schedule a step; a step of the same name replaces the pending one."""
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        # Scheduled from the step's own time, so a late loop does not stretch the timeline.
        when = self.engine.now() + max(0.0, delay)
        self._timers[name] = self.engine.schedule(when, self._fire, name, callback, args)

    def _fire(self, name: str, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        handle = self._timers.pop(name, None)
        if self.ended:
            return
        # Durations measured inside the step use its scheduled time, not the loop's lateness.
        with self.engine.at_time(handle.when() if handle is not None else None):
            callback(*args)

    def cancel_dialplan(self) -> None:
        """Stop what the dialplan was doing (every step but the far end's)."""
        self.cancel(*[name for name in list(self._timers) if name != FAR_END])

    def leave_dialplan(self) -> None:
        """The channel is sent elsewhere (Redirect, transfer): drop what it was doing."""
        self.cancel_dialplan()
        self.stop_dialing()
        self.dial_answered_at = None
        self.atxfer = None

    def cancel(self, *names: str) -> None:
        for name in names or list(self._timers):
            handle = self._timers.pop(name, None)
            if handle is not None:
                handle.cancel()

    # -- life -----------------------------------------------------------------------------------

    def finish(self) -> None:
        """Forget the party: no more steps, no more channels."""
        self.ended = True
        self.cancel()
        self.dialing = None
        self.engine.parties.discard(self)

    def abandon(self) -> None:
        """Drop without events (the simulator stopped)."""
        if self.dialing is not None:
            self.dialing.abandon()
        self.finish()

    def shut_down(self) -> None:
        """Asterisk is shutting down (ast_softhangup_all): the channels hang up where they are,
        nothing carries on in the dialplan. A leg this party is ringing goes first (Dial() hangs
        up its outgoing channels when the caller is hung up). Cause 0, as nothing set one; a
        channel in a bridge is kicked out of it with Normal Clearing (bridge_channel.c
        channel_set_cause), like an AMI Hangup of a bridged channel."""
        if self.ended:
            return
        self.cancel()
        leg, self.dialing = self.dialing, None
        if leg is not None:
            leg.shut_down()
        self.atxfer = None
        self.hanging_up()
        engine = self.engine
        for channel in (self.near, self.partner):
            if channel is None or not channel.alive:
                continue
            bridge = channel.bridge
            if bridge is not None:
                leave(engine, bridge, channel)
            cause = codes.CAUSE_NORMAL_CLEARING if bridge is not None else codes.CAUSE_UNKNOWN
            engine.destroy(channel, cause)
        self.finish()

    def hang_up(self, cause: int = codes.CAUSE_NORMAL_CLEARING) -> None:
        """The near channel is hung up: its dialplan ended (16) or an AMI action ended it."""
        if self.ended:
            return
        self.cancel()
        self.stop_dialing()
        if self.atxfer is not None:
            self.atxfer.transferer_gone()
        peer = self.leave_bridge()
        self.hanging_up()
        self.engine.hangup_from(self.near, self.partner, cause)
        self.finish()
        if peer is not None:
            peer.peer_left()

    def hanging_up(self) -> None:
        """The near channel is about to hang up: the application it runs sees it first (a
        queue caller is recorded as abandoned before the channel's Hangup)."""

    def remote_hang_up(self) -> None:
        """The far end hung up (the Local callee half, or the PJSIP peer)."""
        if self.ended:
            return
        self.cancel()
        self.stop_dialing()
        if self.atxfer is not None:
            self.atxfer.transferer_gone()
        engine, near, far = self.engine, self.near, self.partner
        if far is not None and far.alive:
            self.events.soft_hangup_request(far)
            self.events.hangup_request(near, codes.CAUSE_NORMAL_CLEARING)
            engine.destroy(far, codes.CAUSE_NORMAL_CLEARING)
        else:
            self.events.hangup_request(near, codes.CAUSE_NORMAL_CLEARING)
        bridged = near.bridge is not None
        peer = self.leave_bridge()
        if far is not None and not bridged:
            # A channel running dialplan (not parked in a bridge) is soft-hung-up first.
            self.events.soft_hangup_request(near)
        self.hanging_up()
        engine.destroy(near, codes.CAUSE_NORMAL_CLEARING)
        self.finish()
        if peer is not None:
            peer.peer_left()

    def ami_hangup(self, channel: Channel, cause: int | None) -> None:
        """AMI Hangup on one of this party's channels (cause 0 unless the action gave one;
        a bridged channel reports Normal Clearing)."""
        if cause is None:
            cause = codes.CAUSE_NORMAL_CLEARING if channel.bridge is not None else 0
        if channel is self.near:
            self.hang_up(cause)
            return
        # The Local partner half: it goes first, then the near half follows.
        if self.ended:
            return
        self.cancel()
        self.stop_dialing()
        if self.atxfer is not None:
            self.atxfer.transferer_gone()
        self.events.soft_hangup_request(channel)
        self.events.hangup_request(self.near, cause)
        self.engine.destroy(channel, cause)
        peer = self.leave_bridge()
        self.events.soft_hangup_request(self.near)
        self.hanging_up()
        self.engine.destroy(self.near, cause)
        self.finish()
        if peer is not None:
            peer.peer_left()

    # -- dialling and bridging ------------------------------------------------------------------

    def stop_dialing(self) -> None:
        if self.dialing is not None:
            leg, self.dialing = self.dialing, None
            leg.cancel_dial()

    def dial_answered(self, leg: Leg) -> None:
        """The leg this party dialled answered and is now bridged with it."""
        self.dialing = None
        self.dial_answered_at = self.engine.now()
        if self.atxfer is not None and self.near.bridge is not None:
            self.atxfer.moved(self.near.bridge)

    def dial_result(self, status: str, answered_seconds: float) -> None:
        """Dial() returned: the leg failed, or its bridge ended. Default: hang up."""
        self.hang_up()

    def leave_bridge(self) -> Party | None:
        """Take `near` out of its bridge; the party left alone in it, if any, is returned."""
        bridge = self.near.bridge
        if bridge is None:
            return None
        remaining = leave(self.engine, bridge, self.near)
        if len(remaining) == 1:
            owner = remaining[0].owner
            if isinstance(owner, Party) and not owner.ended:
                return owner
        return None

    def peer_left(self) -> None:
        """This party is alone in its bridge: leave it and carry on with the dialplan."""
        if self.atxfer is not None and self.atxfer.handles_peer_left(self):
            return
        self.leave_bridge()
        if self.dial_answered_at is not None:
            seconds = self.engine.now() - self.dial_answered_at
            self.dial_answered_at = None
            self.dial_result("ANSWER", seconds)
        else:
            self.hang_up()

    def enter(self, context: str, exten: str) -> None:
        """Continue in dialplan `context`,`exten` (Redirect, transfer): an originated call runs
        it (`Call.enter`), a dialled leg can only dial from there (`Leg.enter`)."""
        raise NotImplementedError


def leave(engine: Engine, bridge: Bridge, channel: Channel) -> list[Channel]:
    """BridgeLeave (and BridgeDestroy when it empties); the members that remain."""
    if channel in bridge.members:
        bridge.members.remove(channel)
        engine.events.bridge_leave(bridge, channel)
    channel.bridge = None
    if not bridge.members:
        engine.events.bridge_destroy(bridge)
    return list(bridge.members)


def enter(engine: Engine, bridge: Bridge, channel: Channel) -> None:
    bridge.members.append(channel)
    channel.bridge = bridge
    bridge.share_linkedid()
    engine.events.bridge_enter(bridge, channel)
