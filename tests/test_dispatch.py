"""The dispatch tick against real Postgres: claims, capacity, DNC, calling windows, lifecycle,
overlapping ticks and lost broker messages. The enqueue step is a plain callback here; the
Celery wiring is exercised in test_dialing_e2e."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import threading
import zoneinfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from dialer.campaigns.calling_window import HORIZON, CallingWindow, is_open, next_open, zones_for
from dialer.dialing.dispatch import (
    INVALID_NUMBER_OUTCOME,
    NO_WINDOW_OUTCOME,
    TickOptions,
    interleave,
    plan_tick,
    run_tick,
)
from dialer.dialing.payload import CallSettings, TrunkRoute, build_originate_payload
from tests.support_celery import (
    add_campaign,
    add_contacts,
    add_trunk,
    rows,
    scalar,
    simulator_numbers,
)

UTC = dt.UTC
LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=UTC)


class Enqueued:
    """The enqueue callback: records ids and checks they are committed when it is called."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine
        self.batches: list[list[int]] = []

    def __call__(self, ids) -> None:
        ids = list(ids)
        if self.engine is not None:
            with self.engine.connect() as other:
                visible = other.execute(
                    text("SELECT count(*) FROM call_attempts WHERE id = ANY(:ids)"), {"ids": ids}
                ).scalar_one()
            assert visible == len(ids), "enqueued before the attempts were committed"
        self.batches.append(ids)

    @property
    def ids(self) -> list[int]:
        return [i for batch in self.batches for i in batch]


def tick(session_factory, enqueue=None, **kwargs):
    return run_tick(session_factory, enqueue or Enqueued(), **kwargs)


def test_tick_commits_attempts_then_enqueues_them(engine, session_factory) -> None:
    trunk = add_trunk(session_factory, cps=100, max_channels=100)
    campaign = add_campaign(session_factory, trunk)
    contacts = add_contacts(session_factory, campaign, simulator_numbers(5))
    enqueued = Enqueued(engine)
    before_ms = int(dt.datetime.now(UTC).timestamp() * 1000)

    report = tick(session_factory, enqueued)

    assert sorted(enqueued.ids) == sorted(report.queued) and len(report.queued) == 5
    attempts = rows(
        session_factory,
        "SELECT id, custom_call_id, contact_id, trunk_id, campaign_id, attempt_number, status"
        " FROM call_attempts ORDER BY id",
    )
    assert [a.contact_id for a in attempts] == contacts
    for attempt in attempts:
        epoch_ms, attempt_id = re.fullmatch(r"(\d{13})_(\d+)", attempt.custom_call_id).groups()
        assert int(attempt_id) == attempt.id
        assert before_ms - 1000 <= int(epoch_ms) <= before_ms + 60_000
        assert (attempt.status, attempt.attempt_number) == ("queued", 1)
        assert (attempt.trunk_id, attempt.campaign_id) == (trunk, campaign)
    contact_rows = rows(session_factory, "SELECT status, attempts FROM contacts")
    assert {(c.status, c.attempts) for c in contact_rows} == {("dialing", 1)}
    # Nothing is due any more: the next tick creates nothing.
    assert tick(session_factory).queued == []


def test_channels_and_lookahead_bound_each_tick(engine, session_factory) -> None:
    trunk = add_trunk(session_factory, cps=100, max_channels=3)
    campaign = add_campaign(session_factory, trunk)
    add_contacts(session_factory, campaign, simulator_numbers(10))
    assert len(tick(session_factory).queued) == 3
    assert tick(session_factory).queued == []  # all three channels busy
    with engine.begin() as conn:  # two calls end
        conn.execute(
            text(
                "UPDATE call_attempts SET status = 'ended', outcome = 'busy', ended_at = now()"
                " WHERE id IN (SELECT id FROM call_attempts ORDER BY id LIMIT 2)"
            )
        )
    assert len(tick(session_factory).queued) == 2

    slow = add_trunk(session_factory, "slow", cps=2, max_channels=100)
    slow_campaign = add_campaign(session_factory, slow, "slow campaign")
    add_contacts(session_factory, slow_campaign, simulator_numbers(10, start=100))
    options = TickOptions(lookahead_s=2.0)
    assert len(tick(session_factory, options=options).queued) == 4  # 2 cps x 2 s
    assert tick(session_factory, options=options).queued == []  # those 4 still wait


