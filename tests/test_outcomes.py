"""The outcome, and who ended the call, of every combination of facts that matters, as a
table."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dialer.ami.events import CallFacts
from dialer.outcomes.rules import (
    RETRYABLE,
    Decision,
    EndedBy,
    Outcome,
    decide,
    decide_without_end,
    is_retryable,
)

T = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ANSWERED = {"originate_response": "Success", "originate_reason": 4, "answered_at": T}
HUMAN = {**ANSWERED, "amd_status": "HUMAN", "amd_cause": "HUMAN-808-800"}
HANGUP = {"hangup_cause": 16, "hangup_at": T}


@pytest.mark.parametrize(
    ("facts", "outcome", "ended_by"),
    [
        # Answered: what the IVR reported.
        ({**HUMAN, "dtmf": "9", "read_status": "OK", **HANGUP}, Outcome.OPTED_OUT, EndedBy.IVR),
        ({**HUMAN, "dtmf": "1", "read_status": "OK", "transfer_requested_at": T,
          "transfer_answered_at": T, "transfer_status": "ANSWER", **HANGUP}, Outcome.TRANSFERRED, EndedBy.CALLEE),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, "transfer_status": "ANSWER"},
         Outcome.TRANSFERRED, EndedBy.CALLEE),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, "transfer_status": "BUSY", **HANGUP},
         Outcome.FAILED, EndedBy.IVR),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, "transfer_status": "CHANUNAVAIL"},
         Outcome.FAILED, EndedBy.IVR),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, "transfer_status": "CANCEL", **HANGUP},
         Outcome.ABANDONED, EndedBy.CALLEE),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, **HANGUP}, Outcome.ABANDONED, EndedBy.CALLEE),
        ({**HUMAN, "dtmf": "1", "read_status": "OK", **HANGUP}, Outcome.FAILED, EndedBy.IVR),
        ({**HUMAN, "dtmf": "2", "read_status": "OK", **HANGUP}, Outcome.HUMAN_OTHER_KEY, EndedBy.IVR),
        ({**HUMAN, "read_status": "TIMEOUT", **HANGUP}, Outcome.HUMAN_NO_PRESS, EndedBy.IVR),
        ({**ANSWERED, "amd_status": "NOTSURE", "read_status": "TIMEOUT", **HANGUP},
         Outcome.HUMAN_NO_PRESS, EndedBy.IVR),
        # AMD disabled: straight to the prompt.
        ({**ANSWERED, "read_status": "TIMEOUT", **HANGUP}, Outcome.HUMAN_NO_PRESS, EndedBy.IVR),
        ({**HUMAN, **HANGUP}, Outcome.ABANDONED, EndedBy.CALLEE),
        ({**HUMAN, "read_status": "HANGUP", **HANGUP}, Outcome.ABANDONED, EndedBy.CALLEE),
        ({**ANSWERED, **HANGUP}, Outcome.ABANDONED, EndedBy.CALLEE),
        ({**ANSWERED, "amd_status": "HANGUP", **HANGUP}, Outcome.ABANDONED, EndedBy.CALLEE),
        ({**ANSWERED, "amd_status": "MACHINE", "voicemail_left": True, **HANGUP},
         Outcome.VOICEMAIL_LEFT, EndedBy.IVR),
        ({**ANSWERED, "amd_status": "MACHINE", **HANGUP}, Outcome.MACHINE_NO_MESSAGE, EndedBy.CALLEE),
        # Answered is also implied by IVR facts when the answer itself was missed.
        ({"amd_status": "MACHINE", "voicemail_left": True, **HANGUP}, Outcome.VOICEMAIL_LEFT, EndedBy.IVR),
        ({"dial_status": "ANSWER", "read_status": "TIMEOUT", **HANGUP}, Outcome.HUMAN_NO_PRESS, EndedBy.IVR),
        # A duplicate send's Failure does not undo an answered call.
        ({**HUMAN, "originate_response": "Failure", "originate_reason": 0,
          "read_status": "TIMEOUT", **HANGUP}, Outcome.HUMAN_NO_PRESS, EndedBy.IVR),
        # Unanswered: the Hangup cause first...
        ({"hangup_cause": 17, "originate_reason": 0, "originate_response": "Failure"},
         Outcome.BUSY, EndedBy.CALLEE),
        ({"hangup_cause": 19, "originate_reason": 3}, Outcome.NO_ANSWER, EndedBy.CALLEE),
        ({"hangup_cause": 21, "originate_reason": 0}, Outcome.REJECTED, EndedBy.CALLEE),
        ({"hangup_cause": 34, "originate_reason": 0}, Outcome.CONGESTION, EndedBy.NETWORK),
        ({"hangup_cause": 1, "originate_reason": 0}, Outcome.FAILED, EndedBy.NETWORK),
        ({"hangup_cause": 17, "dial_status": "CONGESTION"}, Outcome.BUSY, EndedBy.CALLEE),
        # ...then DialEnd (Local channels hang up their ;1 half with cause 0)...
        ({"hangup_cause": 0, "dial_status": "BUSY", "originate_reason": 5}, Outcome.BUSY, EndedBy.CALLEE),
        ({"hangup_cause": 16, "dial_status": "NOANSWER", "originate_reason": 0},
         Outcome.NO_ANSWER, EndedBy.CALLEE),
        ({"hangup_cause": 0, "dial_status": "CONGESTION", "originate_reason": 8},
         Outcome.CONGESTION, EndedBy.NETWORK),
        ({"dial_status": "CHANUNAVAIL", "originate_reason": 3}, Outcome.FAILED, EndedBy.NETWORK),
        # ...and the Reason last (a PJSIP 486 gives Reason 0, which alone reads as failed).
        ({"originate_response": "Failure", "originate_reason": 5}, Outcome.BUSY, EndedBy.CALLEE),
        ({"originate_response": "Failure", "originate_reason": 8}, Outcome.CONGESTION, EndedBy.NETWORK),
        ({"originate_response": "Failure", "originate_reason": 3}, Outcome.NO_ANSWER, EndedBy.CALLEE),
        ({"originate_response": "Failure", "originate_reason": 1}, Outcome.REJECTED, EndedBy.CALLEE),
        ({"originate_response": "Failure", "originate_reason": 0}, Outcome.FAILED, EndedBy.NETWORK),
        ({"hangup_cause": 0}, Outcome.UNKNOWN, EndedBy.PBX),
        ({}, Outcome.UNKNOWN, EndedBy.PBX),
        # The PBX cut an answered call: cause 0 (a callee's own hang-up carries 16).
        ({**HUMAN, "hangup_cause": 0, "hangup_at": T}, Outcome.INTERRUPTED, EndedBy.PBX),
        ({**ANSWERED, "hangup_cause": 0}, Outcome.INTERRUPTED, EndedBy.PBX),
        ({**HUMAN, "read_status": "TIMEOUT", "hangup_cause": 0}, Outcome.HUMAN_NO_PRESS,
         EndedBy.PBX),
        # ...or went down while it rang (the listener saw it shut down or lost it).
        ({"originate_response": "Failure", "originate_reason": 3, "hangup_cause": 0,
          "pbx_down_at": T}, Outcome.INTERRUPTED, EndedBy.PBX),
        ({**HUMAN, "pbx_down_at": T, **HANGUP}, Outcome.INTERRUPTED, EndedBy.PBX),
        # An operator's hang-up is the operator's, whatever the cause it was sent with...
        ({**HUMAN, "operator_hangup_at": T, **HANGUP}, Outcome.OPERATOR_HANGUP,
         EndedBy.OPERATOR),
        ({**HUMAN, "operator_hangup_at": T, "hangup_cause": 21}, Outcome.OPERATOR_HANGUP,
         EndedBy.OPERATOR),
        ({**HUMAN, "operator_hangup_at": T, "hangup_cause": 0}, Outcome.OPERATOR_HANGUP,
         EndedBy.OPERATOR),
        ({"operator_hangup_at": T, "originate_response": "Failure", "originate_reason": 3},
         Outcome.OPERATOR_HANGUP, EndedBy.OPERATOR),
        # ...but does not undo what the call had already settled.
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, "transfer_answered_at": T,
          "operator_hangup_at": T, **HANGUP}, Outcome.TRANSFERRED, EndedBy.OPERATOR),
        ({**HUMAN, "read_status": "TIMEOUT", "operator_hangup_at": T, **HANGUP},
         Outcome.HUMAN_NO_PRESS, EndedBy.OPERATOR),
        # Operator transfers: no key pressed; a queue left before an agent answered.
        ({**HUMAN, "read_status": "TIMEOUT", "transfer_requested_at": T,
          "transfer_answered_at": T, "transfer_source": "operator", **HANGUP},
         Outcome.TRANSFERRED, EndedBy.CALLEE),
        ({**HUMAN, "transfer_requested_at": T, "transfer_source": "operator",
          "transfer_queue": "support", **HANGUP}, Outcome.QUEUE_ABANDONED, EndedBy.CALLEE),
        ({**HUMAN, "transfer_requested_at": T, "transfer_source": "operator",
          "transfer_queue": "support", "transfer_status": "ANSWER", "transfer_answered_at": T,
          **HANGUP}, Outcome.TRANSFERRED, EndedBy.CALLEE),
        ({**HUMAN, "transfer_requested_at": T, "transfer_source": "operator",
          "transfer_queue": "support", "hangup_cause": 0}, Outcome.INTERRUPTED, EndedBy.PBX),
    ],
)  # fmt: skip
def test_decide(facts: dict[str, Any], outcome: Outcome, ended_by: EndedBy) -> None:
    assert decide(CallFacts(**facts), press_key="1", opt_out_key="9") == Decision(outcome, ended_by)


def test_opt_out_needs_an_opt_out_key() -> None:
    facts = CallFacts(**HUMAN, dtmf="9", read_status="OK", **HANGUP)
    assert decide(facts, press_key="1", opt_out_key=None).outcome is Outcome.HUMAN_OTHER_KEY


def test_press_key_is_the_campaigns() -> None:
    facts = CallFacts(**HUMAN, dtmf="5", read_status="OK", transfer_requested_at=T,
                      transfer_status="ANSWER", **HANGUP)  # fmt: skip
    assert decide(facts, press_key="5", opt_out_key="9").outcome is Outcome.TRANSFERRED
    facts = CallFacts(**HUMAN, dtmf="1", read_status="OK", **HANGUP)
    assert decide(facts, press_key="5", opt_out_key="9").outcome is Outcome.HUMAN_OTHER_KEY


@pytest.mark.parametrize(
    ("facts", "outcome", "ended_by"),
    [
        # The end was seen: the ordinary decision.
        ({"hangup_cause": 19}, Outcome.NO_ANSWER, EndedBy.CALLEE),
        ({"originate_response": "Failure", "originate_reason": 5}, Outcome.BUSY, EndedBy.CALLEE),
        # Not seen, but what happened already settles it.
        ({**HUMAN, "dtmf": "9"}, Outcome.OPTED_OUT, EndedBy.DIALER),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, "transfer_answered_at": T},
         Outcome.TRANSFERRED, EndedBy.DIALER),
        ({**HUMAN, "dtmf": "2"}, Outcome.HUMAN_OTHER_KEY, EndedBy.DIALER),
        ({**HUMAN, "read_status": "TIMEOUT"}, Outcome.HUMAN_NO_PRESS, EndedBy.DIALER),
        ({**ANSWERED, "amd_status": "MACHINE", "voicemail_left": True}, Outcome.VOICEMAIL_LEFT, EndedBy.DIALER),
        # Anything could have followed these.
        ({**HUMAN}, Outcome.UNKNOWN, EndedBy.DIALER),
        ({**ANSWERED, "amd_status": "MACHINE"}, Outcome.UNKNOWN, EndedBy.DIALER),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T}, Outcome.UNKNOWN, EndedBy.DIALER),
        ({"dial_status": "BUSY"}, Outcome.UNKNOWN, EndedBy.DIALER),
        ({}, Outcome.UNKNOWN, EndedBy.DIALER),
        # What the dialer knows it did still counts.
        ({**HUMAN, "operator_hangup_at": T}, Outcome.OPERATOR_HANGUP, EndedBy.OPERATOR),
        ({**HUMAN, "read_status": "TIMEOUT", "pbx_down_at": T}, Outcome.HUMAN_NO_PRESS,
         EndedBy.PBX),
        # The PBX went down with the call up and nothing settles it: lost with the PBX.
        ({**HUMAN, "pbx_down_at": T}, Outcome.UNKNOWN, EndedBy.PBX),
        ({"pbx_down_at": T}, Outcome.UNKNOWN, EndedBy.PBX),
        ({**ANSWERED, "amd_status": "MACHINE", "pbx_down_at": T}, Outcome.UNKNOWN, EndedBy.PBX),
        ({**HUMAN, "dtmf": "1", "transfer_requested_at": T, "pbx_down_at": T}, Outcome.UNKNOWN,
         EndedBy.PBX),
    ],
)  # fmt: skip
def test_decide_without_end(facts: dict[str, Any], outcome: Outcome, ended_by: EndedBy) -> None:
    decision = decide_without_end(CallFacts(**facts), press_key="1", opt_out_key="9")
    assert decision == Decision(outcome, ended_by)


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
        (Outcome.QUEUE_ABANDONED, True),
        (Outcome.INTERRUPTED, True),
        (Outcome.OPERATOR_HANGUP, False),
    ],
)
def test_retryable(outcome: Outcome, retryable: bool) -> None:
    assert is_retryable(outcome) is retryable


def test_taxonomy_matches_the_report_views() -> None:
    from dialer.reports import queries as reports

    assert tuple(o.value for o in Outcome) == reports.OUTCOMES
    assert RETRYABLE.issubset(set(Outcome))


def test_ended_by_matches_the_schema() -> None:
    from dialer.models import ENDED_BY

    assert tuple(e.value for e in EndedBy) == ENDED_BY
