"""Back-pressure: the AIMD rule as a table, a PBX that sustains less than it is asked settling
at what it sustains, and the controller's query and update against rows written by hand."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

import pytest
from sqlalchemy import text

from dialer.dialing import pbxcontrol
from dialer.dialing.backpressure import DEFAULT_POLICY, Decision, Measure, Policy, decide, floor
from tests.support_celery import (
    add_campaign,
    add_contacts,
    add_pbx,
    add_trunk,
    rows,
    simulator_numbers,
)

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
SLOW = "p90 OriginateResponse latency 2000 ms over 500 ms (20 responses)"


def measure(**changes: Any) -> Measure:
    values: dict[str, Any] = {
        "rate": 100.0,
        "max_cps": 100.0,
        "threshold_s": 0.5,
        "p90_s": 0.01,
        "samples": 20,
        "refusals": 0,
        "idle": False,
        "last_cut_at": None,
        "last_run_at": T0 - dt.timedelta(seconds=1),
        "now": T0,
        "reason": None,
    }
    return Measure(**{**values, **changes})


def ago(seconds: float) -> dt.datetime:
    return T0 - dt.timedelta(seconds=seconds)


CASES = [
    # (case, measure changes, decision)
    ("healthy at its maximum: stays", {}, Decision(100.0, None)),
    ("no responses at all: nothing to judge at the maximum", {"p90_s": None, "samples": 0},
     Decision(100.0, None)),
    ("late answers: cut at once, deeper the later (threshold/p90 = 0.25 -> 0.5)",
     {"p90_s": 2.0}, Decision(50.0, SLOW, cut=True)),
    ("a little late: the mildest cut (0.8)", {"p90_s": 0.55},
     Decision(80.0, "p90 OriginateResponse latency 550 ms over 500 ms (20 responses)", cut=True)),
    ("in between: threshold/p90 (0.5/0.8 = 0.625)", {"p90_s": 0.8},
     Decision(62.5, "p90 OriginateResponse latency 800 ms over 500 ms (20 responses)", cut=True)),
    ("refusals alone are overload: the deepest cut", {"refusals": 3},
     Decision(50.0, "3 Originates refused for lack of channels", cut=True)),
    ("late and refused", {"p90_s": 2.0, "refusals": 4},
     Decision(50.0, SLOW + ", 4 refused", cut=True)),
    ("two refusals are not enough", {"refusals": 2}, Decision(100.0, None)),
    ("at most one cut per second: held just after the last",
     {"p90_s": 2.0, "rate": 50.0, "last_cut_at": ago(0.5), "reason": SLOW},
     Decision(50.0, SLOW)),
    ("calls sent since the last cut late too: cut again without waiting a window",
     {"p90_s": 2.0, "rate": 50.0, "last_cut_at": ago(1), "reason": SLOW, "newest_s": 2.0,
      "before_s": 2.0}, Decision(25.0, SLOW, cut=True)),
    ("never under the floor (5% of max)", {"p90_s": 9.0, "rate": 6.0},
     Decision(5.0, "p90 OriginateResponse latency 9000 ms over 500 ms (20 responses)", cut=True)),
    ("after a cut, its backlog draining (newest answers sooner than a second before): held",
     {"p90_s": 2.0, "rate": 50.0, "last_cut_at": ago(3), "reason": SLOW, "newest_s": 1.2,
      "before_s": 1.6}, Decision(50.0, SLOW)),
    ("after a cut, not draining: cut again", {"p90_s": 2.0, "rate": 50.0, "last_cut_at": ago(3),
                                             "reason": SLOW, "newest_s": 2.0, "before_s": 2.0},
     Decision(25.0, SLOW, cut=True)),
    ("after a cut, answers of the new rate not all back yet: held",
     {"p90_s": 2.0, "rate": 50.0, "last_cut_at": ago(3), "reason": SLOW, "newest_s": 2.0},
     Decision(50.0, SLOW)),
    ("after a cut, nothing but refusals yet: held (the backlog refuses before it answers)",
     {"p90_s": None, "samples": 0, "refusals": 5, "rate": 50.0, "last_cut_at": ago(3),
      "reason": SLOW}, Decision(50.0, SLOW)),
    ("nothing but refusals a window after the last cut: cut again",
     {"p90_s": None, "samples": 0, "refusals": 5, "rate": 50.0, "last_cut_at": ago(5),
      "reason": SLOW}, Decision(25.0, "5 Originates refused for lack of channels", cut=True)),
    ("the window's p90 lags a drained backlog: the newest answers on time are not late",
     {"p90_s": 2.0, "rate": 50.0, "last_cut_at": ago(10), "reason": SLOW, "newest_s": 0.01,
      "before_s": 0.4}, Decision(51.0, f"{SLOW}; recovering")),
    ("too few late answers to judge: held", {"p90_s": 2.0, "samples": 3, "rate": 60.0,
                                             "reason": SLOW},
     Decision(60.0, SLOW)),
    ("recovering: +1% of max per second", {"rate": 50.0, "last_cut_at": ago(10), "reason": SLOW},
     Decision(51.0, f"{SLOW}; recovering")),
    ("recovering, two seconds since the last run: +2", {"rate": 50.0, "last_cut_at": ago(10),
                                                       "last_run_at": ago(2)},
     Decision(52.0, "overload; recovering")),
    ("a stalled controller does not jump: at most 2 s counted",
     {"rate": 50.0, "last_cut_at": ago(100), "last_run_at": ago(60), "reason": SLOW},
     Decision(52.0, f"{SLOW}; recovering")),
    ("no increase while the last cut is judged", {"rate": 50.0, "last_cut_at": ago(2),
                                                  "reason": SLOW},
     Decision(50.0, SLOW)),
    ("back at the maximum: the reason goes", {"rate": 99.5, "last_cut_at": ago(60),
                                              "reason": SLOW},
     Decision(100.0, None)),
    ("idle: climbs back", {"rate": 20.0, "idle": True, "p90_s": None, "samples": 0,
                           "last_cut_at": ago(60), "reason": SLOW},
     Decision(21.0, f"{SLOW}; recovering")),
    ("slow PBX: the least step is 0.2/s per second", {"max_cps": 10.0, "rate": 5.0,
                                                      "last_cut_at": ago(60)},
     Decision(5.2, "overload; recovering")),
    ("a maximum lowered under the rate: the maximum", {"max_cps": 40.0, "rate": 100.0},
     Decision(40.0, None)),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(changes: dict[str, Any], expected: Decision) -> None:
    assert decide(measure(**changes)) == expected


def test_floor() -> None:
    assert floor(100.0, DEFAULT_POLICY) == 5.0
    assert floor(4.0, DEFAULT_POLICY) == 0.5
    assert floor(0.2, DEFAULT_POLICY) == 0.2  # never above the maximum


def simulate(capacity: float, asked: float, seconds: int, seed: int = 1) -> list[float]:
    """A PBX that answers at once up to `capacity` originates/s and later and later beyond
    (its queue grows by the excess each second), asked `asked`/s, the controller run every
    second on the last window's responses. Returns the rate sent at, second by second."""
    rng = random.Random(seed)
    policy = Policy()
    rate, reason, last_cut, backlog = asked, None, None, 0.0
    window: list[tuple[int, float]] = []  # (second, latency) of failed responses
    cut_second = -1  # calls sent before the last cut are not measured
    sent: list[float] = []
    for second in range(seconds):
        now = T0 + dt.timedelta(seconds=second)
        sending = min(asked, rate)
        sent.append(sending)
        backlog = max(0.0, backlog + sending - capacity)
        latency = 0.005 + backlog / capacity  # queued behind `backlog` calls
        # One call in ten fails at once (busy, congestion): the PBX's own delay.
        for _ in range(max(1, round(sending / 10))):
            window.append((second, latency * rng.uniform(0.8, 1.2)))
        window = [(s, v) for s, v in window if s > max(second - policy.window_s, cut_second)]
        latencies = sorted(v for _, v in window)
        p90 = latencies[int(0.9 * (len(latencies) - 1))]
        m = Measure(
            rate=rate, max_cps=asked, threshold_s=0.5, p90_s=p90, samples=len(latencies),
            refusals=0, idle=False, last_cut_at=last_cut, last_run_at=now - dt.timedelta(1 / 86400),
            now=now, reason=reason,
        )  # fmt: skip
        decision = decide(m, policy)
        if decision.cut:
            last_cut, cut_second = now, second
        rate, reason = decision.rate, decision.reason
    return sent


