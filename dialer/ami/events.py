"""AMI events as call facts (pure, no I/O).

Three steps, each a function of its input only:
- `parse_frame`: raw frame text -> the event dict `dialer.ami.client` yields (for replays and fixtures);
- `Correlator.key`: which call an event belongs to (its custom_call_id);
- `extract`: what the event says about that call, as `EventFacts`; `CallFacts` accumulates them.

Correlation (see DESIGN.md): OriginateResponse by ActionID; every other event by Linkedid, which
is the custom_call_id on every leg when the Originate set ChannelId. When Asterisk did not honour
ChannelId, the Linkedid is an ordinary Uniqueid: the `custom_call_id` channel variable is used
instead, and the Linkedid is remembered as an alias, so transfer legs (whose variable is empty)
still find their call.

Only the originated channel's Hangup ends a call: its Uniqueid is the custom_call_id, or, without
ChannelId, it is the channel that started the linked group (Uniqueid == Linkedid; for a Local
channel the `;1` half). Hangups of the `;2` half and of transfer legs say nothing about the call.
The same holds for app_queue's caller events (QueueCallerJoin...): only the originated channel's
stay in a queue is the call's transfer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import orjson

Event = dict[str, Any]

CALL_ID = re.compile(r"^[0-9]+_[0-9]+$")
CALL_VARIABLE = "custom_call_id"

# app_queue's events about a caller in a queue (the callee, after the press key or an
# operator's transfer): they carry its channel, so they correlate like the others.
QUEUE_CALLER_EVENTS = frozenset(
    {"QueueCallerJoin", "QueueCallerAbandon", "AgentConnect", "AgentComplete"}
)
# app_queue's member (agent) events: the queues' live state, not facts of a call.
QUEUE_MEMBER_EVENTS = frozenset(
    {"QueueMemberStatus", "QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause"}
)
# Events the listener asks Asterisk for; everything else is dropped on arrival.
USED_EVENTS = (
    frozenset({"OriginateResponse", "DialEnd", "Hangup", "UserEvent"})
    | QUEUE_CALLER_EVENTS
    | QUEUE_MEMBER_EVENTS
)
DIALER_USER_EVENTS = frozenset(
    {
        "DialerAMD",
        "DialerDTMF",
        "DialerVoicemail",
        "DialerTransfer",
        "DialerTransferResult",
        "DialerRecording",
    }
)
# Filter actions (and manager.conf eventfilter lines) asking for exactly the events above.
EVENT_FILTERS: tuple[tuple[str, str], ...] = (
    ("action(include),name(OriginateResponse)", ""),
    ("action(include),name(DialEnd)", ""),
    ("action(include),name(Hangup)", ""),
    ("action(include),name(UserEvent),header(UserEvent),method(starts_with)", "Dialer"),
    # app_queue (needs `agent` in read): the queue a transfer went into, and its agents.
    ("action(include),name(QueueCallerJoin)", ""),
    ("action(include),name(QueueCallerAbandon)", ""),
    ("action(include),name(AgentConnect)", ""),
    ("action(include),name(AgentComplete)", ""),
    ("action(include),name(QueueMemberStatus)", ""),
    ("action(include),name(QueueMemberAdded)", ""),
    ("action(include),name(QueueMemberRemoved)", ""),
    ("action(include),name(QueueMemberPause)", ""),
    # The PBX going down (needs `system` in read): its calls' cause-0 ends are its doing.
    ("action(include),name(Shutdown)", ""),
)

# Facts kept as the earliest value seen (timestamps); the others keep the first value seen.
EARLIEST = frozenset(
    {
        "answered_at",
        "transfer_requested_at",
        "transfer_answered_at",
        "transfer_ended_at",
        "queue_joined_at",
        "operator_hangup_at",
        "pbx_down_at",
        "originate_response_at",
    }
)


# -- frames -------------------------------------------------------------------------------------


def parse_frame(text: str) -> Event:
    """One AMI frame (`Name: value` lines) as the dict `dialer.ami.client` yields.

    `ChanVariable: name=value` lines (and their prefixed forms, `DestChanVariable`...) become a
    dict under that header; OriginateResponse's `ChanVariable(<channel>)` form is folded into
    `ChanVariable`. Other repeated headers are joined with newlines.
    """
    event: Event = {}
    # As in dialer.ami.client: a NUL is never data (and Postgres could not store it).
    text = text.replace("\x00", "\ufffd")
    for line in text.replace("\r\n", "\n").split("\n"):
        name, sep, value = line.partition(":")
        if not sep or not name:
            continue
        value = value[1:] if value.startswith(" ") else value
        if name.startswith("ChanVariable("):
            name = "ChanVariable"
        if name.endswith("ChanVariable"):
            var, _, var_value = value.partition("=")
            event.setdefault(name, {})[var] = var_value
        elif name in event:
            event[name] = f"{event[name]}\n{value}"
        else:
            event[name] = value
    return event


def iter_frames(text: str) -> Iterator[Event]:
    """Every frame of a stream of frames separated by blank lines."""
    for chunk in re.split(r"\r?\n\r?\n", text):
        if chunk.strip():
            yield parse_frame(chunk)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode(event: Mapping[str, Any]) -> str:
    """The event as compact JSON, headers in wire order (what `call_events.data` holds)."""
    return to_json(event)


def to_json(value: Any) -> str:
    """Compact JSON, UTF-8 characters as they are: orjson, about six times faster than the
    standard library, whose output is the same except where orjson refuses the input (a lone
    surrogate, an integer beyond 64 bits): the standard library writes those."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _ENCODER.encode(value)


