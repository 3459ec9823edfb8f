"""Live call control at the edges: the call attempt in Postgres, the PBX through `dialer.ami.client`.

Each operation opens its own AMI connection with events on, lists the channels, sends what
`dialer.control.plan` planned, and follows the events until the result is known (or lists the
channels again when the events say nothing, e.g. when manager.conf filters them). Nothing is
sent before every value has been checked; `dialer.ami.wire` refuses CR/LF/NUL again on the way
out. What the dialer did ends up in the call's timeline (`call_events`, events named
`Control...`) and its facts in `call_attempts`, written by `record_control`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, text

from dialer.ami.client import AmiActionRefused, AmiClient, AmiError, Event
from dialer.ami.events import encode, event_time
from dialer.control import plan as cc
from dialer.dialing.payload import TrunkRoute
from dialer.outcomes.facts import clear_operator_hangup, mark_operator_hangup, update_facts
from dialer.settings import AmiServer

# How long a transfer is followed before the channels are listed to see where the call is.
SETTLE_S = 1.0


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- the call attempt ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    id: int
    custom_call_id: str
    status: str
    outcome: str | None
    channel: str | None
    recording_file: str | None
    phone: str
    pbx: str  # the PBX the call was sent through
    trunk: TrunkRoute | None  # its trunk, with the dial string of that PBX's route
    transfer_prefix: str
    caller_id_number: str
    region: str


_ATTEMPT = """
    SELECT a.id, a.custom_call_id, a.status, a.outcome, a.channel, a.recording_file,
           k.phone_e164, a.pbx, t.name AS trunk_name, r.channel_template,
           c.transfer_prefix, c.caller_id_number, c.region
      FROM call_attempts a
      JOIN contacts k ON k.id = a.contact_id
      JOIN campaigns c ON c.id = a.campaign_id
      JOIN trunks t ON t.id = a.trunk_id
      LEFT JOIN trunk_routes r ON r.trunk_id = a.trunk_id AND r.pbx = a.pbx
"""


def _attempt(row: Any) -> AttemptInfo:
    return AttemptInfo(
        id=row.id,
        custom_call_id=row.custom_call_id,
        status=row.status,
        outcome=row.outcome,
        channel=row.channel,
        recording_file=row.recording_file,
        phone=row.phone_e164,
        pbx=row.pbx,
        # The route the call went through; None if it was removed since (no external
        # transfer is dialled with another PBX's dial string).
        trunk=None
        if row.channel_template is None
        else TrunkRoute(name=row.trunk_name, channel_template=row.channel_template),
        transfer_prefix=row.transfer_prefix,
        caller_id_number=row.caller_id_number,
        region=row.region,
    )


def find_attempt(conn: Connection, ref: cc.CallRef) -> AttemptInfo:
    """The attempt a call id or attempt id names; `ControlError` if there is none."""
    if ref.kind == "attempt_id":
        row = conn.execute(text(_ATTEMPT + " WHERE a.id = :v"), {"v": int(ref.value)}).first()
    elif ref.kind == "call_id":
        row = conn.execute(
            text(_ATTEMPT + " WHERE a.custom_call_id = :v"), {"v": ref.value}
        ).first()
    else:
        raise ValueError("a channel is not looked up in the database")
    if row is None:
        raise cc.ControlError(f"no such call: {ref.value}")
    return _attempt(row)


def attempt_for_call_id(engine: Engine, call_id: str | None) -> AttemptInfo | None:
    if not call_id:
        return None
    with engine.connect() as conn:
        row = conn.execute(text(_ATTEMPT + " WHERE a.custom_call_id = :v"), {"v": call_id}).first()
    return _attempt(row) if row is not None else None


def timeline(engine: Engine, attempt_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event, data FROM call_events WHERE call_attempt_id = :id ORDER BY id"),
            {"id": attempt_id},
        )
        return [{"event": r.event, "data": r.data} for r in rows]


# With the attempt's row, locked: no event for an attempt deleted meanwhile (migration 0006).
_INSERT_EVENT = text(
    """
    INSERT INTO call_events (call_attempt_id, event, fingerprint, received_at, data)
    SELECT a.id, :event, :fp, :at, CAST(:data AS jsonb)
      FROM call_attempts a
     WHERE a.id = :id
       FOR KEY SHARE
    ON CONFLICT (call_attempt_id, fingerprint) DO NOTHING
    """
)


def record_control(
    engine: Engine,
    attempt_id: int,
    data: Mapping[str, Any],
    facts: Mapping[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> None:
    """Add what the dialer did to the call's timeline, and merge its facts into the attempt
    (first value wins, earliest time wins, as for the listener's facts)."""
    with engine.begin() as conn:
        conn.execute(
            _INSERT_EVENT,
            {
                "id": attempt_id,
                "event": data["Event"],
                # Every action is its own row, even when repeated with the same values.
                "fp": f"control:{uuid.uuid4().hex}",
                "at": at or now(),
                "data": encode(data),
            },
        )
        if facts:
            update_facts(conn, {attempt_id: dict(facts)})


# -- results ---------------------------------------------------------------------------------------


@dataclass
class ControlResult:
    ok: bool
    summary: str
    # What was sent and what came back, in order: an action appears once Asterisk accepted it.
    steps: list[str] = field(default_factory=list)
    call_id: str | None = None
    channel: str | None = None
    timeline: dict[str, Any] | None = None  # the Control... event, for the call's timeline
    facts: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # done anyway, but the operator should know

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary,
            "steps": self.steps,
            "warnings": self.warnings,
            "call_id": self.call_id,
            "channel": self.channel,
            **self.data,
        }


