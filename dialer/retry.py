"""What happens to a contact after an attempt's outcome (pure): retry later, done, or exhausted.

A campaign's policy is its `max_attempts` and `retry_delays` ({outcome: seconds}). Retryable
outcomes (`dialer.outcomes.RETRYABLE`) come back after the campaign's delay for that outcome, or
the default below. A delay configured for an outcome that is not retryable by default (say
`human_no_press=1d`) makes it retryable for that campaign, except for outcomes that must never
be called again: a transfer that happened and an opt-out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dialer.outcomes import Outcome, is_retryable

DEFAULT_DELAYS: dict[str, int] = {
    Outcome.BUSY: 600,
    Outcome.NO_ANSWER: 3600,
    Outcome.CONGESTION: 300,
    Outcome.FAILED: 900,
    Outcome.REJECTED: 7200,
    Outcome.ABANDONED: 3600,
    Outcome.MACHINE_NO_MESSAGE: 7200,
    Outcome.UNKNOWN: 600,
}
# Every retryable outcome has a default above; this covers one added to the taxonomy later.
FALLBACK_DELAY = 3600
NEVER_RETRIED = frozenset({Outcome.TRANSFERRED, Outcome.OPTED_OUT})


class ContactStatus(StrEnum):
    PENDING = "pending"  # due again at next_attempt_at
    COMPLETED = "completed"
    EXHAUSTED = "exhausted"  # retryable, but no attempts left
    DNC = "dnc"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    retry_delays: Mapping[str, Any] = field(default_factory=dict)

    def delay_for(self, outcome: str) -> int | None:
        """Seconds before the next attempt after `outcome`, or None if it is not retried."""
        if outcome in NEVER_RETRIED:
            return None
        configured = self.retry_delays.get(outcome)
        if configured is not None:
            try:
                seconds = int(configured)
            except (TypeError, ValueError):
                seconds = 0
            if seconds > 0:
                return seconds
        if not is_retryable(outcome):
            return None
        return DEFAULT_DELAYS.get(outcome, FALLBACK_DELAY)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    contact_status: ContactStatus
    next_attempt_at: dt.datetime | None = None  # set for PENDING only


def next_step(policy: RetryPolicy, outcome: str, attempts: int, now: dt.datetime) -> RetryDecision:
    """The contact's new state after an attempt ended with `outcome`.

    attempts: attempts used so far, this one included (`contacts.attempts`).
    """
    if outcome == Outcome.OPTED_OUT:
        return RetryDecision(ContactStatus.DNC)
    delay = policy.delay_for(outcome)
    if delay is None:
        return RetryDecision(ContactStatus.COMPLETED)
    if attempts >= policy.max_attempts:
        return RetryDecision(ContactStatus.EXHAUSTED)
    return RetryDecision(ContactStatus.PENDING, now + dt.timedelta(seconds=delay))