def fingerprint(encoded: str) -> str:
    """A hash of an encoded event: the same event seen twice (replayed, re-read) hashes the
    same, since its headers come in the same order."""
    return hashlib.blake2b(encoded.encode("utf-8"), digest_size=16).hexdigest()


def event_time(event: Mapping[str, Any], received_at: dt.datetime) -> dt.datetime:
    """When it happened: manager.conf `timestampevents` adds `Timestamp`, else on arrival."""
    stamp = event.get("Timestamp")
    if stamp:
        try:
            return dt.datetime.fromtimestamp(float(stamp), dt.UTC)
        except (ValueError, OverflowError, OSError):
            pass
    return received_at


# -- correlation --------------------------------------------------------------------------------


def _channel_prefix(event: Mapping[str, Any]) -> str:
    """Dial events of an Originate have no calling channel, only `Dest...` headers."""
    return "" if "Uniqueid" in event or "Linkedid" in event else "Dest"


def _call_variable(event: Mapping[str, Any], prefix: str) -> str:
    variables = event.get(prefix + "ChanVariable")
    value = variables.get(CALL_VARIABLE, "") if isinstance(variables, dict) else ""
    if not value and event.get("Event") == "UserEvent":
        value = event.get(CALL_VARIABLE, "")
    return value


class Correlator:
    """The custom_call_id of each event, and the Linkedid aliases that lead to it.

    An open call's aliases are kept while it is open (at most `max_aliases`, oldest dropped,
    against calls nobody closes); once the call is closed (`closed`), among the aliases of the
    `max_closed` calls closed last, so that its late events still find it. Memory therefore
    follows the calls in progress, not the calls made.
    """

    def __init__(self, max_aliases: int = 100_000, max_closed: int = 20_000) -> None:
        self._aliases: OrderedDict[str, str] = OrderedDict()  # of open calls
        self._by_call: dict[str, list[str]] = {}  # open call -> its aliases
        self._closed: OrderedDict[str, str] = OrderedDict()  # of calls closed last
        self._max = max_aliases
        self._max_closed = max_closed

    def __len__(self) -> int:
        return len(self._aliases) + len(self._closed)

    def alias(self, other: str, call_id: str) -> None:
        """Events carrying `other` (a Linkedid or an ActionID) belong to `call_id`."""
        if self._closed.get(other) == call_id:
            self._closed.move_to_end(other)
            return
        if self._aliases.get(other) != call_id:
            self._drop(other)
            self._aliases[other] = call_id
            self._by_call.setdefault(call_id, []).append(other)
        self._aliases.move_to_end(other)
        while len(self._aliases) > self._max:
            self._drop(next(iter(self._aliases)))

    def closed(self, call_id: str) -> None:
        """`call_id` is closed: its aliases join those of the calls closed last."""
        for other in self._by_call.pop(call_id, ()):
            if self._aliases.pop(other, None) == call_id:
                self._closed[other] = call_id
                self._closed.move_to_end(other)
        while len(self._closed) > self._max_closed:
            self._closed.popitem(last=False)

    def _lookup(self, other: str) -> str | None:
        return self._aliases.get(other) or self._closed.get(other)

    def _drop(self, other: str) -> None:
        call_id = self._aliases.pop(other, None)
        if call_id is None:
            return
        others = self._by_call.get(call_id)
        if others is not None:
            with contextlib.suppress(ValueError):
                others.remove(other)
            if not others:
                del self._by_call[call_id]

    def key(self, event: Mapping[str, Any]) -> str | None:
        if event.get("Event") == "OriginateResponse":
            action_id = event.get("ActionID")
            return (self._lookup(action_id) or action_id) if action_id else None
        prefix = _channel_prefix(event)
        linkedid = event.get(prefix + "Linkedid", "")
        if CALL_ID.match(linkedid):
            return linkedid
        variable = _call_variable(event, prefix)
        if variable:
            if linkedid and linkedid != variable:
                self.alias(linkedid, variable)
            return variable
        return self._lookup(linkedid) if linkedid else None