# -- the AMI session -------------------------------------------------------------------------------


class ControlSession:
    """One AMI connection with events on, for one command."""

    def __init__(self, server: AmiServer, *, action_timeout: float = 10.0) -> None:
        self.client = AmiClient(server, events=True, action_timeout=action_timeout)
        self.username = server.username

    async def __aenter__(self) -> ControlSession:
        await self.client.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def channels(self) -> list[cc.LiveChannel]:
        return cc.parse_channels(await self.send_list([("Action", "CoreShowChannels")]))

    def refusal(self, response: Event, action: str, what: str = "") -> str | None:
        """None if Asterisk accepted the action, else why not (a missing privilege named)."""
        return cc.refusal(response, action, self.username, what)

    async def send(self, headers: Sequence[tuple[str, str]]) -> Event:
        """Send one action; the events queued before its response are dropped, so what
        `events_until` sees next is what the action caused (or later)."""
        lines = list(headers)
        action_id = next((v for k, v in lines if k.lower() == "actionid"), None)
        if action_id is None:
            action_id = f"dialer-control-{uuid.uuid4().hex[:12]}"
            lines.insert(1, ("ActionID", action_id))
        response = await self.client.action(lines, mark_events=True)
        self.client.skip_events_before(action_id)
        return response

    async def send_list(self, headers: Sequence[tuple[str, str]]) -> list[Event]:
        """A list action's events; `PermissionDenied` if the user may not send it, and
        `AmiActionRefused` for any other error."""
        try:
            return await self.client.action_list(list(headers))
        except AmiActionRefused as exc:
            if exc.response.get("Message") == cc.PERMISSION_DENIED:
                action = next(v for k, v in headers if k.lower() == "action")
                raise cc.PermissionDenied(action, self.username) from None
            raise

    async def events_until(
        self, deadline: float, done: Callable[[], bool], feed: Callable[[Event, dt.datetime], None]
    ) -> None:
        """Feed events to `feed` until `done()` or the monotonic `deadline`."""
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            event = await self.client.next_event(remaining)
            if event is not None:
                feed(event, event_time(event, now()))


@dataclass(frozen=True, slots=True)
class Resolved:
    channel: cc.LiveChannel  # the one the command acts on (the callee, for a call id)
    channels: list[cc.LiveChannel]  # everything the PBX had
    call_id: str | None


