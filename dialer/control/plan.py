"""Live call control, decided without I/O: which channel a command acts on, which AMI action it
sends, and what the events that follow say about the result.

The I/O (the call attempt in Postgres, the PBX through `dialer.ami.client`) is in `dialer.control.live`;
everything here is a function of its arguments, so each choice is table-tested.

What current Asterisk (18+, measured on 22) needs, where the seed's guide is out of date:
- blind transfer: `BlindTransfer` only works on a bridged channel and moves its bridge *peer*,
  so a bridged callee is moved by sending it for the peer (the agent leg, which then hangs up);
  an unbridged callee (in the IVR) is moved with `Redirect`. `Redirect` answers Success even
  for a destination that does not exist and then drops the call, so the destination is looked
  up first (`ShowDialPlan`, judged by `judge_dialplan`) and nothing is sent when it is not
  there; the result is still judged from the callee's events. An external number is dialled
  through the call's trunk: the dial string goes first to the callee's channel as
  `DIALER_TRANSFER_DIAL` (`Setvar`), which the `dialer-transfer` context dials.
- consultation transfer: `Atxfer` only injects the feature-code DTMF (and needs Dial options
  and features.conf), so the consultation leg is an Originate of its own (an application
  Originate that waits), and once it answers the `Bridge` action joins it with the callee.
- recording: `Monitor` is gone; `MixMonitor`/`StopMixMonitor`.
- privileges: an action the AMI user may not send is answered `Permission denied`, nothing
  more; `ACTION_PRIVILEGES` says what manager.conf `write` needs for each one.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dialer.ami.events import CALL_ID
from dialer.dialing.payload import PayloadError, TrunkRoute
from dialer.outcomes import timeline
from dialer.outcomes.timeline import (
    HANGUP_EVENT as HANGUP_EVENT,
)
from dialer.outcomes.timeline import (
    RECORDING_EVENT as RECORDING_EVENT,
)
from dialer.outcomes.timeline import (
    TRANSFER_EVENT as TRANSFER_EVENT,
)
from dialer.outcomes.timeline import (
    recording_file as recording_file,
)
from dialer.outcomes.timeline import (
    timeline_event as timeline_event,
)
from dialer.phone import InvalidNumber, to_e164

STATE_UP = 6
# Where each kind of destination is sent unless --context says otherwise: the operator's PBX
# extensions (the seed's context), and the reference dialplan's operator-transfer contexts.
DEFAULT_CONTEXTS = {
    "extension": "from-internal",
    "external": "dialer-transfer",
    "queue": "dialer-queue",
}
# The consultation leg waits in Wait() between its answer and the Bridge action.
CONSULT_HOLD_SECONDS = 60
MAX_UNIQUEID = 149  # Asterisk's limit on a ChannelId

_CONTROL = re.compile(r"[\r\n\x00]")
_CHANNEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*/\S+$")
_EXTENSION = re.compile(r"^[0-9A-Za-z*#]+$")
_CONTEXT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_QUEUE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]*$")
_INTERFACE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*/[^\s,]+$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\([^()\r\n\x00]*\))?$")
_CONSULT_ID = re.compile(r"^([0-9]+_[0-9]+)-consult-[0-9]+$")

# Q.850 causes and OriginateResponse Reasons as people read them.
CAUSE_TEXT = {
    0: "no cause",
    1: "unallocated number",
    16: "normal clearing",
    17: "busy",
    18: "no user responding",
    19: "no answer",
    21: "rejected",
    27: "destination out of order",
    31: "normal, unspecified",
    34: "congestion",
    38: "network out of order",
    41: "temporary failure",
    42: "switching equipment congestion",
}
REASON_TEXT = {0: "failed", 1: "hung up", 3: "no answer", 4: "answered", 5: "busy", 8: "congestion"}


class ControlError(Exception):
    """The command could not do what was asked; the message says why (nothing unsafe sent)."""


class InputError(ControlError):
    """Unusable input, refused before anything was sent; `field` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


# -- privileges ----------------------------------------------------------------------------------

# The manager.conf `write` privileges that let a user send each action: any one of them will
# do (manager.c checks `writeperm & authority`), the first is the one to grant. As Asterisk 22
# registers them: main/manager.c, main/features.c (Bridge), main/pbx.c (ShowDialPlan),
# apps/app_mixmonitor.c, apps/app_queue.c (QueueStatus needs none).
ACTION_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "Originate": ("originate",),
    "Redirect": ("call",),
    "BlindTransfer": ("call",),
    "Bridge": ("call",),
    "Setvar": ("call",),
    "Hangup": ("call", "system"),
    "Getvar": ("call", "reporting"),
    "CoreShowChannels": ("reporting", "system"),
    "ShowDialPlan": ("reporting", "config"),
    "MixMonitor": ("system",),
    "StopMixMonitor": ("system", "call"),
    "QueueAdd": ("agent",),
    "QueueRemove": ("agent",),
    "QueuePause": ("agent",),
    "QueueStatus": (),
}
PERMISSION_DENIED = "Permission denied"


