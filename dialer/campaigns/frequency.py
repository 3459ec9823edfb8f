"""Frequency rules: how often one number may be called over all campaigns (pure, no I/O).

Two kinds, the limits debt-collection rules impose: at most N attempts sent to a number within
a period ("7 calls in 7 days"), and no call within some hours after a conversation (a call a
person answered). They are checked at the last moment before a send, with the number locked
(`dialer.dialing.originate`); a call they hold back is rescheduled to `held_until`, not failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Outcomes of a call a person answered and took part in (`dialer.outcomes.rules.Outcome`);
# a call still up counts as one too.
CONVERSATION_OUTCOMES = (
    "transferred",
    "human_no_press",
    "human_other_key",
    "opted_out",
    "abandoned",
    "queue_abandoned",
)
# The same rule in SQL, over an attempt `o`: when its conversation began, or NULL. The dispatch
# tick and the last checks before a send both read a number's history with it.
CONVERSATION_AT_SQL = (
    "CASE WHEN o.outcome IN ("
    + ", ".join(f"'{o}'" for o in CONVERSATION_OUTCOMES)
    + ") OR o.status = 'up' THEN o.answered_at END"
)


@dataclass(frozen=True, slots=True)
class FrequencyRule:
    """`max_attempts` within `period`, or (alone) nothing within `after_conversation`."""

    name: str
    max_attempts: int | None = None
    period: dt.timedelta | None = None
    after_conversation: dt.timedelta | None = None

    def __post_init__(self) -> None:
        attempts = self.max_attempts is not None or self.period is not None
        if attempts == (self.after_conversation is not None):
            raise ValueError(
                f"frequency rule {self.name!r}: give either max_attempts and period, or"
                " after_conversation"
            )
        if attempts and (self.max_attempts is None or self.period is None):
            raise ValueError(f"frequency rule {self.name!r}: max_attempts needs a period")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"frequency rule {self.name!r}: max_attempts must be at least 1")
        for field_name in ("period", "after_conversation"):
            value = getattr(self, field_name)
            if value is not None and value <= dt.timedelta(0):
                raise ValueError(f"frequency rule {self.name!r}: {field_name} must be positive")


def lookback(rules: Iterable[FrequencyRule]) -> dt.timedelta:
    """How far back a number's history must be read to judge a call now."""
    spans = [r.period or r.after_conversation or dt.timedelta(0) for r in rules]
    return max(spans, default=dt.timedelta(0))


def held_until(
    rules: Iterable[FrequencyRule],
    at: dt.datetime,
    sent: Sequence[dt.datetime],
    conversations: Sequence[dt.datetime],
) -> tuple[dt.datetime, str] | None:
    """None when a call to a number at `at` breaks no rule; else the earliest instant when it
    breaks none (nothing else being sent meanwhile) and the name of the rule that holds longest.

    `sent`: when the number's earlier attempts were sent; `conversations`: when its answered
    calls were answered, both over all campaigns and at least `lookback(rules)` back. An
    attempt sent at `s` counts against a period `p` at instants before `s + p`.
    """
    latest: tuple[dt.datetime, str] | None = None
    for rule in rules:
        until: dt.datetime | None = None
        if rule.max_attempts is not None and rule.period is not None:
            inside = sorted(s for s in sent if s > at - rule.period)
            if len(inside) >= rule.max_attempts:
                # The call fits once enough of them have left the period.
                until = inside[len(inside) - rule.max_attempts] + rule.period
        elif rule.after_conversation is not None and conversations:
            last = max(conversations)
            if at < last + rule.after_conversation:
                until = last + rule.after_conversation
        if until is not None and (latest is None or until > latest[0]):
            latest = (until, rule.name)
    return latest
