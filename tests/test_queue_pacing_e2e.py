"""A queue-paced campaign end to end: the simulator's agents (drawn answer delay, talk time,
patience), the listener following the queue, the real Celery worker and its dispatch tick."""

from __future__ import annotations

import time

import pytest

from dialer.pbxsim import AgentModel
from dialer.settings import Settings
from tests.support_celery import (
    add_campaign,
    add_contacts,
    add_trunk,
    in_process_worker,
    rows,
    scalar,
    simulator_numbers,
    wait_until,
)
from tests.test_dialing_e2e import running_listener

# Speed 5: the worker ticks twice a second, every 2.5 simulated seconds.
MODEL = {"speed": 5, "queues": ("sales",), "agents": AgentModel(answer=1, talk=20, wrapup=2,
                                                                  patience=30, seed=3)}  # fmt: skip


@pytest.fixture
def dial_settings(settings: Settings, pbx_sim) -> Settings:
    return Settings(
        database_url=settings.database_url,
        broker_url=settings.broker_url,
        log_level="INFO",
        ami_servers={"default": pbx_sim.server},
    )


def sent(session_factory) -> int:
    return scalar(session_factory, "SELECT count(sent_at) FROM call_attempts")


def members(session_factory) -> int:
    return scalar(session_factory, "SELECT count(*) FROM queue_members WHERE NOT paused")


@pytest.mark.parametrize("pbx_sim", [MODEL], indirect=True)
def test_no_agent_no_call_then_agents_take_the_transfers(
    dial_settings, session_factory, engine, make_app, pbx_sim
) -> None:
    trunk = add_trunk(session_factory, "MC", cps=200, max_channels=500)
    campaign = add_campaign(
        session_factory, trunk, max_attempts=1, transfer_queue="sales", pace_by_queue=True
    )
    # Half press 1 (01), half listen and do not (02), in turns.
    pressers = simulator_numbers(20, ending="01")
    listeners = simulator_numbers(20, start=100, ending="02")
    add_contacts(
        session_factory,
        campaign,
        [n for pair in zip(pressers, listeners, strict=True) for n in pair],
    )
    with (
        running_listener(engine, pbx_sim.server),
        in_process_worker(make_app(dial_settings), beat=True),
    ):
        # The listener has read the (empty) queue; ticks run and start nothing.
        wait_until(lambda: any(r["action"] == "QueueStatus" for r in pbx_sim.records()), 10)
        ticked = time.monotonic()
        wait_until(lambda: time.monotonic() - ticked > 3, 5)
        assert sent(session_factory) == 0, "a call was started with no agent logged in"
        with pbx_sim.connect() as ami:
            for n in (1, 2):
                ami.action("QueueAdd", ("Queue", "sales"), ("Interface", f"PJSIP/agent{n}"),
                           ("MemberName", f"Agent {n}"), ("Wrapuptime", "2"))  # fmt: skip
        wait_until(lambda: members(session_factory) == 2, 10, message="two members")
        wait_until(lambda: sent(session_factory) > 0, 15, message="calls once agents came")
        wait_until(
            lambda: (
                scalar(session_factory, "SELECT count(*) FROM contacts WHERE status = 'dialing'")
                == 0
                and scalar(
                    session_factory, "SELECT count(*) FROM contacts WHERE status = 'pending'"
                )
                == 0
            ),
            120,
            message="every contact called and closed",
        )
    outcomes = rows(
        session_factory,
        "SELECT outcome, count(*) AS n, count(agent) AS with_agent, min(queue_wait_s) AS wait"
        " FROM call_attempts WHERE status = 'ended' GROUP BY outcome",
    )
    by_outcome = {r.outcome: r for r in outcomes}
    # Every presser went into the queue: taken by an agent (named, with its wait) or abandoned.
    transferred = by_outcome["transferred"]
    abandoned = by_outcome.get("queue_abandoned")
    assert transferred.n + (abandoned.n if abandoned else 0) == 20
    assert transferred.with_agent == transferred.n and transferred.wait is not None
    assert by_outcome["human_no_press"].n == 20
    # Two agents, 20 s calls, 30 s patience: paced, nearly every presser reached an agent
    # (dialled at the trunk's rate instead, 16 of the 20 abandoned in a trial run).
    assert transferred.n >= 17, outcomes
