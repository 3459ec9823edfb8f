"""Retry decisions as a table: policy x outcome x attempts used."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dialer.outcomes import RETRYABLE, Outcome
from dialer.retry import (
    DEFAULT_DELAYS,
    ContactStatus,
    RetryPolicy,
    next_step,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def later(seconds: int) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("max_attempts", "delays", "outcome", "attempts", "status", "due"),
    [
        # Retryable outcomes: the default delay while attempts remain, then exhausted.
        (3, {}, Outcome.BUSY, 1, ContactStatus.PENDING, later(600)),
        (3, {}, Outcome.NO_ANSWER, 2, ContactStatus.PENDING, later(3600)),
        (3, {}, Outcome.NO_ANSWER, 3, ContactStatus.EXHAUSTED, None),
        (3, {}, Outcome.CONGESTION, 4, ContactStatus.EXHAUSTED, None),
        (1, {}, Outcome.BUSY, 1, ContactStatus.EXHAUSTED, None),
        (3, {}, Outcome.UNKNOWN, 1, ContactStatus.PENDING, later(600)),
        (3, {}, Outcome.MACHINE_NO_MESSAGE, 1, ContactStatus.PENDING, later(7200)),
        # The campaign's delays override the defaults.
        (3, {"busy": 90}, Outcome.BUSY, 1, ContactStatus.PENDING, later(90)),
        (3, {"busy": "120"}, Outcome.BUSY, 1, ContactStatus.PENDING, later(120)),
        (3, {"no_answer": 90}, Outcome.BUSY, 1, ContactStatus.PENDING, later(600)),
        # An unusable configured delay falls back to the default.
        (3, {"busy": "soon"}, Outcome.BUSY, 1, ContactStatus.PENDING, later(600)),
        (3, {"busy": 0}, Outcome.BUSY, 1, ContactStatus.PENDING, later(600)),
        # Done outcomes.
        (3, {}, Outcome.TRANSFERRED, 1, ContactStatus.COMPLETED, None),
        (3, {}, Outcome.HUMAN_NO_PRESS, 1, ContactStatus.COMPLETED, None),
        (3, {}, Outcome.HUMAN_OTHER_KEY, 1, ContactStatus.COMPLETED, None),
        (3, {}, Outcome.VOICEMAIL_LEFT, 3, ContactStatus.COMPLETED, None),
        # A configured delay makes a done outcome retryable for that campaign...
        (3, {"human_no_press": 86400}, Outcome.HUMAN_NO_PRESS, 1, ContactStatus.PENDING,
         later(86400)),
        (3, {"human_no_press": 86400}, Outcome.HUMAN_NO_PRESS, 3, ContactStatus.EXHAUSTED, None),
        # ...except where calling again is never right.
        (3, {"transferred": 60}, Outcome.TRANSFERRED, 1, ContactStatus.COMPLETED, None),
        (3, {"opted_out": 60}, Outcome.OPTED_OUT, 1, ContactStatus.DNC, None),
        (3, {}, Outcome.OPTED_OUT, 3, ContactStatus.DNC, None),
    ],
)  # fmt: skip
def test_next_step(
    max_attempts: int,
    delays: dict[str, Any],
    outcome: Outcome,
    attempts: int,
    status: ContactStatus,
    due: dt.datetime | None,
) -> None:
    decision = next_step(RetryPolicy(max_attempts, delays), outcome, attempts, NOW)
    assert decision.contact_status is status
    assert decision.next_attempt_at == due


def test_every_retryable_outcome_has_a_default_delay() -> None:
    assert set(DEFAULT_DELAYS) == set(RETRYABLE)
    assert all(seconds > 0 for seconds in DEFAULT_DELAYS.values())
