"""Caller-ID pools where calls are made: the dispatch tick's picks, daily caps under
concurrent ticks, resting (by hand and by answer rate), and the caller ID each attempt
records, against real Postgres and the PBX simulator."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import text

from dialer.ami.blocking import SyncAmiClient
from dialer.campaigns import caller_id_pools as pools
from dialer.campaigns import service as campaigns
from dialer.campaigns.validation import SettingError
from dialer.db import transaction
from dialer.dialing import dispatch
from dialer.dialing.dispatch import run_tick
from dialer.dialing.originate import Result, originate_attempt
from dialer.reports import queries
from tests.support_celery import add_campaign, add_contacts, add_trunk, rows, scalar

UTC = dt.UTC


def make_pool(session_factory: Any, numbers: list[str], *, cap: int = 100,
              default: str | None = None, **settings: Any) -> int:  # fmt: skip
    with transaction(session_factory) as session:
        pool = pools.add_pool(session, "east", pools.PoolSettings(daily_cap=cap, **settings))
        pools.add_numbers(session, "east", numbers)
        if default:
            pools.add_numbers(session, "east", [default], default=True)
        return pool.id


def pooled_campaign(session_factory: Any, phones: list[str], pool_id: int, **fields: Any) -> int:
    trunk = add_trunk(session_factory, "MC", cps=1000, max_channels=1000)
    campaign = add_campaign(session_factory, trunk, caller_id_pool_id=pool_id, **fields)
    if phones:
        add_contacts(session_factory, campaign, phones,
                     next_attempt_at=dt.datetime.now(UTC) - dt.timedelta(minutes=1))  # fmt: skip
    return campaign


def attempts(session_factory: Any) -> dict[str, Any]:
    """Each attempt by callee: its caller ID, pool number and payload."""
    found = rows(session_factory, """
        SELECT k.phone_e164, a.caller_id, a.caller_id_id, a.payload, a.status
          FROM call_attempts a JOIN contacts k ON k.id = a.contact_id""")  # fmt: skip
    return {r.phone_e164: r for r in found}


def test_each_call_goes_out_with_the_most_local_number_and_records_it(session_factory) -> None:
    pool = make_pool(session_factory, ["+12125550100", "+13105550100", "+16135550100"],
                     default="+12025550199")  # fmt: skip
    callees = {
        "+12125551234": "+12125550100",  # same area code
        "+16465551234": "+12125550100",  # same state (New York)
        "+14155551234": "+13105550100",  # same state (California)
        "+16475551234": "+16135550100",  # same province (Ontario)
        "+12145551234": None,  # same country: one of the US numbers
        "+442071234567": "+12025550199",  # the default
    }
    pooled_campaign(session_factory, list(callees), pool, caller_id_name="Clinic")
    report = run_tick(session_factory, lambda ids: None)
    assert len(report.queued) == len(callees)

    made = attempts(session_factory)
    for callee, expected in callees.items():
        attempt = made[callee]
        if expected is None:
            assert attempt.caller_id in {"+12125550100", "+13105550100", "+12025550199"}
        else:
            assert attempt.caller_id == expected, callee
        variables = attempt.payload["variable"]
        assert variables["from"] == variables["FROM_NUMBER"] == attempt.caller_id
        assert attempt.payload["callerid"] == f'"Clinic" <{attempt.caller_id}>'
        assert attempt.caller_id_id is not None
    # What each number was given today, kept for the daily cap.
    usage = dict(rows(session_factory, """
        SELECT ci.number, u.calls FROM caller_id_usage u JOIN caller_ids ci ON ci.id = u.caller_id_id"""))  # fmt: skip
    assert usage == dict(Counter(a.caller_id for a in made.values()))


def test_a_campaign_without_a_pool_records_its_own_caller_id(session_factory) -> None:
    trunk = add_trunk(session_factory, "MC", cps=100)
    campaign = add_campaign(session_factory, trunk)
    add_contacts(session_factory, campaign, ["+12125551234"])
    run_tick(session_factory, lambda ids: None)
    [attempt] = attempts(session_factory).values()
    assert (attempt.caller_id, attempt.caller_id_id) == ("+19876543210", None)


def test_daily_caps_hold_under_concurrent_ticks_and_a_call_not_sent_is_given_back(
    session_factory, database_url, pbx_sim
) -> None:
    """Two numbers capped at 3 calls a day, 20 contacts, ticks run from four threads at once:
    6 attempts, 3 per number; the rest wait. An attempt that is not sent gives its call back."""
    pool = make_pool(session_factory, ["+12125550100", "+12125550101"], cap=3)
    phones = [f"+1212555{2000 + i}" for i in range(20)]
    pooled_campaign(session_factory, phones, pool)
    reports: list[Any] = []

    def tick() -> None:
        for _ in range(3):
            reports.append(run_tick(session_factory, lambda ids: None))

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    made = attempts(session_factory)
    assert len(made) == 6
    assert Counter(a.caller_id for a in made.values()) == {"+12125550100": 3, "+12125550101": 3}
    assert sum(r.no_caller_id for r in reports) == 14
    waiting = rows(session_factory, "SELECT next_attempt_at FROM contacts WHERE status = 'pending'")
    assert len(waiting) == 14
    assert min(w.next_attempt_at for w in waiting) > dt.datetime.now(UTC) + dt.timedelta(minutes=4)

    # A campaign paused at send time: the attempt ends not sent and its number's call comes back.
    one = next(iter(made.values()))
    attempt_id = scalar(session_factory, "SELECT id FROM call_attempts WHERE caller_id = :c"
                        " ORDER BY id LIMIT 1", c=one.caller_id)  # fmt: skip
    with transaction(session_factory) as session:
        session.execute(text("UPDATE campaigns SET status = 'paused'"))
    client = SyncAmiClient(pbx_sim.server)
    try:
        client.wait_connected(5)
        from tests.support_celery import pg_connect

        conn = pg_connect(database_url)
        assert originate_attempt(conn, attempt_id, lambda p: client) is Result.CAMPAIGN_STOPPED
        conn.close()
    finally:
        client.close()
    calls = scalar(session_factory, "SELECT u.calls FROM caller_id_usage u JOIN caller_ids ci"
                   " ON ci.id = u.caller_id_id WHERE ci.number = :n", n=one.caller_id)  # fmt: skip
    assert calls == 2


def test_a_rested_number_is_never_used_until_restored(session_factory) -> None:
    pool = make_pool(session_factory, ["+12125550100", "+12125550101"])
    with transaction(session_factory) as session:
        pools.rest(session, "east", "+12125550100", for_="2h", reason="carrier label")
    campaign = pooled_campaign(session_factory, [f"+1212555{3000 + i}" for i in range(6)], pool)
    run_tick(session_factory, lambda ids: None)
    assert {a.caller_id for a in attempts(session_factory).values()} == {"+12125550101"}
    listed = {n["number"]: n for n in _numbers(session_factory)}
    assert (
        listed["+12125550100"]["resting"]
        and listed["+12125550100"]["rest_reason"] == "carrier label"
    )

    with transaction(session_factory) as session:
        pools.restore(session, "east", "+12125550100")
        session.execute(text("UPDATE contacts SET status = 'pending', next_attempt_at = now()"
                             " WHERE campaign_id = :c"), {"c": campaign})  # fmt: skip
        session.execute(text("UPDATE call_attempts SET status = 'ended', outcome = 'busy',"
                             " ended_at = now()"))  # fmt: skip
    run_tick(session_factory, lambda ids: None)
    used = {r.caller_id for r in rows(session_factory, "SELECT caller_id FROM call_attempts")}
    assert used == {"+12125550100", "+12125550101"}


def _numbers(session_factory: Any) -> list[dict[str, Any]]:
    with session_factory() as session:
        return pools.list_numbers(session, "east")


def _seed_answers(
    session_factory: Any, campaign: int, caller: str, sent: int, answered: int
) -> None:
    with transaction(session_factory) as session:
        session.execute(text("""
            WITH c AS (
                INSERT INTO contacts (campaign_id, phone_e164, phone_raw, status)
                SELECT :k, '+1305' || (5500000 + g + :base)::text, '-', 'completed'
                  FROM generate_series(1, :sent) g
                RETURNING id, phone_e164
            )
            INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id,
                                       attempt_number, status, outcome, sent_at, answered_at,
                                       ended_at, caller_id, caller_id_id)
            SELECT '1_' || c.id, :k, c.id, (SELECT trunk_id FROM campaigns WHERE id = :k), 1,
                   'ended', 'no_answer', now() - interval '1 hour',
                   CASE WHEN row_number() OVER (ORDER BY c.id) <= :answered
                        THEN now() - interval '1 hour' END,
                   now(), :caller, (SELECT id FROM caller_ids WHERE number = :caller)
              FROM c"""),
            {"k": campaign, "sent": sent, "answered": answered, "caller": caller,
             "base": 0 if caller.endswith("0") else 10000})  # fmt: skip


def test_a_number_answered_far_less_than_its_pool_is_rested_with_its_reason(
    session_factory,
) -> None:
    """Over the pool's window: 60 calls with 2 answers against 60 with 24: the first is rested
    (2/60 = 3% is under half the pool's 22%), logged, shown by health, and not used."""
    pool = make_pool(session_factory, ["+12125550100", "+12125550101"], rest_min_calls=50)
    campaign = pooled_campaign(session_factory, [], pool)
    _seed_answers(session_factory, campaign, "+12125550100", 60, 2)
    _seed_answers(session_factory, campaign, "+12125550101", 60, 24)

    done = dispatch.rest_low_answer_rates(session_factory)

    assert len(done) == 1 and "+12125550100" in done[0] and "answer rate 3.3%" in done[0]
    with session_factory() as session:
        health = {h["number"]: h for h in pools.health(session.connection(), "east")}
    assert health["+12125550100"]["resting"] and "3.3%" in health["+12125550100"]["rest_reason"]
    # Rested numbers are judged afresh after their rest: not rested twice meanwhile.
    assert health["+12125550100"]["sent"] == 0
    assert dispatch.rest_low_answer_rates(session_factory) == []
    assert not health["+12125550101"]["resting"] and health["+12125550101"]["answer_rate"] == 0.4
    add_contacts(session_factory, campaign, ["+12125554444"],
                 next_attempt_at=dt.datetime.now(UTC) - dt.timedelta(minutes=1))  # fmt: skip
    run_tick(session_factory, lambda ids: None)
    assert attempts(session_factory)["+12125554444"].caller_id == "+12125550101"


def test_a_pool_with_no_usable_number_is_refused_naming_the_field(session_factory) -> None:
    with transaction(session_factory) as session:
        pools.add_pool(session, "empty", pools.PoolSettings(daily_cap=5))
    trunk = add_trunk(session_factory, "MC", cps=10)
    with (
        transaction(session_factory) as session,
        pytest.raises(SettingError, match="caller_id_pool: pool 'empty' has no numbers"),
    ):
        campaigns.create(session, "c", campaigns.CampaignChanges(
            trunk="MC", caller_id_pool="empty", ivr_file="welcome"))  # fmt: skip
    pool = make_pool(session_factory, ["+12125550100"])
    campaign = add_campaign(
        session_factory, trunk, "rested", status="draft", caller_id_pool_id=pool
    )
    add_contacts(session_factory, campaign, ["+12125551234"])
    with transaction(session_factory) as session:
        pools.rest(session, "east", "+12125550100", for_="1h")
    with (
        transaction(session_factory) as session,
        pytest.raises(
            SettingError, match="caller_id_pool: pool 'east' has no number that can be used"
        ),
    ):
        campaigns.start(session, "rested")


def test_reports_show_and_export_the_caller_id(session_factory, engine) -> None:
    pool = make_pool(session_factory, ["+12125550100"])
    pooled_campaign(session_factory, ["+12125551234"], pool)
    (attempt_id,) = run_tick(session_factory, lambda ids: None).queued
    with engine.connect() as conn:
        call = queries.get_call(conn, str(attempt_id))
    assert call["caller_id"] == "+12125550100"


def test_a_callee_no_number_can_serve_waits_alone(session_factory) -> None:
    """No default and no German number: the German callee waits; the others are called."""
    pool = make_pool(session_factory, ["+12125550100"])
    pooled_campaign(session_factory, ["+4930123456", "+12125551234", "+13055551234"], pool)
    report = run_tick(session_factory, lambda ids: None)
    assert (len(report.queued), report.no_caller_id) == (2, 1)
    assert set(attempts(session_factory)) == {"+12125551234", "+13055551234"}
    [waiting] = rows(session_factory, "SELECT phone_e164, next_attempt_at FROM contacts"
                     " WHERE status = 'pending'")  # fmt: skip
    assert waiting.phone_e164 == "+4930123456"
    assert waiting.next_attempt_at > dt.datetime.now(UTC) + dt.timedelta(minutes=4)
