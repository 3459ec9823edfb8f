"""Region calling rules, holidays and frequency rules where calls are made: the dispatch tick
and the originate task's last checks, against real Postgres and the PBX simulator.

The contacts are New York numbers (+1212: country US, region US-NY, area code +1212) stored in
a fixed-offset zone where it is about 14:00 now, so the campaign's own window (08:00-21:00,
every day) is open whatever time the suite runs and only the rules can close it.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from dialer.ami.blocking import SyncAmiClient
from dialer.campaigns import rules
from dialer.db import transaction
from dialer.dialing.dispatch import run_tick
from dialer.dialing.originate import Result, originate_attempt
from tests.support_celery import (
    add_campaign,
    add_contacts,
    add_trunk,
    pg_connect,
    rows,
    simulator_numbers,
    zone_open_now,
)

UTC = dt.UTC


def originates(sim: Any) -> list[dict[str, Any]]:
    return [r for r in sim.records() if r["action"] == "Originate"]


@pytest.fixture
def client(pbx_sim: Any) -> Any:
    client = SyncAmiClient(pbx_sim.server)
    client.wait_connected(5.0)
    yield client
    client.close()


def new_york_contacts(session_factory: Any, count: int = 2, *, campaign: str = "campaign",
                      trunk: int | None = None) -> tuple[int, int, str, dt.datetime]:  # fmt: skip
    """A running campaign (08:00-21:00 every day) with `count` due +1212 contacts; returns
    the trunk, the campaign, the contacts' zone and now."""
    now = dt.datetime.now(UTC)
    zone = zone_open_now(now)
    trunk = trunk or add_trunk(session_factory, "MC", cps=100)
    campaign_id = add_campaign(session_factory, trunk, campaign)
    add_contacts(
        session_factory, campaign_id, simulator_numbers(count, ending="02"), timezones=[zone],
        next_attempt_at=now - dt.timedelta(minutes=1),
    )  # fmt: skip
    return trunk, campaign_id, zone, now


def next_day_opening(zone: str, now: dt.datetime, at: str = "08:00") -> dt.datetime:
    tomorrow = now.astimezone(ZoneInfo(zone)).date() + dt.timedelta(days=1)
    return dt.datetime.combine(tomorrow, dt.time.fromisoformat(at), ZoneInfo(zone))


def local_today(zone: str, now: dt.datetime) -> str:
    return now.astimezone(ZoneInfo(zone)).date().isoformat()


# -- region rules and holidays ---------------------------------------------------------------

HOLIDAY_SCOPES = [
    ("US", True), ("US-NY", True), ("+1212", True), ("+1", True),
    ("US-CA", False), ("+1415", False), ("GB", False),
]  # fmt: skip


@pytest.mark.parametrize(("where", "applies"), HOLIDAY_SCOPES, ids=[w for w, _ in HOLIDAY_SCOPES])
def test_a_holiday_stops_the_tick_and_reschedules_to_the_next_allowed_day(
    session_factory, where: str, applies: bool
) -> None:
    _, _, zone, now = new_york_contacts(session_factory)
    with transaction(session_factory) as session:
        rules.add_holiday(session, where, day=local_today(zone, now), name="made-up holiday")

    report = run_tick(session_factory, lambda ids: None, now=now)

    contacts = rows(session_factory, "SELECT status, next_attempt_at FROM contacts")
    if applies:
        assert (report.queued, report.rescheduled) == ([], 2)
        assert {c.next_attempt_at for c in contacts} == {next_day_opening(zone, now)}
        assert {c.status for c in contacts} == {"pending"}
    else:
        assert len(report.queued) == 2 and report.rescheduled == 0


def test_a_region_rule_stops_the_tick_and_the_strictest_rule_sets_the_next_time(
    session_factory,
) -> None:
    """The country allows 08:00-21:00, the state only mornings and the area code from 09:30:
    no call now (about 14:00), and tomorrow's first call at 09:30."""
    _, _, zone, now = new_york_contacts(session_factory)
    every_day = "mon-sun"
    with transaction(session_factory) as session:
        rules.add_hours(session, "US", days=every_day, hours="08:00-21:00")
        rules.add_hours(session, "US-NY", days=every_day, hours="08:00-11:00")
        rules.add_hours(session, "+1212", days=every_day, hours="09:30-20:00")

    report = run_tick(session_factory, lambda ids: None, now=now)

    assert (report.queued, report.rescheduled) == ([], 2)
    [at] = {
        c.next_attempt_at for c in rows(session_factory, "SELECT next_attempt_at FROM contacts")
    }
    assert at == next_day_opening(zone, now, "09:30")


