"""A PBX cluster end to end: two simulators, their listeners, real Celery workers with the tick.

What the simulators recorded is the ground truth for "sent": every check of exactly-once
counts the Originates they received per custom_call_id, across all of them.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import text

from dialer.dialing.dispatch import TickOptions
from dialer.dialing.pacing import max_in_window
from dialer.reports import queries as reports
from dialer.settings import AmiServer, Settings
from tests.support_celery import (
    add_campaign,
    add_contacts,
    add_pbx,
    add_trunk,
    in_process_worker,
    rows,
    scalar,
    simulator_numbers,
    wait_until,
)
from tests.test_dialing_e2e import running_listener

PBXS = ("west", "east")


def server(name: str, sim) -> AmiServer:
    return AmiServer(name, sim.host, sim.port, sim.username, sim.secret)


def cluster_settings(settings: Settings, sims: dict[str, Any]) -> Settings:
    servers = {name: server(name, sim) for name, sim in sims.items()}
    return Settings(
        database_url=settings.database_url,
        broker_url=settings.broker_url,
        log_level="INFO",
        ami_servers={"default": servers["west"], **servers},
    )


@contextlib.contextmanager
def listeners(engine, session_factory, sims: dict[str, Any]) -> Iterator[None]:
    """One listener per simulator (as `dialer listen` per PBX), each PBX reported up."""
    with contextlib.ExitStack() as stack:
        for name, sim in sims.items():
            stack.enter_context(running_listener(engine, server(name, sim)))
        wait_until(
            lambda: (
                scalar(session_factory, "SELECT count(*) FROM pbxs WHERE state = 'up'") == len(sims)
            ),
            15,
            message="every listener connected",
        )
        yield


def originates(sim, since_wall: float = 0.0) -> list[dict[str, Any]]:
    return [r for r in sim.records() if r["action"] == "Originate" and r["wall"] >= since_wall]


def state_of(session_factory, pbx: str) -> Any:
    return rows(session_factory, "SELECT * FROM pbxs WHERE name = :n", n=pbx)[0]


class Peaks:
    """The most calls each simulator had up at once, sampled every few ms."""

    def __init__(self, sims: dict[str, Any]) -> None:
        self.sims = sims
        self.peak = dict.fromkeys(sims, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, sim in self.sims.items():
                with contextlib.suppress(Exception):  # a simulator being stopped
                    self.peak[name] = max(self.peak[name], sim.active_calls())
            time.sleep(0.005)

    def __enter__(self) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_calls_spread_by_free_capacity_and_the_trunk_holds_its_cps_across_pbxs(
    settings, session_factory, engine, make_app, pbx_sim_factory
) -> None:
    """west carries up to 8 calls, east 3: each gets calls as it has room, never more than
    it may carry; the trunk's 20 calls/s hold over both; every call is sent once and ends."""
    sims = {"west": pbx_sim_factory(speed=10), "east": pbx_sim_factory(speed=10)}
    trunk = add_trunk(session_factory, "MC", cps=20, max_channels=100, pbx=list(PBXS))
    add_pbx(session_factory, "west", max_channels=8)
    add_pbx(session_factory, "east", max_channels=3)
    campaign = add_campaign(session_factory, trunk, max_attempts=1)
    # Humans who press nothing: about two seconds up each at speed 10.
    add_contacts(session_factory, campaign, simulator_numbers(60, ending="02"))
    with (
        listeners(engine, session_factory, sims),
        Peaks(sims) as peaks,
        in_process_worker(make_app(cluster_settings(settings, sims)), beat=True),
    ):
        wait_until(
            lambda: scalar(session_factory, "SELECT status FROM campaigns") == "completed",
            60,
            message="the campaign to complete",
        )
    sent = {name: originates(sim) for name, sim in sims.items()}
    assert 0 < peaks.peak["west"] <= 8 and 0 < peaks.peak["east"] <= 3, peaks.peak
    # By free capacity: west, with room for more, took most of them.
    assert len(sent["west"]) > 1.5 * len(sent["east"]) > 0, {k: len(v) for k, v in sent.items()}
    everything = [r for records in sent.values() for r in records]
    assert max_in_window([r["mono"] for r in everything], 1.0) <= 20
    counts = collections.Counter(r["action_id"] for r in everything)
    attempts = rows(
        session_factory, "SELECT custom_call_id, pbx, status, outcome FROM call_attempts"
    )
    assert set(counts.values()) == {1} and set(counts) == {a.custom_call_id for a in attempts}
    where = {r["action_id"]: name for name, records in sent.items() for r in records}
    assert all(where[a.custom_call_id] == a.pbx for a in attempts)  # sent where routed
    assert {(a.status, a.outcome) for a in attempts} == {("ended", "human_no_press")}