def test_trunk_capacity_is_shared_fairly(session_factory) -> None:
    trunk = add_trunk(session_factory, cps=100, max_channels=10)
    first = add_campaign(session_factory, trunk, "first")
    second = add_campaign(session_factory, trunk, "second")
    add_contacts(session_factory, first, simulator_numbers(20))
    add_contacts(session_factory, second, simulator_numbers(20, start=20))
    tick(session_factory)
    per_campaign = dict(
        rows(session_factory, "SELECT campaign_id, count(*) FROM call_attempts GROUP BY 1")
    )
    assert per_campaign == {first: 5, second: 5}


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([], []),
        ([[1, 2, 3]], [1, 2, 3]),
        ([[1, 2, 3], [4], [5, 6]], [1, 4, 5, 2, 6, 3]),
        ([[], [7, 8]], [7, 8]),
    ],
)
def test_interleave(groups: list[list[int]], expected: list[int]) -> None:
    assert interleave(groups) == expected


def test_attempts_are_handed_out_in_turns_across_trunks_and_campaigns(session_factory) -> None:
    """Workers take tasks in order and wait for each one's slot: a trunk's (or a campaign's)
    whole share ahead of the next would hold all of them to one pace."""
    slow = add_trunk(session_factory, "slow", cps=5, max_channels=100)
    fast = add_trunk(session_factory, "fast", cps=100, max_channels=100)
    campaigns = [
        add_campaign(session_factory, slow, "slow one"),
        add_campaign(session_factory, fast, "fast one"),
        add_campaign(session_factory, fast, "fast two"),
    ]
    for n, campaign in enumerate(campaigns):
        add_contacts(session_factory, campaign, simulator_numbers(6, start=10 * n))
    report = tick(session_factory, options=TickOptions(lookahead_s=1.0))
    owner = dict(rows(session_factory, "SELECT id, campaign_id FROM call_attempts"))
    order = [owner[i] for i in report.queued]
    # slow: 5 cps x 1 s = 5 calls; fast: 12 calls shared by its two campaigns.
    assert sorted(order) == sorted([campaigns[0]] * 5 + [campaigns[1]] * 6 + [campaigns[2]] * 6)
    trunk_of = {campaigns[0]: "slow", campaigns[1]: "fast", campaigns[2]: "fast"}
    trunks = [trunk_of[c] for c in order]
    # In turns while both have calls, whichever comes first.
    assert sorted(trunks[:10]) == ["fast"] * 5 + ["slow"] * 5
    assert all(a != b for a, b in itertools.pairwise(trunks[:10]))
    fast_only = [c for c in order if trunk_of[c] == "fast"]
    assert all(a != b for a, b in itertools.pairwise(fast_only))


def test_do_not_call_numbers_are_marked_not_dialled(engine, session_factory) -> None:
    trunk = add_trunk(session_factory)
    campaign = add_campaign(session_factory, trunk)
    other = add_campaign(session_factory, trunk, "other")
    phones = simulator_numbers(4)
    add_contacts(session_factory, campaign, phones)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dnc_numbers (phone_e164, campaign_id) VALUES"
                " (:global, NULL), (:mine, :campaign), (:theirs, :other)"
            ),
            {
                "global": phones[0],
                "mine": phones[1],
                "theirs": phones[2],
                "campaign": campaign,
                "other": other,
            },
        )
    report = tick(session_factory)
    assert report.dnc == 2
    statuses = dict(rows(session_factory, "SELECT phone_e164, status FROM contacts"))
    assert statuses == {
        phones[0]: "dnc",
        phones[1]: "dnc",
        phones[2]: "dialing",  # another campaign's list does not apply
        phones[3]: "dialing",
    }
    dialled = {r.phone_e164 for r in rows(
        session_factory,
        "SELECT k.phone_e164 FROM call_attempts a JOIN contacts k ON k.id = a.contact_id",
    )}  # fmt: skip
    assert dialled == {phones[2], phones[3]}