def test_a_rule_written_after_the_tick_stops_the_call_at_its_last_check(
    session_factory, pg_connection, pbx_sim, client
) -> None:
    """The first call is sent with the rules of then; a holiday written before the second's
    last check reaches the task (its version moved) and stops it. The next tick reschedules."""
    _, _, zone, now = new_york_contacts(session_factory)
    first, second = run_tick(session_factory, lambda ids: None, now=now).queued
    assert originate_attempt(pg_connection, first, lambda pbx: client) is Result.SENT

    with transaction(session_factory) as session:
        rules.add_holiday(session, "US-NY", day=local_today(zone, now))
    assert originate_attempt(pg_connection, second, lambda pbx: client) is Result.OUTSIDE_WINDOW

    time.sleep(0.2)
    assert len(originates(pbx_sim)) == 1
    [stopped] = rows(session_factory, "SELECT status, send_error FROM call_attempts WHERE id = :i",
                     i=second)  # fmt: skip
    assert stopped.status == "not_sent" and "window" in stopped.send_error
    report = run_tick(session_factory, lambda ids: None, now=dt.datetime.now(UTC))
    assert report.queued == [] and report.rescheduled == 1
    [held] = rows(session_factory, "SELECT c.next_attempt_at, c.attempts FROM contacts c"
                  " JOIN call_attempts a ON a.contact_id = c.id WHERE a.id = :i", i=second)  # fmt: skip
    assert (held.next_attempt_at, held.attempts) == (next_day_opening(zone, now), 0)


# -- frequency rules --------------------------------------------------------------------------


def _originate_together(database_url: str, pbx_sim: Any, attempt_ids: list[int]) -> list[Result]:
    """Each attempt's originate task on its own thread, connection and AMI client, all let go
    at once."""
    barrier = threading.Barrier(len(attempt_ids))
    results: list[Result] = []

    def run(attempt_id: int) -> None:
        conn = pg_connect(database_url)
        ami = SyncAmiClient(pbx_sim.server)
        try:
            ami.wait_connected(5.0)
            barrier.wait(10)
            results.append(originate_attempt(conn, attempt_id, lambda pbx: ami))
        finally:
            ami.close()
            conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in attempt_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_caps_hold_across_campaigns_calling_one_number_at_once(
    session_factory, database_url, pbx_sim
) -> None:
    """Five campaigns dial the same number in the same instant under "2 in a day": two calls
    go out, three are held back, each rescheduled to a day after the first send."""
    phone = simulator_numbers(1, ending="02")[0]
    trunk = add_trunk(session_factory, "MC", cps=100, max_channels=30)
    now = dt.datetime.now(UTC)
    for n in range(5):
        campaign = add_campaign(session_factory, trunk, f"campaign{n}")
        add_contacts(session_factory, campaign, [phone], timezones=[zone_open_now(now)],
                     next_attempt_at=now - dt.timedelta(minutes=1))  # fmt: skip
    with transaction(session_factory) as session:
        rules.add_frequency(session, "two-a-day", max_attempts="2", period="1d")
    queued = run_tick(session_factory, lambda ids: None, now=now).queued
    assert len(queued) == 5

    results = _originate_together(database_url, pbx_sim, queued)

    assert sorted(results) == sorted([Result.SENT] * 2 + [Result.FREQUENCY_HELD] * 3)
    time.sleep(0.2)
    assert len(originates(pbx_sim)) == 2
    sent = sorted(r.sent_at for r in rows(
        session_factory, "SELECT sent_at FROM call_attempts WHERE sent_at IS NOT NULL"))  # fmt: skip
    held = rows(session_factory, """
        SELECT c.status, c.attempts, c.next_attempt_at, a.send_error
          FROM call_attempts a JOIN contacts c ON c.id = a.contact_id
         WHERE a.status = 'not_sent'""")  # fmt: skip
    assert len(held) == 3
    for contact in held:
        assert (contact.status, contact.attempts) == ("pending", 0)
        assert "frequency rule two-a-day" in contact.send_error
        # Due when the first send leaves the day (the give-back counts from its own clock).
        assert abs((contact.next_attempt_at - (sent[0] + dt.timedelta(days=1))).total_seconds()) < 2