# -- facts --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallFacts:
    """Everything known about one call. Field names are `call_attempts` columns, except
    `hangup_at` (becomes `ended_at`)."""

    uniqueid: str | None = None
    channel: str | None = None
    originate_response: str | None = None
    originate_reason: int | None = None
    # When the OriginateResponse came: its latency from the send is how far behind the PBX is.
    originate_response_at: dt.datetime | None = None
    answered_at: dt.datetime | None = None
    dial_status: str | None = None
    amd_status: str | None = None
    amd_cause: str | None = None
    dtmf: str | None = None
    read_status: str | None = None
    voicemail_left: bool | None = None
    transfer_requested_at: dt.datetime | None = None
    transfer_answered_at: dt.datetime | None = None
    transfer_ended_at: dt.datetime | None = None
    transfer_status: str | None = None
    recording_file: str | None = None
    hangup_cause: int | None = None
    hangup_cause_txt: str | None = None
    # Who moved the call to a transfer: the IVR (press key) or an operator (`dialer call
    # transfer`); a transfer into a queue names it.
    transfer_source: str | None = None
    transfer_queue: str | None = None
    # In that queue (app_queue's events): when the callee joined it, the seconds it waited
    # (HoldTime: until an agent answered, or until it hung up) and the agent who took it.
    queue_joined_at: dt.datetime | None = None
    queue_wait_s: int | None = None
    agent: str | None = None
    # What the dialer knows and the PBX's events do not say: an operator hung the call up
    # (written before the AMI Hangup is sent) and whether the operator asked for a retry; the
    # PBX shut down or its connection was lost while the call ended.
    operator_hangup_at: dt.datetime | None = None
    operator_retry: bool | None = None
    pbx_down_at: dt.datetime | None = None
    hangup_at: dt.datetime | None = None

    def merge(self, values: Mapping[str, Any]) -> CallFacts:
        """These facts plus `values`: first value wins, earliest time wins (order-free)."""
        changes: dict[str, Any] = {}
        for name, value in values.items():
            if value is None:
                continue
            current = getattr(self, name)
            if current is None or (name in EARLIEST and value < current):
                changes[name] = value
        return replace(self, **changes) if changes else self

    @property
    def answered(self) -> bool:
        return _answered(self.answered_at, self.dial_status, self.originate_response)

    @property
    def ended(self) -> bool:
        """The originated channel was seen hanging up."""
        return self.hangup_cause is not None or self.hangup_at is not None


FACT_NAMES = tuple(f.name for f in fields(CallFacts))


def answered_in(values: Mapping[str, Any]) -> bool:
    """`CallFacts.answered` of fact values not made into `CallFacts` (the listener's batches)."""
    return _answered(
        values.get("answered_at"), values.get("dial_status"), values.get("originate_response")
    )