@pytest.mark.parametrize(("capacity", "asked"), [(50.0, 100.0), (30.0, 200.0), (80.0, 100.0)])
def test_a_pbx_asked_beyond_what_it_sustains_settles_there(capacity: float, asked: float) -> None:
    """After the first seconds, the PBX is sent about what it sustains: never long above it
    (its queue stays short), and not far below it on average."""
    sent = simulate(capacity, asked, seconds=600)
    settled = sent[60:]
    average = sum(settled) / len(settled)
    assert 0.6 * capacity <= average <= 1.05 * capacity, average
    # Above capacity only briefly: the probing of additive increase, then a cut.
    above = [s > capacity * 1.1 for s in settled]
    longest = max(len(run) for run in "".join("x" if a else " " for a in above).split(" "))
    assert longest <= 20, longest


def test_a_healthy_pbx_is_never_slowed() -> None:
    assert set(simulate(capacity=500.0, asked=100.0, seconds=120)) == {100.0}


# -- the controller against the database --------------------------------------------------------


@pytest.fixture
def responses(session_factory):
    """Write attempts sent through a PBX whose failed OriginateResponse came `latency`
    seconds after the send, a second ago (None: no response yet)."""
    trunk = add_trunk(session_factory, "MC", pbx=["default", "east"])
    campaign = add_campaign(session_factory, trunk)
    used = 0

    def write(pbx: str, latencies: list[float | None], *, reason: int = 5, cause=None) -> None:
        nonlocal used
        contacts = add_contacts(
            session_factory, campaign, simulator_numbers(len(latencies), start=used),
            status="dialing",
        )  # fmt: skip
        used += len(latencies)
        with session_factory.begin() as session:
            for contact, latency in zip(contacts, latencies, strict=True):
                session.execute(
                    text(
                        "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id,"
                        " trunk_id, pbx, attempt_number, status, sent_at, originate_response,"
                        " originate_reason, hangup_cause, originate_response_at)"
                        " VALUES ('1_' || :contact, :campaign, :contact, :trunk, :pbx, 1,"
                        " 'originating',"
                        " now() - interval '1 second' - make_interval(secs => :latency),"
                        " CASE WHEN :has THEN 'Failure' END, :reason, :cause,"
                        " CASE WHEN :has THEN now() - interval '1 second' END)"
                    ),
                    {"campaign": campaign, "contact": contact, "trunk": trunk, "pbx": pbx,
                     "latency": latency or 0.0, "has": latency is not None, "reason": reason,
                     "cause": cause},
                )  # fmt: skip

    return write