class PermissionDenied(ControlError):
    """The AMI user may not send `action`; the message says what manager.conf needs."""

    def __init__(self, action: str, username: str, message: str | None = None) -> None:
        super().__init__(message or permission_text(action, username))
        self.action = action
        self.username = username


def permission_text(action: str, username: str) -> str:
    """Asterisk's `Permission denied`, said so that the operator can fix it."""
    needed = ACTION_PRIVILEGES.get(action)
    head = f"the AMI user {username!r} may not send {action} (Asterisk: Permission denied)"
    if not needed:
        return f"{head}: check the user's `write` line in manager.conf"
    grant = f"`{needed[0]}`" + (
        " (or " + " or ".join(f"`{p}`" for p in needed[1:]) + ")" if needed[1:] else ""
    )
    return (
        f"{head}: add {grant} to `write` in the [{username}] section of manager.conf, "
        'then run asterisk -rx "manager reload"'
    )


def unchecked_text(username: str) -> str:
    """ShowDialPlan refused: the transfer is not risked without the check."""
    return (
        f"cannot check that the destination exists: {permission_text('ShowDialPlan', username)}"
        "; or pass --no-check to transfer without the check (a destination that does not "
        "exist drops the call)"
    )


def refusal(response: Mapping[str, Any], action: str, username: str, what: str = "") -> str | None:
    """None when Asterisk accepted the action; else why not, a missing privilege named."""
    if response.get("Response") == "Success":
        return None
    message = response.get("Message") or "error"
    if message == PERMISSION_DENIED:
        return permission_text(action, username)
    return f"Asterisk refused the {what or action}: {message}"


def checked(value: str, field_name: str, *, max_length: int = 256) -> str:
    """`value` stripped; refused when empty, too long, or holding CR, LF or NUL (those would
    inject AMI headers or whole actions)."""
    if _CONTROL.search(value or ""):
        raise InputError(field_name, "contains CR, LF or NUL; refused")
    text = (value or "").strip()
    if not text:
        raise InputError(field_name, "must not be empty")
    if len(text) > max_length:
        raise InputError(field_name, f"longer than {max_length} characters")
    return text


# -- which call ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRef:
    """How the operator named the call: its custom_call_id, its attempt id, or a channel."""

    kind: str  # "call_id" | "attempt_id" | "channel"
    value: str


_ATTEMPT_ID = re.compile(r"[0-9]{1,18}")


def parse_call_ref(text: str) -> CallRef:
    value = checked(text, "CALL_ID")
    if CALL_ID.fullmatch(value):
        return CallRef("call_id", value)
    if _ATTEMPT_ID.fullmatch(value):  # ASCII digits: str.isdigit also takes "²"
        return CallRef("attempt_id", value)
    if _CHANNEL_NAME.match(value):
        return CallRef("channel", value)
    raise InputError(
        "CALL_ID",
        f"{value!r} is neither a call id (<epoch_ms>_<n>), an attempt id nor a channel name "
        "(e.g. PJSIP/MC-0000002a)",
    )


@dataclass(frozen=True, slots=True)
class LiveChannel:
    """One channel as CoreShowChannels lists it."""

    name: str
    uniqueid: str
    linkedid: str
    state: int
    state_desc: str
    context: str = ""
    exten: str = ""
    application: str = ""
    data: str = ""
    bridge_id: str = ""
    duration: str = ""
    caller_num: str = ""
    connected_num: str = ""

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> LiveChannel:
        try:
            state = int(event.get("ChannelState", "") or -1)
        except ValueError:
            state = -1
        return cls(
            name=event.get("Channel", ""),
            uniqueid=event.get("Uniqueid", ""),
            linkedid=event.get("Linkedid", ""),
            state=state,
            state_desc=event.get("ChannelStateDesc", ""),
            context=event.get("Context", ""),
            exten=event.get("Exten", ""),
            application=event.get("Application", ""),
            data=event.get("ApplicationData", event.get("Data", "")),
            bridge_id=event.get("BridgeId", event.get("BridgeID", "")),
            duration=event.get("Duration", ""),
            caller_num=event.get("CallerIDNum", ""),
            connected_num=event.get("ConnectedLineNum", ""),
        )

    @property
    def up(self) -> bool:
        return self.state == STATE_UP

    @property
    def call_id(self) -> str | None:
        """The dialer call it belongs to (see `call_id_of`)."""
        return call_id_of(self.linkedid)

    def row(self) -> dict[str, Any]:
        return {
            "channel": self.name,
            "state": self.state_desc,
            "call_id": self.call_id,
            "uniqueid": self.uniqueid,
            "linkedid": self.linkedid,
            "context": self.context,
            "exten": self.exten,
            "application": self.application,
            "data": self.data,
            "bridge": self.bridge_id,
            "duration": self.duration,
            "caller": self.caller_num,
        }


