"""Back-pressure: the send rate a PBX is allowed, from how late its answers come (pure, no I/O).

What is measured (by `dialer.dialing.pbxcontrol`, over the last `Policy.window_s` seconds, and
only for calls sent since the last cut: those sent before it say nothing of the new rate):
the time from each Originate (`call_attempts.sent_at`) to its OriginateResponse
(`originate_response_at`), for failed responses other than Reason 3 and other than refusals
(counted on their own) only. A successful
response comes when the callee answers and a no-answer one when the ringing times out: that
is the callee's time, not the PBX's. Busy, congestion, an unreachable endpoint or a refused
call come at once from a healthy PBX (a few ms on a real Asterisk 22, DESIGN.md), and seconds
late from one that is falling behind. Refusals (Reason 0 with hang-up cause 34: no channel
could be had) count as overload on their own.

The rule is additive increase, multiplicative decrease:
- overloaded (p90 latency above the PBX's threshold over at least `min_samples` responses,
  unless the newest answers are back under it: the window's p90 lags a backlog just drained;
  or `min_refusals` refusals): the rate is cut at once, by a factor between `max_cut` and
  `min_cut` (deeper the further the latency is over the threshold: threshold / p90; a
  refusal cuts by `max_cut`), down to a floor; at most once per `cut_gap_s`. The next cut is
  judged on calls sent at the new rate only, so it can follow as soon as their answers are
  late too: a PBX that lost most of its capacity is cut down to it within seconds, not one
  halving per window. Calls sent just after a cut still queue behind the backlog the old rate
  left, so after a cut the PBX is cut again only once that backlog is seen not to drain: while
  the newest answers come sooner than those of a second before (`Measure.draining`), or too
  few answers came since the cut to tell, the rate is held (a PBX that answers nothing but
  refusals is cut again a window after the last cut);
- not overloaded: the rate climbs back by `increase_per_s` of the PBX's maximum each second
  (at least `min_increase` per second), up to the maximum, once a window has passed since the
  last cut;
- too few responses to judge and the latest ones late: the rate is held;
- no call sent in the window: the rate climbs back (nothing to judge, nothing to protect).
The floor keeps some calls going to the PBX, whose answers say when it has recovered.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Policy:
    window_s: float = 5.0  # the sliding window measured; increases wait this long after a cut
    cut_gap_s: float = 1.0  # the least time between two cuts
    min_samples: int = 5  # responses needed to judge the latency
    min_refusals: int = 3  # refusals in the window that mean overload by themselves
    max_cut: float = 0.5  # the deepest cut: rate x 0.5
    min_cut: float = 0.8  # the mildest cut: rate x 0.8
    increase_per_s: float = 0.01  # of max_cps, each second without overload
    min_increase: float = 0.2  # originates/s per second, at least
    floor_share: float = 0.05  # the rate never goes below this share of max_cps...
    min_floor: float = 0.5  # ...nor below this many originates/s (unless max_cps is lower)
    max_step_s: float = 2.0  # an increase counts at most this many seconds since the last run


DEFAULT_POLICY = Policy()


# The newest answers sooner than this share of the latency a second before: the backlog drains
# (a full backlog answers at its longest wait, a draining one a little sooner each second).
DRAINING = 0.97


@dataclass(frozen=True, slots=True)
class Measure:
    """One PBX at one run of the controller."""

    rate: float  # allowed now
    max_cps: float
    threshold_s: float
    p90_s: float | None  # None: no response in the window
    samples: int
    refusals: int
    idle: bool  # nothing sent in the window
    last_cut_at: dt.datetime | None
    last_run_at: dt.datetime | None
    now: dt.datetime
    reason: str | None = None  # why the rate is lower than max_cps now
    # Median latency of the answers of the last second, and of the second before (calls sent
    # since the last cut, refusals and ringing left out); None: too few such answers.
    newest_s: float | None = None
    before_s: float | None = None

    @property
    def draining(self) -> bool | None:
        """Whether the answers come sooner than a second ago (the PBX's backlog is going
        down); None: too few answers to tell."""
        if self.newest_s is None or self.before_s is None:
            return None
        return self.newest_s < self.before_s * DRAINING

    @property
    def answering(self) -> bool:
        """Answers of placed calls (not refusals) came in the last two seconds."""
        return self.newest_s is not None or self.before_s is not None


@dataclass(frozen=True, slots=True)
class Decision:
    rate: float
    reason: str | None  # None once back at max_cps
    cut: bool = False  # a multiplicative decrease happened now


def floor(max_cps: float, policy: Policy) -> float:
    return min(max_cps, max(policy.min_floor, policy.floor_share * max_cps))


def decide(m: Measure, policy: Policy = DEFAULT_POLICY) -> Decision:
    """The PBX's rate after this run (see the module doc)."""
    rate = min(m.rate, m.max_cps)
    since_cut = None if m.last_cut_at is None else (m.now - m.last_cut_at).total_seconds()
    may_cut = since_cut is None or since_cut >= policy.cut_gap_s
    may_increase = since_cut is None or since_cut >= policy.window_s
    # The window's p90 lags a backlog that has just drained: the newest answers on time say so.
    on_time_now = m.newest_s is not None and m.newest_s <= m.threshold_s
    late = m.p90_s is not None and m.p90_s > m.threshold_s and not on_time_now
    if m.refusals >= policy.min_refusals or (late and m.samples >= policy.min_samples):
        if not may_cut or (since_cut is not None and _cut_working(m, since_cut, policy)):
            return Decision(rate, m.reason or _overload(m))
        factor = policy.max_cut
        if m.refusals < policy.min_refusals and m.p90_s:
            factor = min(policy.min_cut, max(policy.max_cut, m.threshold_s / m.p90_s))
        new = max(floor(m.max_cps, policy), rate * factor)
        return Decision(_round(new), _overload(m), cut=new < rate)
    if late and not m.idle:
        return Decision(rate, m.reason)  # a few late answers: wait for more
    if rate >= m.max_cps:
        return Decision(m.max_cps, None)
    if not may_increase:
        return Decision(rate, m.reason)  # the last cut is still being judged
    elapsed = policy.max_step_s
    if m.last_run_at is not None:
        elapsed = min(policy.max_step_s, max(0.0, (m.now - m.last_run_at).total_seconds()))
    step = max(policy.min_increase, policy.increase_per_s * m.max_cps) * elapsed
    new = min(m.max_cps, rate + step)
    if new >= m.max_cps:
        return Decision(m.max_cps, None)
    return Decision(_round(new), _recovering(m))


def _cut_working(m: Measure, since_cut: float, policy: Policy) -> bool:
    """After a cut: the backlog it left drains, or too few answers came yet to tell. Calls
    sent just after a cut are refused at once while that backlog is full, and answered only
    once their turn comes: refusals alone cut again only a window after the last cut."""
    draining = m.draining
    if draining is not None:
        return draining
    return m.answering or since_cut < policy.window_s


def _overload(m: Measure) -> str:
    if m.p90_s is not None and m.p90_s > m.threshold_s and m.samples:
        text = (
            f"p90 OriginateResponse latency {m.p90_s * 1000:.0f} ms over "
            f"{m.threshold_s * 1000:.0f} ms ({m.samples} responses)"
        )
        if m.refusals:
            text += f", {m.refusals} refused"
        return text
    return f"{m.refusals} Originates refused for lack of channels"


def _recovering(m: Measure) -> str:
    previous = (m.reason or "").split("; recovering", 1)[0] or "overload"
    return f"{previous}; recovering"


def _round(value: float) -> float:
    return math.floor(value * 1000) / 1000
