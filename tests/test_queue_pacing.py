"""The dispatch tick paces a queue campaign by the agents its listener reported (real Postgres:
the tick reads `queue_members` as the listener writes it, through `queue_store`)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from dialer.dialing.agent_pacing import Agents, Flow, decide
from dialer.dialing.dispatch import run_tick
from dialer.outcomes import queue_store
from dialer.outcomes.queue_board import QueueBoard
from tests.support_celery import (
    add_campaign,
    add_contacts,
    add_pbx,
    add_trunk,
    scalar,
    simulator_numbers,
)


def _tick(session_factory):
    return run_tick(session_factory, lambda ids: None)


def _member(name: str, **fields: object) -> dict:
    event = {
        "Event": "QueueMemberAdded",
        "Queue": "sales",
        "MemberName": name,
        "Interface": f"PJSIP/{name}",
        "Status": "1",
        "Paused": "0",
        "InCall": "0",
        "Wrapuptime": "0",
    }
    event.update({k: str(v) for k, v in fields.items()})
    return event


@pytest.fixture
def paced(session_factory, engine):
    trunk = add_trunk(session_factory, cps=1000, max_channels=1000)
    add_pbx(session_factory, "default", state="up")  # its listener follows it
    campaign = add_campaign(
        session_factory, trunk, transfer_queue="sales", pace_by_queue=True, abandon_target=0.03
    )
    add_contacts(session_factory, campaign, simulator_numbers(300, ending="01"))
    board = QueueBoard("default")

    def report(*events: dict) -> None:
        for event in events:
            board.apply(event, time.time())
        queue_store.write_changes(engine, "default", board.take_changes(time.time()))

    return campaign, report


def _attempts(session_factory, campaign: int) -> int:
    return scalar(
        session_factory, "SELECT count(*) FROM call_attempts WHERE campaign_id = :c", c=campaign
    )


def test_no_call_while_no_agent_is_logged_in_and_calls_when_one_comes(
    session_factory, paced
) -> None:
    campaign, report = paced
    first = _tick(session_factory)
    assert first.queued == []
    assert first.queue_paced["campaign"].reason == "no agent logged in (or all paused)"
    report(_member("agent1"), _member("agent2"))
    second = _tick(session_factory)
    # Two free agents, nothing measured yet: the cautious start's calls for them.
    expected = decide(Agents(staffed=2, free=2), Flow(), target=0.03).calls
    assert len(second.queued) == expected > 0
    # Those calls are in flight now: the next tick starts none for the same two agents.
    assert _tick(session_factory).queued == []
    assert _attempts(session_factory, campaign) == expected


def test_a_paused_agent_is_not_counted_and_pacing_resumes_when_it_returns(
    session_factory, paced
) -> None:
    campaign, report = paced
    report(_member("agent1", Paused=1))
    assert _tick(session_factory).queued == []
    report(_member("agent1", Event="QueueMemberPause", Paused=0))
    assert len(_tick(session_factory).queued) > 0


def test_agents_removed_stop_the_calls(session_factory, paced) -> None:
    campaign, report = paced
    report(_member("agent1"))
    assert _tick(session_factory).queued
    # The calls started are answered and pressed: in the queue, waiting for the one agent.
    with session_factory.begin() as session:
        session.execute(
            text(
                "UPDATE call_attempts SET status = 'up', sent_at = now(), answered_at = now(),"
                " transfer_requested_at = now() WHERE campaign_id = :c"
            ),
            {"c": campaign},
        )
    report(_member("agent1", Event="QueueMemberRemoved"))
    report(_member("agent2"))
    # One agent, many callees waiting already: no new call.
    assert _tick(session_factory).queued == []


def test_members_of_a_pbx_nobody_follows_are_not_counted(session_factory, paced) -> None:
    campaign, report = paced
    report(_member("agent1"), _member("agent2"))
    add_pbx(session_factory, "default", state="unknown")  # its listener stopped
    decision = _tick(session_factory).queue_paced["campaign"]
    assert (decision.calls, decision.reason) == (0, "no agent logged in (or all paused)")
    add_pbx(session_factory, "default", state="up")
    assert len(_tick(session_factory).queued) > 0


def test_an_unpaced_campaign_reads_no_queue(session_factory) -> None:
    trunk = add_trunk(session_factory)
    campaign = add_campaign(session_factory, trunk, transfer_queue="sales")
    add_contacts(session_factory, campaign, simulator_numbers(5))
    report = _tick(session_factory)
    assert len(report.queued) == 5 and report.queue_paced == {}
