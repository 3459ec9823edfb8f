"""Several PBXs against real Postgres, without simulators: which PBX the dispatch tick routes
each call through, the state in effect of a PBX, both pacing slots, what a worker does when
the PBX cannot take the call, the calls of a PBX that stayed down, reconciliation and live
call control by the attempt's own PBX."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import logging
import threading
import time
from typing import Any

import pytest
from sqlalchemy import text

from dialer.ami.client import AmiConnectionError, OriginateRejected
from dialer.campaigns import pbxs
from dialer.control import live
from dialer.control.plan import CallRef
from dialer.dialing import dispatch, pbxcontrol
from dialer.dialing.dispatch import TickOptions, run_tick
from dialer.dialing.originate import UNREACHABLE_RETRY_S, Result, originate_attempt
from dialer.dialing.pacing import PAD, max_in_window, take_slots
from dialer.outcomes.reconcile import ReconcileOptions, close_gone
from dialer.settings import AmiServer, Settings
from tests.support_celery import (
    add_campaign,
    add_contacts,
    add_pbx,
    add_trunk,
    pg_connect,
    rows,
    scalar,
    simulator_numbers,
)

UTC = dt.UTC


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def up(session_factory, name: str, **fields: Any) -> None:
    """PBX `name` registered and up: its listener connected, beating now."""
    add_pbx(session_factory, name, state="up", heartbeat_at=now(), state_at=now(), **fields)


def report(session_factory, name: str, state: str, *, ago: float = 0.0, **fields: Any) -> None:
    """PBX `name` reported `state` `ago` seconds ago (its listener beating now)."""
    at = now() - dt.timedelta(seconds=ago)
    add_pbx(
        session_factory, name, state=state, state_at=at, state_since=at, heartbeat_at=now(),
        state_reason=f"{state} for the test", **fields,
    )  # fmt: skip


def per_pbx(session_factory) -> dict[str, int]:
    return dict(rows(session_factory, "SELECT pbx, count(*) FROM call_attempts GROUP BY 1"))


def tick(session_factory, **options: Any) -> dispatch.TickReport:
    return run_tick(session_factory, lambda ids: None, options=TickOptions(**options))


# -- the choice -----------------------------------------------------------------------------------


def test_calls_go_to_the_pbx_with_the_most_free_channels(session_factory) -> None:
    trunk = add_trunk(session_factory, "MC", pbx=["a", "b"])
    up(session_factory, "a", max_channels=30)
    up(session_factory, "b", max_channels=30)
    campaign = add_campaign(session_factory, trunk)
    add_contacts(session_factory, campaign, simulator_numbers(20))
    with session_factory.begin() as session:  # a carries 20 calls already (attempts of others)
        session.execute(text(
            "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id, pbx,"
            " attempt_number, status) SELECT '1_' || id, campaign_id, id, :trunk, 'a', 1, 'up'"
            " FROM contacts ORDER BY id"
        ), {"trunk": trunk})  # fmt: skip
        session.execute(text("UPDATE contacts SET status = 'dialing'"))
    add_contacts(session_factory, campaign, simulator_numbers(30, start=100))
    report_ = tick(session_factory, lookahead_s=100)
    # b (30 free) takes calls until it has as few free as a (10), then they alternate.
    assert len(report_.queued) == 30
    assert per_pbx(session_factory) == {"a": 20 + 5, "b": 25}
    add_contacts(session_factory, campaign, simulator_numbers(20, start=200))
    assert len(tick(session_factory, lookahead_s=100).queued) == 10  # 5 free on each
    assert per_pbx(session_factory) == {"a": 30, "b": 30}
    assert tick(session_factory, lookahead_s=100).queued == []  # both full: 10 contacts wait
    with session_factory.begin() as session:
        session.execute(text(
            "UPDATE call_attempts SET status = 'ended', outcome = 'busy', ended_at = now()"
            " WHERE id IN (SELECT id FROM call_attempts WHERE pbx = 'b' LIMIT 2)"
        ))  # fmt: skip
    assert len(tick(session_factory, lookahead_s=100).queued) == 2  # b's two free channels


def test_each_call_carries_its_routes_dial_string(session_factory) -> None:
    trunk = add_trunk(session_factory, "MC", pbx="a", channel_template="PJSIP/{number}@mc-a")
    with session_factory.begin() as session:
        add_pbx(session, "b")
        session.execute(text(
            "INSERT INTO trunk_routes (trunk_id, pbx, channel_template)"
            " VALUES (:t, 'b', 'Local/{number}@b-{trunk}')"
        ), {"t": trunk})  # fmt: skip
    up(session_factory, "a")
    up(session_factory, "b")
    add_contacts(session_factory, add_campaign(session_factory, trunk), simulator_numbers(10))
    tick(session_factory)
    attempts = rows(
        session_factory,
        "SELECT a.pbx, a.payload ->> 'channel' AS channel, k.phone_e164"
        " FROM call_attempts a JOIN contacts k ON k.id = a.contact_id",
    )
    assert collections.Counter(a.pbx for a in attempts) == {"a": 5, "b": 5}
    expected = {"a": "PJSIP/{}@mc-a", "b": "Local/{}@b-MC"}
    assert all(a.channel == expected[a.pbx].format(a.phone_e164) for a in attempts)


def test_a_pbxs_rate_and_channels_bound_what_it_is_given(session_factory) -> None:
    """Back-pressure's rate (3/s, lookahead 2 s: 6 calls) and a PBX's channels, whatever its
    trunks; the rest goes to the other PBX."""
    mc = add_trunk(session_factory, "MC", pbx=["a", "b"])
    alt = add_trunk(session_factory, "ALT", pbx=["a"])
    up(session_factory, "a", max_cps=100, rate=3.0)
    up(session_factory, "b", max_channels=4)
    add_contacts(session_factory, add_campaign(session_factory, mc, "mc"), simulator_numbers(20))
    add_contacts(
        session_factory, add_campaign(session_factory, alt, "alt"), simulator_numbers(20, start=50)
    )  # fmt: skip
    tick(session_factory, lookahead_s=2.0, backpressure=None)  # the rate as it is
    by_trunk = rows(
        session_factory,
        "SELECT t.name, a.pbx, count(*) AS n FROM call_attempts a JOIN trunks t"
        " ON t.id = a.trunk_id GROUP BY 1, 2 ORDER BY 1, 2",
    )
    counts = {(r.name, r.pbx): r.n for r in by_trunk}
    assert sum(n for (_, pbx), n in counts.items() if pbx == "a") == 6  # shared by two trunks
    assert counts[("MC", "b")] == 4


def test_a_pbx_slowed_by_back_pressure_keeps_its_share(session_factory) -> None:
    """Free capacity as a share of each PBX's own limits: a cut to a tenth of the other's rate
    gets about a tenth of the calls, not none (compared in calls, b's 200 free would always
    beat a's 20 while the trunk's 100 ran out)."""
    trunk = add_trunk(session_factory, "MC", cps=50.0, pbx=["a", "b"])
    up(session_factory, "a", max_cps=100, rate=10.0)
    up(session_factory, "b", max_cps=100)
    add_contacts(session_factory, add_campaign(session_factory, trunk), simulator_numbers(200))
    report_ = tick(session_factory, lookahead_s=2.0, backpressure=None)
    assert len(report_.queued) == 100  # the trunk's 50/s for 2 s
    counts = per_pbx(session_factory)
    # In proportion to their rates (10 : 100) over the trunk's 100 calls: 9 and 91.
    assert 8 <= counts["a"] <= 10, counts
    assert counts["a"] + counts["b"] == 100


@pytest.mark.parametrize(
    "bad",
    [
        {"state": "down"},
        {"state": "shutting_down"},
        {"state": "refusing"},
        {"state": "up", "enabled": False},
        # Its listener died: unknown, and another PBX of the trunk is up.
        {"state": "up", "heartbeat_at": now() - dt.timedelta(seconds=30)},
    ],
    ids=["down", "shutting down", "refusing", "disabled", "listener gone"],
)
def test_a_pbx_that_cannot_take_calls_gets_none(session_factory, bad: dict[str, Any]) -> None:
    trunk = add_trunk(session_factory, "MC", pbx=["a", "b"])
    up(session_factory, "a")
    add_pbx(session_factory, "b", **{"state_at": now(), "heartbeat_at": now(), **bad})
    add_contacts(session_factory, add_campaign(session_factory, trunk), simulator_numbers(10))
    assert len(tick(session_factory).queued) == 10
    assert per_pbx(session_factory) == {"a": 10}


def test_pbxs_whose_state_is_unknown_are_used_when_none_is_up(session_factory) -> None:
    trunk = add_trunk(session_factory, "MC", pbx=["a", "b"])  # both unknown: no listener
    up(session_factory, "b")
    campaign = add_campaign(session_factory, trunk)
    add_contacts(session_factory, campaign, simulator_numbers(4))
    tick(session_factory)
    assert per_pbx(session_factory) == {"b": 4}
    report(session_factory, "b", "down")
    add_contacts(session_factory, campaign, simulator_numbers(4, start=10))
    tick(session_factory)
    assert per_pbx(session_factory) == {"a": 4, "b": 4}


def test_with_no_pbx_to_take_them_the_calls_wait(session_factory, caplog) -> None:
    trunk = add_trunk(session_factory, "MC", pbx=["a", "b"])
    bare = add_trunk(session_factory, "BARE", pbx=[])
    report(session_factory, "a", "down")
    add_pbx(session_factory, "b", enabled=False)
    first = add_campaign(session_factory, trunk, "first")
    second = add_campaign(session_factory, bare, "second")
    due = now() - dt.timedelta(minutes=1)
    add_contacts(session_factory, first, simulator_numbers(5), next_attempt_at=due)
    add_contacts(session_factory, second, simulator_numbers(5, start=10), next_attempt_at=due)
    dispatch._unrouted_logged.clear()
    with caplog.at_level(logging.WARNING, logger="dialer.dialing.dispatch"):
        reports = [tick(session_factory) for _ in range(3)]
    assert all(r.queued == [] for r in reports)
    assert reports[0].unrouted == {
        "MC": "no PBX can take calls: a down (down for the test), b disabled",
        "BARE": "no route to any PBX (dialer trunk route add)",
    }
    logged = [r.getMessage() for r in caplog.records if "calls wait" in r.getMessage()]
    assert sorted(logged) == [  # once each, not every tick
        "trunk BARE: calls wait, no route to any PBX (dialer trunk route add)",
        "trunk MC: calls wait, no PBX can take calls: a down (down for the test), b disabled",
    ]
    contacts = rows(session_factory, "SELECT status, attempts, next_attempt_at FROM contacts")
    assert {(c.status, c.attempts, c.next_attempt_at) for c in contacts} == {("pending", 0, due)}
    assert scalar(session_factory, "SELECT count(*) FROM call_attempts") == 0
    assert set(rows(session_factory, "SELECT status FROM campaigns")) == {("running",)}
    up(session_factory, "a")
    assert len(tick(session_factory).queued) == 5  # a is back: MC's calls go


# -- the state in effect --------------------------------------------------------------------------

STATES = [
    # (case, reported state, seconds since reported, seconds since the listener's beat, in effect)
    ("listener connected and beating", "up", 60, 1, "up"),
    ("listener stopped beating", "up", 60, 11, "unknown"),
    ("never had a listener", "unknown", 60, None, "unknown"),
    ("listener lost the PBX", "down", 60, 1, "down"),
    ("listener lost the PBX and died", "down", 60, None, "unknown"),
    ("a worker's report holds", "refusing", 5, None, "refusing"),
    ("a worker's report holds while the listener beats", "down", 5, 1, "down"),
    ("a worker's report without a listener ends", "shutting_down", 11, None, "unknown"),
]


@pytest.mark.parametrize(
    ("state", "reported_ago", "beat_ago", "expected"),
    [c[1:] for c in STATES],
    ids=[c[0] for c in STATES],
)
def test_the_state_in_effect(
    session_factory, state: str, reported_ago: float, beat_ago: float | None, expected: str
) -> None:
    beat = None if beat_ago is None else now() - dt.timedelta(seconds=beat_ago)
    at = now() - dt.timedelta(seconds=reported_ago)
    add_pbx(session_factory, "a", state=state, state_at=at, heartbeat_at=beat)
    found = scalar(
        session_factory, f"SELECT {pbxs.effective_state_sql('p')} FROM pbxs p WHERE name = 'a'"
    )
    assert found == expected


BEATS = [
    # (case, reported state, seconds since reported, listener connected, state after the beat)
    ("connected: an old report gives way", "down", 20, True, "up"),
    ("connected: a fresh report holds", "refusing", 5, True, "refusing"),
    ("connected, state unknown", "unknown", 1, True, "up"),
    ("not connected: up no more", "up", 1, False, "down"),
    ("not connected, shutting down: kept", "shutting_down", 1, False, "shutting_down"),
]


@pytest.mark.parametrize(
    ("state", "reported_ago", "connected", "expected"),
    [c[1:] for c in BEATS],
    ids=[c[0] for c in BEATS],
)
def test_the_listeners_beat(
    session_factory, state: str, reported_ago: float, connected: bool, expected: str
) -> None:
    at = now() - dt.timedelta(seconds=reported_ago)
    add_pbx(session_factory, "a", state=state, state_at=at, state_since=at, state_reason="old")
    with session_factory.begin() as session:
        session.connection().exec_driver_sql(pbxs.HEARTBEAT_SQL, pbxs.beat_params("a", connected))
    row = rows(session_factory, "SELECT * FROM pbxs WHERE name = 'a'")[0]
    assert row.state == expected and row.heartbeat_at > now() - dt.timedelta(seconds=2)
    changed = expected != state
    assert (row.state_since > at, row.state_reason != "old") == (changed, changed)


# -- pacing -----------------------------------------------------------------------------------------


def _attempts_on(session_factory, trunk: int, pbx_of: list[str]) -> list[int]:
    campaign = add_campaign(session_factory, trunk, f"c{len(pbx_of)}-{pbx_of[0]}")
    contacts = add_contacts(session_factory, campaign, simulator_numbers(len(pbx_of), start=500))
    with session_factory.begin() as session:
        return [
            session.execute(text(
                "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id,"
                " pbx, attempt_number) VALUES ('1_' || :k, :c, :k, :t, :p, 1) RETURNING id"
            ), {"k": k, "c": campaign, "t": trunk, "p": p}).scalar_one()
            for k, p in zip(contacts, pbx_of, strict=True)
        ]  # fmt: skip


def test_a_call_takes_its_trunks_and_its_pbxs_slot(session_factory, pg_connection) -> None:
    trunk = add_trunk(session_factory, "MC", cps=50, pbx=["slow", "fast"])
    add_pbx(session_factory, "slow", max_cps=10)
    ids = _attempts_on(session_factory, trunk, ["slow", "fast", "slow", "fast", "fast"])
    taken = [take_slots(pg_connection, trunk, attempt) for attempt in ids]
    slots = [slot for slot, _ in taken]
    trunk_step, slow_step = PAD / 50, PAD / 10
    assert [with_trunk for _, with_trunk in taken] == [True, True, False, True, True]
    assert slots[1] - slots[0] == pytest.approx(trunk_step, abs=1e-5)
    # slow's second call waits for slow's own interval, without holding the trunk back: the
    # calls after it take the trunk's next slots, and it takes the trunk's when its own comes.
    assert slots[2] - slots[0] == pytest.approx(slow_step, abs=1e-5)
    assert slots[3] - slots[1] == pytest.approx(trunk_step, abs=1e-5)
    assert slots[4] - slots[3] == pytest.approx(trunk_step, abs=1e-5)
    next_slot = scalar(session_factory, "SELECT extract(epoch FROM next_slot_at) FROM trunks")
    assert float(next_slot) == pytest.approx(slots[4] + trunk_step, abs=1e-5)


def test_a_slow_pbx_does_not_hold_its_trunk_back(session_factory, pg_connection) -> None:
    """Calls through a PBX paced at 5/s and through one at 1000/s, asked for in turns: those
    through the fast one go at the trunk's pace, not at the slow one's."""
    trunk = add_trunk(session_factory, "MC", cps=50, pbx=["slow", "fast"])
    add_pbx(session_factory, "slow", max_cps=5)
    order = ["slow", "fast"] * 10
    taken = [take_slots(pg_connection, trunk, attempt) for attempt in
             _attempts_on(session_factory, trunk, order)]  # fmt: skip
    fast = [slot for (slot, _), pbx in zip(taken, order, strict=True) if pbx == "fast"]
    slow = [slot for (slot, _), pbx in zip(taken, order, strict=True) if pbx == "slow"]
    assert fast[-1] - fast[0] == pytest.approx(9 * PAD / 50, abs=0.03)  # not 9 x 0.21 s
    assert all(b - a == pytest.approx(PAD / 5, abs=1e-5) for a, b in itertools.pairwise(slow))


def test_concurrent_takers_on_two_pbxs_hold_the_trunks_rate(session_factory, database_url) -> None:
    cps = 40
    trunk = add_trunk(session_factory, "MC", cps=cps, pbx=["a", "b"])
    ids = _attempts_on(session_factory, trunk, ["a", "b"] * 60)
    slots: list[float] = []
    lock = threading.Lock()

    def take(mine: list[int]) -> None:
        with pg_connect(database_url) as conn:
            for attempt in mine:
                slot, _ = take_slots(conn, trunk, attempt)
                with lock:
                    slots.append(slot)

    threads = [threading.Thread(target=take, args=(ids[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(slots) == 120
    assert max_in_window(slots, 1.0) <= cps
    ordered = sorted(slots)
    assert min(b - a for a, b in zip(ordered, ordered[1:], strict=False)) >= PAD / cps - 1e-5


def test_a_call_waiting_for_its_pbxs_turn_is_sent_in_it_and_others_go_meanwhile(
    session_factory, database_url
) -> None:
    """The worker end of `test_a_slow_pbx_does_not_hold_its_trunk_back`: the second call
    through the slow PBX waits for its turn, then takes the trunk's slot and is sent; a call
    through the fast one, asked for later, went before it."""
    trunk = add_trunk(session_factory, "MC", cps=10, pbx=["slow", "fast"])
    up(session_factory, "slow", max_cps=2)
    up(session_factory, "fast")
    campaign = add_campaign(session_factory, trunk)
    add_contacts(session_factory, campaign, simulator_numbers(3))
    ids = tick(session_factory, backpressure=None).queued
    with session_factory.begin() as session:  # two through slow, then one through fast
        for attempt, pbx in zip(sorted(ids), ["slow", "slow", "fast"], strict=True):
            session.execute(text("UPDATE call_attempts SET pbx = :p WHERE id = :i"),
                            {"p": pbx, "i": attempt})  # fmt: skip
    first, second, third = sorted(ids)
    sent: dict[int, float] = {}
    results: dict[int, Result] = {}

    class Clock(FakeClient):
        def __init__(self, attempt: int) -> None:
            super().__init__()
            self.attempt = attempt

        def originate(self, payload, *, timeout=None, send_by=None) -> None:
            sent[self.attempt] = time.time()

    def send(attempt: int) -> None:
        with pg_connect(database_url) as conn:
            results[attempt] = originate_attempt(conn, attempt, lambda pbx: Clock(attempt))

    send(first)
    waiting = threading.Thread(target=send, args=(second,))
    waiting.start()
    time.sleep(0.05)  # the second is waiting for slow's turn when the third is asked for
    send(third)
    waiting.join(10)
    assert results == {first: Result.SENT, second: Result.SENT, third: Result.SENT}
    assert sent[first] < sent[third] < sent[second]
    assert sent[third] - sent[first] == pytest.approx(PAD / 10, abs=0.05)  # the trunk's pace
    assert sent[second] - sent[first] == pytest.approx(PAD / 2, abs=0.05)  # slow's pace
    assert scalar(session_factory, "SELECT count(sent_at) FROM call_attempts") == 3


# -- the worker, when the PBX cannot take the call ------------------------------------------------


class FakeClient:
    """An AMI client that records what it was asked; `on_wait` runs in wait_connected."""

    def __init__(self, on_wait=None, fail: BaseException | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.on_wait = on_wait
        self.fail = fail

    def wait_connected(self, timeout: float) -> None:
        if self.on_wait is not None:
            self.on_wait()

    def originate(self, payload, *, timeout=None, send_by=None) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(dict(payload))


def _one_attempt(session_factory, pbx: str = "a") -> int:
    trunk = add_trunk(session_factory, "MC", pbx=[pbx])
    up(session_factory, pbx)
    add_contacts(session_factory, add_campaign(session_factory, trunk), simulator_numbers(1))
    (attempt,) = tick(session_factory).queued
    return attempt


def _attempt(session_factory, attempt: int) -> Any:
    return rows(
        session_factory,
        "SELECT a.status, a.send_error, a.sent_at, a.outcome, k.status AS contact,"
        " k.attempts, k.next_attempt_at - now() AS due_in"
        " FROM call_attempts a JOIN contacts k ON k.id = a.contact_id WHERE a.id = :id",
        id=attempt,
    )[0]


def test_an_attempt_whose_pbx_went_down_is_routed_again(session_factory, pg_connection) -> None:
    attempt = _one_attempt(session_factory)
    report(session_factory, "a", "down")
    client = FakeClient()
    assert originate_attempt(pg_connection, attempt, lambda pbx: client) is Result.PBX_UNAVAILABLE
    row = _attempt(session_factory, attempt)
    assert (row.status, row.contact, row.attempts, row.sent_at) == ("not_sent", "pending", 0, None)
    assert row.send_error == "not sent: PBX a is down; routed again"
    assert row.due_in <= dt.timedelta(0) and client.sent == []
    with session_factory.begin() as session:
        add_pbx(session, "b")
        session.execute(text("INSERT INTO trunk_routes (trunk_id, pbx) SELECT id, 'b' FROM trunks"))
    up(session_factory, "b")
    tick(session_factory)
    assert per_pbx(session_factory) == {"a": 1, "b": 1}  # the contact, through b this time


def test_a_pbx_that_goes_down_before_the_send_gets_nothing(session_factory, pg_connection) -> None:
    """Between the claim and the send: the last checks read the PBX's state again."""
    attempt = _one_attempt(session_factory)
    client = FakeClient(on_wait=lambda: report(session_factory, "a", "shutting_down"))
    assert originate_attempt(pg_connection, attempt, lambda pbx: client) is Result.PBX_UNAVAILABLE
    assert client.sent == []
    row = _attempt(session_factory, attempt)
    assert (row.status, row.attempts) == ("not_sent", 0)
    assert row.send_error == "not sent: its PBX stopped taking calls; routed again"