def call_id_of(linkedid: str) -> str | None:
    """The dialer call a channel with this Linkedid belongs to.

    Every leg the call's own channels create (the IVR's transfer, a queue's agent) has the call
    id as Linkedid. A consultation leg is an Originate of its own, so it starts with its own
    Linkedid, the consultation id `<call id>-consult-<ms>` (`plan_consult`); once the Bridge
    action joins it with the callee, Asterisk gives the bridged channel the older Linkedid (the
    call's) but not the `;2` half of a Local leg, nor what that half dials: those keep the
    consultation id, which names the call too."""
    if CALL_ID.match(linkedid):
        return linkedid
    consult = _CONSULT_ID.match(linkedid)
    return consult.group(1) if consult else None


def parse_channels(events: Iterable[Mapping[str, Any]]) -> list[LiveChannel]:
    return [LiveChannel.from_event(e) for e in events if e.get("Event") == "CoreShowChannel"]


def call_channels(channels: Iterable[LiveChannel], call_id: str) -> list[LiveChannel]:
    """Every leg of a dialer call: its own (Linkedid = the call id) and its consultation legs."""
    return [c for c in channels if c.call_id == call_id]


def originated_channel(
    channels: Sequence[LiveChannel], call_id: str, known_name: str | None = None
) -> LiveChannel | None:
    """The callee's channel: its Uniqueid is the call id (the Originate's ChannelId); failing
    that, the channel the listener recorded, or the one that started the linked group (not the
    `;2` half of a Local pair)."""
    legs = [c for c in channels if c.linkedid == call_id]
    for rule in (
        lambda c: c.uniqueid == call_id,
        lambda c: known_name is not None and c.name == known_name,
        lambda c: c.uniqueid == c.linkedid and not c.name.endswith(";2"),
    ):
        found = next((c for c in legs if rule(c)), None)
        if found is not None:
            return found
    return None


def ends_the_call(
    channels: Sequence[LiveChannel],
    channel: LiveChannel,
    call_id: str | None,
    known_name: str | None = None,
) -> bool:
    """Whether hanging up `channel` ends the dialer call itself: it is the originated channel,
    or the `;2` half of that Local channel (not a transfer, consultation or agent leg)."""
    if not call_id:
        return False
    callee = originated_channel(channels, call_id, known_name)
    if callee is None:
        return False
    if channel.uniqueid == callee.uniqueid:
        return True
    return callee.name.endswith(";1") and channel.name == callee.name[:-1] + "2"


def bridge_peer(channels: Iterable[LiveChannel], channel: LiveChannel) -> LiveChannel | None:
    """The other channel in `channel`'s bridge, if it is in one with somebody."""
    if not channel.bridge_id:
        return None
    return next(
        (
            c
            for c in channels
            if c.bridge_id == channel.bridge_id and c.uniqueid != channel.uniqueid
        ),
        None,
    )


# -- where to --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Destination:
    kind: str  # "extension" | "external" | "queue"
    context: str
    exten: str
    label: str  # as the operator wrote it, for messages

    def describe(self) -> str:
        if self.kind == "queue":
            return f"queue {self.exten}"
        return f"{self.label} ({self.context},{self.exten})"


