"""The simulated dialplan: which contexts exist and what a channel sent into each one does.

Defaults follow the Asterisk the transcripts were recorded on: `DynamicIVR` runs the dialer's
IVR (exten `s`), `pstn-sim` is the callee network (behaviour from the number's last two digits),
`transfer-sim` dials its extension as a transfer target, and `harness-queue` puts the caller in
the queue named by the extension. `dialer-transfer` and `dialer-queue` are the reference
dialplan's contexts for operator transfers (dialer/asterisk/dialer-ivr.conf): an E.164 number
dialled through the call's trunk, and a queue by name.
"""

from __future__ import annotations

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


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    if not pattern.startswith("_"):
        return re.compile(re.escape(pattern))
    out = []
    body = pattern[1:]
    index = 0
    while index < len(body):
        char = body[index]
        if char == "X":
            out.append("[0-9]")
        elif char == "Z":
            out.append("[1-9]")
        elif char == "N":
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

    def matches(self, exten: str, queues: frozenset[str] = frozenset()) -> bool:
        if self.role is Role.QUEUE:
            return exten in queues
        return any(_pattern_regex(p).fullmatch(exten) for p in self.patterns)


def default_contexts() -> dict[str, Context]:
    return {
        "DynamicIVR": Context(Role.IVR, ("s",)),
        "pstn-sim": Context(Role.CALLEE),
        "transfer-sim": Context(Role.TRANSFER),
        "harness-queue": Context(Role.QUEUE),
        "dialer-transfer": Context(Role.TRANSFER, ("_+X.",)),
        "dialer-queue": Context(Role.QUEUE),
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
