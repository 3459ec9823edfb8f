"""The originate task's last checks and its pacing slot, against real Postgres and the simulator.

Found by the fault-injection run (bench/chaos.py): a number put on the do-not-call list, or a
calling window that closed, while an attempt waited for its slot was dialled anyway; and a call
whose slot passed while the AMI connection was down went out late, bunched with the calls after
it, over the trunk's rate.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from sqlalchemy import text

from dialer.ami.blocking import SyncAmiClient
from dialer.contacts import dnc
from dialer.db import transaction
from dialer.dialing import originate as originate_module
from dialer.dialing.dispatch import run_tick
from dialer.dialing.originate import (
    MISSED_SLOTS_REASON,
    SLOT_TOLERANCE_S,
    SLOT_TURNS,
    UNREACHABLE_RETRY_S,
    Result,
    originate_attempt,
)
from dialer.dialing.pacing import take_slot
from dialer.outcomes.callstore import CallStore
from dialer.outcomes.facts import CloseReason, CloseRequest, close_attempts
from dialer.outcomes.listener import observe
from tests.support_celery import (
    add_campaign,
    add_contacts,
    add_trunk,
    rows,
    simulator_numbers,
    wait_until,
    zone_open_now,
)


def originates(sim: Any) -> list[dict[str, Any]]:
    return [r for r in sim.records() if r["action"] == "Originate"]


@pytest.fixture
def client(pbx_sim: Any) -> Any:
    client = SyncAmiClient(pbx_sim.server)
    client.wait_connected(5.0)
    yield client
    client.close()


@pytest.fixture
def slots(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The slots the originate task takes, in order."""
    taken: list[float] = []
    original = originate_module.take_slot_and_check

    def recording(*args: Any, **kwargs: Any) -> tuple[float, Any]:
        slot, check = original(*args, **kwargs)
        taken.append(slot)
        return slot, check

    monkeypatch.setattr(originate_module, "take_slot_and_check", recording)
    return taken


def one_queued_attempt(session_factory: Any, *, cps: float = 2.0, **campaign: Any) -> tuple:
    """A slow trunk (a slot every half second) and one queued attempt on it."""
    trunk = add_trunk(session_factory, "MC", cps=cps)
    campaign_id = add_campaign(session_factory, trunk, **campaign)
    (phone,) = simulator_numbers(1, ending="02")
    add_contacts(session_factory, campaign_id, [phone])
    (attempt_id,) = run_tick(session_factory, lambda ids: None).queued
    return trunk, campaign_id, phone, attempt_id


def sending_in_a_second(
    session_factory: Any, pg_connection: Any, client: Any, trunk: int, attempt_id: int
) -> tuple[threading.Thread, list[Result]]:
    """The originate task of `attempt_id` on a thread, its slot about a second away; returns
    once it holds its contact's row, waiting for that slot (the thread, and its result)."""
    for _ in range(2):
        take_slot(pg_connection, trunk)
    result: list[Result] = []
    worker = threading.Thread(
        target=lambda: result.append(originate_attempt(pg_connection, attempt_id, lambda p: client))
    )
    worker.start()
    wait_until(
        lambda: rows(
            session_factory,
            "SELECT 1 FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid"
            " WHERE s.datname = current_database() AND s.state = 'idle in transaction'",
        ),
        5,
        message="the task to hold the contact during its wait",
    )
    return worker, result


def test_a_number_listed_while_its_call_waits_for_the_slot_is_never_dialled_after(
    session_factory, database_url, pg_connection, pbx_sim, client
) -> None:
    """The listing waits for the send in flight, and is stamped after it."""
    trunk, _, phone, attempt_id = one_queued_attempt(session_factory)
    worker, result = sending_in_a_second(session_factory, pg_connection, client, trunk, attempt_id)
    started = time.time()
    with transaction(session_factory) as session:
        dnc.add_e164(session, [phone], campaign_id=None)
    waited = time.time() - started
    worker.join(10)

    assert result == [Result.SENT]
    [sent] = originates(pbx_sim)
    [added_at] = [r.added_at for r in rows(session_factory, "SELECT added_at FROM dnc_numbers")]
    assert waited > 0.3, "the listing did not wait for the call being sent"
    assert sent["wall"] < added_at.timestamp()