def plan_destination(
    target: str | None, *, queue: str | None, context: str | None, region: str = "US"
) -> Destination:
    """TARGET (an extension, or an external number in E.164) or --queue NAME, and the context
    it is reached in (--context, else the default for its kind)."""
    if (target is None) == (queue is None):
        raise InputError("TARGET", "give either a TARGET or --queue NAME")
    chosen_context = None
    if context is not None:
        chosen_context = checked(context, "--context", max_length=79)
        if not _CONTEXT.match(chosen_context):
            raise InputError("--context", f"{chosen_context!r} is not a dialplan context name")
    if queue is not None:
        name = checked(queue, "--queue", max_length=79)
        if not _QUEUE.match(name):
            raise InputError("--queue", f"{name!r} is not a queue name")
        return Destination("queue", chosen_context or DEFAULT_CONTEXTS["queue"], name, name)
    assert target is not None
    text = checked(target, "TARGET", max_length=79)
    if text.startswith("+"):
        try:
            number = to_e164(text, region, strict=True)
        except InvalidNumber as exc:
            raise InputError("TARGET", f"{text!r} is not a valid phone number: {exc}") from None
        return Destination(
            "external", chosen_context or DEFAULT_CONTEXTS["external"], number, number
        )
    if not _EXTENSION.match(text):
        raise InputError(
            "TARGET",
            f"{text!r} is neither an extension (digits, letters, * or #) nor an external number "
            "in E.164 (+ and country code)",
        )
    return Destination("extension", chosen_context or DEFAULT_CONTEXTS["extension"], text, text)


# -- is the destination there? --------------------------------------------------------------------


def show_dialplan_headers(destination: Destination) -> list[tuple[str, str]]:
    return [
        ("Action", "ShowDialPlan"),
        ("Context", destination.context),
        ("Extension", destination.exten),
    ]


@dataclass(frozen=True, slots=True)
class DialplanCheck:
    exists: bool | None  # None: the PBX did not say (an error other than "not found")
    text: str


def judge_dialplan(
    destination: Destination,
    events: Sequence[Mapping[str, Any]] = (),
    error: str | None = None,
) -> DialplanCheck:
    """What ShowDialPlan (Context, Extension) said about the destination.

    Asterisk (main/pbx.c manager_show_dialplan) matches the extension as the dialplan would,
    patterns and included contexts too, and answers with one ListDialplan event per priority
    (`Context` is the context the match is in, `Extension` the pattern), or with an error:
    "Did not find context C", "Did not find extension E@C". A Redirect goes to priority 1,
    so an extension with a hint only is not there either.
    """
    where = f"{destination.exten}@{destination.context}"
    if error is not None:
        if error.startswith("Did not find context"):
            return DialplanCheck(False, f"the PBX has no dialplan context {destination.context!r}")
        if error.startswith("Did not find extension"):
            return DialplanCheck(
                False,
                f"the PBX has no extension {destination.exten!r} in context "
                f"{destination.context!r}",
            )
        return DialplanCheck(None, f"the PBX did not say whether {where} exists ({error})")
    listed = [e for e in events if e.get("Event") == "ListDialplan" and e.get("Extension")]
    first = next((e for e in listed if str(e.get("Priority", "")) == "1"), None)
    if first is None:
        return DialplanCheck(
            False,
            f"{where} has no priority 1 on the PBX" + (" (only a hint)" if listed else ""),
        )
    found_in = first.get("Context") or destination.context
    via = f" (included from {found_in})" if found_in != destination.context else ""
    return DialplanCheck(
        True,
        f"{where} exists{via}: extension {first.get('Extension')}, "
        f"{first.get('Application') or 'no application'}",
    )


# -- queue members ----------------------------------------------------------------------------------

# Member states that cannot take a call (app_queue rings the others, unknown and busy included).
UNREACHABLE_MEMBER = frozenset({"invalid", "unavailable"})