def test_a_worker_without_settings_for_the_pbx_sends_nothing(
    session_factory, pg_connection
) -> None:
    attempt = _one_attempt(session_factory, pbx="east")
    here = Settings(ami_servers={"default": AmiServer("default", "127.0.0.1", 1, "u", "s")})
    assert originate_attempt(pg_connection, attempt, here.ami_for) is Result.NOT_SENT
    row = _attempt(session_factory, attempt)
    assert (row.status, row.contact, row.attempts) == ("not_sent", "pending", 0)
    assert "this worker has no AMI settings for PBX east" in row.send_error
    assert dt.timedelta(0) < row.due_in <= dt.timedelta(seconds=UNREACHABLE_RETRY_S)
    # Other hosts may send it: the PBX is not reported.
    assert scalar(session_factory, "SELECT state FROM pbxs WHERE name = 'east'") == "up"


@pytest.mark.parametrize(
    ("failure", "state", "result", "attempt_status"),
    [
        (AmiConnectionError("cannot reach AMI a"), "down", Result.NOT_SENT, "not_sent"),
        (OriginateRejected("Asterisk is shutting down"), "shutting_down", Result.NOT_SENT,
         "not_sent"),
        (OriginateRejected("Permission denied"), "refusing", Result.REJECTED, "ended"),
    ],
    ids=["unreachable", "shutting down", "refused"],
)  # fmt: skip
def test_workers_report_a_pbx_that_cannot_take_calls(
    session_factory, pg_connection, failure, state, result, attempt_status
) -> None:
    attempt = _one_attempt(session_factory)
    if isinstance(failure, AmiConnectionError):
        client = FakeClient(on_wait=lambda: (_ for _ in ()).throw(failure))
    else:
        client = FakeClient(fail=failure)
    assert originate_attempt(pg_connection, attempt, lambda pbx: client) is result
    pbx = rows(session_factory, "SELECT * FROM pbxs WHERE name = 'a'")[0]
    assert pbx.state == state and str(failure) in pbx.state_reason
    row = _attempt(session_factory, attempt)
    assert row.status == attempt_status
    if attempt_status == "not_sent":
        assert row.due_in <= dt.timedelta(0) and row.attempts == 0
    # For REPORT_HOLD_S the tick routes nothing to it.
    add_contacts(
        session_factory, scalar(session_factory, "SELECT id FROM campaigns"),
        simulator_numbers(3, start=40),
    )  # fmt: skip
    assert tick(session_factory).queued == []


