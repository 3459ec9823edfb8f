"""Asterisk's numbers and names: hangup causes, channel states, event categories, truth values."""

from __future__ import annotations

# Q.850 causes Asterisk uses (causes.h) and their texts (channel.c `causes[]`).
CAUSE_UNKNOWN = 0
CAUSE_NORMAL_CLEARING = 16
CAUSE_USER_BUSY = 17
CAUSE_NO_ANSWER = 19
CAUSE_CALL_REJECTED = 21
CAUSE_CONGESTION = 34

CAUSE_TEXT = {
    1: "Unallocated (unassigned) number",
    2: "No route to specified transmit network",
    3: "No route to destination",
    5: "Misdialed trunk prefix",
    6: "Channel unacceptable",
    7: "Call awarded and being delivered in an established channel",
    8: "Pre-empted",
    14: "Number ported elsewhere",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    20: "Subscriber absent",
    21: "Call Rejected",
    22: "Number changed",
    23: "Redirected to new destination",
    26: "Answered elsewhere",
    27: "Destination out of order",
    28: "Invalid number format",
    29: "Facility rejected",
    30: "Response to STATus ENQuiry",
    31: "Normal, unspecified",
    34: "Circuit/channel congestion",
    38: "Network out of order",
    41: "Temporary failure",
    42: "Switching equipment congestion",
    43: "Access information discarded",
    44: "Requested channel not available",
    50: "Facility not subscribed",
    52: "Outgoing call barred",
    54: "Incoming call barred",
    57: "Bearer capability not authorized",
    58: "Bearer capability not available",
    65: "Bearer capability not implemented",
    66: "Channel not implemented",
    69: "Facility not implemented",
    81: "Invalid call reference value",
    88: "Incompatible destination",
    95: "Invalid message unspecified",
    96: "Mandatory information element is missing",
    97: "Message type nonexist.",
    98: "Wrong message",
    99: "Info. element nonexist or not implemented",
    100: "Invalid information element contents",
    101: "Message not compatible with call state",
    102: "Recover on timer expiry",
    103: "Mandatory IE length error",
    111: "Protocol error, unspecified",
    127: "Interworking, unspecified",
}


# AST_SOFTHANGUP_SHUTDOWN: the Cause of the SoftHangupRequest every channel gets when Asterisk
# shuts down or restarts (a soft-hangup flag, not a Q.850 cause).
SOFTHANGUP_SHUTDOWN = 4


def cause_text(cause: int) -> str:
    return CAUSE_TEXT.get(cause, "Unknown")


# OriginateResponse `Reason`: the last control frame seen on the outgoing channel.
REASON_FAILED = 0
REASON_HANGUP = 1
REASON_NO_ANSWER = 3
REASON_ANSWERED = 4
REASON_BUSY = 5
REASON_CONGESTION = 8

# enum ast_channel_state and ast_state2str.
STATE_DOWN = 0
STATE_RING = 4
STATE_RINGING = 5
STATE_UP = 6
STATE_BUSY = 7

STATE_TEXT = {
    0: "Down",
    1: "Rsrvd",
    2: "OffHook",
    3: "Dialing",
    4: "Ring",
    5: "Ringing",
    6: "Up",
    7: "Busy",
    8: "Dialing Offhook",
    9: "Pre-ring",
}

# Event categories (EVENT_FLAG_* in manager.h) and their manager.conf labels.
CATEGORIES = {
    "system": 1 << 0,
    "call": 1 << 1,
    "log": 1 << 2,
    "verbose": 1 << 3,
    "command": 1 << 4,
    "agent": 1 << 5,
    "user": 1 << 6,
    "config": 1 << 7,
    "dtmf": 1 << 8,
    "reporting": 1 << 9,
    "cdr": 1 << 10,
    "dialplan": 1 << 11,
    "originate": 1 << 12,
    "agi": 1 << 13,
    "cc": 1 << 14,
    "aoc": 1 << 15,
    "test": 1 << 16,
    "security": 1 << 17,
    "message": 1 << 18,
}
ALL_CATEGORIES = sum(CATEGORIES.values())
SYSTEM = CATEGORIES["system"]
CALL = CATEGORIES["call"]
AGENT = CATEGORIES["agent"]
USER = CATEGORIES["user"]
DTMF = CATEGORIES["dtmf"]
DIALPLAN = CATEGORIES["dialplan"]
SECURITY = CATEGORIES["security"]

_TRUE = {"yes", "true", "y", "t", "1", "on"}
_FALSE = {"no", "false", "n", "f", "0", "off"}


def is_true(value: str) -> bool:
    """ast_true."""
    return value.strip().lower() in _TRUE


def is_false(value: str) -> bool:
    """ast_false."""
    return value.strip().lower() in _FALSE


def event_mask(text: str) -> int | None:
    """strings_to_mask: a number, on/off, or a list of category names; None when empty."""
    if not text:
        return None
    if text.isdigit():
        return int(text)
    if is_false(text):
        return 0
    if is_true(text):
        return ALL_CATEGORIES
    mask = 0
    for label in text.split(","):
        mask |= CATEGORIES.get(label.strip().lower(), 0)
    return mask


def privilege(category: int) -> str:
    """The `Privilege:` value of an event in one category: `<label>,all`."""
    for label, bit in CATEGORIES.items():
        if bit == category:
            return f"{label},all"
    return "<none>"
