"""Alternate numbers: imported from extra columns, each number checked on its own (do-not-call,
calling window), dialled in order after busy, no-answer and failed calls, opted out one by one,
and reported as the number each attempt dialled. Real Postgres."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from dialer.campaigns import rules
from dialer.contacts import dnc
from dialer.contacts.importer import ImportFailed, import_contacts
from dialer.db import transaction
from dialer.dialing.dispatch import run_tick
from dialer.outcomes.callstore import CallStore
from dialer.outcomes.facts import CloseReason, CloseRequest, close_attempts
from dialer.outcomes.listener import observe
from dialer.reports import queries
from tests.support_celery import add_campaign, add_contacts, add_trunk, rows, zone_open_now

UTC = dt.UTC
FIRST, MOBILE, WORK = "+12125550101", "+13055550102", "+14155550103"


def contact_with_alternates(session_factory: Any, *, alternates: bool = True, **fields: Any) -> int:
    trunk = add_trunk(session_factory, "MC", cps=100)
    campaign = add_campaign(session_factory, trunk, dial_alt_numbers=alternates, max_attempts=9)
    (contact,) = add_contacts(session_factory, campaign, [FIRST], alt_phones=[MOBILE, WORK],
                              next_attempt_at=dt.datetime.now(UTC) - dt.timedelta(minutes=1),
                              **fields)  # fmt: skip
    return contact


def dial_once(session_factory: Any, engine: Any, cause: int | None) -> str:
    """One tick; the attempt it made is closed with the hang-up cause given (17 busy, 19 no
    answer, 16 answered and done); returns the number it dialled."""
    with transaction(session_factory) as session:
        session.execute(
            text("UPDATE contacts SET next_attempt_at = now() WHERE status = 'pending'")
        )
    # Windows: every number's own zones; make them all open by stored zone or rule-free hours.
    (attempt_id,) = run_tick(session_factory, lambda ids: None).queued
    [attempt] = rows(session_factory, "SELECT phone_e164, payload FROM call_attempts WHERE id = :i",
                     i=attempt_id)  # fmt: skip
    assert attempt.payload["variable"]["to"] == attempt.phone_e164
    now = dt.datetime.now(UTC)
    facts = {"hangup_cause": cause}
    if cause == 16:
        facts |= {"answered_at": now, "amd_status": "HUMAN"}
    with engine.begin() as conn:
        close_attempts(conn, [CloseRequest(attempt_id, CloseReason.HANGUP, now)], now,
                       {attempt_id: facts})  # fmt: skip
    return attempt.phone_e164


@pytest.fixture(autouse=True)
def every_zone_open(session_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The alternates' zones come from their numbers (New York, Miami, San Francisco): the
    campaign's hours must not close them whatever the time the suite runs, so their zones are
    read as the stored zone that is open now."""
    from dialer.campaigns import calling_window

    original = calling_window.zones_for
    monkeypatch.setattr(
        calling_window, "zones_for",
        lambda phone, stored=(): (zone_open_now(),) if phone in (MOBILE, WORK) else original(phone, stored),
    )  # fmt: skip


def test_after_busy_no_answer_and_failed_the_next_number_is_dialled_in_turn(
    session_factory, engine
) -> None:
    contact_with_alternates(session_factory)
    dialled = [dial_once(session_factory, engine, cause) for cause in (17, 19, 17, 19)]
    assert dialled == [FIRST, MOBILE, WORK, FIRST]


def test_an_answered_call_keeps_the_number_and_a_campaign_without_alternates_never_moves(
    session_factory, engine
) -> None:
    contact_with_alternates(session_factory, alternates=False)
    assert [dial_once(session_factory, engine, cause) for cause in (17, 19)] == [FIRST, FIRST]


def test_a_listed_number_is_passed_over_and_every_number_listed_is_dnc(
    session_factory, engine
) -> None:
    contact = contact_with_alternates(session_factory)
    with transaction(session_factory) as session:
        session.execute(text("INSERT INTO dnc_numbers (phone_e164) VALUES (:p)"), {"p": FIRST})
    assert dial_once(session_factory, engine, 17) == MOBILE
    with transaction(session_factory) as session:
        session.execute(text("INSERT INTO dnc_numbers (phone_e164) VALUES (:a), (:b)"),
                        {"a": MOBILE, "b": WORK})  # fmt: skip
        session.execute(text("UPDATE contacts SET next_attempt_at = now()"))
    report = run_tick(session_factory, lambda ids: None)
    assert report.queued == [] and report.dnc == 1
    assert (
        rows(session_factory, "SELECT status FROM contacts WHERE id = :c", c=contact)[0].status
        == "dnc"
    )