def test_a_pbx_that_dies_hands_its_share_over_and_takes_calls_again_when_back(
    settings, session_factory, engine, make_app, pbx_sim_factory
) -> None:
    """west dies mid-campaign: within seconds every new call goes to east, west's calls are
    closed as the PBX's doing (unknown, ended by the PBX) and retried; west comes back and
    takes calls again. No call is sent twice, every attempt ends."""
    sims = {"west": pbx_sim_factory(speed=20), "east": pbx_sim_factory(speed=20)}
    trunk = add_trunk(session_factory, "MC", cps=10, max_channels=100, pbx=list(PBXS))
    campaign = add_campaign(
        session_factory, trunk, max_attempts=2, retry_delays={"unknown": 1, "interrupted": 1}
    )
    # Humans who press nothing: about a second up each at speed 20.
    add_contacts(session_factory, campaign, simulator_numbers(140, ending="02"))
    app = make_app(cluster_settings(settings, sims), tick=TickOptions(pbx_down_close_after_s=2.0))
    west = sims["west"]
    with listeners(engine, session_factory, sims), in_process_worker(app, beat=True):
        wait_until(lambda: len(originates(west)) >= 8, 20, message="west's first calls")
        west.stop()  # the PBX dies: its calls and connections are gone
        died = time.time()
        wait_until(
            lambda: state_of(session_factory, "west").state == "down", 5, message="west down"
        )
        assert "listener lost its AMI connection" in state_of(session_factory, "west").state_reason
        # Its calls left open are closed once it has been down for the bound (2 s).
        wait_until(
            lambda: scalar(
                session_factory,
                "SELECT count(*) FROM call_attempts WHERE pbx = 'west'"
                " AND status IN ('originating', 'up')",
            ) == 0,
            10, message="west's calls closed",
        )  # fmt: skip
        # Its share moved to east within seconds: east alone is sent the trunk's 10 calls/s.
        time.sleep(max(0.0, died + 4.0 - time.time()))
        east = [r for r in originates(sims["east"]) if died + 1.5 <= r["wall"] < died + 3.5]
        assert len(east) >= 15, len(east)
        west.start()  # back on the same port
        wait_until(lambda: state_of(session_factory, "west").state == "up", 15, message="west up")
        back = time.time()
        wait_until(lambda: len(originates(west, back)) >= 3, 20, message="west's calls again")
        wait_until(
            lambda: scalar(session_factory, "SELECT status FROM campaigns") == "completed",
            60,
            message="the campaign to complete",
        )
    assert state_of(session_factory, "west").state == "unknown"  # its listener stopped
    attempts = rows(
        session_factory,
        "SELECT custom_call_id, pbx, status, outcome, ended_by, pbx_down_at, send_error,"
        " extract(epoch FROM sent_at) AS sent FROM call_attempts",
    )
    everything = [r for sim in sims.values() for r in originates(sim)]
    counts = collections.Counter(r["action_id"] for r in everything)
    assert set(counts.values()) == {1}, "a call was sent twice"
    sent = {a.custom_call_id for a in attempts if a.sent is not None}
    assert set(counts) <= sent  # nothing reached a PBX without being recorded as sent
    # Nothing was sent to west while it was down.
    assert not [a for a in attempts if a.pbx == "west" and a.sent and died < a.sent < back]
    lost = [a for a in attempts if a.pbx == "west" and a.pbx_down_at is not None]
    assert lost and {(a.outcome, a.ended_by) for a in lost} <= {("unknown", "pbx")}
    assert {a.status for a in attempts} <= {"ended", "not_sent"}
    assert all(a.outcome for a in attempts if a.status == "ended")
    contacts = rows(session_factory, "SELECT status FROM contacts")
    assert {c.status for c in contacts} <= {"completed", "exhausted"}


