"""The simulated dialplan: which contexts exist and what a channel sent into each one does.

Defaults follow the Asterisk the transcripts were recorded on: `DynamicIVR` runs the dialer's
IVR (exten `s`), `pstn-sim` is the callee network (behaviour from the number's last two digits),
`transfer-sim` dials its extension as a transfer target, and `harness-queue` puts the caller in
the queue named by the extension. `dialer-transfer` and `dialer-queue` are the reference
dialplan's contexts for operator transfers (dialer/asterisk/dialer-ivr.conf): an E.164 number
dialled through the call's trunk (DIALER_TRANSFER_DIAL when the dialer set it on the channel),
and a queue by name.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from enum import Enum


class Role(Enum):
    IVR = "ivr"  # the dialer's IVR: AMD, prompt, DTMF, transfer, voicemail UserEvents
    CALLEE = "callee"  # Local/<number>@ctx reaches a simulated callee
    TRANSFER = "transfer"  # a channel sent here dials <exten> and is bridged to it
    QUEUE = "queue"  # a channel sent here waits in queue <exten>


# Extension patterns: a literal, or `_` + Asterisk pattern letters (X, Z, N, [..], '.', '!').
NUMBER_PATTERN = "_[+0-9*#]."
# The queue contexts' extension (the reference dialplan's dialer-queue: Queue(${EXTEN})).
QUEUE_PATTERN = "_[0-9A-Za-z]."

# What ShowDialPlan lists for an extension of each kind of context: (application, data) per
# priority from 1, after the reference dialplan (dialer/asterisk/dialer-ivr.conf).
ROLE_PRIORITIES: dict[Role, tuple[tuple[str, str], ...]] = {
    Role.IVR: (
        ("NoOp", "dialer call ${custom_call_id}${CUSTOM_CALL_ID}"),
        ("Gosub", "dialer-ivr-variables,s,1"),
        ("Answer", ""),
        ("AMD", ""),
        ("Read", "DTMF_DIGIT,${IVR_FILE},1,,1,10"),
        ("Hangup", ""),
    ),
    Role.CALLEE: (("Goto", "${CONTEXT}-behaviour,${EXTEN:-2},1"),),
    Role.TRANSFER: (
        ("NoOp", "dialer transfer of ${CUSTOM_CALL_ID} to ${EXTEN}"),
        ("Dial", "${DIALER_TRANSFER_DIAL},30"),
        ("Hangup", ""),
    ),
    Role.QUEUE: (
        ("NoOp", "dialer transfer of ${CUSTOM_CALL_ID} to queue ${EXTEN}"),
        ("Queue", "${EXTEN}"),
        ("Hangup", ""),
    ),
}


def extension_matches(pattern: str, exten: str) -> bool:
    """ast_extension_match: `exten` is the extension `pattern` names (a literal, or a pattern)."""
    return _pattern_regex(pattern).fullmatch(exten) is not None


@functools.lru_cache(maxsize=256)
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    if not pattern.startswith("_"):
        return re.compile(re.escape(pattern))
    out = []
    body = pattern[1:]
    index = 0
    while index < len(body):
        char = body[index]
        letter = char.upper()  # pattern letters are matched in any case
        if letter == "X":
            out.append("[0-9]")
        elif letter == "Z":
            out.append("[1-9]")
        elif letter == "N":
            out.append("[2-9]")
        elif char == ".":
            out.append(".+")
        elif char == "!":
            out.append(".*")
        elif char == "[":
            end = body.index("]", index)
            out.append("[" + body[index + 1 : end].replace("\\", "\\\\") + "]")
            index = end
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("".join(out))


@dataclass(frozen=True)
class Context:
    role: Role
    patterns: tuple[str, ...] = (NUMBER_PATTERN,)
    # TRANSFER contexts of the reference dialplan: the channel variable holding the full dial
    # string; unset, `PJSIP/${TRANSFER_PREFIX}${EXTEN}@${TRUNK}` is dialled.
    dial_variable: str = ""

    def matches(self, exten: str, queues: frozenset[str] = frozenset()) -> bool:
        """Whether a channel sent here runs: in a queue context, only into a queue that exists
        (Queue() of an unknown queue fails and the next priority hangs up)."""
        if self.role is Role.QUEUE:
            return exten in queues
        return any(extension_matches(p, exten) for p in self.patterns)

    def extensions(self, exten: str = "") -> list[str]:
        """The context's extensions (patterns) that match `exten` (all of them without one), as
        ShowDialPlan lists them: by the dialplan alone, queues or not."""
        return [p for p in self.patterns if not exten or extension_matches(p, exten)]

    def priorities(self) -> tuple[tuple[str, str], ...]:
        return ROLE_PRIORITIES[self.role]


def default_contexts() -> dict[str, Context]:
    return {
        "DynamicIVR": Context(Role.IVR, ("s",)),
        "pstn-sim": Context(Role.CALLEE),
        "transfer-sim": Context(Role.TRANSFER),
        "harness-queue": Context(Role.QUEUE, (QUEUE_PATTERN,)),
        "dialer-transfer": Context(Role.TRANSFER, ("_+X.",), "DIALER_TRANSFER_DIAL"),
        "dialer-queue": Context(Role.QUEUE, (QUEUE_PATTERN,)),
    }


@dataclass(frozen=True)
class Dialplan:
    contexts: dict[str, Context] = field(default_factory=default_contexts)

    def context(self, name: str) -> Context | None:
        return self.contexts.get(name)

    def exists(self, context: str, exten: str, queues: frozenset[str] = frozenset()) -> bool:
        """ast_exists_extension for the simulated contexts."""
        found = self.contexts.get(context)
        return found is not None and found.matches(exten, queues)