def test_an_opt_out_on_another_call_to_the_number_waits_for_the_send_in_flight(
    session_factory, engine, pg_connection, pbx_sim, client
) -> None:
    """The listener's opt-out (the same number, another campaign's call) is a listing like any
    other: it waits for the call being sent and is stamped after it."""
    trunk, _, phone, attempt_id = one_queued_attempt(session_factory)
    other = add_campaign(session_factory, trunk, "other", opt_out_key="9", status="paused")
    (contact,) = add_contacts(session_factory, other, [phone])
    call_id = "1704067200000_777"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id,"
                " attempt_number, status) VALUES (:c, :k, :n, :t, 1, 'up')"
            ),
            {"c": call_id, "k": other, "n": contact, "t": trunk},
        )
    opt_out = observe(
        {"Event": "UserEvent", "UserEvent": "DialerDTMF", "Linkedid": call_id, "Uniqueid": call_id,
         "custom_call_id": call_id, "DTMF": "9", "READSTATUS": "OK"},
        call_id, time.time(),
    )  # fmt: skip
    worker, result = sending_in_a_second(session_factory, pg_connection, client, trunk, attempt_id)
    started = time.time()
    assert CallStore(engine).apply([opt_out]).dnc_added == 1
    waited = time.time() - started
    worker.join(10)

    assert result == [Result.SENT]
    [sent] = originates(pbx_sim)
    [added_at] = [r.added_at for r in rows(session_factory, "SELECT added_at FROM dnc_numbers")]
    assert waited > 0.3, "the opt-out did not wait for the call being sent"
    assert sent["wall"] < added_at.timestamp()


def test_a_number_listed_after_the_claim_is_stopped_at_the_last_check(
    session_factory, engine, pg_connection, pbx_sim, client
) -> None:
    _, _, phone, attempt_id = one_queued_attempt(session_factory)

    def list_it_then_connect(pbx: str) -> Any:  # runs between the claim and the last checks
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO dnc_numbers (phone_e164) VALUES (:p)"), {"p": phone})
        return client

    assert originate_attempt(pg_connection, attempt_id, list_it_then_connect) is Result.ON_DNC
    time.sleep(0.2)
    assert originates(pbx_sim) == []
    [attempt] = rows(session_factory, "SELECT status, send_error FROM call_attempts")
    assert attempt.status == "not_sent" and "do-not-call" in attempt.send_error
    assert rows(session_factory, "SELECT status FROM contacts")[0].status == "dnc"


def test_a_window_closing_before_the_slot_stops_the_call(
    session_factory, pg_connection, pbx_sim, client
) -> None:
    """The tick saw the window open; by the slot (plus the margin) it is closed."""
    zone = zone_open_now()
    now = dt.datetime.now(dt.UTC)
    closes = (now + dt.timedelta(seconds=1)).astimezone(ZoneInfo(zone)).time()
    trunk = add_trunk(session_factory, "MC", cps=100)
    campaign = add_campaign(session_factory, trunk, hours=("09:00", closes.isoformat()))
    add_contacts(
        session_factory, campaign, simulator_numbers(1), timezones=[zone],
        next_attempt_at=now - dt.timedelta(minutes=1),
    )  # fmt: skip
    (attempt_id,) = run_tick(session_factory, lambda ids: None, now=now).queued

    result = originate_attempt(pg_connection, attempt_id, lambda pbx: client)

    assert result is Result.OUTSIDE_WINDOW
    time.sleep(0.2)
    assert originates(pbx_sim) == []
    [contact] = rows(session_factory, "SELECT status, attempts FROM contacts")
    assert (contact.status, contact.attempts) == ("pending", 0)  # the tick re-schedules it
    [attempt] = rows(session_factory, "SELECT status, send_error FROM call_attempts")
    assert attempt.status == "not_sent" and "window" in attempt.send_error