def test_calling_windows_decide_per_contact(session_factory) -> None:
    # Friday 2024-03-08 23:00 UTC: 18:00 in New York, 15:00 in Los Angeles, Saturday 08:00 in
    # Tokyo. The next Monday is the first after the US changes to summer time.
    now = dt.datetime(2024, 3, 8, 23, 0, tzinfo=UTC)
    trunk = add_trunk(session_factory)
    campaign = add_campaign(session_factory, trunk, hours=("09:00", "20:00"), days=[1, 2, 3, 4, 5])
    cases = {
        "+12125550100": ["America/New_York"],
        "+13105550100": ["America/Los_Angeles"],
        "+81312345678": ["Asia/Tokyo"],
        "+12125550101": [],  # no stored zone: 212 is New York
        "+12125550102": ["America/New_York", "Asia/Tokyo"],  # all zones must be open
    }
    for phone, zones in cases.items():
        add_contacts(session_factory, campaign, [phone], timezones=zones, next_attempt_at=LONG_AGO)

    report = tick(session_factory, now=now)

    window = CallingWindow(dt.time(9), dt.time(20), frozenset({1, 2, 3, 4, 5}))
    result = {r.phone_e164: r for r in rows(session_factory, "SELECT * FROM contacts")}
    assert {p for p, r in result.items() if r.status == "dialing"} == {
        "+12125550100",
        "+13105550100",
        "+12125550101",
    }
    tokyo_monday = dt.datetime(2024, 3, 11, 9, 0, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert result["+81312345678"].status == "pending"
    assert result["+81312345678"].next_attempt_at == tokyo_monday
    # New York and Tokyo together: 13 hours apart in US summer time, so 09:00-20:00 never
    # overlaps; in winter time the one shared hour (19:00 New York = 09:00 Tokyo) falls on a
    # Saturday in Tokyo. No opening within the horizon: the contact is looked at again then.
    assert next_open(window, ["America/New_York", "Asia/Tokyo"], now) is None
    assert result["+12125550102"].status == "pending"
    assert result["+12125550102"].next_attempt_at == now + HORIZON
    assert report.rescheduled == 2
    assert report.no_window == 0


def test_contacts_that_can_never_be_called_are_cancelled(session_factory) -> None:
    trunk = add_trunk(session_factory)
    # 21:00-23:00 lies entirely outside the 08:00-21:00 guard.
    late = add_campaign(session_factory, trunk, hours=("21:00", "23:00"))
    add_contacts(session_factory, late, simulator_numbers(2))
    report = tick(session_factory)
    assert (report.queued, report.no_window) == ([], 2)
    outcomes = rows(session_factory, "SELECT status, last_outcome FROM contacts")
    assert {tuple(r) for r in outcomes} == {("cancelled", NO_WINDOW_OUTCOME)}


def test_contacts_not_due_are_left_alone(session_factory) -> None:
    trunk = add_trunk(session_factory)
    campaign = add_campaign(session_factory, trunk)
    later = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    add_contacts(session_factory, campaign, simulator_numbers(3), next_attempt_at=later)
    assert tick(session_factory).queued == []
    assert scalar(session_factory, "SELECT count(*) FROM contacts WHERE status = 'pending'") == 3
    # And the campaign is not complete: those contacts are still to be called.
    assert scalar(session_factory, "SELECT status FROM campaigns") == "running"


def test_contacts_past_max_attempts_are_exhausted(session_factory) -> None:
    trunk = add_trunk(session_factory)
    campaign = add_campaign(session_factory, trunk, max_attempts=2)
    add_contacts(session_factory, campaign, simulator_numbers(2), attempts=2)
    report = tick(session_factory)
    assert (report.queued, report.exhausted) == ([], 2)
    assert scalar(session_factory, "SELECT count(*) FROM contacts WHERE status='exhausted'") == 2


def test_campaign_lifecycle(engine, session_factory) -> None:
    now = dt.datetime.now(UTC)
    hour = dt.timedelta(hours=1)
    trunk = add_trunk(session_factory)
    due = add_campaign(session_factory, trunk, "due", status="scheduled", start_at=now - hour)
    future = add_campaign(session_factory, trunk, "future", status="scheduled", start_at=now + hour)
    over = add_campaign(session_factory, trunk, "over", start_at=now - 2 * hour, end_at=now - hour)
    paused = add_campaign(session_factory, trunk, "paused", status="paused")
    done = add_campaign(session_factory, trunk, "done")
    for n, campaign in enumerate([due, future, over, paused, done]):
        add_contacts(session_factory, campaign, simulator_numbers(2, start=10 * n))
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE contacts SET status = 'completed' WHERE campaign_id = :c"), {"c": done}
        )

    report = tick(session_factory)

    assert report.campaigns_started == ["due"]
    assert report.campaigns_ended == ["over"]
    assert report.campaigns_completed == ["done"]
    status = dict(rows(session_factory, "SELECT id, status FROM campaigns"))
    assert status == {
        due: "running",
        future: "scheduled",
        over: "completed",
        paused: "paused",
        done: "completed",
    }
    dialled = dict(
        rows(session_factory, "SELECT campaign_id, count(*) FROM call_attempts GROUP BY 1")
    )
    assert dialled == {due: 2}
    # The ended campaign's contacts were not reached; they stay pending, nothing lost.
    assert (
        scalar(
            session_factory,
            "SELECT count(*) FROM contacts WHERE campaign_id = :c AND status = 'pending'",
            c=over,
        )
        == 2
    )


