"""Who ended the call, as the records show it: an operator's hang-up and transfers, the PBX
cutting calls, key presses counted as presses only (issue #18's defects 1, 2, 5 and 6, at the
level of the listener's store and the views; the commands themselves are tested in
test_call_control*.py against the simulator)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine

from dialer.control.live import record_control
from dialer.outcomes.callstore import CallStore
from dialer.outcomes.facts import clear_operator_hangup, mark_operator_hangup
from tests.support_listener import Attempt, add_attempts, add_campaign, fetch
from tests.test_listener import answered, hangup, observations, user_event


@pytest.fixture
def campaign(engine: Engine) -> int:
    # The settings of the run that showed the defects: a retry for abandoned calls.
    return add_campaign(engine, max_attempts=2, retry_delays={"abandoned": 3600})


def row(engine: Engine, attempt: Attempt) -> Any:
    return fetch(engine, "SELECT * FROM call_attempts WHERE id = :id", id=attempt.id)[0]


def contact(engine: Engine, attempt: Attempt) -> Any:
    return fetch(engine, "SELECT * FROM contacts WHERE id = :id", id=attempt.contact_id)[0]


def in_prompt(cid: str) -> list[dict[str, Any]]:
    """Answered, AMD said human, the prompt is playing."""
    return [*answered(cid), user_event(cid, "DialerAMD", AMDSTATUS="HUMAN", AMDCAUSE="H")]


def mark(engine: Engine, attempt: Attempt, *, retry: bool) -> dt.datetime:
    at = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        assert mark_operator_hangup(conn, attempt.id, at, retry)
    return at


# -- defect 1: an operator's hang-up -------------------------------------------------------------


@pytest.mark.parametrize("cause", [16, 21, 0])
def test_an_operator_hangup_is_the_operators_and_final(
    engine: Engine, campaign: int, cause: int
) -> None:
    (call,) = add_attempts(engine, campaign, ["+15550000201"])
    store = CallStore(engine)
    store.apply(observations(in_prompt(call.custom_call_id)))
    mark(engine, call, retry=False)  # `dialer call hangup`, before its AMI Hangup
    store.apply(observations([hangup(call.custom_call_id, cause)]))
    got = row(engine, call)
    assert (got.outcome, got.ended_by) == ("operator_hangup", "operator")
    assert got.operator_hangup_at is not None and got.operator_retry is False
    assert (contact(engine, call).status, contact(engine, call).last_outcome) == (
        "completed",
        "operator_hangup",
    )
    timeline = fetch(
        engine,
        "SELECT data FROM call_events WHERE call_attempt_id = :id AND event = 'DialerOutcome'",
        id=call.id,
    )
    assert timeline[0].data["ended_by"] == "operator"


def test_an_operator_hangup_with_retry_calls_the_contact_again(
    engine: Engine, campaign: int
) -> None:
    (call,) = add_attempts(engine, campaign, ["+15550000202"])
    store = CallStore(engine)
    store.apply(observations(in_prompt(call.custom_call_id)))
    mark(engine, call, retry=True)
    before = dt.datetime.now(dt.UTC)
    store.apply(observations([hangup(call.custom_call_id, 16)]))
    assert (row(engine, call).outcome, row(engine, call).ended_by) == (
        "operator_hangup",
        "operator",
    )
    again = contact(engine, call)
    assert again.status == "pending"
    assert 900 - 5 < (again.next_attempt_at - before).total_seconds() < 900 + 5


def test_a_refused_hangup_leaves_the_call_to_its_callee(engine: Engine, campaign: int) -> None:
    (call,) = add_attempts(engine, campaign, ["+15550000203"])
    store = CallStore(engine)
    store.apply(observations(in_prompt(call.custom_call_id)))
    at = mark(engine, call, retry=False)
    with engine.begin() as conn:
        clear_operator_hangup(conn, call.id, at)  # the PBX refused the Hangup
    store.apply(observations([hangup(call.custom_call_id, 16)]))
    got = row(engine, call)
    assert (got.outcome, got.ended_by, got.operator_hangup_at) == ("abandoned", "callee", None)
    assert contact(engine, call).status == "pending"


def test_a_closed_call_cannot_be_marked(engine: Engine, campaign: int) -> None:
    (call,) = add_attempts(engine, campaign, ["+15550000204"])
    CallStore(engine).apply(observations([*in_prompt(call.custom_call_id), hangup(
        call.custom_call_id, 16)]))  # fmt: skip
    with engine.begin() as conn:
        assert not mark_operator_hangup(conn, call.id, dt.datetime.now(dt.UTC), False)
    assert row(engine, call).outcome == "abandoned"


# -- defect 2: the PBX's endings -------------------------------------------------------------------


def test_an_answered_call_cut_with_cause_0_is_interrupted_and_retried(
    engine: Engine, campaign: int
) -> None:
    (call,) = add_attempts(engine, campaign, ["+15550000205"])
    CallStore(engine).apply(observations([*in_prompt(call.custom_call_id), hangup(
        call.custom_call_id, 0)]))  # fmt: skip
    got = row(engine, call)
    assert (got.outcome, got.ended_by) == ("interrupted", "pbx")
    again = contact(engine, call)
    assert (again.status, again.last_outcome) == ("pending", "interrupted")


# -- defects 2, 5 and 6: operator transfers --------------------------------------------------------


def operator_transfer(
    engine: Engine, call: Attempt, *, queue: str | None, answered_at: dt.datetime | None
) -> None:
    """What `dialer call transfer` records (its own tests check it records this)."""
    facts: dict[str, Any] = {
        "transfer_requested_at": dt.datetime.now(dt.UTC),
        "transfer_source": "operator",
    }
    if queue:
        facts["transfer_queue"] = queue
    if answered_at:
        facts |= {"transfer_answered_at": answered_at, "transfer_status": "ANSWER"}
    event = {"Event": "ControlTransfer", "By": "operator", "Result": "ok"}
    record_control(engine, call.id, event, facts)


def test_a_callee_who_leaves_the_queue_is_queue_abandoned(engine: Engine, campaign: int) -> None:
    (call,) = add_attempts(engine, campaign, ["+15550000206"])
    store = CallStore(engine)
    store.apply(observations(in_prompt(call.custom_call_id)))
    operator_transfer(engine, call, queue="support", answered_at=None)
    store.apply(observations([hangup(call.custom_call_id, 16)]))
    got = row(engine, call)
    assert (got.outcome, got.ended_by, got.transfer_source, got.transfer_queue) == (
        "queue_abandoned",
        "callee",
        "operator",
        "support",
    )


def test_an_operator_transfer_is_no_key_press_and_ends_with_the_call(
    engine: Engine, campaign: int
) -> None:
    ivr_call, operator_call = add_attempts(engine, campaign, ["+15550000207", "+15550000208"])
    store = CallStore(engine)
    cid = ivr_call.custom_call_id
    store.apply(
        observations(
            [
                *in_prompt(cid),
                user_event(cid, "DialerDTMF", DTMF="1", READSTATUS="OK"),
                user_event(cid, "DialerTransfer", TRANSFER_NUMBER="+15551234567"),
                user_event(cid, "DialerTransferResult", DIALSTATUS="ANSWER", ANSWEREDTIME="5"),
                hangup(cid, 16),
            ]
        )
    )
    store.apply(observations(in_prompt(operator_call.custom_call_id)))
    operator_transfer(engine, operator_call, queue=None, answered_at=dt.datetime.now(dt.UTC))
    store.apply(observations([hangup(operator_call.custom_call_id, 16)]))

    got = row(engine, operator_call)
    assert (got.outcome, got.transfer_source, got.dtmf) == ("transferred", "operator", None)
    # The transfer ended with the call (the IVR reports its own transfers' ends).
    assert got.transfer_ended_at == got.ended_at
    report = fetch(
        engine,
        "SELECT call_id, pressed, transfer_source, transfer_seconds, ended_by "
        "FROM call_attempts_report ORDER BY attempt_id",
    )
    assert [(r.pressed, r.transfer_source, r.ended_by) for r in report] == [
        (True, "ivr", "callee"),
        (False, "operator", "callee"),
    ]
    assert report[1].transfer_seconds is not None
    summary = fetch(engine, "SELECT * FROM campaign_summary WHERE campaign_id = :c", c=campaign)[0]
    # Two human answers, one key pressed: press_rate 0.5 counts the IVR's press only...
    assert (summary.human_answered, summary.presses, summary.press_rate) == (2, 1, 0.5)
    # ...and the transfers are told apart.
    assert (summary.transferred, summary.operator_transfers, summary.transfer_rate) == (2, 1, 0.5)
    assert summary.ended_by == {"callee": 2}


def test_readme_lists_every_outcome_with_who_ended_it() -> None:
    from pathlib import Path

    from dialer.outcomes.rules import EndedBy, Outcome

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Outcomes", 1)[1].split("\n## ", 1)[0]
    rows = {
        cells[0].strip("` "): cells[2]
        for line in section.splitlines()
        if line.startswith("| `")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert set(rows) == {o.value for o in Outcome}
    names = {e.value for e in EndedBy}
    for outcome, ended_by in rows.items():
        assert names & set(ended_by.replace(",", " ").replace("(", " ").split()), outcome