def _pbx(session_factory, name: str) -> Any:
    return rows(session_factory, "SELECT * FROM pbxs WHERE name = :n", n=name)[0]


def test_the_controller_cuts_the_late_pbx_only(session_factory, responses) -> None:
    add_pbx(session_factory, "default", max_cps=200)
    add_pbx(session_factory, "east", max_cps=100, latency_threshold_ms=500)
    # default answers in 10-19 ms, east in 1.5-2.4 s. Ringing (Reason 3) does not count,
    # however long it took, nor do responses not come yet.
    responses("default", [0.01 + i / 1000 for i in range(10)])
    responses("east", [1.5 + i / 10 for i in range(10)])
    responses("default", [30.0] * 10, reason=3)
    responses("default", [None] * 5)
    written = {w["name"]: w for w in pbxcontrol.control(session_factory)}
    assert written["east"]["cut"] and not written["default"]["cut"]
    east, default = _pbx(session_factory, "east"), _pbx(session_factory, "default")
    # p90 of 1.5..2.4 s over 10 responses (percentile_cont): 2.31 s; 0.5/2.31 -> x0.5.
    assert east.latency_ms == pytest.approx(2310, abs=1)
    assert (east.rate, east.latency_samples) == (50.0, 10)
    assert east.rate_reason.startswith("p90 OriginateResponse latency 2310 ms over 500 ms")
    assert east.decreased_at is not None and east.measured_at is not None
    assert default.rate is None and default.rate_reason is None  # at its maximum
    assert default.latency_ms == pytest.approx(18.1, abs=0.2) and default.latency_samples == 10
    # Run again at once: nothing is due (about once a second), nothing changes.
    assert pbxcontrol.control(session_factory) == []
    assert _pbx(session_factory, "east").rate == 50.0


def test_old_responses_are_outside_the_window(session_factory, responses) -> None:
    add_pbx(session_factory, "east", max_cps=100)
    responses("east", [3.0] * 10)
    with session_factory.begin() as session:
        session.execute(
            text("UPDATE call_attempts SET originate_response_at = now() - interval '6 seconds'")
        )
    [entry] = [w for w in pbxcontrol.control(session_factory) if w["name"] == "east"]
    assert (entry["cut"], entry["rate"], entry["samples"]) == (False, 100.0, 0)


