"""Queue pacing policy (dialer.dialing.agent_pacing): pure tables."""

from __future__ import annotations

import pytest

from dialer.dialing.agent_pacing import (
    K_MAX,
    K_MIN,
    K_NEUTRAL,
    MIN_QUEUED,
    PRIOR_ANSWER_RATE,
    PRIOR_PRESS_RATE,
    Agents,
    Flow,
    decide,
    feedback,
    learned,
    supply,
)

# A campaign well measured: 40% answered, 15% of those press, 6 s to a press, 60 s handled.
MEASURED = Flow(
    sent=1000, answered=400, answered_settled=400, pressed=60, press_delay_s=6.0, handle_s=60.0
)


@pytest.mark.parametrize(
    ("agents", "reason"),
    [
        (Agents(staffed=0, free=0), "no agent logged in (or all paused)"),
        (Agents(), "no agent logged in (or all paused)"),
    ],
)
def test_no_agent_no_call(agents: Agents, reason: str) -> None:
    decision = decide(agents, MEASURED, target=0.03)
    assert (decision.calls, decision.reason) == (0, reason)


def test_free_agents_get_calls_in_proportion_to_transfers_per_call() -> None:
    per_call = learned(400, 1000, PRIOR_ANSWER_RATE) * learned(60, 400, PRIOR_PRESS_RATE)
    one = decide(Agents(staffed=7, free=1, busy_for=(0.0,) * 6), MEASURED, target=0.03)
    four = decide(Agents(staffed=10, free=4, busy_for=(0.0,) * 6), MEASURED, target=0.03)
    assert one.transfers_per_call == pytest.approx(per_call)
    # Each free agent is worth 1 / per_call calls (rounded down once each).
    assert four.calls - one.calls == pytest.approx(3 / per_call, abs=1)
    assert four.calls > one.calls > 0


@pytest.mark.parametrize(
    ("flow", "calls_at_most"),
    [
        (Flow(), None),  # nothing in flight: calls for the free agents
        (Flow(waiting=5), 0),  # five callees already wait for the five free agents
        (Flow(ringing=10_000), 0),  # so many ringing that their transfers fill the agents
    ],
)
def test_calls_in_flight_and_waiting_count_against_the_agents(
    flow: Flow, calls_at_most: int | None
) -> None:
    decision = decide(Agents(staffed=5, free=5), flow, target=0.03)
    if calls_at_most is None:
        assert decision.calls > 0
    else:
        assert decision.calls <= calls_at_most


def test_a_cautious_start_dials_less_than_a_measured_campaign() -> None:
    agents = Agents(staffed=10, free=10)
    fresh = decide(agents, Flow(), target=0.03)
    measured = decide(agents, MEASURED, target=0.03)
    assert 0 < fresh.calls < measured.calls
    # The priors take every call for a transfer: one call per free agent.
    assert fresh.transfers_per_call == pytest.approx(PRIOR_ANSWER_RATE * PRIOR_PRESS_RATE) == 1
    assert fresh.calls == 10


@pytest.mark.parametrize(
    ("queued", "abandoned", "window_queued", "window_abandoned", "expected"),
    [
        (0, 0, 0, 0, K_NEUTRAL),  # nothing measured yet
        (MIN_QUEUED - 1, 10, 0, 0, K_NEUTRAL),  # too few to judge
        (100, 0, 50, 0, K_MAX),  # no abandons at all
        (100, 3, 50, 0, K_NEUTRAL),  # on target over the campaign
        (100, 6, 0, 0, K_MIN),  # twice the target
        (100, 20, 0, 0, K_MIN),  # far over: no lower than K_MIN
        (1000, 0, 40, 6, K_MIN),  # the rolling window's 15% wins over the campaign's 0%
        (100, 1, 0, 0, K_NEUTRAL + (K_MAX - K_NEUTRAL) * (1 - 0.01 / 0.03)),
        (100, 4, 0, 0, K_NEUTRAL - (K_NEUTRAL - K_MIN) * (0.01 / 0.03)),
    ],
)
def test_feedback_from_the_abandon_rates(
    queued: int, abandoned: int, window_queued: int, window_abandoned: int, expected: float
) -> None:
    flow = Flow(
        queued_total=queued,
        abandoned_total=abandoned,
        queued_window=window_queued,
        abandoned_window=window_abandoned,
    )
    assert feedback(flow, 0.03) == pytest.approx(expected)


def test_leaning_in_shrinks_with_the_agents() -> None:
    calm = Flow(**{**MEASURED.__dict__, "queued_total": 100, "abandoned_total": 0})
    many = decide(Agents(staffed=10, free=10), calm, target=0.03)
    few = decide(Agents(staffed=4, free=4), calm, target=0.03)
    assert many.k == pytest.approx(K_MAX)
    assert few.k == pytest.approx(K_NEUTRAL + (K_MAX - K_NEUTRAL) * (4 / 10) ** 0.5)
    # Backing off is not scaled.
    over = Flow(**{**MEASURED.__dict__, "queued_total": 100, "abandoned_total": 6})
    assert decide(Agents(staffed=4, free=4), over, target=0.03).k == pytest.approx(K_MIN)


def test_abandons_over_target_start_fewer_calls() -> None:
    agents = Agents(staffed=10, free=3, busy_for=(30.0,) * 7)
    calm = decide(agents, MEASURED, target=0.03)
    over = Flow(**{**MEASURED.__dict__, "queued_total": 100, "abandoned_total": 8})
    assert decide(agents, over, target=0.03).calls < calm.calls


@pytest.mark.parametrize(
    ("agents", "horizon", "handle", "expected"),
    [
        (Agents(staffed=2, free=2), 6.0, 60.0, 2.0),
        # 54 s into a 60 s handle time: at least 20 s (a third) left; done within 30 s.
        (Agents(staffed=1, busy_for=(54.0,)), 6.0, 60.0, 0.3),
        (Agents(staffed=1, busy_for=(54.0,)), 30.0, 60.0, 1.0),
        # Just begun: 6 s of 60 left.
        (Agents(staffed=1, busy_for=(0.0,)), 6.0, 60.0, 0.1),
        # Past the average: at least a third of it is taken as left.
        (Agents(staffed=1, busy_for=(500.0,)), 6.0, 60.0, 6.0 / 20.0),
        # Wrap-up ending within the horizon counts whole, after it not at all.
        (Agents(staffed=2, wrapup_left=(3.0, 9.0)), 6.0, 60.0, 1.0),
    ],
)
def test_supply(agents: Agents, horizon: float, handle: float, expected: float) -> None:
    assert supply(agents, horizon, handle) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("measured", "trials", "prior", "expected"),
    [(0, 0, 1.0, 1.0), (40, 100, 1.0, (40 + 10) / 110), (4000, 10_000, 1.0, 0.4)],
)
def test_learned_rates_move_from_the_prior(
    measured: int, trials: int, prior: float, expected: float
) -> None:
    assert learned(measured, trials, prior) == pytest.approx(expected, abs=1e-3)
