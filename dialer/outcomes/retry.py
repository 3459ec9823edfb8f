"""What happens to a contact after an attempt's outcome (pure): retry later, done, or exhausted.

A campaign's policy is its `max_attempts` and `retry_delays` ({outcome: seconds}). Retryable
outcomes (`dialer.outcomes.rules.RETRYABLE`) come back after the campaign's delay for that outcome, or
the default below. A delay configured for an outcome that is not retryable by default (say
`human_no_press=1d`) makes it retryable for that campaign, except for outcomes that must never
be called again: a transfer that happened and an opt-out.

An operator's hang-up (`operator_hangup`) is final unless the operator asked for a retry
(`dialer call hangup --retry`) or the campaign configures a delay for it; outcomes the PBX or
the network caused (`interrupted`, `congestion`, `failed`) come back like any retryable outcome,
and none of them blames the callee.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dialer.outcomes.rules import Outcome, is_retryable

DEFAULT_DELAYS: dict[str, int] = {
    Outcome.BUSY: 600,
    Outcome.NO_ANSWER: 3600,
    Outcome.CONGESTION: 300,
    Outcome.FAILED: 900,
    Outcome.REJECTED: 7200,
    Outcome.ABANDONED: 3600,
    Outcome.QUEUE_ABANDONED: 3600,
    Outcome.MACHINE_NO_MESSAGE: 7200,
    Outcome.INTERRUPTED: 900,
    Outcome.UNKNOWN: 600,
    # Only when the operator asked for a retry (it is not retryable by default).
    Outcome.OPERATOR_HANGUP: 900,
}
# Every retryable outcome has a default above; this covers one added to the taxonomy later.
FALLBACK_DELAY = 3600
NEVER_RETRIED = frozenset({Outcome.TRANSFERRED, Outcome.OPTED_OUT})
# In a campaign that dials alternate numbers, the attempt after one of these goes to the
# contact's next number: nobody took the call at this one.
NEXT_NUMBER_AFTER = frozenset({Outcome.BUSY, Outcome.NO_ANSWER, Outcome.FAILED})


class ContactStatus(StrEnum):
    PENDING = "pending"  # due again at next_attempt_at
    COMPLETED = "completed"
    EXHAUSTED = "exhausted"  # retryable, but no attempts left
    DNC = "dnc"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    retry_delays: Mapping[str, Any] = field(default_factory=dict)

    def delay_for(self, outcome: str, *, requested: bool = False) -> int | None:
        """Seconds before the next attempt after `outcome`, or None if it is not retried.
        requested: an operator asked for this contact to be called again."""
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
        if not (requested or is_retryable(outcome)):
            return None
        return DEFAULT_DELAYS.get(outcome, FALLBACK_DELAY)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    contact_status: ContactStatus
    next_attempt_at: dt.datetime | None = None  # set for PENDING only


def next_step(
    policy: RetryPolicy,
    outcome: str,
    attempts: int,
    now: dt.datetime,
    *,
    retry_requested: bool = False,
) -> RetryDecision:
    """The contact's new state after an attempt ended with `outcome`.

    attempts: attempts used so far, this one included (`contacts.attempts`).
    retry_requested: the operator who ended the call asked for another attempt; the
    campaign's max attempts still apply.
    """
    if outcome == Outcome.OPTED_OUT:
        return RetryDecision(ContactStatus.DNC)
    delay = policy.delay_for(outcome, requested=retry_requested)
    if delay is None:
        return RetryDecision(ContactStatus.COMPLETED)
    if attempts >= policy.max_attempts:
        return RetryDecision(ContactStatus.EXHAUSTED)
    return RetryDecision(ContactStatus.PENDING, now + dt.timedelta(seconds=delay))
