"""How many calls a queue-paced campaign starts now (policy, no I/O).

A press-key campaign whose transfers go into an Asterisk queue wants each callee who presses
to find an agent. Calls started now press (if they do) some seconds from now: the decision
matches the transfers expected from calls in flight and calls started now against the agents
expected free by then.

- Supply: agents free now, plus those whose call or wrap-up will likely have ended within the
  horizon (the measured time from send to key press). A busy agent's chance is the horizon
  over what is left of an average handle time, never less than a third of one.
- Demand: callees already waiting in the queue, ringing calls times the answer rate times the
  press rate, calls in the IVR (answered, not pressed yet, still within the pressing window)
  times the press rate.
- Calls to start: (k x supply - demand) / (answer rate x press rate), rounded down.

Rates are learned as the campaign runs, from a cautious start: each is a weighted mix of a
prior and what was measured, the prior weighing as `PRIOR_WEIGHT` calls. The priors assume
every call answered and every callee pressing (one call per free agent), a short time to the
press and a long handle time: the first calls are few, whatever the campaign's callees do. `k` is the feedback: over `MIN_QUEUED` transfers, the worse of the
campaign's and the rolling window's abandon rates against the target sets it, from
`K_MIN` (abandons well over target) to `K_MAX` (none), so occupancy rises while abandons stay
under target and falls back as soon as they do not; leaning in is smaller with fewer agents
(`LEAN_AGENTS`). No agent logged in (or all paused):
no call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Cautious priors: a transfer per call, a short horizon, a long handle time.
PRIOR_ANSWER_RATE = 1.0
PRIOR_PRESS_RATE = 1.0
PRIOR_WEIGHT = 10.0
PRIOR_PRESS_DELAY_S = 5.0
PRIOR_HANDLE_S = 120.0
# Means (time to press, handle time) are each measured per call: their priors weigh less.
PRIOR_MEAN_WEIGHT = 5.0
# Feedback on the abandon rate: the supply multiplier's range and how many transfers must have
# gone into the queue before the rates count.
K_MIN = 0.5
K_NEUTRAL = 1.0
K_MAX = 1.3
MIN_QUEUED = 20
# A busy agent's remaining handle time is taken as at least this share of the average.
MIN_REMAINING_SHARE = 1 / 3
# Leaning in is scaled by sqrt(staffed / this), at most 1: transfers arrive at random, and the
# fewer the agents the larger a burst is against them (a queue of 4 fills with a burst 10
# agents would absorb).
LEAN_AGENTS = 10


@dataclass(frozen=True)
class Agents:
    """The queue's members now (those logged in and not paused)."""

    staffed: int = 0
    free: int = 0
    # Seconds since each busy member's call began (ringing or talking).
    busy_for: tuple[float, ...] = ()
    # Seconds of wrap-up left for each member wrapping up, and the members' mean wrap-up.
    wrapup_left: tuple[float, ...] = ()
    wrapup_s: float = 0.0


@dataclass(frozen=True)
class Flow:
    """The campaign's calls now, and what it has measured so far."""

    ringing: int = 0  # sent or being sent, not answered
    in_ivr: int = 0  # answered within the pressing window, not pressed, not ended
    waiting: int = 0  # in the queue, no agent yet
    # Measured over the learning window: calls past ringing, those answered, the answered
    # ones whose press is settled (pressed, ended, or past the pressing window), key presses.
    sent: int = 0
    answered: int = 0
    answered_settled: int = 0
    pressed: int = 0
    press_delay_s: float | None = None  # mean, send -> transfer request
    handle_s: float | None = None  # mean agent time per transfer (talk + wrap-up)
    # Transfers that went into the queue and those abandoned there: the campaign's, and over
    # the rolling window.
    queued_total: int = 0
    abandoned_total: int = 0
    queued_window: int = 0
    abandoned_window: int = 0


@dataclass(frozen=True)
class Decision:
    calls: int
    reason: str
    supply: float = 0.0
    demand: float = 0.0
    transfers_per_call: float = 0.0
    k: float = K_NEUTRAL


def learned(measured: int, trials: int, prior: float) -> float:
    """`measured` out of `trials`, pulled towards `prior` as if it had PRIOR_WEIGHT trials."""
    return (measured + prior * PRIOR_WEIGHT) / (trials + PRIOR_WEIGHT)


def feedback(flow: Flow, target: float) -> float:
    """The supply multiplier from the abandon rates against `target` (neutral until enough
    transfers went into the queue)."""
    rates = []
    if flow.queued_total >= MIN_QUEUED:
        rates.append(flow.abandoned_total / flow.queued_total)
    if flow.queued_window >= MIN_QUEUED:
        rates.append(flow.abandoned_window / flow.queued_window)
    if not rates:
        return K_NEUTRAL
    worst = max(rates)
    if worst >= target:
        # Over target: back off in proportion, down to K_MIN at twice the target.
        over = min(1.0, (worst - target) / target)
        return K_NEUTRAL - (K_NEUTRAL - K_MIN) * over
    # Under target: lean in, up to K_MAX with no abandons at all.
    return K_NEUTRAL + (K_MAX - K_NEUTRAL) * (1 - worst / target)


def supply(agents: Agents, horizon_s: float, handle_s: float) -> float:
    """Agents expected free within `horizon_s`."""
    soon = float(agents.free)
    floor = handle_s * MIN_REMAINING_SHARE
    for elapsed in agents.busy_for:
        remaining = max(handle_s - max(elapsed, 0.0), floor)
        soon += min(1.0, horizon_s / remaining)
    soon += sum(1 for left in agents.wrapup_left if left <= horizon_s)
    return soon


def decide(agents: Agents, flow: Flow, *, target: float) -> Decision:
    """How many calls to start now for one queue-paced campaign."""
    if agents.staffed <= 0:
        return Decision(0, "no agent logged in (or all paused)")
    answer_rate = learned(flow.answered, flow.sent, PRIOR_ANSWER_RATE)
    press_rate = learned(flow.pressed, flow.answered_settled, PRIOR_PRESS_RATE)
    per_call = answer_rate * press_rate
    horizon = _mix(flow.press_delay_s, flow.pressed, PRIOR_PRESS_DELAY_S)
    handle = _mix(flow.handle_s, flow.queued_total, PRIOR_HANDLE_S)
    k = feedback(flow, target)
    if k > K_NEUTRAL:
        k = K_NEUTRAL + (k - K_NEUTRAL) * min(1.0, math.sqrt(agents.staffed / LEAN_AGENTS))
    free_soon = supply(agents, horizon, handle)
    demand = flow.waiting + flow.ringing * per_call + flow.in_ivr * press_rate
    room = k * free_soon - demand
    calls = max(0, math.floor(room / per_call)) if per_call > 0 else 0
    reason = "agents free soon" if calls else "enough calls in flight for the agents"
    return Decision(calls, reason, free_soon, demand, per_call, k)


def _mix(measured: float | None, samples: int, prior: float) -> float:
    """A measured mean pulled towards `prior` as if it had PRIOR_MEAN_WEIGHT samples."""
    if measured is None or samples <= 0:
        return prior
    return (measured * samples + prior * PRIOR_MEAN_WEIGHT) / (samples + PRIOR_MEAN_WEIGHT)