async def resolve(
    session: ControlSession, ref: cc.CallRef, attempt: AttemptInfo | None
) -> Resolved:
    """The live channel of the call (by Linkedid = its call id), or the channel named."""
    channels = await session.channels()
    if ref.kind == "channel":
        wanted = ref.value.lower()
        found = next(
            (c for c in channels if c.name.lower() == wanted or c.uniqueid == ref.value), None
        )
        if found is None:
            raise cc.ControlError(f"no such channel on the PBX: {ref.value}")
        return Resolved(found, channels, found.call_id)
    assert attempt is not None
    callee = cc.originated_channel(channels, attempt.custom_call_id, attempt.channel)
    if callee is None:
        state = attempt.status + (f", outcome {attempt.outcome}" if attempt.outcome else "")
        raise cc.ControlError(
            f"call {attempt.custom_call_id} is already gone: the PBX has no channel of it "
            f"(attempt {state})"
        )
    return Resolved(callee, channels, attempt.custom_call_id)


# -- transfers -------------------------------------------------------------------------------------


async def queue_state(session: ControlSession, name: str) -> dict[str, Any]:
    """The queue's QueueStatus (members, callers); `ControlError` if there is no such queue."""
    queues = cc.parse_queue_status(
        await session.send_list([("Action", "QueueStatus"), ("Queue", name)])
    )
    found = next((q for q in queues if q["queue"].lower() == name.lower()), None)
    if found is None:
        raise cc.ControlError(f"no such queue: {name}")
    return found


async def check_destination(session: ControlSession, destination: cc.Destination) -> str:
    """Ask the PBX (ShowDialPlan) whether the destination exists; what it said, or
    `ControlError` when it does not (or would not say)."""
    try:
        events = await session.client.action_list(cc.show_dialplan_headers(destination))
        error = None
    except AmiActionRefused as exc:
        events, error = [], str(exc.response.get("Message") or "error")
        if error == cc.PERMISSION_DENIED:
            raise cc.PermissionDenied(
                "ShowDialPlan", session.username, cc.unchecked_text(session.username)
            ) from None
    check = cc.judge_dialplan(destination, events, error)
    if check.exists:
        return check.text
    if check.exists is None:
        raise cc.ControlError(
            f"{check.text}; nothing was sent (--no-check transfers without asking)"
        )
    raise cc.ControlError(f"{check.text}: a transfer there would drop the call; nothing was sent")


async def blind_transfer(
    server: AmiServer,
    ref: cc.CallRef,
    attempt: AttemptInfo | None,
    destination: cc.Destination,
    *,
    timeout: float = 10.0,
    settle: float = SETTLE_S,
    check: bool = True,
    require_agent: bool = False,
    lookup: Callable[[str | None], AttemptInfo | None] = lambda _: None,
) -> ControlResult:
    """Move the callee to the destination (Redirect, or BlindTransfer when bridged) and follow
    it there. Before anything reaches the call: the queue must exist (and, with
    `require_agent`, have a member who can answer), the destination must exist in the PBX's
    dialplan (unless `check` is off), and an external number's dial string (the call's trunk)
    must have been set on the callee's channel."""
    async with ControlSession(server) as session:
        resolved = await resolve(session, ref, attempt)
        plan = cc.plan_blind_transfer(resolved.channels, resolved.channel, destination)
        call = attempt or lookup(resolved.call_id)
        trunk = call.trunk if call is not None else trunk_of_channel(plan.callee.name)
        dial = cc.transfer_dial_string(
            destination, trunk=trunk, transfer_prefix=call.transfer_prefix if call else ""
        )
        result = ControlResult(
            False,
            "",
            call_id=resolved.call_id,
            channel=plan.callee.name,
            data={
                "method": plan.method,
                "target": destination.label,
                "context": destination.context,
                "exten": destination.exten,
            },
        )
        steps = result.steps
        if destination.kind == "queue":
            queue = await queue_state(session, destination.exten)
            problem = cc.queue_agent_problem(queue)
            if problem is not None and require_agent:
                raise cc.ControlError(f"{problem}; not transferred (--require-agent)")
            if problem is not None:
                result.warnings.append(problem)
            available = len(cc.available_members(queue))
            steps.append(
                f"QueueStatus {queue['queue']}: {available} of {len(queue['members'])} "
                "member(s) available"
            )
        if check:
            steps.append(f"ShowDialPlan: {await check_destination(session, destination)}")
        if dial is not None:
            headers = cc.setvar_headers(plan.callee, cc.TRANSFER_DIAL_VARIABLE, dial)
            response = await session.send(headers)
            refusal = session.refusal(response, "Setvar")
            if refusal is not None:
                return _not_moved(result, plan, f"{refusal}; the call was not moved")
            steps.append(
                f"Setvar {cc.TRANSFER_DIAL_VARIABLE}={dial} on {plan.callee.name}: "
                f"{response.get('Message') or 'done'}"
            )
        sent_at = now()
        response = await session.send(plan.headers)
        refusal = session.refusal(response, plan.method)
        if refusal is not None:
            return _not_moved(result, plan, refusal)
        via = f" for {plan.transferer.name}" if plan.transferer else ""
        steps.append(
            f"{plan.method}{via}: {plan.callee.name} to {destination.context},"
            f"{destination.exten}: {response.get('Message') or 'accepted'}"
        )
        watch = cc.TransferWatch(plan, sent_at, existing=(c.uniqueid for c in resolved.channels))
        started = time.monotonic()
        await session.events_until(started + settle, lambda: watch.done, watch.feed)
        if not watch.done:
            watch.settle(await session.channels())
        await session.events_until(started + timeout, lambda: watch.done, watch.feed)
        watch.timed_out(timeout)
        verdict = watch.verdict
        assert verdict is not None
        steps += watch.steps
        result.ok, result.summary = verdict.ok, verdict.text
        if verdict.facts:
            result.facts = {**verdict.facts, **cc.operator_transfer_facts(destination)}
        result.timeline = _transfer_event(
            "blind", plan.method, destination, plan.callee, verdict.ok, verdict.text, steps
        )
        return result