def available_members(queue: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The members that can be rung: logged in (listed), not paused, not unavailable."""
    return [
        m
        for m in queue.get("members", [])
        if not m.get("paused") and m.get("status") not in UNREACHABLE_MEMBER
    ]


def queue_agent_problem(queue: Mapping[str, Any]) -> str | None:
    """Why a caller sent into the queue would wait with nobody to answer; None if somebody can."""
    members = queue.get("members", [])
    if available_members(queue):
        return None
    name = queue.get("queue", "?")
    if not members:
        why = "no members"
    else:
        paused = sum(1 for m in members if m.get("paused"))
        away = len(members) - paused
        parts = [f"{paused} paused"] if paused else []
        parts += [f"{away} unavailable"] if away else []
        why = f"no available member ({', '.join(parts)} of {len(members)})"
    return f"queue {name} has {why}: the caller will wait until they hang up"


# -- external numbers -----------------------------------------------------------------------------

# The channel variable the dialer-transfer context dials when it is set (the call's trunk).
TRANSFER_DIAL_VARIABLE = "DIALER_TRANSFER_DIAL"


def external_dial_string(
    number: str, *, trunk: TrunkRoute | None, transfer_prefix: str = ""
) -> str:
    """`number` through the call's trunk (its channel template) with the campaign's prefix."""
    if trunk is None:
        raise ControlError(
            f"the call's trunk is unknown (address the call by its call id); cannot dial {number}"
        )
    try:
        return trunk.channel_for(transfer_prefix + number)
    except PayloadError as exc:
        raise ControlError(f"trunk {trunk.name}: {exc}") from None


def transfer_dial_string(
    destination: Destination, *, trunk: TrunkRoute | None, transfer_prefix: str = ""
) -> str | None:
    """What the callee's channel dials once in dialer-transfer: None unless the destination is
    an external number. The value is used inside Dial(), where a comma separates arguments."""
    if destination.kind != "external":
        return None
    dial = external_dial_string(destination.exten, trunk=trunk, transfer_prefix=transfer_prefix)
    checked(dial, TRANSFER_DIAL_VARIABLE)
    if "," in dial:
        raise ControlError(
            f"the dial string {dial!r} holds a comma, which Dial() would take for an argument "
            "separator; fix the trunk's channel template"
        )
    return dial


def operator_transfer_facts(destination: Destination) -> dict[str, Any]:
    """Facts of a transfer the operator made (no key was pressed: no dtmf)."""
    facts: dict[str, Any] = {"transfer_source": "operator"}
    if destination.kind == "queue":
        facts["transfer_queue"] = destination.exten
    return facts


def setvar_headers(channel: LiveChannel, name: str, value: str) -> list[tuple[str, str]]:
    return [("Action", "Setvar"), ("Channel", channel.name), ("Variable", name), ("Value", value)]


# -- blind transfer -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferPlan:
    method: str  # "BlindTransfer" | "Redirect"
    headers: list[tuple[str, str]]
    callee: LiveChannel
    destination: Destination
    transferer: LiveChannel | None = None  # BlindTransfer: the bridge peer, which hangs up


def require_up(callee: LiveChannel) -> None:
    if not callee.up:
        raise ControlError(
            f"{callee.name} is not answered ({callee.state_desc or callee.state}); nothing to do yet"
        )


def plan_blind_transfer(
    channels: Sequence[LiveChannel], callee: LiveChannel, destination: Destination
) -> TransferPlan:
    """BlindTransfer when the callee is bridged (sent for its peer, so that the callee is the one
    that moves), Redirect when it is not."""
    require_up(callee)
    peer = bridge_peer(channels, callee)
    if peer is not None:
        headers = [
            ("Action", "BlindTransfer"),
            ("Channel", peer.name),
            ("Context", destination.context),
            ("Exten", destination.exten),
        ]
        return TransferPlan("BlindTransfer", headers, callee, destination, peer)
    headers = [
        ("Action", "Redirect"),
        ("Channel", callee.name),
        ("Context", destination.context),
        ("Exten", destination.exten),
        ("Priority", "1"),
    ]
    return TransferPlan("Redirect", headers, callee, destination)


@dataclass
class Verdict:
    ok: bool
    text: str
    # Facts for the call attempt (names of call_attempts columns).
    facts: dict[str, Any] = field(default_factory=dict)


def cause_text(cause: str | int | None) -> str:
    try:
        code = int(str(cause))
    except ValueError:
        return "unknown cause"
    return f"cause {code}, {CAUSE_TEXT.get(code, 'see Q.850')}"


class TransferWatch:
    """Judges a blind transfer from the events after the action's response.

    Decisive: the callee's DialEnd (ANSWER or not), its QueueCallerJoin, its Hangup, or a
    refused BlindTransfer event. Without any of them by the settle time, a channel listing
    says where the callee is (`settle`); a callee still dialling is waited for until the
    command's timeout (`timed_out`).
    """

    def __init__(self, plan: TransferPlan, now: dt.datetime, existing: Iterable[str] = ()) -> None:
        self.plan = plan
        self.callee = plan.callee
        self.sent_at = now
        # Uniqueids of the channels up before the transfer: their DialEnds (a Dial the transfer
        # interrupted) say nothing about the new destination.
        self.existing = frozenset(existing)
        self.dialling: str | None = None
        self.verdict: Verdict | None = None
        self.steps: list[str] = []

    @property
    def done(self) -> bool:
        return self.verdict is not None

    def _finish(self, ok: bool, text: str, **facts: Any) -> None:
        if self.verdict is None:
            self.verdict = Verdict(ok, text, {"transfer_requested_at": self.sent_at, **facts})

    def feed(self, event: Mapping[str, Any], at: dt.datetime) -> None:
        if self.verdict is not None:
            return
        name = event.get("Event")
        uid = self.callee.uniqueid
        dest = self.plan.destination
        if name == "BlindTransfer" and self.plan.transferer is not None:
            if event.get("TransfererUniqueid") == self.plan.transferer.uniqueid:
                result = event.get("Result", "")
                if result != "Success":
                    self.verdict = Verdict(False, f"Asterisk did not transfer the call ({result})")
                else:
                    self.steps.append(f"{self.plan.transferer.name} handed the call over")
        elif name == "DialBegin" and event.get("Uniqueid") == uid:
            self.dialling = event.get("DestChannel") or event.get("DialString") or dest.label
            self.steps.append(f"dialling {dest.label} ({self.dialling})")
        elif (
            name == "DialEnd"
            and event.get("Uniqueid") == uid
            and event.get("DestUniqueid") not in self.existing | {uid}
            and event.get("DialStatus") != "CANCEL"  # the interrupted Dial, torn down
        ):
            status = event.get("DialStatus", "")
            if status == "ANSWER":
                self._finish(
                    True,
                    f"{dest.label} answered ({event.get('DestChannel', '')})",
                    transfer_status=status,
                    transfer_answered_at=at,
                )
            else:
                self._finish(
                    False,
                    f"{dest.label} did not answer ({status or 'no status'})",
                    transfer_status=status or None,
                )
        elif name == "QueueCallerJoin" and event.get("Uniqueid") == uid:
            self._finish(
                True,
                f"waiting in queue {event.get('Queue', dest.exten)} "
                f"(position {event.get('Position', '?')})",
            )
        elif name == "Hangup" and event.get("Uniqueid") == uid:
            where = f"{event.get('Context', '')},{event.get('Exten', '')}"
            cause = cause_text(event.get("Cause"))
            if self.dialling:
                self._finish(False, f"the call ended while {dest.label} rang ({cause})")
            else:
                self._finish(
                    False,
                    f"the call was dropped at once in {where} ({cause}): Asterisk accepted the "
                    "transfer, but the destination does not exist (or hung up at once)",
                )

    def settle(self, channels: Sequence[LiveChannel]) -> None:
        """No decisive event yet: judge from a channel listing taken now."""
        if self.verdict is not None:
            return
        dest = self.plan.destination
        now = next((c for c in channels if c.uniqueid == self.callee.uniqueid), None)
        if now is None:
            self._finish(
                False,
                f"the call is gone: it did not reach {dest.context},{dest.exten} (no such "
                "destination, or it hung up)",
            )
        elif now.application == "Queue":
            self._finish(True, f"waiting in queue ({now.application} {now.data})")
        elif now.application == "Dial" or self.dialling:
            self.dialling = self.dialling or now.data
        elif now.context == self.callee.context and now.exten == self.callee.exten:
            self._finish(False, f"the call did not move: still in {now.context},{now.exten}")
        else:
            self._finish(
                True, f"now in {now.context},{now.exten} ({now.application or 'no application'})"
            )

    def timed_out(self, seconds: float) -> None:
        if self.verdict is None:
            self._finish(
                True,
                f"transferred; {self.plan.destination.label} still ringing after {seconds:g}s",
            )


# -- consultation (attended) transfer --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsultPlan:
    consult_id: str  # ChannelId (= Uniqueid) and ActionID of the consultation leg
    dial_string: str
    headers: list[tuple[str, str]]
    destination: Destination


def consult_dial_string(
    destination: Destination, *, trunk: TrunkRoute | None, transfer_prefix: str = ""
) -> str:
    """Where the consultation leg is dialled: an external number through the call's trunk, an
    extension through a Local channel into its context. A queue cannot be consulted."""
    if destination.kind == "queue":
        raise InputError("--attended", "a queue cannot be consulted; transfer to it blind")
    if destination.kind == "external":
        return external_dial_string(destination.exten, trunk=trunk, transfer_prefix=transfer_prefix)
    return f"Local/{destination.exten}@{destination.context}"


def plan_consult(
    destination: Destination,
    *,
    base_id: str,
    epoch_ms: int,
    dial_string: str,
    ring_timeout_s: float,
    caller_id: str | None = None,
) -> ConsultPlan:
    """The consultation leg's Originate: it rings the target and, once answered, waits for the
    Bridge action. Its ChannelId is derived from the call's id but is no dialer call id, so the
    listener never mistakes the leg for a call of its own."""
    consult_id = f"{base_id}-consult-{epoch_ms}"
    if len(consult_id) > MAX_UNIQUEID:
        raise ControlError("call id too long to derive a consultation channel id from")
    headers = [
        ("Action", "Originate"),
        ("ActionID", consult_id),
        ("Channel", dial_string),
        ("Application", "Wait"),
        ("Data", str(CONSULT_HOLD_SECONDS)),
        ("Timeout", str(max(1, int(ring_timeout_s * 1000)))),
        ("Async", "true"),
    ]
    if caller_id:
        headers.append(("CallerID", caller_id))
    headers.append(("ChannelId", consult_id))
    if dial_string.lower().startswith("local/"):
        headers.append(("OtherChannelId", f"{consult_id}-2"))
    return ConsultPlan(consult_id, dial_string, headers, destination)


def bridge_headers(callee: LiveChannel, consult_channel: str) -> list[tuple[str, str]]:
    return [
        ("Action", "Bridge"),
        ("Channel1", callee.name),
        ("Channel2", consult_channel),
        ("Tone", "no"),
    ]


class ConsultWatch:
    """Follows the consultation leg until it answers or fails, and the callee meanwhile.

    A failed OriginateResponse is judged with the leg's Hangup cause when there is one (it
    says more than the Reason: a PJSIP 486 gives Reason 0); the Hangup may come just after it,
    so a failure waits for it (`waiting_for_cause`) until `conclude`."""

    def __init__(self, plan: ConsultPlan, callee: LiveChannel) -> None:
        self.plan = plan
        self.callee = callee
        self.answered_channel: str | None = None
        self.answered_at: dt.datetime | None = None
        self.failure: str | None = None
        self.callee_gone: str | None = None
        self._leg_cause: str | None = None
        self._failed_reason: str | None = None

    @property
    def done(self) -> bool:
        return bool(self.answered_channel or self.failure or self.callee_gone)

    @property
    def waiting_for_cause(self) -> bool:
        return self._failed_reason is not None and not self.done

    def feed(self, event: Mapping[str, Any], at: dt.datetime) -> None:
        if self.done:
            return
        name = event.get("Event")
        label = self.plan.destination.label
        if name == "Hangup" and event.get("Uniqueid") == self.plan.consult_id:
            self._leg_cause = event.get("Cause") or "0"
            if self._failed_reason is not None:
                self.conclude()
        elif name == "Hangup" and event.get("Uniqueid") == self.callee.uniqueid:
            self.callee_gone = (
                f"the call ended while {label} rang ({cause_text(event.get('Cause'))})"
            )
        elif name == "OriginateResponse" and event.get("ActionID") == self.plan.consult_id:
            if event.get("Response") == "Success":
                self.answered_channel = event.get("Channel") or self.plan.consult_id
                self.answered_at = at
                return
            self._failed_reason = event.get("Reason") or ""
            if self._leg_cause is not None:
                self.conclude()

    def conclude(self) -> None:
        """Judge a failed consultation with what is known now."""
        if self._failed_reason is not None and not self.done:
            self.failure = f"{self.plan.destination.label} did not answer ({self._why()})"

    def _why(self) -> str:
        if self._leg_cause not in (None, "0", "16"):
            return cause_text(self._leg_cause)
        try:
            code = int(self._failed_reason or "")
        except ValueError:
            return "no reason given"
        return REASON_TEXT.get(code, f"reason {code}")


def bridged_together(channels: Sequence[LiveChannel], first: str, second: str) -> bool:
    """Both channels (name or Uniqueid) are in the same bridge."""

    def find(key: str) -> LiveChannel | None:
        return next((c for c in channels if key in (c.name, c.uniqueid)), None)

    one, two = find(first), find(second)
    return bool(one and two and one.bridge_id and one.bridge_id == two.bridge_id)


# -- hangup, recording, variables -----------------------------------------------------------------


def hangup_headers(channel: LiveChannel, cause: int) -> list[tuple[str, str]]:
    if not 1 <= cause <= 127:
        raise InputError("--cause", f"{cause} is not a Q.850 cause (1-127)")
    return [("Action", "Hangup"), ("Channel", channel.name), ("Cause", str(cause))]


def mixmonitor_headers(channel: LiveChannel, file_name: str) -> list[tuple[str, str]]:
    return timeline.mixmonitor_headers(channel.name, file_name)


def stop_mixmonitor_headers(channel: LiveChannel) -> list[tuple[str, str]]:
    return [("Action", "StopMixMonitor"), ("Channel", channel.name)]


def recording_active(events: Iterable[Mapping[str, Any]]) -> bool:
    """Whether the call's timeline leaves a recording running: the last recording event (the
    IVR's DialerRecording, or a ControlRecording) is a start."""
    active = False
    for event in events:
        name = event.get("event")
        data = event.get("data") or {}
        if name == "DialerRecording":
            active = True
        elif name == RECORDING_EVENT and data.get("Response") == "Success":
            active = data.get("State") == "started"
    return active


