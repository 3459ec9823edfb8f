"""A call's outcome and who ended it, as a pure function of its facts.

One taxonomy, each outcome retryable or not, and with it who ended the call (`EndedBy`): the
callee, the dialer's IVR, an operator, the PBX, the network, or the dialer's reconciliation.

What the dialer did itself comes first, since no event says it: an operator's hang-up (the
fact is written before the AMI Hangup is sent) ends the call as `operator_hangup` unless the
call had already settled its outcome; a PBX that shut down or was lost while the call ended
gives `interrupted`. Answered calls are then judged by what the IVR reported (opt-out,
transfer, key pressed, voicemail, AMD, prompt finished); an answered call that ends with hang-up
cause 0 before any of that was cut by the PBX (a restart, an AMI Hangup without a cause), since
a callee's own hang-up carries cause 16. Unanswered calls are judged by, in this order: the
originated channel's Hangup cause, the Originate's DialEnd status, and last the
OriginateResponse Reason, which is the least reliable (a PJSIP 486 Busy gives Reason 0, an
unreachable trunk Reason 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dialer.ami.events import CallFacts


class Outcome(StrEnum):
    TRANSFERRED = "transferred"  # pressed the key, the transfer target answered
    HUMAN_NO_PRESS = "human_no_press"  # heard the whole prompt, pressed nothing
    HUMAN_OTHER_KEY = "human_other_key"  # pressed a key that is neither press nor opt-out key
    OPTED_OUT = "opted_out"  # pressed the opt-out key: number added to do-not-call
    VOICEMAIL_LEFT = "voicemail_left"  # machine, message played after the beep
    MACHINE_NO_MESSAGE = "machine_no_message"  # machine, hung up before the message was left
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CONGESTION = "congestion"  # network or trunk could not carry the call
    REJECTED = "rejected"  # the callee's side refused the call
    FAILED = "failed"  # no call could be made, or the transfer could not be made
    ABANDONED = "abandoned"  # answered, hung up before the prompt was over
    UNKNOWN = "unknown"  # the call is gone and nothing says how it ended
    QUEUE_ABANDONED = "queue_abandoned"  # transferred into a queue, left before an agent answered
    OPERATOR_HANGUP = "operator_hangup"  # an operator hung the call up (`dialer call hangup`)
    INTERRUPTED = "interrupted"  # the PBX ended the call: restart, shutdown, hang-up with no cause


class EndedBy(StrEnum):
    """Who ended the call."""

    CALLEE = "callee"  # hung up (during the prompt, in the queue, after the transfer), or did
    # not take the call (busy, no answer, rejected)
    IVR = "ivr"  # the dialer's IVR, as designed: prompt over, message left, opt-out, no transfer
    OPERATOR = "operator"  # `dialer call hangup`
    PBX = "pbx"  # restart, shutdown, a hang-up without a cause, an Originate refused
    NETWORK = "network"  # the carrier or the network: congestion, unreachable, unavailable
    DIALER = "dialer"  # reconciliation: the call was gone and no event said how it ended


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    ended_by: EndedBy


RETRYABLE = frozenset(
    {
        Outcome.MACHINE_NO_MESSAGE,
        Outcome.BUSY,
        Outcome.NO_ANSWER,
        Outcome.CONGESTION,
        Outcome.REJECTED,
        Outcome.FAILED,
        Outcome.ABANDONED,
        Outcome.QUEUE_ABANDONED,
        Outcome.INTERRUPTED,
        Outcome.UNKNOWN,
    }
)
# Outcomes that settle a call whatever happened after them (an operator's hang-up or the PBX
# going down afterwards does not change them).
CONCLUSIVE = frozenset(
    {
        Outcome.OPTED_OUT,
        Outcome.TRANSFERRED,
        Outcome.HUMAN_OTHER_KEY,
        Outcome.HUMAN_NO_PRESS,
        Outcome.VOICEMAIL_LEFT,
    }
)
# Who ended a call whose outcome came from the PBX's causes, statuses and reasons.
_UNANSWERED_ENDED_BY = {
    Outcome.BUSY: EndedBy.CALLEE,
    Outcome.NO_ANSWER: EndedBy.CALLEE,
    Outcome.REJECTED: EndedBy.CALLEE,
    Outcome.CONGESTION: EndedBy.NETWORK,
    Outcome.FAILED: EndedBy.NETWORK,
    Outcome.UNKNOWN: EndedBy.PBX,
}
_ANSWERED_ENDED_BY = {
    Outcome.TRANSFERRED: EndedBy.CALLEE,
    Outcome.ABANDONED: EndedBy.CALLEE,
    Outcome.QUEUE_ABANDONED: EndedBy.CALLEE,
    Outcome.MACHINE_NO_MESSAGE: EndedBy.CALLEE,
}


def is_retryable(outcome: str) -> bool:
    return outcome in RETRYABLE


# Q.850 causes of the originated channel that say why an unanswered call failed. 0 (unknown),
# 16 (normal clearing) and 31 (normal, unspecified) say nothing and fall through.
CAUSE_OUTCOMES: dict[int, Outcome] = {
    1: Outcome.FAILED,  # unallocated number
    2: Outcome.FAILED,  # no route to network
    3: Outcome.FAILED,  # no route to destination
    17: Outcome.BUSY,
    18: Outcome.NO_ANSWER,  # no user responding
    19: Outcome.NO_ANSWER,  # user alerting, no answer
    20: Outcome.NO_ANSWER,  # subscriber absent
    21: Outcome.REJECTED,
    22: Outcome.FAILED,  # number changed
    27: Outcome.FAILED,  # destination out of order
    28: Outcome.FAILED,  # invalid number format
    34: Outcome.CONGESTION,  # no circuit/channel available
    38: Outcome.CONGESTION,  # network out of order
    41: Outcome.CONGESTION,  # temporary failure
    42: Outcome.CONGESTION,  # switching equipment congestion
    44: Outcome.CONGESTION,  # requested channel not available
    58: Outcome.CONGESTION,  # bearer capability not available
}
DIAL_STATUS_OUTCOMES: dict[str, Outcome] = {
    "BUSY": Outcome.BUSY,
    "NOANSWER": Outcome.NO_ANSWER,
    "CONGESTION": Outcome.CONGESTION,
    "CHANUNAVAIL": Outcome.FAILED,
    "INVALIDARGS": Outcome.FAILED,
    "DONTCALL": Outcome.REJECTED,
    "TORTURE": Outcome.REJECTED,
}
# OriginateResponse Reason (enum ast_control_frame_type); 4 is answered.
REASON_OUTCOMES: dict[int, Outcome] = {
    0: Outcome.FAILED,
    1: Outcome.REJECTED,  # hung up by the far end before answering
    3: Outcome.NO_ANSWER,
    5: Outcome.BUSY,
    8: Outcome.CONGESTION,
}
# Transfer leg results that mean the target could not be reached (CANCEL: the callee left).
TRANSFER_FAILURES = frozenset({"BUSY", "NOANSWER", "CONGESTION", "CHANUNAVAIL", "INVALIDARGS"})


def decide(facts: CallFacts, *, press_key: str, opt_out_key: str | None) -> Decision:
    """The outcome of a call that is over, and who ended it."""
    answered = is_answered(facts)
    outcome = _answered(facts, press_key, opt_out_key) if answered else _unanswered(facts)
    if facts.operator_hangup_at is not None:
        return Decision(
            outcome if outcome in CONCLUSIVE else Outcome.OPERATOR_HANGUP, EndedBy.OPERATOR
        )
    if facts.pbx_down_at is not None or (answered and facts.hangup_cause == 0):
        return Decision(outcome if outcome in CONCLUSIVE else Outcome.INTERRUPTED, EndedBy.PBX)
    if answered:
        return Decision(outcome, _ANSWERED_ENDED_BY.get(outcome, EndedBy.IVR))
    return Decision(outcome, _UNANSWERED_ENDED_BY.get(outcome, EndedBy.PBX))


def decide_without_end(facts: CallFacts, *, press_key: str, opt_out_key: str | None) -> Decision:
    """The outcome of a call found gone from the PBX whose end was never seen.

    Facts that settle the outcome whatever happened next (opt-out, transfer answered, a key
    pressed, the prompt or the voicemail message completed) still count, and so does an
    operator's hang-up; anything else is unknown: ended by the PBX when it went down while the
    call was up (`pbx_down_at`: its listener lost it, or it stayed down past the dispatcher's
    bound), else by the dialer's reconciliation.
    """
    if facts.ended or facts.originate_response == "Failure":
        return decide(facts, press_key=press_key, opt_out_key=opt_out_key)
    if facts.operator_hangup_at is not None:
        return decide(facts, press_key=press_key, opt_out_key=opt_out_key)
    outcome = _answered(facts, press_key, opt_out_key)
    if is_answered(facts) and outcome in CONCLUSIVE:
        ended_by = EndedBy.PBX if facts.pbx_down_at is not None else EndedBy.DIALER
        return Decision(outcome, ended_by)
    if facts.pbx_down_at is not None:
        return Decision(Outcome.UNKNOWN, EndedBy.PBX)
    return Decision(Outcome.UNKNOWN, EndedBy.DIALER)


def _unanswered(facts: CallFacts) -> Outcome:
    if facts.hangup_cause in CAUSE_OUTCOMES:
        return CAUSE_OUTCOMES[facts.hangup_cause]
    if facts.dial_status in DIAL_STATUS_OUTCOMES:
        return DIAL_STATUS_OUTCOMES[facts.dial_status]
    if facts.originate_reason in REASON_OUTCOMES:
        return REASON_OUTCOMES[facts.originate_reason]
    return Outcome.UNKNOWN


def is_answered(facts: CallFacts) -> bool:
    return facts.answered or any(
        value is not None
        for value in (
            facts.amd_status,
            facts.dtmf,
            facts.read_status,
            facts.voicemail_left,
            facts.transfer_requested_at,
        )
    )


def _answered(facts: CallFacts, press_key: str, opt_out_key: str | None) -> Outcome:
    digit = facts.dtmf or ""
    if opt_out_key and digit == opt_out_key:
        return Outcome.OPTED_OUT
    if facts.transfer_answered_at is not None or facts.transfer_status == "ANSWER":
        return Outcome.TRANSFERRED
    if facts.transfer_requested_at is not None or (digit and digit == press_key):
        if facts.transfer_queue is not None:
            # Left the queue before an agent answered. A failed status there is one agent's
            # ring (app_queue's DialEnd), after which the queue rang others.
            return Outcome.QUEUE_ABANDONED
        if facts.transfer_status in TRANSFER_FAILURES:
            return Outcome.FAILED
        if facts.transfer_requested_at is not None:
            return Outcome.ABANDONED  # hung up while the transfer target rang
        return Outcome.FAILED  # pressed the key, but no transfer followed
    if digit:
        return Outcome.HUMAN_OTHER_KEY
    if facts.voicemail_left:
        return Outcome.VOICEMAIL_LEFT
    if facts.amd_status == "MACHINE":
        return Outcome.MACHINE_NO_MESSAGE
    if facts.read_status in ("TIMEOUT", "OK"):
        return Outcome.HUMAN_NO_PRESS
    return Outcome.ABANDONED