def _not_moved(result: ControlResult, plan: cc.TransferPlan, why: str) -> ControlResult:
    """An action before the move was refused: nothing moved, the attempt gets no facts."""
    result.summary = why
    result.timeline = _transfer_event(
        "blind", plan.method, plan.destination, plan.callee, False, why, result.steps
    )
    return result


def _transfer_event(
    kind: str,
    method: str,
    destination: cc.Destination,
    callee: cc.LiveChannel,
    ok: bool,
    detail: str,
    steps: Sequence[str] = (),
) -> dict[str, Any]:
    return cc.timeline_event(
        cc.TRANSFER_EVENT,
        Kind=kind,
        Method=method,
        Target=destination.label,
        TargetKind=destination.kind,
        Context=destination.context,
        Exten=destination.exten,
        Channel=callee.name,
        Result="ok" if ok else "failed",
        Detail=detail,
        Steps=list(steps) or None,
        By="operator",
    )


def trunk_of_channel(name: str) -> TrunkRoute | None:
    """A PJSIP channel's endpoint (`PJSIP/MC-0000002a` -> MC), used as its trunk."""
    tech, _, rest = name.partition("/")
    if tech.upper() != "PJSIP" or "-" not in rest:
        return None
    return TrunkRoute(name=rest.rsplit("-", 1)[0])