def test_campaign_with_calls_in_progress_is_not_complete(engine, session_factory) -> None:
    trunk = add_trunk(session_factory)
    campaign = add_campaign(session_factory, trunk)
    add_contacts(session_factory, campaign, simulator_numbers(1))
    tick(session_factory)
    assert tick(session_factory).campaigns_completed == []
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE call_attempts SET status = 'ended', outcome = 'human_no_press',"
                " ended_at = now(); UPDATE contacts SET status = 'completed'"
            )
        )
    assert tick(session_factory).campaigns_completed == ["campaign"]


def test_a_tick_skips_while_another_holds_the_lock(engine, session_factory) -> None:
    trunk = add_trunk(session_factory)
    campaign = add_campaign(session_factory, trunk)
    add_contacts(session_factory, campaign, simulator_numbers(5))
    with session_factory() as first:
        with first.begin():
            held = plan_tick(first)
            assert len(held.queued) == 5
            second = tick(session_factory)
            assert second.skipped and second.queued == []
        # The first committed; a later tick runs normally and finds nothing new.
        assert not tick(session_factory).skipped
    assert scalar(session_factory, "SELECT count(*) FROM call_attempts") == 5


def test_simultaneous_ticks_never_double_claim(engine, session_factory) -> None:
    trunk = add_trunk(session_factory, cps=1000, max_channels=1000)
    campaign = add_campaign(session_factory, trunk)
    add_contacts(session_factory, campaign, simulator_numbers(300))
    barrier = threading.Barrier(4)
    reports = []
    errors = []

    def run() -> None:
        try:
            for _ in range(5):
                barrier.wait(10)
                reports.append(tick(session_factory, options=TickOptions(lookahead_s=0.05)))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert any(r.skipped for r in reports), "the ticks never overlapped"
    per_contact = rows(
        session_factory, "SELECT contact_id, count(*) AS n FROM call_attempts GROUP BY 1"
    )
    assert per_contact and max(r.n for r in per_contact) == 1
    queued = [i for r in reports for i in r.queued]
    assert len(queued) == len(set(queued)) == len(per_contact)


