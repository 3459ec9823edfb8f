"""The outcome of every combination of facts that matters, as a table."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dialer.events import CallFacts
from dialer.outcomes import RETRYABLE, Outcome, decide, decide_without_end, is_retryable

T = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ANSWERED = {"originate_response": "Success", "originate_reason": 4, "answered_at": T}
HUMAN = {**ANSWERED, "amd_status": "HUMAN", "amd_cause": "HUMAN-808-800"}
HANGUP = {"hangup_cause": 16, "hangup_at": T}


@pytest.mark.parametrize(
    ("facts", "outcome"),
    [
        # Answered: what the IVR reported.
        ({**HUMAN, "dtmf": "9", "read_status": "OK", **HANGUP}, Outcome.OPTED_OUT),
        ({**HUMAN, "dtmf": "1", "read_status": "OK", "transfer_requested_at": T,
          "transfer_answered_at": T, "transfer_status": "ANSWER", **HANGUP}, Outcome.TRANSFERRED),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, "transfer_status": "ANSWER"},
         Outcome.TRANSFERRED),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, "transfer_status": "BUSY", **HANGUP},
         Outcome.FAILED),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, "transfer_status": "CHANUNAVAIL"},
         Outcome.FAILED),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, "transfer_status": "CANCEL", **HANGUP},
         Outcome.ABANDONED),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, **HANGUP}, Outcome.ABANDONED),
        ({**HUMAN, "dtmf": "1", "read_status": "OK", **HANGUP}, Outcome.FAILED),
        ({**HUMAN, "dtmf": "2", "read_status": "OK", **HANGUP}, Outcome.HUMAN_OTHER_KEY),
        ({**HUMAN, "read_status": "TIMEOUT", **HANGUP}, Outcome.HUMAN_NO_PRESS),
        ({**ANSWERED, "amd_status": "NOTSURE", "read_status": "TIMEOUT", **HANGUP},
         Outcome.HUMAN_NO_PRESS),
        # AMD disabled: straight to the prompt.
        ({**ANSWERED, "read_status": "TIMEOUT", **HANGUP}, Outcome.HUMAN_NO_PRESS),
        ({**HUMAN, **HANGUP}, Outcome.ABANDONED),
        ({**HUMAN, "read_status": "HANGUP", **HANGUP}, Outcome.ABANDONED),
        ({**ANSWERED, **HANGUP}, Outcome.ABANDONED),
        ({**ANSWERED, "amd_status": "HANGUP", **HANGUP}, Outcome.ABANDONED),
        ({**ANSWERED, "amd_status": "MACHINE", "voicemail_left": True, **HANGUP},
         Outcome.VOICEMAIL_LEFT),
        ({**ANSWERED, "amd_status": "MACHINE", **HANGUP}, Outcome.MACHINE_NO_MESSAGE),
        # Answered is also implied by IVR facts when the answer itself was missed.
        ({"amd_status": "MACHINE", "voicemail_left": True, **HANGUP}, Outcome.VOICEMAIL_LEFT),
        ({"dial_status": "ANSWER", "read_status": "TIMEOUT", **HANGUP}, Outcome.HUMAN_NO_PRESS),
        # A duplicate send's Failure does not undo an answered call.
        ({**HUMAN, "originate_response": "Failure", "originate_reason": 0,
          "read_status": "TIMEOUT", **HANGUP}, Outcome.HUMAN_NO_PRESS),
        # Unanswered: the Hangup cause first...
        ({"hangup_cause": 17, "originate_reason": 0, "originate_response": "Failure"},
         Outcome.BUSY),
        ({"hangup_cause": 19, "originate_reason": 3}, Outcome.NO_ANSWER),
        ({"hangup_cause": 21, "originate_reason": 0}, Outcome.REJECTED),
        ({"hangup_cause": 34, "originate_reason": 0}, Outcome.CONGESTION),
        ({"hangup_cause": 1, "originate_reason": 0}, Outcome.FAILED),
        ({"hangup_cause": 17, "dial_status": "CONGESTION"}, Outcome.BUSY),
        # ...then DialEnd (Local channels hang up their ;1 half with cause 0)...
        ({"hangup_cause": 0, "dial_status": "BUSY", "originate_reason": 5}, Outcome.BUSY),
        ({"hangup_cause": 16, "dial_status": "NOANSWER", "originate_reason": 0},
         Outcome.NO_ANSWER),
        ({"hangup_cause": 0, "dial_status": "CONGESTION", "originate_reason": 8},
         Outcome.CONGESTION),
        ({"dial_status": "CHANUNAVAIL", "originate_reason": 3}, Outcome.FAILED),
        # ...and the Reason last (a PJSIP 486 gives Reason 0, which alone reads as failed).
        ({"originate_response": "Failure", "originate_reason": 5}, Outcome.BUSY),
        ({"originate_response": "Failure", "originate_reason": 8}, Outcome.CONGESTION),
        ({"originate_response": "Failure", "originate_reason": 3}, Outcome.NO_ANSWER),
        ({"originate_response": "Failure", "originate_reason": 1}, Outcome.REJECTED),
        ({"originate_response": "Failure", "originate_reason": 0}, Outcome.FAILED),
        ({"hangup_cause": 0}, Outcome.UNKNOWN),
        ({}, Outcome.UNKNOWN),
    ],
)  # fmt: skip
def test_decide(facts: dict[str, Any], outcome: Outcome) -> None:
    assert decide(CallFacts(**facts), press_key="1", opt_out_key="9") is outcome


def test_opt_out_needs_an_opt_out_key() -> None:
    facts = CallFacts(**HUMAN, dtmf="9", read_status="OK", **HANGUP)
    assert decide(facts, press_key="1", opt_out_key=None) is Outcome.HUMAN_OTHER_KEY


def test_press_key_is_the_campaigns() -> None:
    facts = CallFacts(**HUMAN, dtmf="5", read_status="OK", transfer_requested_at=T,
                      transfer_status="ANSWER", **HANGUP)  # fmt: skip
    assert decide(facts, press_key="5", opt_out_key="9") is Outcome.TRANSFERRED
    facts = CallFacts(**HUMAN, dtmf="1", read_status="OK", **HANGUP)
    assert decide(facts, press_key="5", opt_out_key="9") is Outcome.HUMAN_OTHER_KEY


@pytest.mark.parametrize(
    ("facts", "outcome"),
    [
        # The end was seen: the ordinary decision.
        ({"hangup_cause": 19}, Outcome.NO_ANSWER),
        ({"originate_response": "Failure", "originate_reason": 5}, Outcome.BUSY),
        # Not seen, but what happened already settles it.
        ({**HUMAN, "dtmf": "9"}, Outcome.OPTED_OUT),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, "transfer_answered_at": T},
         Outcome.TRANSFERRED),
        ({**HUMAN, "dtmf": "2"}, Outcome.HUMAN_OTHER_KEY),
        ({**HUMAN, "read_status": "TIMEOUT"}, Outcome.HUMAN_NO_PRESS),
        ({**ANSWERED, "amd_status": "MACHINE", "voicemail_left": True}, Outcome.VOICEMAIL_LEFT),
        # Anything could have followed these.
        ({**HUMAN}, Outcome.UNKNOWN),
        ({**ANSWERED, "amd_status": "MACHINE"}, Outcome.UNKNOWN),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T}, Outcome.UNKNOWN),
        ({"dial_status": "BUSY"}, Outcome.UNKNOWN),
        ({}, Outcome.UNKNOWN),
    ],
)  # fmt: skip
def test_decide_without_end(facts: dict[str, Any], outcome: Outcome) -> None:
    assert decide_without_end(CallFacts(**facts), press_key="1", opt_out_key="9") is outcome


@pytest.mark.parametrize(
    ("outcome", "retryable"),
    [
        (Outcome.TRANSFERRED, False),
        (Outcome.HUMAN_NO_PRESS, False),
        (Outcome.HUMAN_OTHER_KEY, False),
        (Outcome.OPTED_OUT, False),
        (Outcome.VOICEMAIL_LEFT, False),
        (Outcome.MACHINE_NO_MESSAGE, True),
        (Outcome.BUSY, True),
        (Outcome.NO_ANSWER, True),
        (Outcome.CONGESTION, True),
        (Outcome.REJECTED, True),
        (Outcome.FAILED, True),
        (Outcome.ABANDONED, True),
        (Outcome.UNKNOWN, True),
    ],
)
def test_retryable(outcome: Outcome, retryable: bool) -> None:
    assert is_retryable(outcome) is retryable


def test_taxonomy_matches_the_report_views() -> None:
    from dialer import reports

    assert tuple(o.value for o in Outcome) == reports.OUTCOMES
    assert RETRYABLE.issubset(set(Outcome))
