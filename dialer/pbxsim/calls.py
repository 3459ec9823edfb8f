"""An originated call: channel creation, dialling, the Originate result, then the dialplan.

Event sequences follow shared/ami-transcripts (busy, congestion, no_answer, answer_then_hangup,
originate_bad_channel, originate_channelid); PJSIP calls use one channel where Local calls use
the `;1`/`;2` pair.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dialer.pbxsim import codes
from dialer.pbxsim.behaviour import (
    ANSWERING,
    ANSWERS_AT_ONCE,
    Callee,
    callee_for,
    user_event_fields,
)
from dialer.pbxsim.channels import Channel
from dialer.pbxsim.dialplan import Role
from dialer.pbxsim.engine import originate_target
from dialer.pbxsim.ivr import Ivr
from dialer.pbxsim.legs import dial, transfer_target
from dialer.pbxsim.parties import FAR_END, Party
from dialer.pbxsim.queue_callers import QueueCaller

if TYPE_CHECKING:
    from dialer.pbxsim.engine import Engine, OriginateRequest


def originate(engine: Engine, request: OriginateRequest) -> None:
    """Start an originate: fail it at once when Asterisk would, else run its call, at once or,
    past the PBX's capacity (`capacity.OriginateGate`), late or not at all."""
    if not _placeable(engine, request):
        return
    gate = engine.capacity
    if gate.limited:
        gate.submit(request, lambda r: _place_late(engine, r), lambda r: _refuse(engine, r))
        return
    _place(engine, request)


def _placeable(engine: Engine, request: OriginateRequest) -> bool:
    target = request.target
    if target.tech not in ("Local", "PJSIP") or (
        target.tech == "PJSIP" and not engine.endpoint_exists(target.endpoint)
    ):
        engine.fail_originate(request, codes.REASON_FAILED)
        return False
    ids = [i for i in (request.channel_id, request.other_channel_id) if i]
    if len(set(ids)) != len(ids) or any(engine.registry.in_use(i) for i in ids):
        # ast_channel_alloc refuses a duplicate Uniqueid: no channel, Reason 0.
        engine.fail_originate(request, codes.REASON_FAILED)
        return False
    return True


def _place_late(engine: Engine, request: OriginateRequest) -> None:
    # Its ids may have been taken while it waited.
    if _placeable(engine, request):
        _place(engine, request)


def _refuse(engine: Engine, request: OriginateRequest) -> None:
    """Past capacity: refused as an overloaded trunk refuses (Reason 0, cause 34)."""
    Call(engine, request, callee_for(request.target.number)).start_overloaded()


def _place(engine: Engine, request: OriginateRequest) -> None:
    target = request.target
    call = Call(engine, request, callee_for(target.number))
    limit = engine.config.max_channels
    if limit is not None and len(engine.calls) >= limit:
        call.start_overloaded()
        return
    engine.calls.add(call)
    if target.tech == "Local":
        context = engine.dialplan.context(target.context)
        reachable = context is not None and (
            context.role is not Role.QUEUE and context.matches(target.number, engine.queues.names())
        )
        if not reachable:
            call.start_unroutable()
            return
    call.start()


