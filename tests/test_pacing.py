"""Per-trunk pacing (Postgres slot row) and channel capacity, against real Postgres."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, text

from dialer.dialing.pacing import (
    PAD,
    TrunkUsage,
    UnknownTrunk,
    max_in_window,
    take_slot,
    trunk_usage,
    wait_for_slot,
)
from tests.support_celery import add_campaign, add_contacts, add_trunk, pg_connect

SPARE_CASES = [
    # (case, usage, lookahead, expected spare capacity)
    ("idle trunk: bounded by what it starts in the lookahead",
     TrunkUsage(1, max_channels=100, cps=10, open=0, queued=0), 2.0, 20),
    ("channels are the tighter bound", TrunkUsage(1, 30, 100, open=25, queued=0), 2.0, 5),
    ("queued attempts count against the lookahead", TrunkUsage(1, 100, 10, 12, 12), 2.0, 8),
    ("full trunk", TrunkUsage(1, 10, 10, open=10, queued=0), 2.0, 0),
    ("over-full (max lowered by the operator) is zero, not negative",
     TrunkUsage(1, 5, 10, open=9, queued=0), 2.0, 0),
    ("slow trunk still gets one call per tick", TrunkUsage(1, 10, 0.1, 0, 0), 2.0, 1),
    ("fractional rates round up", TrunkUsage(1, 10, 2.5, 0, 0), 1.0, 3),
]  # fmt: skip


@pytest.mark.parametrize(
    ("usage", "lookahead", "expected"),
    [c[1:] for c in SPARE_CASES],
    ids=[c[0] for c in SPARE_CASES],
)
def test_spare_capacity(usage: TrunkUsage, lookahead: float, expected: int) -> None:
    assert usage.spare_capacity(lookahead) == expected


def test_slots_are_spaced_by_the_padded_interval(pg_connection, session_factory) -> None:
    trunk = add_trunk(session_factory, cps=50)
    interval = PAD / 50
    conn = pg_connection
    before = time.time()
    slots = [take_slot(conn, trunk) for _ in range(40)]
    next_slot = conn.execute("SELECT extract(epoch FROM next_slot_at) FROM trunks").fetchone()[0]
    # Taken back to back: the first at once, each next one interval later, whoever asks.
    assert before - 0.01 <= slots[0] <= time.time() + 0.01
    for earlier, later in zip(slots, slots[1:], strict=False):
        assert later - earlier == pytest.approx(interval, abs=1e-5)
    assert float(next_slot) == pytest.approx(slots[-1] + interval, abs=1e-5)


def test_idle_trunk_grants_at_once(pg_connection, session_factory) -> None:
    trunk = add_trunk(session_factory, cps=1)
    slept: list[float] = []
    conn = pg_connection
    assert wait_for_slot(conn, trunk, sleep=slept.append) == 0.0
    time.sleep(PAD + 0.05)
    # The unused past does not pile up into a burst: still one slot per interval.
    assert wait_for_slot(conn, trunk, sleep=slept.append) == 0.0
    assert wait_for_slot(conn, trunk, sleep=slept.append) == pytest.approx(PAD, abs=0.05)
    assert slept == [pytest.approx(PAD, abs=0.05)]


def test_the_wait_is_measured_to_the_slot_not_from_the_answer(
    pg_connection, session_factory
) -> None:
    """A slow answer (commit, network) shortens the sleep instead of delaying the call."""
    trunk = add_trunk(session_factory, cps=2)
    first = take_slot(pg_connection, trunk)
    slept: list[float] = []
    late_clock = lambda: first + 0.2  # noqa: E731 - the answer arrived 0.2 s after the slot
    wait_for_slot(pg_connection, trunk, sleep=slept.append, clock=late_clock)
    assert slept == [pytest.approx(PAD / 2 - 0.2, abs=1e-4)]


def test_a_lead_starts_an_idle_trunk_slot_later_and_keeps_the_spacing(
    pg_connection, session_factory
) -> None:
    trunk = add_trunk(session_factory, cps=2)
    before = time.time()
    first = take_slot(pg_connection, trunk, lead=0.2)
    second = take_slot(pg_connection, trunk, lead=0.2)
    assert before + 0.19 <= first <= time.time() + 0.21
    # A busy trunk's next slot is already later than the lead: the spacing rules.
    assert second - first == pytest.approx(PAD / 2, abs=1e-5)


def test_unknown_trunk(pg_connection) -> None:
    with pytest.raises(UnknownTrunk):
        take_slot(pg_connection, 999)


def test_concurrent_takers_never_exceed_the_rate(database_url, session_factory) -> None:
    """Four takers on their own connections: the starts they sleep to respect the limit."""
    cps = 40
    trunk = add_trunk(session_factory, cps=cps)
    starts: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def taker() -> None:
        with pg_connect(database_url) as conn:
            barrier.wait(5)
            for _ in range(20):
                # The slot granted, not when this thread woke up: a loaded machine wakes
                # threads late, and late sends are the originate task's to drop
                # (SLOT_TOLERANCE_S, tests/test_originate_checks.py).
                slot = take_slot(conn, trunk)
                time.sleep(max(0.0, slot - time.time()))
                with lock:
                    starts.append(slot)

    threads = [threading.Thread(target=taker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(starts) == 80
    assert max_in_window(starts, 1.0) <= cps
    achieved = (len(starts) - 1) / (max(starts) - min(starts))
    assert achieved >= 0.9 * cps


def test_usage_counts_open_attempts_by_trunk(engine: Engine, session_factory) -> None:
    busy = add_trunk(session_factory, "busy", cps=10, max_channels=8)
    idle = add_trunk(session_factory, "idle", cps=5, max_channels=3)
    campaign = add_campaign(session_factory, busy)
    contacts = add_contacts(session_factory, campaign, [f"+1212555{n:04d}" for n in range(6)])
    statuses = ["queued", "queued", "originating", "up", "ended", "not_sent"]
    with engine.begin() as conn:
        for n, (contact, status) in enumerate(zip(contacts, statuses, strict=True)):
            conn.execute(
                text(
                    "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id,"
                    " attempt_number, status, outcome, ended_at) VALUES (:cid, :camp, :contact,"
                    " :trunk, 1, :status, :outcome, CASE WHEN :status = 'ended' THEN now() END)"
                ),
                {
                    "cid": f"1_{n}",
                    "camp": campaign,
                    "contact": contact,
                    "trunk": busy,
                    "status": status,
                    "outcome": "busy" if status == "ended" else None,
                },
            )
    with engine.connect() as conn:
        usage = trunk_usage(conn, [busy, idle])
    assert usage[busy] == TrunkUsage(busy, 8, 10.0, open=4, queued=2)
    assert usage[busy].spare_channels == 4
    assert usage[idle] == TrunkUsage(idle, 3, 5.0, open=0, queued=0)
    with engine.connect() as conn:
        assert trunk_usage(conn, []) == {}


def test_max_in_window_is_sliding() -> None:
    # Bucketed by whole seconds this is 2 + 2; a sliding window sees 4 within 0.3 s.
    assert max_in_window([0.8, 0.9, 1.0, 1.1]) == 4
    assert max_in_window([0.0, 1.0, 2.0]) == 1
    assert max_in_window([]) == 0
