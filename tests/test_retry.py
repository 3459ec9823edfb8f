"""Retry decisions as a table: policy x outcome x attempts used."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dialer.outcomes.retry import (
    DEFAULT_DELAYS,
    ContactStatus,
    RetryPolicy,
    next_step,
)
from dialer.outcomes.rules import RETRYABLE, Outcome

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def later(seconds: int) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("max_attempts", "delays", "outcome", "attempts", "status", "due", "requested"),
    [
        # Retryable outcomes: the default delay while attempts remain, then exhausted.
        (3, {}, Outcome.BUSY, 1, ContactStatus.PENDING, later(600), False),
        (3, {}, Outcome.NO_ANSWER, 2, ContactStatus.PENDING, later(3600), False),
        (3, {}, Outcome.NO_ANSWER, 3, ContactStatus.EXHAUSTED, None, False),
        (3, {}, Outcome.CONGESTION, 4, ContactStatus.EXHAUSTED, None, False),
        (1, {}, Outcome.BUSY, 1, ContactStatus.EXHAUSTED, None, False),
        (3, {}, Outcome.UNKNOWN, 1, ContactStatus.PENDING, later(600), False),
        (3, {}, Outcome.MACHINE_NO_MESSAGE, 1, ContactStatus.PENDING, later(7200), False),
        # The campaign's delays override the defaults.
        (3, {"busy": 90}, Outcome.BUSY, 1, ContactStatus.PENDING, later(90), False),
        (3, {"busy": "120"}, Outcome.BUSY, 1, ContactStatus.PENDING, later(120), False),
        (3, {"no_answer": 90}, Outcome.BUSY, 1, ContactStatus.PENDING, later(600), False),
        # An unusable configured delay falls back to the default.
        (3, {"busy": "soon"}, Outcome.BUSY, 1, ContactStatus.PENDING, later(600), False),
        (3, {"busy": 0}, Outcome.BUSY, 1, ContactStatus.PENDING, later(600), False),
        # Done outcomes.
        (3, {}, Outcome.TRANSFERRED, 1, ContactStatus.COMPLETED, None, False),
        (3, {}, Outcome.HUMAN_NO_PRESS, 1, ContactStatus.COMPLETED, None, False),
        (3, {}, Outcome.HUMAN_OTHER_KEY, 1, ContactStatus.COMPLETED, None, False),
        (3, {}, Outcome.VOICEMAIL_LEFT, 3, ContactStatus.COMPLETED, None, False),
        # A configured delay makes a done outcome retryable for that campaign...
        (3, {"human_no_press": 86400}, Outcome.HUMAN_NO_PRESS, 1, ContactStatus.PENDING,
         later(86400), False),
        (3, {"human_no_press": 86400}, Outcome.HUMAN_NO_PRESS, 3, ContactStatus.EXHAUSTED, None, False),
        # ...except where calling again is never right.
        (3, {"transferred": 60}, Outcome.TRANSFERRED, 1, ContactStatus.COMPLETED, None, False),
        (3, {"opted_out": 60}, Outcome.OPTED_OUT, 1, ContactStatus.DNC, None, False),
        (3, {}, Outcome.OPTED_OUT, 3, ContactStatus.DNC, None, False),
        # The PBX's and the network's endings come back without blaming the callee.
        (3, {}, Outcome.INTERRUPTED, 1, ContactStatus.PENDING, later(900), False),
        (3, {}, Outcome.QUEUE_ABANDONED, 1, ContactStatus.PENDING, later(3600), False),
        # An operator's hang-up is final unless the operator asks for a retry...
        (3, {}, Outcome.OPERATOR_HANGUP, 1, ContactStatus.COMPLETED, None, False),
        (3, {}, Outcome.OPERATOR_HANGUP, 1, ContactStatus.PENDING, later(900), True),
        (3, {"operator_hangup": 60}, Outcome.OPERATOR_HANGUP, 1, ContactStatus.PENDING,
         later(60), True),
        (2, {}, Outcome.OPERATOR_HANGUP, 2, ContactStatus.EXHAUSTED, None, True),
        # ...which never brings back what must not be called again.
        (3, {}, Outcome.TRANSFERRED, 1, ContactStatus.COMPLETED, None, True),
        (3, {}, Outcome.OPTED_OUT, 1, ContactStatus.DNC, None, True),
    ],
)  # fmt: skip
def test_next_step(
    max_attempts: int,
    delays: dict[str, Any],
    outcome: Outcome,
    attempts: int,
    status: ContactStatus,
    due: dt.datetime | None,
    requested: bool,
) -> None:
    policy = RetryPolicy(max_attempts, delays)
    decision = next_step(policy, outcome, attempts, NOW, retry_requested=requested)
    assert decision.contact_status is status
    assert decision.next_attempt_at == due


def test_every_retryable_outcome_has_a_default_delay() -> None:
    # ...and the operator's hang-up has one for when the operator asks for a retry.
    assert set(DEFAULT_DELAYS) == set(RETRYABLE) | {Outcome.OPERATOR_HANGUP}
    assert all(seconds > 0 for seconds in DEFAULT_DELAYS.values())