def _answered(answered_at: Any, dial_status: Any, originate_response: Any) -> bool:
    return answered_at is not None or dial_status == "ANSWER" or originate_response == "Success"


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What one event says about its call."""

    values: dict[str, Any] = field(default_factory=dict)
    # The originated channel hung up: the call is over.
    final: bool = False
    # OriginateResponse Failure: over unless a channel exists (its Hangup decides then).
    originate_failed: bool = False


# The range of the integer columns facts are stored in.
INT4_RANGE = range(-(2**31), 2**31)


def _int(text: Any) -> int | None:
    """An integer header value; None when there is none, or it cannot be a cause or reason."""
    try:
        value = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if value in INT4_RANGE else None


def _is_originated(event: Mapping[str, Any], call_id: str, prefix: str = "") -> bool:
    uniqueid = event.get(prefix + "Uniqueid", "")
    if not uniqueid:
        return False
    if uniqueid == call_id:
        return True
    channel = event.get(prefix + "Channel", "")
    return uniqueid == event.get(prefix + "Linkedid") and not channel.endswith(";2")


def extract(event: Mapping[str, Any], call_id: str, at: dt.datetime) -> EventFacts | None:
    """The facts `event` gives about call `call_id` at time `at`; None if it gives none."""
    name = event.get("Event")
    if name == "OriginateResponse":
        return _originate_response(event, at)
    if name == "Hangup":
        if not _is_originated(event, call_id):
            return None
        values = {
            "hangup_cause": _int(event.get("Cause")),
            "hangup_cause_txt": event.get("Cause-txt") or None,
            "hangup_at": at,
            "channel": event.get("Channel") or None,
            "uniqueid": event.get("Uniqueid") or None,
        }
        if values["hangup_cause"] is None:
            values["hangup_cause"] = 0
        return EventFacts(values, final=True)
    if name == "DialEnd":
        return _dial_end(event, call_id, at)
    if name == "UserEvent":
        return _user_event(event, at)
    if name in QUEUE_CALLER_EVENTS:
        return _queue_caller(event, name, call_id, at)
    return None


def _originate_response(event: Mapping[str, Any], at: dt.datetime) -> EventFacts:
    response = event.get("Response") or None
    values: dict[str, Any] = {
        "originate_response": response,
        "originate_reason": _int(event.get("Reason")),
        "originate_response_at": at,
    }
    if response == "Success":
        values["answered_at"] = at
        uniqueid = event.get("Uniqueid", "")
        if uniqueid and uniqueid != "<unknown>":
            values["uniqueid"] = uniqueid
            values["channel"] = event.get("Channel") or None
        return EventFacts(values)
    return EventFacts(values, originate_failed=True)


def _dial_end(event: Mapping[str, Any], call_id: str, at: dt.datetime) -> EventFacts | None:
    status = event.get("DialStatus") or None
    if "Uniqueid" not in event:
        # The Originate's own dial: no calling channel, the originated channel as Dest.
        if not _is_originated(event, call_id, "Dest"):
            return None
        values: dict[str, Any] = {"dial_status": status}
        if status == "ANSWER":
            values["answered_at"] = at
        return EventFacts(values)
    if _is_originated(event, call_id) and event.get("DestUniqueid") != event.get("Uniqueid"):
        # The originated channel dialled someone: the transfer leg.
        values = {"transfer_status": status}
        if status == "ANSWER":
            values["transfer_answered_at"] = at
        return EventFacts(values)
    return None


def _user_event(event: Mapping[str, Any], at: dt.datetime) -> EventFacts | None:
    kind = event.get("UserEvent")
    if kind not in DIALER_USER_EVENTS:
        return None
    get = event.get
    if kind == "DialerAMD":
        return EventFacts(
            {"amd_status": get("AMDSTATUS") or None, "amd_cause": get("AMDCAUSE") or None}
        )
    if kind == "DialerDTMF":
        digits = (get("DTMF") or "").strip()
        return EventFacts(
            {
                "dtmf": digits if digits and re.fullmatch(r"[0-9*#]+", digits) else None,
                "read_status": get("READSTATUS") or None,
            }
        )
    if kind == "DialerVoicemail":
        return EventFacts({"voicemail_left": True})
    if kind == "DialerTransfer":
        values: dict[str, Any] = {"transfer_requested_at": at, "transfer_source": "ivr"}
        queue = _text(get("TRANSFER_QUEUE"))
        if queue is not None:
            values["transfer_queue"] = queue
        return EventFacts(values)
    if kind == "DialerTransferResult":
        return EventFacts({"transfer_status": get("DIALSTATUS") or None, "transfer_ended_at": at})
    return EventFacts({"recording_file": get("RECORDING_FILE") or None})


def _queue_caller(
    event: Mapping[str, Any], name: str, call_id: str, at: dt.datetime
) -> EventFacts | None:
    # Only the originated channel's own stay in a queue is the call's: a Local channel's ;2
    # half, or a transfer leg queued further on, shares the Linkedid but is not the callee.
    # (AgentComplete comes without any channel when the caller hung up first: uncorrelated,
    # and the call's close ends the transfer instead.)
    if not _is_originated(event, call_id):
        return None
    values: dict[str, Any] = {"transfer_queue": _text(event.get("Queue"))}
    if name == "QueueCallerJoin":
        values["queue_joined_at"] = at
    elif name == "AgentConnect":
        values["transfer_answered_at"] = at
        values["transfer_status"] = "ANSWER"
        values["queue_wait_s"] = _seconds(event.get("HoldTime"))
        values["agent"] = _text(event.get("MemberName")) or _text(event.get("Interface"))
    elif name == "QueueCallerAbandon":
        values["queue_wait_s"] = _seconds(event.get("HoldTime"))
    else:  # AgentComplete
        values["transfer_ended_at"] = at
    return EventFacts(values)


# HoldTime: whole seconds (nine digits stay within the integer column).
_SECONDS = re.compile(r"[0-9]{1,9}")


def _seconds(value: Any) -> int | None:
    """A header's count of seconds; None when it is not one (empty, negative, not digits)."""
    text = value.strip() if isinstance(value, str) else ""
    return int(text) if _SECONDS.fullmatch(text) else None


def _text(value: Any) -> str | None:
    """A header's text, None when empty."""
    text = value.strip() if isinstance(value, str) else ""
    return text or None