def test_a_late_wake_up_drops_the_slot_instead_of_sending_late(
    session_factory, pg_connection, pbx_sim, client, slots
) -> None:
    trunk, _, _, attempt_id = one_queued_attempt(session_factory)
    take_slot(pg_connection, trunk)  # the attempt's slot is half a second away
    sleeps: list[float] = []

    def oversleep_once(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds + (0.1 if len(sleeps) == 1 else 0.0))

    result = originate_attempt(pg_connection, attempt_id, lambda pbx: client, sleep=oversleep_once)

    assert result is Result.SENT
    assert len(originates(pbx_sim)) == 1
    assert len(slots) == 2
    # When the dialer sent it (the simulator's own clock would add its scheduling delay).
    [attempt] = rows(
        session_factory, "SELECT extract(epoch FROM sent_at) AS sent FROM call_attempts"
    )
    assert -0.001 <= float(attempt.sent) - slots[1] < SLOT_TOLERANCE_S + 0.005


def test_a_host_that_wakes_up_late_for_every_slot_gives_the_attempt_back_unsent(
    session_factory, pg_connection, pbx_sim, client, slots, caplog
) -> None:
    """SLOT_TURNS slots missed: nothing is sent late, the contact waits UNREACHABLE_RETRY_S
    (a busy host is not given more to do at once), and one warning names the call."""
    trunk, _, _, attempt_id = one_queued_attempt(session_factory)
    take_slot(pg_connection, trunk)  # the attempt's slot is half a second away

    def oversleep(seconds: float) -> None:
        time.sleep(seconds + 0.05)

    with caplog.at_level(logging.INFO, logger=originate_module.__name__):
        result = originate_attempt(pg_connection, attempt_id, lambda pbx: client, sleep=oversleep)

    assert result is Result.NOT_SENT
    assert originates(pbx_sim) == []
    assert len(slots) == SLOT_TURNS
    [attempt] = rows(
        session_factory, "SELECT custom_call_id, status, sent_at, send_error FROM call_attempts"
    )
    assert (attempt.status, attempt.sent_at) == ("not_sent", None)
    assert attempt.send_error.startswith(MISSED_SLOTS_REASON + " (woke up ")
    [contact] = rows(
        session_factory,
        "SELECT status, attempts, extract(epoch FROM next_attempt_at - now()) AS due_in"
        " FROM contacts",
    )
    assert (contact.status, contact.attempts) == ("pending", 0)
    assert UNREACHABLE_RETRY_S - 5 < float(contact.due_in) <= UNREACHABLE_RETRY_S
    dropped = [
        r for r in caplog.records if "slot" in r.getMessage() and "dropped" in r.getMessage()
    ]
    assert len(dropped) == SLOT_TURNS
    [given_back] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "given back" in given_back.getMessage()
    assert attempt.custom_call_id in given_back.getMessage()
    assert given_back.custom_call_id == attempt.custom_call_id