async def attended_transfer(
    server: AmiServer,
    ref: cc.CallRef,
    attempt: AttemptInfo | None,
    destination: cc.Destination,
    *,
    ring_timeout: float = 30.0,
    lookup: Callable[[str | None], AttemptInfo | None] = lambda _: None,
) -> ControlResult:
    """Ring the target on a leg of its own; once it answers, bridge the callee with it. When
    the target does not answer, or the call ends meanwhile, the leg is hung up and the callee
    is left as it was."""
    async with ControlSession(server) as session:
        resolved = await resolve(session, ref, attempt)
        callee = resolved.channel
        cc.require_up(callee)
        call = attempt or lookup(resolved.call_id)
        trunk = call.trunk if call is not None else trunk_of_channel(callee.name)
        dial = cc.consult_dial_string(
            destination, trunk=trunk, transfer_prefix=call.transfer_prefix if call else ""
        )
        caller_id = f'"Transfer {call.phone}" <{call.caller_id_number}>' if call else None
        plan = cc.plan_consult(
            destination,
            base_id=resolved.call_id or callee.uniqueid,
            epoch_ms=int(time.time() * 1000),
            dial_string=dial,
            ring_timeout_s=ring_timeout,
            caller_id=caller_id,
        )
        result = ControlResult(
            False,
            "",
            call_id=resolved.call_id,
            channel=callee.name,
            data={
                "method": "Originate+Bridge",
                "target": destination.label,
                "consult_channel_id": plan.consult_id,
            },
        )
        steps = result.steps
        requested_at = now()
        response = await session.send(plan.headers)
        refusal = session.refusal(response, "Originate", "consultation call")
        bridged = False
        leg_may_exist = refusal is None
        try:
            if refusal is not None:
                return _consult_failed(result, destination, callee, refusal)
            steps.append(f"calling {destination.label} on {dial}")
            watch = cc.ConsultWatch(plan, callee)
            deadline = time.monotonic() + ring_timeout + 5.0
            await session.events_until(
                deadline, lambda: watch.done or watch.waiting_for_cause, watch.feed
            )
            if watch.waiting_for_cause:
                await session.events_until(time.monotonic() + 1.0, lambda: watch.done, watch.feed)
                watch.conclude()
            if watch.callee_gone:
                return _consult_failed(
                    result, destination, callee, watch.callee_gone, untouched=False
                )
            if watch.failure:
                leg_may_exist = False  # the Originate failed: the leg is gone already
                return _consult_failed(result, destination, callee, watch.failure)
            if watch.answered_channel is None:
                return _consult_failed(
                    result,
                    destination,
                    callee,
                    f"{destination.label} did not answer within {ring_timeout:g}s",
                )
            steps.append(f"{destination.label} answered ({watch.answered_channel})")
            response = await session.send(cc.bridge_headers(callee, watch.answered_channel))
            refusal = session.refusal(response, "Bridge", "bridge")
            if refusal is not None:
                return _consult_failed(result, destination, callee, refusal, untouched=False)
            bridged = await _confirm_bridge(session, callee.uniqueid, plan.consult_id)
            if not bridged:
                return _consult_failed(
                    result,
                    destination,
                    callee,
                    "the bridge did not hold: the call or the target hung up",
                    untouched=False,
                )
            steps.append(f"bridged {callee.name} with {watch.answered_channel}")
            result.ok = True
            result.summary = f"transferred to {destination.label} after it answered"
            result.facts = {
                "transfer_requested_at": requested_at,
                "transfer_answered_at": watch.answered_at,
                "transfer_status": "ANSWER",
                **cc.operator_transfer_facts(destination),
            }
            result.timeline = _transfer_event(
                "attended", "Originate+Bridge", destination, callee, True, result.summary, steps
            )
            return result
        finally:
            if not bridged and leg_may_exist:
                await _cancel_leg(session, plan.consult_id, steps)
                if result.timeline is not None:
                    result.timeline["Steps"] = "; ".join(steps)


def _consult_failed(
    result: ControlResult,
    destination: cc.Destination,
    callee: cc.LiveChannel,
    why: str,
    *,
    untouched: bool = True,
) -> ControlResult:
    """untouched: the callee was not moved (the target never answered)."""
    result.ok = False
    result.summary = f"{why}; {callee.name} left as it was" if untouched else why
    result.timeline = _transfer_event(
        "attended", "Originate+Bridge", destination, callee, False, why, result.steps
    )
    return result


async def _cancel_leg(session: ControlSession, consult_id: str, steps: list[str]) -> None:
    try:
        reply = await session.send([("Action", "Hangup"), ("Channel", consult_id)])
    except AmiError as exc:
        steps.append(f"consultation call not hung up: {exc}")
        return
    if reply.get("Response") == "Success":
        steps.append("consultation call hung up")
    elif reply.get("Message") == cc.PERMISSION_DENIED:
        steps.append(f"consultation call not hung up: {session.refusal(reply, 'Hangup')}")
    # Any other answer ("No such channel"): the leg is gone already.


async def _confirm_bridge(session: ControlSession, callee: str, leg: str) -> bool:
    """The Bridge action answered Success: check the two really share a bridge now."""
    for _ in range(20):
        channels = await session.channels()
        if cc.bridged_together(channels, callee, leg):
            return True
        present = {c.uniqueid for c in channels}
        if callee not in present or leg not in present:
            return False
        await asyncio.sleep(0.1)
    return False


# -- hangup, recording, variables ------------------------------------------------------------------