def test_contacts_locked_elsewhere_are_skipped_not_waited_for(engine, session_factory) -> None:
    trunk = add_trunk(session_factory)
    campaign = add_campaign(session_factory, trunk)
    contacts = add_contacts(session_factory, campaign, simulator_numbers(4))
    with engine.connect() as other, other.begin():
        other.execute(
            text("SELECT id FROM contacts WHERE id = ANY(:ids) FOR UPDATE"),
            {"ids": contacts[:2]},
        )
        report = tick(session_factory)
    assert len(report.queued) == 2
    claimed = {r.contact_id for r in rows(session_factory, "SELECT contact_id FROM call_attempts")}
    assert claimed == set(contacts[2:])


def test_attempts_whose_message_was_lost_are_handed_out_again(engine, session_factory) -> None:
    trunk = add_trunk(session_factory)
    campaign = add_campaign(session_factory, trunk)
    add_contacts(session_factory, campaign, simulator_numbers(3))

    def broker_down(ids) -> None:
        raise ConnectionError("broker unreachable")

    with pytest.raises(ConnectionError):
        tick(session_factory, broker_down)
    # Committed before the enqueue failed: nothing is lost.
    lost = [r.id for r in rows(session_factory, "SELECT id FROM call_attempts ORDER BY id")]
    assert len(lost) == 3
    options = TickOptions(requeue_after_s=0.2)
    assert tick(session_factory, options=options).requeued == []  # not stale yet
    with engine.begin() as conn:
        conn.execute(text("UPDATE call_attempts SET queued_at = now() - interval '1 minute'"))
    enqueued = Enqueued()
    report = tick(session_factory, enqueued, options=options)
    assert sorted(report.requeued) == lost and enqueued.ids == report.requeued
    # Handed out again once, not on every tick.
    assert tick(session_factory, options=options).requeued == []


# -- property: whatever the instant and zones, nobody is dialled outside their window ----

ZONES = [
    "America/New_York", "America/Los_Angeles", "Europe/London", "Australia/Lord_Howe",
    "America/Santiago", "Asia/Tokyo", "Asia/Kolkata", "Pacific/Auckland", "America/St_Johns",
    "Pacific/Chatham", "Asia/Kathmandu", "Europe/Berlin",
]  # fmt: skip
# Instants around the 2024 changes of several of these zones, and ordinary ones.
AROUND = [
    dt.datetime(2024, 3, 10, 7, 0, tzinfo=UTC),  # US spring forward
    dt.datetime(2024, 11, 3, 6, 0, tzinfo=UTC),  # US fall back
    dt.datetime(2024, 3, 31, 1, 0, tzinfo=UTC),  # EU spring forward
    dt.datetime(2024, 4, 6, 15, 0, tzinfo=UTC),  # NZ, Lord Howe fall back
    dt.datetime(2024, 9, 7, 4, 0, tzinfo=UTC),  # Chile spring forward
    dt.datetime(2024, 6, 15, 12, 0, tzinfo=UTC),
]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    base=st.sampled_from(AROUND),
    shift_min=st.integers(-36 * 60, 36 * 60),
    start=st.integers(6 * 60, 20 * 60),
    length=st.integers(30, 10 * 60),
    days=st.frozensets(st.integers(1, 7), min_size=1),
    zone_sets=st.lists(
        st.lists(st.sampled_from(ZONES), min_size=0, max_size=2, unique=True),
        min_size=1,
        max_size=12,
    ),
)
def test_never_dispatched_outside_the_window(
    engine, session_factory, base, shift_min, start, length, days, zone_sets
) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE call_attempts, contacts, campaigns, trunks CASCADE"))
    now = base + dt.timedelta(minutes=shift_min)
    end = min(start + length, 23 * 60 + 59)
    hours = (f"{start // 60:02d}:{start % 60:02d}", f"{end // 60:02d}:{end % 60:02d}")
    trunk = add_trunk(session_factory)
    campaign = add_campaign(session_factory, trunk, hours=hours, days=sorted(days))
    phones = simulator_numbers(len(zone_sets))
    for phone, zones in zip(phones, zone_sets, strict=True):
        add_contacts(session_factory, campaign, [phone], timezones=zones, next_attempt_at=LONG_AGO)

    tick(session_factory, now=now)

    window = CallingWindow(
        dt.time.fromisoformat(hours[0]), dt.time.fromisoformat(hours[1]), frozenset(days)
    )
    for contact in rows(session_factory, "SELECT * FROM contacts"):
        zones = zones_for(contact.phone_e164, contact.timezones)
        if contact.status == "dialing":
            assert is_open(window, zones, now), (contact.phone_e164, zones, now)
        elif contact.status == "pending":
            assert not is_open(window, zones, now)
            opens = next_open(window, zones, now)
            if opens is None:  # zones share no opening soon: looked at again later
                assert contact.next_attempt_at == now + HORIZON
            else:
                assert contact.next_attempt_at == opens
                assert is_open(window, zones, contact.next_attempt_at)
        else:
            assert contact.status == "cancelled"
            start, end = window.effective_hours
            assert not zones or start >= end


