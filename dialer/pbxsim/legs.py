"""A leg: the channel(s) a party's Dial() creates (`dial`), ringing, answering and bridging like
app_dial, and where a channel sent to a transfer context dials (`transfer_target`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from dialer.pbxsim import codes
from dialer.pbxsim.behaviour import (
    ANSWERING,
    Callee,
    DialTarget,
    callee_for,
    dial_target,
    dialer_variable,
)
from dialer.pbxsim.channels import Bridge, Channel
from dialer.pbxsim.dialplan import Role
from dialer.pbxsim.parties import FAR_END, Party, enter

if TYPE_CHECKING:
    from dialer.pbxsim.engine import Engine


class LegHooks(Protocol):
    """Extra events around a leg (the queue's AgentCalled/AgentConnect...)."""

    def dial_started(self, leg: Leg) -> None: ...

    def answered(self, leg: Leg) -> None: ...

    def ended(self, leg: Leg, status: str) -> None:
        """The leg ended unanswered: NOANSWER, BUSY, CONGESTION, CHANUNAVAIL or CANCEL."""


def dial(
    caller: Party,
    target: DialTarget,
    timeout: float,
    hooks: LegHooks | None = None,
    *,
    answer_after: float | None = None,
    talk: float | None = None,
) -> None:
    """Dial(): `caller` rings `target`; the new leg is its `dialing` until it answers or fails.

    With `answer_after` (a queue agent) the target rings that long, then stays `talk`, whatever
    its number, and a PJSIP endpoint not in the configured list exists."""
    leg = Leg(caller.engine, caller, target, timeout, hooks, answer_after=answer_after, talk=talk)
    caller.dialing = leg
    leg.start()


class Leg(Party):
    def __init__(
        self,
        engine: Engine,
        caller: Party,
        target: DialTarget,
        timeout: float,
        hooks: LegHooks | None = None,
        *,
        answer_after: float | None = None,
        talk: float | None = None,
    ) -> None:
        super().__init__(engine)
        self.caller = caller
        self.target = target
        self.timeout = timeout
        self.hooks = hooks
        self.answer_after = answer_after
        self.talk = talk
        self.callee = callee_for(target.number)
        self.partner = None
        self.answered = False
        self.reported = False  # hooks.ended called

    def start(self) -> None:
        engine, target = self.engine, self.target
        caller = self.caller.near
        caller.application, caller.app_data = "Dial", f"{target.tech}/{target.data},30"
        caller.changed()
        registry = engine.registry
        if target.tech == "Local":
            base = f"Local/{target.number}@{target.context}-{registry.next_suffix('Local')}"
            self.near = engine.new_channel(
                name=base + ";1",
                uniqueid=registry.next_uniqueid(),
                linkedid=caller.linkedid,
                state=codes.STATE_DOWN,
                context=target.context,
                exten=target.number,
                owner=self,
            )
            self.partner = engine.new_channel(
                name=base + ";2",
                uniqueid=registry.next_uniqueid(),
                linkedid=caller.linkedid,
                state=codes.STATE_RING,
                context=target.context,
                exten=target.number,
                owner=self,
            )
            self._present_caller(caller)
            self.events.local_bridge(self.near, self.partner, target.context, target.number)
            self.near.application, self.near.app_data = "AppDial", "(Outgoing Line)"
            self.events.dial_begin(caller, self.near, target.data)
            if not engine.dialplan.exists(target.context, target.number):
                self.after("unroutable", self.t.setup, self._unroutable)
                return
        elif target.tech == "PJSIP" and (
            self.answer_after is not None or engine.endpoint_exists(target.endpoint)
        ):
            self.near = engine.new_channel(
                name=f"PJSIP/{target.endpoint}-{registry.next_suffix('PJSIP')}",
                uniqueid=registry.next_uniqueid(),
                linkedid=caller.linkedid,
                state=codes.STATE_DOWN,
                context="default",
                exten="s",
                owner=self,
            )
            self.near.application, self.near.app_data = "AppDial", "(Outgoing Line)"
            self._present_caller(caller)
            self.events.dial_begin(caller, self.near, target.data)
        else:
            # No such technology or endpoint: Dial() fails before any channel exists.
            self.ended = True
            engine.later(0, self._return, "CHANUNAVAIL")
            return
        if self.hooks is not None:
            self.hooks.dial_started(self)
        callee = self.callee
        if self.answer_after is not None:
            self._ringing()
            if self.answer_after >= self.timeout:
                self.after("dial", self.timeout, self._no_answer)
            else:
                self.after("dial", self.answer_after, self._answer)
        elif callee is Callee.BUSY:
            self.after("dial", self.t.reject, self._rejected, "BUSY", codes.CAUSE_USER_BUSY)
        elif callee is Callee.CONGESTION:
            self.after("dial", self.t.reject, self._rejected, "CONGESTION", codes.CAUSE_CONGESTION)
        elif callee in ANSWERING:
            self.after("dial", self.t.instant_answer, self._answer)
        else:
            self._ringing()
            self.after("dial", self.timeout, self._no_answer)

    def _present_caller(self, caller: Channel) -> None:
        """Dial() presents the caller's number, or its extension when it has none."""
        presented = caller.caller_num if caller.caller_num != "<unknown>" else caller.exten
        self.near.caller_num = presented
        self.near.changed()
        if self.partner is not None:
            self.partner.connected_num = presented
            self.partner.changed()

    def _unanswered(self, status: str) -> None:
        if self.hooks is not None and not self.reported:
            self.reported = True
            self.hooks.ended(self, status)

    def _return(self, status: str) -> None:
        self.finish()
        self._unanswered(status)
        caller = self.caller
        if caller.dialing is self:
            caller.dialing = None
            if caller.atxfer is not None:
                caller.atxfer.consult_failed()
            else:
                caller.dial_result(status, 0)

    def _ringing(self) -> None:
        self.near.set_state(codes.STATE_RINGING)
        self.events.newstate(self.near)
        self.events.dial_state(self.caller.near, self.near, "RINGING")

    def _unroutable(self) -> None:
        engine = self.engine
        if self.partner is not None:
            engine.destroy(self.partner, 0)
        self.events.dial_end(self.caller.near, self.near, "CHANUNAVAIL")
        engine.destroy(self.near, 0)
        self._return("CHANUNAVAIL")

    def _rejected(self, status: str, cause: int) -> None:
        engine, events = self.engine, self.events
        if self.partner is not None:
            self.partner.set_state(codes.STATE_BUSY)
            events.newstate(self.partner)
            events.dial_end(self.caller.near, self.near, status)
            events.hangup_request(self.partner, 0)
            engine.destroy(self.near, 0)
            events.soft_hangup_request(self.partner)
            engine.destroy(self.partner, cause)
        else:
            events.dial_end(self.caller.near, self.near, status)
            engine.destroy(self.near, cause)
        self._return(status)

    def _no_answer(self) -> None:
        self.events.dial_end(self.caller.near, self.near, "NOANSWER")
        self.engine.hangup_from(self.near, self.partner, codes.CAUSE_NO_ANSWER)
        self._return("NOANSWER")

    def _answer(self) -> None:
        events, caller = self.events, self.caller.near
        self.answered = True
        if self.partner is not None:
            self.partner.set_state(codes.STATE_UP)
            events.newstate(self.partner)
        self.near.set_state(codes.STATE_UP)
        events.newstate(self.near)
        events.dial_end(caller, self.near, "ANSWER")
        if self.hooks is not None:
            self.hooks.answered(self)
        bridge = Bridge()
        events.bridge_create(bridge)
        enter(self.engine, bridge, self.near)
        enter(self.engine, bridge, caller)
        self.caller.dial_answered(self)
        stays = self.talk
        if stays is None:
            stays = {
                Callee.ANSWERS_THEN_HANGS_UP: self.t.callee_hangup,
                Callee.LONG_LIVED: self.t.long_lived_stays,
            }.get(self.callee, self.t.target_stays)
        self.after(FAR_END, stays, self.remote_hang_up)

    def shut_down(self) -> None:
        """Still ringing: the caller's Dial() gives up on it (DialEnd CANCEL) first."""
        unanswered = not self.ended and not self.answered
        if unanswered:
            self.events.dial_end(self.caller.near, self.near, "CANCEL")
        super().shut_down()
        if unanswered:
            self._unanswered("CANCEL")

    def cancel_dial(self) -> None:
        """The caller gave up while this leg was still ringing."""
        if self.ended:
            return
        self.events.dial_end(self.caller.near, self.near, "CANCEL")
        self.engine.hangup_from(self.near, self.partner, 0)
        self.finish()
        self._unanswered("CANCEL")

    def enter(self, context: str, exten: str) -> None:
        """Continue in dialplan `context`,`exten` (Redirect, transfer): a dialled leg can only
        dial from there."""
        found = self.engine.dialplan.context(context)
        if found is None or not self.engine.dialplan.exists(
            context, exten, self.engine.queues.names()
        ):
            self.near.goto(context, exten, 1)
            self.hang_up(0)
            return
        if found.role in (Role.TRANSFER, Role.CALLEE):
            self.near.goto(context, exten, 1)
            dial(self, transfer_target(self, context, exten), self.t.transfer_timeout)
            return
        self.hang_up(0)


def transfer_target(party: Party, context: str, exten: str) -> DialTarget:
    """Where a channel sent to a transfer context ends up: the same trunk for PJSIP calls, the
    first callee context for Local ones (transfer-sim dials Local/<exten>@pstn-sim).

    The reference dialplan's dialer-transfer dials the channel's DIALER_TRANSFER_DIAL when set,
    else `PJSIP/${TRANSFER_PREFIX}${EXTEN}@${TRUNK}` (the call's endpoint when TRUNK is unset).
    """
    near = party.near
    dialplan = party.engine.dialplan
    found = dialplan.context(context)
    if found is not None and found.dial_variable:
        dial_string = near.variables.get(found.dial_variable, "")
        if dial_string:
            return dial_target(dial_string)
    if near.tech == "PJSIP":
        endpoint = near.name.split("/", 1)[1].rsplit("-", 1)[0]
        if found is not None and found.dial_variable:
            endpoint = dialer_variable(near.variables, "TRUNK") or endpoint
            exten = dialer_variable(near.variables, "TRANSFER_PREFIX") + exten
        return DialTarget("PJSIP", f"{exten}@{endpoint}", exten, endpoint=endpoint)
    callee_context = context
    if found is None or found.role is not Role.CALLEE:
        callee_context = next(
            (name for name, c in dialplan.contexts.items() if c.role is Role.CALLEE), context
        )
    return DialTarget("Local", f"{exten}@{callee_context}", exten, context=callee_context)