# -- the calls of a PBX that stayed down ----------------------------------------------------------


def test_calls_on_a_pbx_down_too_long_are_closed_as_its_doing(session_factory) -> None:
    trunk = add_trunk(session_factory, "MC", pbx=["a", "b", "c", "d"])
    campaign = add_campaign(session_factory, trunk, max_attempts=3)
    contacts = add_contacts(session_factory, campaign, simulator_numbers(6), status="dialing")
    placed = [("a", "originating", None), ("a", "up", None), ("a", "up", "TIMEOUT"),
              ("b", "up", None), ("c", "up", None), ("d", "up", None)]  # fmt: skip
    with session_factory.begin() as session:
        for contact, (pbx, status, read) in zip(contacts, placed, strict=True):
            session.execute(
                text(
                    "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id, pbx,"
                    " attempt_number, status, sent_at, answered_at, amd_status, read_status)"
                    " VALUES ('1_' || :k, :c, :k, :t, :p, 1, :s, now() - interval '5 minutes',"
                    " CASE WHEN :s = 'up' THEN now() - interval '5 minutes' END,"
                    " CASE WHEN :s = 'up' THEN 'HUMAN' END, :r)"
                ),
                {"k": contact, "c": campaign, "t": trunk, "p": pbx, "s": status, "r": read},
            )
    report(session_factory, "a", "down", ago=200)
    report(session_factory, "b", "down", ago=60)  # not long enough yet
    # c: up. d: a worker's old report, no listener to confirm it: nobody knows it is down.
    long_ago = now() - dt.timedelta(seconds=600)
    add_pbx(session_factory, "d", state="down", state_at=long_ago, state_since=long_ago)
    assert pbxcontrol.close_calls_on_dead_pbxs(session_factory, 120.0) == 3
    closed = rows(
        session_factory,
        "SELECT a.pbx, a.status, a.outcome, a.ended_by, a.pbx_down_at, p.state_since,"
        " k.status AS contact, k.next_attempt_at > now() AS later"
        " FROM call_attempts a JOIN contacts k ON k.id = a.contact_id"
        " JOIN pbxs p ON p.name = a.pbx ORDER BY a.id",
    )
    assert [(r.pbx, r.status, r.outcome, r.ended_by) for r in closed] == [
        ("a", "ended", "unknown", "pbx"),
        ("a", "ended", "unknown", "pbx"),
        ("a", "ended", "human_no_press", "pbx"),  # settled before the PBX went
        ("b", "up", None, None),
        ("c", "up", None, None),
        ("d", "up", None, None),
    ]
    assert all(r.pbx_down_at == r.state_since for r in closed[:3])
    assert [(r.contact, r.later) for r in closed[:2]] == [("pending", True)] * 2  # retried
    assert closed[2].contact == "completed"
    assert pbxcontrol.close_calls_on_dead_pbxs(session_factory, 120.0) == 0  # once
    # The tick does it too, with its own bound.
    assert tick(session_factory, pbx_down_close_after_s=30.0).queued == []
    assert scalar(session_factory, "SELECT count(*) FROM call_attempts WHERE status = 'up'") == 2