def test_attempts_carry_the_payload_to_send(session_factory) -> None:
    trunk = add_trunk(session_factory, "MC")
    campaign = add_campaign(
        session_factory, trunk, transfer_number="+15551234567", ivr_vm_file="vm_message"
    )
    add_contacts(session_factory, campaign, ["+12125550111"])
    tick(session_factory)
    (attempt,) = rows(session_factory, "SELECT custom_call_id, payload FROM call_attempts")
    expected = build_originate_payload(
        call_id=attempt.custom_call_id,
        to_number="+12125550111",
        from_number="+19876543210",
        settings=CallSettings(
            ivr_file="welcome_message", ivr_vm_file="vm_message", transfer_number="+15551234567"
        ),
        trunk=TrunkRoute("MC"),
    )
    assert attempt.payload == expected
    assert attempt.payload["actionid"] == attempt.payload["variable"]["custom_call_id"]


def test_a_campaign_whose_calls_cannot_be_built_is_not_dialled(engine, session_factory) -> None:
    trunk = add_trunk(session_factory, "MC")
    # A caller name with a quote would break the CallerID header: refused, nothing queued.
    broken = add_campaign(session_factory, trunk, "broken", caller_id_name='Acme "Sales"')
    fine = add_campaign(session_factory, trunk, "fine")
    add_contacts(session_factory, broken, simulator_numbers(3))
    add_contacts(session_factory, fine, simulator_numbers(3, start=3))
    report = tick(session_factory)
    assert report.campaigns_refused == ["broken"]
    per_campaign = dict(
        rows(session_factory, "SELECT campaign_id, count(*) FROM call_attempts GROUP BY 1")
    )
    assert per_campaign == {fine: 3}
    statuses = rows(session_factory, "SELECT status FROM contacts WHERE campaign_id = :c", c=broken)
    assert {s.status for s in statuses} == {"pending"}  # untouched until the setting is fixed


def test_a_number_no_payload_can_be_built_for_is_cancelled(session_factory) -> None:
    trunk = add_trunk(session_factory, "MC")
    campaign = add_campaign(session_factory, trunk)
    # Well-formed E.164 (the column allows it) but country code 999 does not exist.
    add_contacts(session_factory, campaign, ["+9991234567", "+12125550111"])
    report = tick(session_factory)
    assert (len(report.queued), report.invalid_numbers) == (1, 1)
    statuses = dict(rows(session_factory, "SELECT phone_e164, last_outcome FROM contacts"))
    assert statuses["+9991234567"] == INVALID_NUMBER_OUTCOME
    assert scalar(
        session_factory, "SELECT status FROM contacts WHERE phone_e164 = '+9991234567'"
    ) == ("cancelled")
