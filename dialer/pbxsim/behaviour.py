"""Policy, no I/O: who is called (dial strings), how the callee behaves, and when things happen.

Timings at speed 1 are the real Asterisk 22 ones measured in shared/ami-transcripts (seconds
after the previous milestone named in each comment); `Timings.scaled(speed)` divides them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from dialer.pbxsim.wire import separate_args


class Callee(Enum):
    """What the called number does, chosen by its last two digits."""

    PRESSES_KEY = "01"
    NO_PRESS = "02"
    MACHINE = "03"
    BUSY = "04"
    NO_ANSWER = "05"
    CONGESTION = "06"
    ANSWERS_THEN_HANGS_UP = "07"
    PRESSES_2 = "08"
    SILENT = "09"
    LONG_LIVED = "99"
    HUMAN = "default"


_BY_DIGITS = {member.value: member for member in Callee if member.value.isdigit()}


def callee_for(number: str) -> Callee:
    """01 presses the press key, 02 nothing, 03 machine, 04 busy, 05 no answer, 06 congestion,
    07 hangs up 1 s after answering, 08 presses 2, 09 silence, 99 stays up a minute (a transfer
    target that outlives the test), anything else a human who stays up a few seconds."""
    return _BY_DIGITS.get(number[-2:], Callee.HUMAN)


ANSWERING = {
    Callee.PRESSES_KEY,
    Callee.NO_PRESS,
    Callee.MACHINE,
    Callee.ANSWERS_THEN_HANGS_UP,
    Callee.PRESSES_2,
    Callee.SILENT,
    Callee.LONG_LIVED,
    Callee.HUMAN,
}
# These answer as soon as they are called; the others ring for `Timings.ring` first.
ANSWERS_AT_ONCE = {Callee.ANSWERS_THEN_HANGS_UP, Callee.SILENT}

# (AMDSTATUS, AMDCAUSE) the dialplan reports; None: the callee hangs up during AMD.
AMD_RESULT: dict[Callee, tuple[str, str] | None] = {
    Callee.MACHINE: ("MACHINE", "LONGGREETING-1500-1500"),
    Callee.SILENT: ("MACHINE", "INITIALSILENCE-2500-2500"),
    Callee.ANSWERS_THEN_HANGS_UP: None,
}
HUMAN_AMD = ("HUMAN", "HUMAN-808-800")


def amd_result(callee: Callee) -> tuple[str, str] | None:
    return AMD_RESULT.get(callee, HUMAN_AMD)


def digit_pressed(callee: Callee, press_key: str) -> str | None:
    if callee is Callee.PRESSES_KEY:
        return press_key
    if callee is Callee.PRESSES_2:
        return "2"
    return None


@dataclass(frozen=True)
class Timings:
    setup: float = 0.006  # Newchannel -> LocalBridge/DialBegin
    reject: float = 0.001  # DialBegin -> busy or congestion
    ring: float = 1.0  # DialBegin -> answer (human, machine)
    instant_answer: float = 0.001  # DialBegin -> answer (07, 09)
    amd_human: float = 1.81  # answer -> DialerAMD HUMAN
    amd_machine: float = 2.36  # answer -> DialerAMD MACHINE LONGGREETING
    amd_silence: float = 2.97  # answer -> DialerAMD MACHINE INITIALSILENCE
    dtmf: float = 4.507  # answer -> DTMFBegin
    dtmf_length: float = 0.25  # DTMFBegin -> DTMFEnd
    after_dtmf: float = 0.0025  # DTMFEnd -> DialerDTMF -> DialerTransfer
    read_timeout: float = 17.27  # answer -> DialerDTMF READSTATUS TIMEOUT
    voicemail_machine: float = 13.76  # answer -> DialerVoicemail (03)
    voicemail_silence: float = 9.61  # answer -> DialerVoicemail (09)
    callee_hangup: float = 1.49  # answer -> callee hangs up (07)
    human_stays: float = 5.0  # answer -> callee hangs up (other numbers)
    target_stays: float = 5.905  # transfer target answer -> its hangup
    long_lived_stays: float = 60.0  # the same for numbers ending in 99
    transfer_timeout: float = 30.0  # Dial(...,30) of the transfer leg
    queue_retry: float = 5.0  # a queue member's ring unanswered -> the caller's next ring (retry)
    recording: float = 0.01  # answer -> MixMonitor starts
    atxfer_feature_gap: float = 0.156  # first feature-code digit -> second
    atxfer_hold: float = 0.1  # last feature-code digit -> Hold
    atxfer_digit_gap: float = 0.06  # between the queued extension digits
    atxfer_dial: float = 3.0  # last digit -> the transfer target is dialled
    auth_failure: float = 1.0  # wrong secret -> `Authentication failed`
    # `core restart now`: every channel hung up -> the Shutdown event (asterisk.c
    # can_safely_quit polls every 0.1 s for the channels to go, then sleeps 1 s).
    shutdown_settle: float = 1.1

    def scaled(self, speed: float) -> Timings:
        if speed <= 0:
            raise ValueError("speed must be positive")
        return Timings(**{f.name: getattr(self, f.name) / speed for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class DialTarget:
    """A dial string split the way its channel driver reads it."""

    tech: str  # "Local", "PJSIP", or the unknown technology as sent
    data: str  # everything after the first '/'
    number: str  # what the callee behaviour is chosen by
    context: str = ""  # Local: the dialplan context the ;2 half starts in
    endpoint: str = ""  # PJSIP: the endpoint (trunk)


def parse_dial_string(channel: str) -> DialTarget | None:
    """`Local/<exten>@<context>[/opts]`, `PJSIP/[<number>@]<endpoint>[/uri]`; None without '/'."""
    tech, sep, data = channel.partition("/")
    if not sep:
        return None
    kind = tech.lower()
    if kind == "local":
        target = data.split("/", 1)[0]
        exten, at, context = target.partition("@")
        return DialTarget("Local", data, exten, context if at else "default")
    if kind == "pjsip":
        target = data.split("/", 1)[0]
        number, at, endpoint = target.rpartition("@")
        if not at:
            number, endpoint = "", target
        return DialTarget("PJSIP", data, number, endpoint=endpoint)
    return DialTarget(tech, data, "")


def dial_target(channel: str) -> DialTarget:
    """What Dial() makes of a dial string; without a '/' it cannot dial (CHANUNAVAIL)."""
    return parse_dial_string(channel) or DialTarget(channel, "", "")


def dialer_variable(variables: Mapping[str, str], upper: str) -> str:
    """A dialer variable, sent in both cases; the uppercase one wins when both are set (the
    reference dialplan's [dialer-ivr-variables])."""
    return variables.get(upper) or variables.get(upper.lower(), "")


def parse_callerid(text: str) -> tuple[str, str]:
    """ast_callerid_parse + ast_shrink_phone_number: (name, number), '' where absent."""
    text = text.strip()
    if not text:
        return "", ""
    start, end = text.find("<"), text.rfind(">")
    if start >= 0 and end > start:
        number = text[start + 1 : end].strip()
        name = text[:start].strip().strip('"').strip()
    elif text.replace("+", "").replace("-", "").replace(" ", "").isdigit():
        name, number = "", text
    else:
        name, number = text.strip('"'), ""
    shrunk = "".join(ch for ch in number if ch not in "-(). ")
    return name, shrunk


def user_event_fields(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers UserEvent(name,key: ${value},...) produces after variable substitution.

    The dialplan splits the substituted text on commas again, so a value with a comma is cut
    there (the rest, having no ':', is dropped) and quotes and backslashes are consumed.
    """
    text = ",".join(f"{key}: {value}" for key, value in fields)
    out = []
    for item in separate_args(text):
        key, sep, value = item.partition(":")
        if sep:
            out.append((key.strip(), value.strip()))
    return out