# -- reconciliation and live control follow the attempt's own PBX ---------------------------------


def test_reconciliation_checks_the_attempts_sent_through_its_pbx(session_factory, engine) -> None:
    trunk = add_trunk(session_factory, "MC", pbx=["default", "east"])
    campaign = add_campaign(session_factory, trunk)
    contacts = add_contacts(session_factory, campaign, simulator_numbers(4), status="dialing")
    with session_factory.begin() as session:
        for n, contact in enumerate(contacts):
            session.execute(
                text(
                    "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id, pbx,"
                    " attempt_number, status, sent_at) VALUES ('1_' || :k, :c, :k, :t, :p, 1,"
                    " 'originating', now() - interval '10 minutes')"
                ),
                {"k": contact, "c": campaign, "t": trunk, "p": "east" if n % 2 else "default"},
            )
    with engine.begin() as conn:
        closed = close_gone(
            conn, pbx="east", present=set(), snapshot=now(), on_connect=True,
            options=ReconcileOptions(),
        )  # fmt: skip
    assert len(closed) == 2
    assert per_open(session_factory) == {"default": 2}


def per_open(session_factory) -> dict[str, int]:
    return dict(
        rows(
            session_factory,
            "SELECT pbx, count(*) FROM call_attempts WHERE status = 'originating' GROUP BY 1",
        )
    )