def test_refusals_cut_and_an_idle_pbx_climbs_back(session_factory, responses) -> None:
    add_pbx(session_factory, "east", max_cps=100)
    responses("east", [0.002] * 3, reason=0, cause=34)  # no channel: refused at once
    pbxcontrol.control(session_factory)
    east = _pbx(session_factory, "east")
    assert (east.rate, east.rate_reason) == (50.0, "3 Originates refused for lack of channels")
    # Later: the refusals out of the window, the PBX idle, a window after the cut.
    with session_factory.begin() as session:
        session.execute(text(
            "UPDATE pbxs SET decreased_at = now() - interval '1 minute',"
            " measured_at = now() - interval '1 second', next_slot_at = now() - interval '1 hour'"
        ))  # fmt: skip
        session.execute(
            text("UPDATE call_attempts SET originate_response_at = now() - interval '1 hour'")
        )
    [entry] = [w for w in pbxcontrol.control(session_factory) if w["name"] == "east"]
    assert not entry["cut"] and 51.0 <= entry["rate"] <= 52.1
    assert _pbx(session_factory, "east").rate_reason.endswith("; recovering")


def test_overlapping_controllers_apply_once(engine, session_factory, responses) -> None:
    """Two ticks measuring at once: the later update matches no row (compare-and-set)."""
    add_pbx(session_factory, "east", max_cps=100)
    responses("east", [2.0] * 10)
    with engine.begin() as conn:
        measured = conn.execute(
            pbxcontrol._MEASURE, {"window": 5.0, "every": pbxcontrol.CONTROL_EVERY_S}
        ).all()
    pbxcontrol.control(session_factory)  # cuts east to 50
    stale = [pbxcontrol._decide(row, DEFAULT_POLICY) for row in measured]
    with engine.begin() as conn:
        conn.execute(pbxcontrol._APPLY, {"rows": json.dumps(stale, default=str)})
    assert _pbx(session_factory, "east").rate == 50.0  # not cut twice on one measure


def test_only_calls_sent_since_the_last_cut_are_judged(session_factory, responses) -> None:
    """Answers to calls sent before a cut say nothing of the new rate; late answers to calls
    sent after it cut again at once, without waiting for a whole window."""
    add_pbx(session_factory, "east", max_cps=100)
    with session_factory.begin() as session:
        session.execute(text(
            "UPDATE pbxs SET rate = 50, rate_reason = 'overload', measured_at = now() - interval"
            " '1 second', decreased_at = now() - interval '3 seconds' WHERE name = 'east'"
        ))  # fmt: skip
    responses("east", [2.5] * 10)  # sent 3.5 s ago: before the cut
    [entry] = [w for w in pbxcontrol.control(session_factory) if w["name"] == "east"]
    assert (entry["cut"], entry["rate"], entry["samples"]) == (False, 50.0, 0)
    with session_factory.begin() as session:
        session.execute(text("UPDATE pbxs SET measured_at = now() - interval '1 second'"))
    responses("east", [1.5] * 10)  # sent 2.5 s ago: after it, and late
    with session_factory.begin() as session:  # half of them answered in the last second
        session.execute(text(
            "UPDATE call_attempts SET originate_response_at = originate_response_at"
            " + interval '0.5 second', sent_at = sent_at + interval '0.5 second'"
            " WHERE id IN (SELECT id FROM call_attempts WHERE sent_at > now() - interval '3 s'"
            " ORDER BY id LIMIT 5)"
        ))  # fmt: skip
        session.execute(text("UPDATE pbxs SET measured_at = now() - interval '1 second'"))
    [entry] = [w for w in pbxcontrol.control(session_factory) if w["name"] == "east"]
    assert (entry["cut"], entry["rate"], entry["samples"]) == (True, 25.0, 10)


def test_after_a_cut_a_draining_backlog_is_left_to_drain(session_factory, responses) -> None:
    add_pbx(session_factory, "east", max_cps=100)
    with session_factory.begin() as session:
        session.execute(text(
            "UPDATE pbxs SET rate = 50, rate_reason = 'overload', measured_at = now() - interval"
            " '1 second', decreased_at = now() - interval '6 seconds' WHERE name = 'east'"
        ))  # fmt: skip
    responses("east", [2.0] * 10)  # answered 1 s ago, sent 3 s ago
    responses("east", [1.0] * 10)  # the same, one second sooner
    with session_factory.begin() as session:
        session.execute(text(
            "UPDATE call_attempts SET originate_response_at = originate_response_at"
            " + interval '0.6 second', sent_at = sent_at + interval '0.6 second'"
            " WHERE originate_response_at - sent_at < interval '1.5 second'"
        ))  # fmt: skip
    [entry] = [w for w in pbxcontrol.control(session_factory) if w["name"] == "east"]
    assert (entry["cut"], entry["rate"], entry["samples"]) == (False, 50.0, 20)