class HangupMarks:
    """Who ended the call, written before the AMI Hangup: the listener may close the call on
    its Hangup event within milliseconds, and must find the operator's mark there already.
    Each mark and clear commits on its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def mark(self, attempt_id: int, at: dt.datetime, retry: bool) -> bool:
        with self.engine.begin() as conn:
            return mark_operator_hangup(conn, attempt_id, at, retry)

    def clear(self, attempt_id: int, at: dt.datetime) -> None:
        with self.engine.begin() as conn:
            clear_operator_hangup(conn, attempt_id, at)


async def hangup(
    server: AmiServer,
    ref: cc.CallRef,
    attempt: AttemptInfo | None,
    *,
    cause: int,
    retry: bool = False,
    marks: HangupMarks | None = None,
    lookup: Callable[[str | None], AttemptInfo | None] = lambda _: None,
) -> ControlResult:
    """Hang up the channel. When it is the call's own channel (not a transfer or agent leg),
    the attempt is first marked as ended by the operator (`retry`: dial the contact again per
    the campaign's policy); the mark is taken back if the channel did not hang up."""
    async with ControlSession(server) as session:
        resolved = await resolve(session, ref, attempt)
        channel = resolved.channel
        headers = cc.hangup_headers(channel, cause)
        result = ControlResult(False, "", call_id=resolved.call_id, channel=channel.name)
        call = attempt or lookup(resolved.call_id)
        ends_call = call is not None and cc.ends_the_call(
            resolved.channels, channel, call.custom_call_id, call.channel
        )
        if retry and not ends_call:
            raise cc.ControlError(
                f"--retry is for hanging up the call itself; {channel.name} is "
                + (f"a transfer leg of call {resolved.call_id}" if call else "not a dialer call")
            )
        undo: Callable[[], None] | None = None
        if ends_call and call is not None and marks is not None:
            at, attempt_id, store = now(), call.id, marks
            if await asyncio.to_thread(store.mark, attempt_id, at, retry):
                undo = functools.partial(store.clear, attempt_id, at)
            else:
                result.warnings.append(
                    f"attempt {call.id} is already closed: the hangup is not recorded as the "
                    "operator's" + (" and --retry has no effect" if retry else "")
                )
        hung_up: bool | None = None  # None: not known (the connection failed meanwhile)
        seen: dict[str, str] = {}
        try:
            response = await session.send(headers)
            refusal = session.refusal(response, "Hangup", "hangup")
            if refusal is not None:
                hung_up = False
                result.summary = refusal
                return result
            result.steps.append(
                f"Hangup {channel.name} (cause {cause}): {response.get('Message') or 'accepted'}"
            )

            def feed(event: Event, _: dt.datetime) -> None:
                if event.get("Event") == "Hangup" and event.get("Uniqueid") == channel.uniqueid:
                    seen["cause"] = event.get("Cause", "")

            await session.events_until(time.monotonic() + 3.0, lambda: bool(seen), feed)
            if not seen and any(c.uniqueid == channel.uniqueid for c in await session.channels()):
                hung_up = False
                result.summary = f"{channel.name} is still up after the Hangup"
                return result
            hung_up = True
        finally:
            # Taken back only when it is known not to have happened: a Hangup whose answer
            # was lost probably ended the call.
            if undo is not None and hung_up is False:
                await asyncio.to_thread(undo)
        reported = seen.get("cause", str(cause))
        result.ok = True
        result.summary = f"hung up {channel.name} ({cc.cause_text(reported)})"
        result.data["cause"] = reported
        result.data["retry"] = retry
        result.timeline = cc.timeline_event(
            cc.HANGUP_EVENT,
            Channel=channel.name,
            Cause=cause,
            By="operator",
            EndsCall="yes" if ends_call else "no",
            Retry="yes" if retry else None,
        )
        return result


async def record(
    server: AmiServer,
    ref: cc.CallRef,
    attempt: AttemptInfo | None,
    *,
    stop: bool,
    already_recording: Callable[[str | None], str | None] = lambda _: None,
) -> ControlResult:
    """Start (MixMonitor, file named after the call id) or stop (StopMixMonitor) recording.
    `already_recording(call_id)`: the file a recording the timeline shows running goes to."""
    async with ControlSession(server) as session:
        resolved = await resolve(session, ref, attempt)
        channel = resolved.channel
        file_name = cc.recording_file(resolved.call_id or channel.uniqueid)
        result = ControlResult(
            False, "", call_id=resolved.call_id, channel=channel.name, data={"file": file_name}
        )
        running = already_recording(resolved.call_id)
        if not stop and running:
            result.ok = True
            result.summary = f"already recording {channel.name} to {running}"
            result.data["file"] = running
            return result
        headers = (
            cc.stop_mixmonitor_headers(channel)
            if stop
            else cc.mixmonitor_headers(channel, file_name)
        )
        response = await session.send(headers)
        action = "StopMixMonitor" if stop else "MixMonitor"
        refusal = session.refusal(response, action)
        state = "stopped" if stop else "started"
        result.timeline = cc.timeline_event(
            cc.RECORDING_EVENT,
            Channel=channel.name,
            File=None if stop else file_name,
            State=state,
            Response=response.get("Response", ""),
            Message=response.get("Message"),
            By="operator",
        )
        if refusal is not None:
            not_recording = stop and response.get("Message") != cc.PERMISSION_DENIED
            result.summary = (
                f"{channel.name} is not being recorded ({response.get('Message')})"
                if not_recording
                else refusal
            )
            return result
        result.steps.append(f"{action} {channel.name}: {response.get('Message') or 'accepted'}")
        result.ok = True
        if stop:
            result.summary = f"stopped recording {channel.name}"
        else:
            result.summary = f"recording {channel.name} to {file_name}"
            result.facts = {"recording_file": file_name}
        return result


async def get_vars(
    server: AmiServer, ref: cc.CallRef, attempt: AttemptInfo | None, names: Sequence[str]
) -> ControlResult:
    async with ControlSession(server) as session:
        resolved = await resolve(session, ref, attempt)
        channel = resolved.channel
        values: dict[str, str] = {}
        for name in names:
            response = await session.send(cc.getvar_headers(channel, name))
            refusal = session.refusal(response, "Getvar", f"Getvar {name}")
            if refusal is not None:
                return ControlResult(
                    False,
                    refusal,
                    call_id=resolved.call_id,
                    channel=channel.name,
                    data={"variables": values},
                )
            values[name] = response.get("Value", "")
        return ControlResult(
            True,
            f"{len(values)} variable(s) of {channel.name}",
            call_id=resolved.call_id,
            channel=channel.name,
            data={"variables": values},
        )


async def list_channels(server: AmiServer) -> list[cc.LiveChannel]:
    async with ControlSession(server) as session:
        return await session.channels()


# -- queues ----------------------------------------------------------------------------------------


async def queue_status(server: AmiServer, name: str | None) -> list[dict[str, Any]]:
    headers = [("Action", "QueueStatus")] + ([("Queue", name)] if name else [])
    async with ControlSession(server) as session:
        queues = cc.parse_queue_status(await session.send_list(headers))
    if name and not queues:
        raise cc.ControlError(f"no such queue: {name}")
    return queues


_QUEUE_ERRORS = {
    "Unable to add interface to queue: No such queue": "no such queue: {queue}",
    "Unable to remove interface from queue: No such queue": "no such queue: {queue}",
    "Unable to add interface: Already there": "{interface} is already a member of {queue}",
    "Unable to remove interface: Not there": "{interface} is not a member of {queue}",
    "Interface not found": "{interface} is not a member of {queue}",
}


async def queue_member(
    server: AmiServer, headers: Sequence[tuple[str, str]], *, queue: str, interface: str
) -> str:
    """QueueAdd, QueueRemove or QueuePause; Asterisk's answer, or `ControlError` with its
    reason."""
    async with ControlSession(server) as session:
        response = await session.send(headers)
    message = response.get("Message", "")
    if response.get("Response") != "Success":
        action = next(v for k, v in headers if k.lower() == "action")
        if message == cc.PERMISSION_DENIED:
            raise cc.PermissionDenied(action, session.username)
        text_ = _QUEUE_ERRORS.get(message, "Asterisk refused: {message}")
        raise cc.ControlError(text_.format(queue=queue, interface=interface, message=message))
    return message


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)