def test_live_control_uses_the_calls_pbx_and_its_routes_dial_string(
    session_factory, engine
) -> None:
    trunk = add_trunk(session_factory, "MC", pbx="default")
    with session_factory.begin() as session:
        add_pbx(session, "east")
        session.execute(text(
            "INSERT INTO trunk_routes (trunk_id, pbx, channel_template)"
            " VALUES (:t, 'east', 'PJSIP/{number}@mc-east')"
        ), {"t": trunk})  # fmt: skip
    up(session_factory, "east")
    report(session_factory, "default", "down")
    add_contacts(session_factory, add_campaign(session_factory, trunk), simulator_numbers(1))
    (attempt,) = tick(session_factory).queued
    with engine.connect() as conn:
        found = live.find_attempt(conn, CallRef("attempt_id", str(attempt)))
    assert found.pbx == "east"
    assert found.trunk is not None and found.trunk.channel_for("+15551234567") == (
        "PJSIP/+15551234567@mc-east"
    )
    with session_factory.begin() as session:
        session.execute(text("DELETE FROM trunk_routes WHERE pbx = 'east'"))
    with engine.connect() as conn:
        gone = live.find_attempt(conn, CallRef("attempt_id", str(attempt)))
    assert (gone.pbx, gone.trunk) == ("east", None)  # no other PBX's dial string instead