def test_each_number_has_its_own_calling_window(session_factory, monkeypatch) -> None:
    """The contact is on its Hawaii number: holidays there today and tomorrow (Hawaii's dates)
    hold it to the day after, 08:00 Hawaii time, while its first number's zone is open."""
    from dialer.campaigns import calling_window

    monkeypatch.undo()  # real zones for this one
    hawaii = "+18085550104"
    trunk = add_trunk(session_factory, "MC", cps=100)
    campaign = add_campaign(session_factory, trunk, dial_alt_numbers=True)
    add_contacts(session_factory, campaign, [FIRST], alt_phones=[hawaii], phone_index=1,
                 next_attempt_at=dt.datetime.now(UTC) - dt.timedelta(minutes=1))  # fmt: skip
    now = dt.datetime.now(UTC)
    honolulu = ZoneInfo("Pacific/Honolulu")
    today = now.astimezone(honolulu).date()
    with transaction(session_factory) as session:
        for day in (today, today + dt.timedelta(days=1)):
            rules.add_holiday(session, "US-HI", day=day.isoformat())
    assert calling_window.zones_for(hawaii) == ("Pacific/Honolulu",)

    report = run_tick(session_factory, lambda ids: None, now=now)

    assert report.queued == [] and report.rescheduled == 1
    [due] = rows(session_factory, "SELECT next_attempt_at FROM contacts")
    assert due.next_attempt_at == dt.datetime.combine(
        today + dt.timedelta(days=2), dt.time(8), honolulu
    )


def test_an_opt_out_lists_the_number_dialled(session_factory, engine) -> None:
    contact_with_alternates(session_factory, opt_out_key="9")
    with transaction(session_factory) as session:
        session.execute(text("UPDATE campaigns SET opt_out_key = '9'"))
        session.execute(text("UPDATE contacts SET phone_index = 2"))
    (attempt_id,) = run_tick(session_factory, lambda ids: None).queued
    call_id = rows(session_factory, "SELECT custom_call_id FROM call_attempts")[0].custom_call_id
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE call_attempts SET status = 'up' WHERE id = :i"), {"i": attempt_id}
        )
    opt_out = observe(
        {"Event": "UserEvent", "UserEvent": "DialerDTMF", "Linkedid": call_id, "Uniqueid": call_id,
         "custom_call_id": call_id, "DTMF": "9", "READSTATUS": "OK"},
        call_id, time.time(),
    )  # fmt: skip
    assert CallStore(engine).apply([opt_out]).dnc_added == 1
    assert [r.phone_e164 for r in rows(session_factory, "SELECT phone_e164 FROM dnc_numbers")] == [
        WORK
    ]
    with engine.connect() as conn:
        call = queries.get_call(conn, str(attempt_id))
    assert (call["phone"], call["dialled_phone"]) == (FIRST, WORK)


def test_import_maps_extra_phone_columns(session_factory, tmp_path: Path) -> None:
    trunk = add_trunk(session_factory, "MC", cps=100)
    add_campaign(session_factory, trunk, "spring", status="draft")
    with transaction(session_factory) as session:
        dnc.add_e164(session, ["+12125550201", "+13055550201"], campaign_id=None)
    source = tmp_path / "crm.csv"
    source.write_text(
        "phone,name,mobile,work\n"
        "+12125550100,Ann,+13055550100,(415) 555-0100\n"  # both alternates
        "+12125550101,Bob,,+12125550101\n"  # empty, and the first number again: none
        "+12125550102,Cy,not a number,+14155550102\n"  # a bad alternate rejects the row
        "+12125550201,Dee,+13055550201,+14155550201\n"  # first two listed: dialled on work
        "+12125550202,Eve,+13055550202,+13055550202\n",  # the same alternate twice: once
        encoding="utf-8",
    )
    summary = import_contacts(
        session_factory, "spring", source, alt_phone_columns=["mobile", "work"]
    )

    assert (summary.accepted, summary.rejected, summary.on_dnc) == (4, 1, 0)
    loaded = {r.phone_e164: (list(r.alt_phones), r.status, r.fields) for r in rows(
        session_factory, "SELECT phone_e164, alt_phones, status, fields FROM contacts")}  # fmt: skip
    assert loaded["+12125550100"] == (["+13055550100", "+14155550100"], "pending", {})
    assert loaded["+12125550101"][0] == []
    assert loaded["+12125550201"][:2] == (["+13055550201", "+14155550201"], "pending")
    assert loaded["+12125550202"][0] == ["+13055550202"]
    [reject] = rows(session_factory, "SELECT line_number, reason FROM import_rejects")
    assert reject.line_number == 4 and reject.reason.startswith("mobile: ")

    with pytest.raises(ImportFailed, match="no .fax. column"):
        import_contacts(session_factory, "spring", source, alt_phone_columns=["fax"])