def test_a_connection_lost_just_before_the_slot_is_not_made_up_for_by_a_late_call(
    session_factory, pg_connection, pbx_sim, client, slots
) -> None:
    """The old behaviour: wait for the reconnection, then send whenever it came."""
    trunk, _, _, attempt_id = one_queued_attempt(session_factory)
    take_slot(pg_connection, trunk)  # the attempt's slot is half a second away
    sleeps: list[float] = []

    def drop_the_connection_first(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            time.sleep(max(0.0, seconds - 0.1))
            # Reconnecting takes at least a quarter of a second (the adapter's back-off).
            assert pbx_sim.thread.call(lambda sim: sim.drop_sessions()) == 1
            time.sleep(min(seconds, 0.1))
        else:
            time.sleep(seconds)

    result = originate_attempt(
        pg_connection, attempt_id, lambda pbx: client, sleep=drop_the_connection_first
    )

    assert result is Result.SENT
    assert len(originates(pbx_sim)) == 1
    assert len(slots) == 2, "the call was not moved to a new slot"
    [attempt] = rows(
        session_factory,
        "SELECT status, extract(epoch FROM sent_at) AS sent FROM call_attempts",
    )
    assert attempt.status == "originating" and attempt.sent is not None
    # When the dialer sent it (the simulator's own clock would add its scheduling delay).
    assert -0.001 <= float(attempt.sent) - slots[1] < SLOT_TOLERANCE_S + 0.005


# -- the literals of the prepared hot path ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        (42, "42"),
        (2**40, "1099511627776"),
        (0.25, "0.25"),
        (1.05, "1.05"),
        (dt.datetime(2026, 3, 2, 10, 0, 1, 500, tzinfo=dt.UTC),
         "'2026-03-02T10:00:01.000500+00:00'::timestamptz"),
    ],
)  # fmt: skip
def test_hot_path_literals(value: Any, literal: str) -> None:
    assert originate_module._literal(value) == literal