def variable_names(names: Sequence[str]) -> list[str]:
    if not names:
        raise InputError("NAME", "give at least one variable name")
    out = []
    for raw in names:
        name = checked(raw, "NAME", max_length=200)
        if not _VARIABLE.match(name):
            raise InputError("NAME", f"{name!r} is not a variable name or FUNCTION(args)")
        out.append(name)
    return out


def getvar_headers(channel: LiveChannel, name: str) -> list[tuple[str, str]]:
    return [("Action", "Getvar"), ("Channel", channel.name), ("Variable", name)]


# -- queues ---------------------------------------------------------------------------------------


def queue_name(text: str) -> str:
    name = checked(text, "NAME", max_length=79)
    if not _QUEUE.match(name):
        raise InputError("NAME", f"{name!r} is not a queue name")
    return name


def interface_name(text: str) -> str:
    name = checked(text, "INTERFACE", max_length=200)
    if not _INTERFACE.match(name):
        raise InputError(
            "INTERFACE",
            f"{name!r} is not a channel interface (e.g. PJSIP/agent1, Local/2001@agents)",
        )
    return name


def queue_add_headers(
    queue: str,
    interface: str,
    *,
    member_name: str | None,
    penalty: int,
    paused: bool,
    wrapuptime: int | None = None,
) -> list[tuple[str, str]]:
    if penalty < 0:
        raise InputError("--penalty", "must be 0 or more")
    headers = [("Action", "QueueAdd"), ("Queue", queue), ("Interface", interface)]
    if member_name is not None:
        headers.append(("MemberName", checked(member_name, "--member-name", max_length=80)))
    headers += [("Penalty", str(penalty)), ("Paused", "true" if paused else "false")]
    if wrapuptime is not None:
        if wrapuptime < 0:
            raise InputError("--wrapuptime", "must be 0 or more")
        headers.append(("Wrapuptime", str(wrapuptime)))
    return headers