CONVERSATION_CASES = [
    ("a conversation an hour ago", "ended", "human_no_press", True),
    ("a call up now, answered", "up", None, True),
    ("an unanswered call an hour ago", "ended", "no_answer", False),
]  # fmt: skip


@pytest.mark.parametrize("seen_by", ["tick", "last check"])
@pytest.mark.parametrize(("status", "outcome", "held"), [c[1:] for c in CONVERSATION_CASES],
                         ids=[c[0] for c in CONVERSATION_CASES])  # fmt: skip
def test_no_call_within_the_rest_after_a_conversation_in_any_campaign(
    session_factory, engine, pg_connection, pbx_sim, client, status, outcome, held, seen_by
) -> None:
    """The tick holds a contact back when the history is there already (no attempt made);
    the last check when the other campaign's call came after the tick."""
    trunk, campaign, _, now = new_york_contacts(session_factory, 1)
    phone = rows(session_factory, "SELECT phone_e164 FROM contacts")[0].phone_e164
    other = add_campaign(session_factory, trunk, "other", status="paused")
    (contact,) = add_contacts(session_factory, other, [phone], status="dialing")
    an_hour_ago = now - dt.timedelta(hours=1)
    answered = an_hour_ago if outcome != "no_answer" else None
    with transaction(session_factory) as session:
        rules.add_frequency(session, "rest", after_conversation="4h")

    def other_call() -> None:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id,"
                " attempt_number, status, outcome, sent_at, answered_at, ended_at, phone_e164)"
                " VALUES ('1_1', :k, :n, :t, 1, :s, :o, :at, :ans,"
                " CASE WHEN :s = 'ended' THEN now() END, :p)"),
                {"k": other, "n": contact, "t": trunk, "s": status, "o": outcome,
                 "at": an_hour_ago, "ans": answered, "p": phone})  # fmt: skip

    if seen_by == "tick":
        other_call()
    queued = run_tick(session_factory, lambda ids: None, now=now).queued
    [due] = rows(session_factory, "SELECT next_attempt_at FROM contacts WHERE campaign_id = :c",
                 c=campaign)  # fmt: skip
    rest_ends = an_hour_ago + dt.timedelta(hours=4)
    if seen_by == "tick":
        assert len(queued) == (0 if held else 1)
        if held:
            assert abs((due.next_attempt_at - rest_ends).total_seconds()) < 2
            return
    else:
        other_call()
    (attempt,) = queued

    result = originate_attempt(pg_connection, attempt, lambda pbx: client)

    if not held:
        assert result is Result.SENT
        return
    assert result is Result.FREQUENCY_HELD
    [due] = rows(session_factory, "SELECT next_attempt_at FROM contacts WHERE campaign_id = :c",
                 c=campaign)  # fmt: skip
    assert abs((due.next_attempt_at - rest_ends).total_seconds()) < 2
    time.sleep(0.2)
    assert originates(pbx_sim) == []


def test_the_tick_holds_a_number_at_its_cap_without_making_an_attempt(
    session_factory, engine
) -> None:
    """Two calls sent to the number today by another campaign, under "2 in a day": no attempt,
    and the contact is due when the first of them leaves the day."""
    trunk, campaign, _, now = new_york_contacts(session_factory, 1)
    phone = rows(session_factory, "SELECT phone_e164 FROM contacts")[0].phone_e164
    other = add_campaign(session_factory, trunk, "other", status="paused")
    (contact,) = add_contacts(session_factory, other, [phone], status="completed")
    sends = [now - dt.timedelta(hours=5), now - dt.timedelta(hours=2)]
    with engine.begin() as conn:
        for n, sent_at in enumerate(sends, 1):
            conn.execute(text(
                "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id,"
                " attempt_number, status, outcome, sent_at, ended_at, phone_e164)"
                " VALUES (:c, :k, :n, :t, :a, 'ended', 'no_answer', :s, :s, :p)"),
                {"c": f"1_{n}", "k": other, "n": contact, "t": trunk, "a": n, "s": sent_at,
                 "p": phone})  # fmt: skip
    with transaction(session_factory) as session:
        rules.add_frequency(session, "two-a-day", max_attempts="2", period="1d")

    report = run_tick(session_factory, lambda ids: None, now=now)

    assert (report.queued, report.rescheduled) == ([], 1)
    [due] = rows(session_factory, "SELECT next_attempt_at, attempts FROM contacts"
                 " WHERE campaign_id = :c", c=campaign)  # fmt: skip
    assert (due.next_attempt_at, due.attempts) == (sends[0] + dt.timedelta(days=1), 0)