class Call(Party):
    def __init__(self, engine: Engine, request: OriginateRequest, callee: Callee) -> None:
        super().__init__(engine)
        self.request = request
        self.target = request.target
        self.callee = callee
        self.partner = None
        self.phase = "new"  # dialing -> up -> ended
        self.dial_begun = False  # DialBegin sent: a dial loop is waiting for the callee
        self.answered_at: float | None = None
        self.ivr: Ivr | None = None
        self.queued: QueueCaller | None = None
        # The IVR put the callee in a queue: its end is reported (DialerTransferResult) once.
        self.queue_report_due = False

    @property
    def custom_call_id(self) -> str:
        return self.near.variables.get("custom_call_id", "")

    # -- start ----------------------------------------------------------------------------------

    def _create_channels(self) -> None:
        engine, request, target = self.engine, self.request, self.target
        registry = engine.registry
        uniqueid = request.channel_id or registry.next_uniqueid()
        if target.tech == "Local":
            base = f"Local/{target.number}@{target.context}-{registry.next_suffix('Local')}"
            self.near = engine.new_channel(
                name=base + ";1",
                uniqueid=uniqueid,
                linkedid=None,
                state=codes.STATE_DOWN,
                context=target.context,
                exten=target.number,
                owner=self,
            )
            other = request.other_channel_id or (
                f"{request.channel_id};2" if request.channel_id else registry.next_uniqueid()
            )
            self.partner = engine.new_channel(
                name=base + ";2",
                uniqueid=other,
                linkedid=uniqueid,
                state=codes.STATE_RING,
                context=target.context,
                exten=target.number,
                owner=self,
            )
        else:
            self.near = engine.new_channel(
                name=f"PJSIP/{target.endpoint}-{registry.next_suffix('PJSIP')}",
                uniqueid=uniqueid,
                linkedid=None,
                state=codes.STATE_DOWN,
                context="default",
                exten="s",
                owner=self,
            )
        near = self.near
        # The Originate's CallerID is set once the channel exists (a Local call passes it on
        # to its other half).
        for channel in (near, self.partner):
            if channel is None:
                continue
            channel.caller_num = request.caller_num or channel.caller_num
            channel.caller_name = request.caller_name or channel.caller_name
            channel.changed()
            engine.set_variables(channel, request.variables, reverse=channel is near)
        near.dialed = target.number
        near.application, near.app_data = "AppDial2", "(Outgoing Line)"

    def start(self) -> None:
        self.phase = "dialing"
        self._create_channels()
        self.after("dial", self.t.setup, self._dial)

    def start_unroutable(self) -> None:
        """Local channel into a context or extension that does not exist."""
        self.phase = "dialing"
        self._create_channels()
        self.after("dial", self.t.setup, self._unroutable)

    def start_overloaded(self) -> None:
        """Over --max-channels, or past the PBX's capacity: refused as congested."""
        self._create_channels()
        if self.partner is not None:
            self.engine.destroy(self.partner, codes.CAUSE_CONGESTION)
        self.engine.destroy(self.near, codes.CAUSE_CONGESTION)
        self._fail(codes.REASON_FAILED)

    def _unroutable(self) -> None:
        assert self.partner is not None
        self.engine.destroy(self.partner, 0)
        self._fail(codes.REASON_FAILED)
        self.engine.destroy(self.near, 0)

    def _fail(self, reason: int) -> None:
        self.finish()
        self.engine.fail_originate(self.request, reason)

    # -- dialling -------------------------------------------------------------------------------

    def _dial(self) -> None:
        events, near, target, callee = self.events, self.near, self.target, self.callee
        if self.partner is not None:
            events.local_bridge(near, self.partner, target.context, target.number)
            code = callee.value if callee is not Callee.HUMAN else "default"
            self.partner.goto(f"{target.context}-behaviour", code, 1)
        events.dial_begin(None, near, target.data)
        self.dial_begun = True
        timeout = max(0, self.request.timeout_ms) / 1000 / self.engine.config.speed
        t = self.t
        if callee is Callee.BUSY:
            self.after("dial", t.reject, self._busy)
        elif callee is Callee.CONGESTION:
            self.after("dial", t.reject, self._congestion)
        elif callee in ANSWERING:
            at_once = callee in ANSWERS_AT_ONCE
            if not at_once:
                self._ringing()
            delay = t.instant_answer if at_once else t.ring
            if delay >= timeout:
                self.after("dial", timeout, self._no_answer)
            else:
                self.after("dial", delay, self._answer)
        else:
            self._ringing()
            self.after("dial", timeout, self._no_answer)

    def _ringing(self) -> None:
        self.near.set_state(codes.STATE_RINGING)
        self.events.newstate(self.near)
        self.events.dial_state(None, self.near, "RINGING")

    def _busy(self) -> None:
        engine, events, near, partner = self.engine, self.events, self.near, self.partner
        if partner is not None:
            partner.set_state(codes.STATE_BUSY)
            events.newstate(partner)
            self._fail(codes.REASON_BUSY)
            events.dial_end(None, near, "BUSY")
            events.hangup_request(partner, 0)
            engine.destroy(near, 0)
            events.soft_hangup_request(partner)
            engine.destroy(partner, codes.CAUSE_USER_BUSY)
        else:
            # PJSIP 486: the channel is hung up with cause 17 before the dial loop reports.
            events.dial_end(None, near, "BUSY")
            engine.destroy(near, codes.CAUSE_USER_BUSY)
            self._fail(codes.REASON_FAILED)

    def _congestion(self) -> None:
        engine, events, near, partner = self.engine, self.events, self.near, self.partner
        if partner is not None:
            self._fail(codes.REASON_CONGESTION)
            partner.set_state(codes.STATE_BUSY)
            events.newstate(partner)
            events.dial_end(None, near, "CONGESTION")
            events.hangup_request(partner, 0)
            engine.destroy(near, 0)
            events.soft_hangup_request(partner)
            engine.destroy(partner, codes.CAUSE_CONGESTION)
        else:
            events.dial_end(None, near, "CONGESTION")
            engine.destroy(near, codes.CAUSE_CONGESTION)
            self._fail(codes.REASON_CONGESTION)

    def _no_answer(self) -> None:
        """The Originate Timeout tripped: ast_dial hangs the channel up with cause 19."""
        engine, events, near, partner = self.engine, self.events, self.near, self.partner
        if partner is not None:
            events.hangup_request(partner, codes.CAUSE_NO_ANSWER)
            events.soft_hangup_request(partner)
            engine.destroy(partner, codes.CAUSE_NO_ANSWER)
        self.finish()
        engine.fail_originate(self.request, codes.REASON_NO_ANSWER)
        engine.destroy(near, codes.CAUSE_NO_ANSWER)

    def _answer(self) -> None:
        events, near, partner, request = self.events, self.near, self.partner, self.request
        self.phase = "up"
        self.answered_at = self.engine.now()
        if partner is not None:
            partner.set_state(codes.STATE_UP)
            partner.at(3, "Playback", "callee_silence_60s")
            events.newstate(partner)
        near.set_state(codes.STATE_UP)
        events.newstate(near)
        events.dial_end(None, near, "ANSWER")
        if request.send_event:
            events.originate_response(
                action_id=request.action_id,
                success=True,
                channel_name=near.name,
                target=originate_target(request),
                reason=codes.REASON_ANSWERED,
                uniqueid=near.uniqueid,
                caller_num=request.caller_num or "<unknown>",
                caller_name=request.caller_name or "<unknown>",
                channel=near,
            )
        if request.on_result is not None:
            request.on_result(True)
        stays = {
            Callee.ANSWERS_THEN_HANGS_UP: self.t.callee_hangup,
            Callee.HUMAN: self.t.human_stays,
            Callee.LONG_LIVED: self.t.long_lived_stays,
        }.get(self.callee)
        if stays is not None:
            self.after(FAR_END, stays, self.remote_hang_up)
        if self.ended:
            return
        if request.application:
            near.application, near.app_data = request.application, request.app_data
            near.changed()
            return
        self.enter(request.context, request.exten)

    # -- dialplan -------------------------------------------------------------------------------

    def enter(self, context: str, exten: str) -> None:
        dialplan = self.engine.dialplan
        found = dialplan.context(context)
        if found is None or not dialplan.exists(context, exten, self.engine.queues.names()):
            # "sent to invalid extension": the channel is hung up with no cause, its Hangup
            # showing where it was sent (live_redirect).
            self.near.goto(context, exten, 1)
            self.hang_up(0)
            return
        self.near.goto(context, exten, 1)
        if found.role is Role.IVR:
            self.dial_mode = "ivr"
            self.ivr = Ivr(self)
            self.ivr.start()
        elif found.role is Role.QUEUE:
            self.dial_mode = "queue"
            self.near.at(2, "Queue", exten)
            if not self.join_queue(exten):
                self.hang_up(0)
        else:
            self.dial_mode = "redirect"
            dial(self, transfer_target(self, context, exten), self.t.transfer_timeout)

    def dial_result(self, status: str, answered_seconds: float) -> None:
        if self.dial_mode == "ivr":
            self.near.at(26)
            self.events.user_event(
                self.near,
                "DialerTransferResult",
                _fields(
                    ("custom_call_id", self.custom_call_id),
                    ("DIALSTATUS", status),
                    ("ANSWEREDTIME", str(int(answered_seconds * self.engine.config.speed))),
                ),
            )
            self.hang_up()
        elif self.dial_mode in ("queue", "ivr-queue"):
            # A member that did not answer leaves the caller waiting (QueueCaller.ended).
            if status == "ANSWER":
                if self.queued is not None:
                    self.queued.complete("agent")
                if self.dial_mode == "ivr-queue":
                    # Queue(...,c): the callee carries on in the dialplan to report the end.
                    self.near.at(26)
                    self.report_queue_result()
                self.hang_up()
        else:
            self.hang_up()

    def redirect(self, channel: Channel, context: str, exten: str) -> bool:
        """AMI Redirect; False when the channel is not up (Asterisk: Redirect failed)."""
        if self.ended or self.phase != "up":
            return False
        if channel is not self.near:
            self.ami_hangup(channel, 0)
            return True
        self.leave_dialplan()
        peer = self.leave_bridge()
        if peer is not None:
            peer.peer_left()
        self.enter(context, exten)
        return True

    def leave_dialplan(self) -> None:
        super().leave_dialplan()
        self.ivr = None
        self.queue_report_due = False
        if self.queued is not None:
            self.queued.sent_elsewhere()
            self.queued = None

    def ami_hangup(self, channel: Channel, cause: int | None) -> None:
        if self.phase == "dialing":
            code = cause if cause is not None else 0
            self.cancel()
            if channel is self.near:
                self.engine.hangup_from(self.near, self.partner, code)
            else:
                self.engine.hangup_from(channel, self.near, code)
            self._fail(codes.REASON_HANGUP)
            return
        super().ami_hangup(channel, cause)

    def shut_down(self) -> None:
        """Hung up by a PBX shutdown. Still ringing, the Originate's dial loop (dial.c
        monitor_dial) reads nothing from the channel: DialEnd NOANSWER (cause 0), the channel
        hangs up with cause 0, then the Originate fails with Reason 0."""
        if self.ended:
            return
        ringing = self.phase == "dialing"
        if ringing and self.dial_begun:
            self.events.dial_end(None, self.near, "NOANSWER")
        super().shut_down()
        if ringing:
            self.engine.fail_originate(self.request, codes.REASON_FAILED)

    def hanging_up(self) -> None:
        # app_queue: the caller hung up while waiting (QueueCallerAbandon, QueueCallerLeave) or
        # talking (AgentComplete), then the `h` extension reports, then the channel's Hangup.
        if self.queued is not None:
            self.queued.hanging_up()
        if self.queue_report_due:
            self.report_queue_result()

    def finish(self) -> None:
        if self.queued is not None:
            self.queued.hanging_up()
            self.queued = None
        self.phase = "ended"
        super().finish()
        self.engine.calls.discard(self)

    # -- queue ----------------------------------------------------------------------------------

    def join_queue(self, name: str) -> bool:
        """Queue(name): False, and nothing done, when there is no such queue."""
        queue = self.engine.queues.get(name)
        if queue is None:
            return False
        self.queued = QueueCaller(self, queue)
        self.queued.join()
        return True

    def report_queue_result(self) -> None:
        """The reference dialplan's DialerTransferResult after Queue(): QUEUESTATUS is empty
        when an agent took the call or the callee hung up."""
        self.queue_report_due = False
        self.near.set_vars({"DIALER_TRANSFER": "reported"})
        self.events.user_event(
            self.near,
            "DialerTransferResult",
            _fields(("custom_call_id", self.custom_call_id), ("QUEUESTATUS", "")),
        )


def _fields(*pairs: tuple[str, str]) -> list[tuple[str, str]]:
    return user_event_fields(list(pairs))