def test_a_refusing_pbx_is_slowed_and_the_watch_says_why(
    settings, session_factory, engine, make_app, pbx_sim_factory
) -> None:
    """west can only carry two calls and refuses the others (Reason 0, cause 34): its rate
    is cut at once, the calls it cannot take go to east, and `campaign watch` shows it.

    The calls already queued for west when its rate is cut still go through it, at its new
    rate (at most two seconds of them, the tick's lookahead); the new ones go by its rate."""
    sims = {"west": pbx_sim_factory(speed=10, max_channels=2), "east": pbx_sim_factory(speed=10)}
    trunk = add_trunk(session_factory, "MC", cps=40, max_channels=100, pbx=list(PBXS))
    add_pbx(session_factory, "west", max_cps=30)
    add_pbx(session_factory, "east", max_cps=30)
    campaign = add_campaign(session_factory, trunk, max_attempts=1)
    add_contacts(session_factory, campaign, simulator_numbers(300, ending="02"))
    app = make_app(cluster_settings(settings, sims))
    # Threads enough that calls waiting for west's slower slots leave some for east's.
    with listeners(engine, session_factory, sims), in_process_worker(app, concurrency=8, beat=True):
        wait_until(lambda: state_of(session_factory, "west").rate is not None, 20, message="a cut")
        with engine.connect() as conn:
            frame = reports.watch_frame(conn, "campaign")
        cut = state_of(session_factory, "west").decreased_at.timestamp()
        time.sleep(max(0.0, cut + 4.0 - time.time()))
        with session_factory.begin() as session:  # the rest is not needed
            session.execute(text("UPDATE campaigns SET status = 'paused'"))
        time.sleep(0.5)  # sends under way end before the workers stop
    west = state_of(session_factory, "west")
    assert west.rate <= 15.0 and "Originates refused for lack of channels" in west.rate_reason
    by_name = {p["pbx"]: p for p in frame["pbxs"]}
    assert by_name["west"]["rate"] < by_name["west"]["max_cps"]
    assert "refused" in by_name["west"]["rate_reason"]
    assert by_name["east"]["rate"] == 30.0 and by_name["east"]["state"] == "up"
    refused = scalar(
        session_factory,
        "SELECT count(*) FROM call_attempts WHERE pbx = 'west' AND hangup_cause = 34",
    )
    assert refused >= 3
    # Once the calls queued for west before the cut are out, east is sent the larger share.
    after = {
        name: len([r for r in originates(sim) if cut + 2.5 <= r["wall"] < cut + 4.0])
        for name, sim in sims.items()
    }
    assert after["east"] > 1.5 * after["west"], after


def test_a_single_pbx_asked_more_than_it_sustains_is_sent_what_it_sustains(
    settings, session_factory, engine, make_app, pbx_sim_factory
) -> None:
    """One PBX that places 15 calls/s (past that its answers come late, then it refuses), a
    trunk of 40/s, the dialer told nothing: back-pressure brings the rate down to what the
    PBX sustains within seconds, and keeps it there instead of piling calls into it."""
    capacity = 15.0
    sims = {"west": pbx_sim_factory(speed=50, capacity_cps=capacity, capacity_wait=2.0)}
    trunk = add_trunk(session_factory, "MC", cps=40, max_channels=1000, pbx=["west"])
    add_pbx(session_factory, "west", max_cps=40)
    campaign = add_campaign(session_factory, trunk, max_attempts=1)
    add_contacts(session_factory, campaign, simulator_numbers(900, ending="04"))  # busy
    settings_ = Settings(
        database_url=settings.database_url,
        broker_url=settings.broker_url,
        log_level="INFO",
        ami_servers={"default": server("west", sims["west"]), "west": server("west", sims["west"])},
    )
    with (
        listeners(engine, session_factory, sims),
        in_process_worker(make_app(settings_), concurrency=4, beat=True),
    ):
        started = time.time()
        time.sleep(20.0)
        with session_factory.begin() as session:  # the rest is not needed
            session.execute(text("UPDATE campaigns SET status = 'paused'"))
        time.sleep(0.5)
    sent = [r["wall"] for r in originates(sims["west"])]
    first = [t for t in sent if t < started + 3.0]
    assert len(first) > 3 * 1.5 * capacity, len(first)  # asked more at first: 40/s
    settled = [t for t in sent if started + 12.0 <= t < started + 20.0]
    # Not above what it sustains (the probing of additive increase aside), and not starved.
    assert 0.4 * capacity * 8 <= len(settled) <= 1.1 * capacity * 8, len(settled) / 8
    late = rows(
        session_factory,
        "SELECT extract(epoch FROM originate_response_at - sent_at) AS latency FROM call_attempts"
        " WHERE sent_at >= to_timestamp(:t) AND originate_response_at IS NOT NULL",
        t=started + 12.0,
    )
    latencies = sorted(float(r.latency) for r in late)
    assert latencies[int(0.9 * len(latencies))] < 1.0, latencies[-10:]  # no pile-up in it
    west = state_of(session_factory, "west")
    assert west.rate is not None and west.rate < 40 and west.rate_reason