@pytest.mark.parametrize(
    "value", [True, float("nan"), float("inf"), "1; DROP TABLE x", dt.datetime(2026, 3, 2), None]
)
def test_hot_path_literals_refuse_anything_else(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        originate_module._literal(value)


def test_a_claim_whose_answer_was_lost_is_taken_back_by_its_own_run_alone(
    session_factory, pg_connection, pbx_sim, client
) -> None:
    """The claim committed but its answer went with the connection (a restart, a partition):
    the same run of the task, claiming again with its token on a fresh connection, sends the
    call; any other run (a redelivery, the tick's requeue) finds it taken."""
    _, _, _, attempt_id = one_queued_attempt(session_factory, cps=100)
    token = originate_module.new_claim_token()
    # The claim as the lost round trip left it: committed, nobody told.
    originate_module._run(pg_connection, originate_module._call("dialer_claim", attempt_id, token))

    other = originate_attempt(pg_connection, attempt_id, lambda p: client, claim_token=token + 1)
    assert other is Result.ALREADY_TAKEN
    assert originates(pbx_sim) == []

    own = originate_attempt(pg_connection, attempt_id, lambda p: client, claim_token=token)
    assert own is Result.SENT
    again = originate_attempt(pg_connection, attempt_id, lambda p: client, claim_token=token)
    assert again is Result.ALREADY_TAKEN  # sent: not even its own run claims it again
    wait_until(lambda: len(originates(pbx_sim)) >= 1, 5, message="the Originate")
    time.sleep(0.2)
    assert len(originates(pbx_sim)) == 1


def test_an_alternate_number_listed_while_its_call_waits_for_the_slot_waits_for_the_send(
    session_factory, pg_connection, pbx_sim, client, monkeypatch
) -> None:
    """The contact's row lock covers its first number only: a call to its alternate holds the
    number's own lock, which the listing waits for."""
    from dialer.campaigns import calling_window

    # The alternate's zone comes from its number: read as one where the window is open now.
    monkeypatch.setattr(calling_window, "zones_for", lambda phone, stored=(): (zone_open_now(),))
    trunk = add_trunk(session_factory, "MC", cps=2.0)
    campaign_id = add_campaign(session_factory, trunk, dial_alt_numbers=True)
    first, alternate = simulator_numbers(2, ending="02")
    add_contacts(session_factory, campaign_id, [first], alt_phones=[alternate], phone_index=1)
    (attempt_id,) = run_tick(session_factory, lambda ids: None).queued
    worker, result = sending_in_a_second(session_factory, pg_connection, client, trunk, attempt_id)
    started = time.time()
    with transaction(session_factory) as session:
        dnc.add_e164(session, [alternate], campaign_id=None)
    waited = time.time() - started
    worker.join(10)

    assert result == [Result.SENT]
    [sent] = originates(pbx_sim)
    assert alternate in str(sent)
    [added_at] = [r.added_at for r in rows(session_factory, "SELECT added_at FROM dnc_numbers")]
    assert waited > 0.3, "the listing did not wait for the call being sent"
    assert sent["wall"] < added_at.timestamp()


def test_the_hot_path_statements_outlive_a_rollback(pg_connection) -> None:
    """psycopg prepares a statement it runs often itself, and on a ROLLBACK (after a deadlock in
    the send transaction, say) drops every prepared statement of the connection with DEALLOCATE
    ALL: the hot path's own went with them, and every later claim on that connection failed."""
    conn = pg_connection
    originate_module._prepare(conn)
    for n in range(10):  # often enough for psycopg to prepare it (prepare_threshold)
        conn.execute("SELECT %s::int", [n])
    conn.execute("BEGIN")
    conn.execute("ROLLBACK")
    names = conn.execute(
        "SELECT name FROM pg_prepared_statements WHERE name LIKE 'dialer%' ORDER BY name"
    ).fetchall()
    assert [name for (name,) in names] == sorted(originate_module._PREPARED)


def test_statements_gone_from_the_server_are_prepared_again(pg_connection) -> None:
    conn = pg_connection
    history = originate_module._call("dialer_number_history", 0, dt.datetime.now(dt.UTC))
    originate_module._run(conn, history)
    conn.execute("DEALLOCATE ALL")
    with pytest.raises(psycopg.errors.InvalidSqlStatementName):
        originate_module._run(conn, history)
    assert originate_module._run(conn, history) == [[]]


def test_a_close_while_the_call_is_being_sent_waits_for_the_send_instead_of_deadlocking(
    session_factory, engine, pg_connection
) -> None:
    """A callee busy at once: the listener closes the attempt while its send transaction is
    still open. The close locks the attempt, then settles the contact; the send holds the
    contact and writes the attempt's sent time last. In that order the two deadlocked (seen
    at 40 calls/s): the close failed, or the send's commit did, and the close then counted the
    call as not sent. The send locks its attempt before the contact, so the close waits for
    it and sees the sent time."""
    trunk, campaign_id, _, attempt_id = one_queued_attempt(session_factory)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE call_attempts SET status = 'originating' WHERE id = :id"),
            {"id": attempt_id},
        )
    conn = pg_connection
    originate_module.take_slot_and_check(conn, attempt_id, trunk, 0.0, sleep=lambda s: None)
    closing: list[Any] = []

    def close() -> None:
        now = dt.datetime.now(dt.UTC)
        try:
            with engine.begin() as db:
                request = CloseRequest(attempt_id, CloseReason.ORIGINATE_FAILED, now)
                closing.append(close_attempts(db, [request], now))
        except Exception as exc:  # the deadlock, on the close's side
            closing.append(exc)

    closer = threading.Thread(target=close)
    closer.start()
    wait_until(
        lambda: rows(
            session_factory,
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'",
        ),
        5,
        message="the close to wait for the send transaction",
    )
    sent = originate_module._Send(sent_at=dt.datetime.now(dt.UTC))
    originate_module._end_transaction(conn, attempt_id, sent)
    closer.join(10)

    assert sent.recorded, "the send transaction did not commit"
    [closing_result] = closing
    assert not isinstance(closing_result, Exception), f"the close failed: {closing_result}"
    closed, _ = closing_result
    assert [c.attempt_id for c in closed] == [attempt_id]
    [counted] = rows(
        session_factory,
        "SELECT sum(sent) AS sent FROM campaign_attempt_stats WHERE campaign_id = :c",
        c=campaign_id,
    )
    assert counted.sent == 1