def queue_remove_headers(queue: str, interface: str) -> list[tuple[str, str]]:
    return [("Action", "QueueRemove"), ("Queue", queue), ("Interface", interface)]


def queue_pause_headers(
    queue: str | None, interface: str, *, paused: bool, reason: str | None
) -> list[tuple[str, str]]:
    """QueuePause: in `queue`, or in every queue of the interface (None)."""
    headers = [("Action", "QueuePause"), ("Interface", interface)]
    headers.append(("Paused", "true" if paused else "false"))
    if queue is not None:
        headers.append(("Queue", queue))
    if reason:
        headers.append(("Reason", checked(reason, "--reason", max_length=80)))
    return headers


MEMBER_STATUS = {
    "0": "unknown",
    "1": "not in use",
    "2": "in use",
    "3": "busy",
    "4": "invalid",
    "5": "unavailable",
    "6": "ringing",
    "7": "ring in use",
    "8": "on hold",
}


def parse_queue_status(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """QueueStatus's QueueParams/QueueMember/QueueEntry events, one dict per queue."""
    queues: dict[str, dict[str, Any]] = {}
    for event in events:
        name = event.get("Event")
        queue = event.get("Queue", "")
        if name == "QueueParams":
            queues[queue] = {
                "queue": queue,
                "strategy": event.get("Strategy", ""),
                "calls": _int(event.get("Calls")),
                "completed": _int(event.get("Completed")),
                "abandoned": _int(event.get("Abandoned")),
                "holdtime": _int(event.get("Holdtime")),
                "talktime": _int(event.get("TalkTime")),
                "members": [],
                "callers": [],
            }
        elif name == "QueueMember" and queue in queues:
            queues[queue]["members"].append(
                {
                    "name": event.get("Name", ""),
                    "interface": event.get("Location", ""),
                    "status": MEMBER_STATUS.get(event.get("Status", ""), event.get("Status", "")),
                    "paused": event.get("Paused") == "1",
                    "in_call": event.get("InCall") == "1",
                    "penalty": _int(event.get("Penalty")),
                    "calls_taken": _int(event.get("CallsTaken")),
                }
            )
        elif name == "QueueEntry" and queue in queues:
            queues[queue]["callers"].append(
                {
                    "position": _int(event.get("Position")),
                    "channel": event.get("Channel", ""),
                    "uniqueid": event.get("Uniqueid", ""),
                    "caller": event.get("CallerIDNum", ""),
                    "wait": _int(event.get("Wait")),
                }
            )
    return list(queues.values())


def _int(text: Any) -> int | None:
    try:
        return int(str(text))
    except (TypeError, ValueError):
        return None
