"""The listener's batches against real Postgres: facts in any order, once, outcomes, retries,
opt-outs, failed Originates, reconciliation; and the listener over TCP with the simulator."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import random
import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from dialer.ami.client import AmiClient
from dialer.ami.events import EVENT_FILTERS, Correlator, Event
from dialer.dialing.payload import CallSettings, TrunkRoute, build_originate_payload
from dialer.outcomes.callstore import CallStore
from dialer.outcomes.facts import CloseReason
from dialer.outcomes.listener import Listener, ListenerOptions, observe
from dialer.outcomes.reconcile import ReconcileOptions, close_gone, present_call_ids
from tests.support_listener import Attempt, add_attempts, add_campaign, fetch

# -- events as the simulator and Asterisk shape them (PJSIP, ChannelId = custom_call_id) ----------


def _chan(cid: str, **extra: str) -> dict[str, Any]:
    return {
        "Privilege": "call,all",
        "Channel": "PJSIP/MC-00000001",
        "ChannelState": "6",
        "Uniqueid": cid,
        "Linkedid": cid,
        "ChanVariable": {"custom_call_id": cid},
        **extra,
    }


def answered(cid: str) -> list[Event]:
    return [
        {"Event": "DialEnd", "DestChannel": "PJSIP/MC-00000001", "DestUniqueid": cid,
         "DestLinkedid": cid, "DestChanVariable": {"custom_call_id": cid}, "DialStatus": "ANSWER"},
        {"Event": "OriginateResponse", "ActionID": cid, "Response": "Success",
         "Channel": "PJSIP/MC-00000001", "Reason": "4", "Uniqueid": cid},
    ]  # fmt: skip


def user_event(cid: str, name: str, **fields: str) -> Event:
    return {"Event": "UserEvent", **_chan(cid), "UserEvent": name, "custom_call_id": cid, **fields}


def hangup(cid: str, cause: int) -> Event:
    return {"Event": "Hangup", **_chan(cid), "Cause": str(cause), "Cause-txt": "x"}


def failed(cid: str, reason: int) -> Event:
    return {"Event": "OriginateResponse", "ActionID": cid, "Response": "Failure",
            "Channel": "PJSIP/+15550000004@MC", "Reason": str(reason), "Uniqueid": cid}  # fmt: skip


def human(cid: str, digit: str, status: str = "OK") -> list[Event]:
    return [
        *answered(cid),
        user_event(cid, "DialerAMD", AMDSTATUS="HUMAN", AMDCAUSE="HUMAN-808-800"),
        user_event(cid, "DialerDTMF", DTMF=digit, READSTATUS=status),
        hangup(cid, 16),
    ]


def transferred(cid: str) -> list[Event]:
    return [
        *answered(cid),
        user_event(cid, "DialerAMD", AMDSTATUS="HUMAN", AMDCAUSE="HUMAN-808-800"),
        user_event(cid, "DialerDTMF", DTMF="1", READSTATUS="OK"),
        user_event(cid, "DialerTransfer", TRANSFER_NUMBER="+15551234567",
                   TRANSFER_CHANNEL="PJSIP/+15551234567@MC"),
        {"Event": "DialEnd", **_chan(cid), "DestChannel": "PJSIP/MC-00000002",
         "DestUniqueid": "1795.9", "DestLinkedid": cid, "DialStatus": "ANSWER"},
        {"Event": "Hangup", **_chan(cid, Channel="PJSIP/MC-00000002", Uniqueid="1795.9"),
         "ChanVariable": {"custom_call_id": ""}, "Cause": "16"},
        user_event(cid, "DialerTransferResult", DIALSTATUS="ANSWER", ANSWEREDTIME="5"),
        hangup(cid, 16),
    ]  # fmt: skip


def observations(events: list[Event], start: float | None = None) -> list[Any]:
    correlator = Correlator()
    wall = start or time.time()
    out = []
    for n, ev in enumerate(events):
        key = correlator.key(ev)
        if key is None:
            continue
        found = observe(ev, key, wall + n * 0.01)
        if found is not None:
            out.append(found)
    return out


@pytest.fixture
def campaign(engine: Engine) -> int:
    return add_campaign(engine, opt_out_key="9", max_attempts=3, retry_delays={"busy": 120})


def attempt_row(engine: Engine, attempt: Attempt) -> Any:
    return fetch(engine, "SELECT * FROM call_attempts WHERE id = :id", id=attempt.id)[0]


def contact_row(engine: Engine, attempt: Attempt) -> Any:
    return fetch(engine, "SELECT * FROM contacts WHERE id = :id", id=attempt.contact_id)[0]


def outcome_rows(engine: Engine) -> list[Any]:
    return fetch(
        engine,
        "SELECT call_attempt_id, data ->> 'outcome' AS outcome FROM call_events "
        "WHERE event = 'DialerOutcome' ORDER BY call_attempt_id",
    )


# -- batches --------------------------------------------------------------------------------------

FACT_COLUMNS = [
    "status",
    "outcome",
    "originate_response",
    "originate_reason",
    "originate_response_at",
    "answered_at",
    "dial_status",
    "amd_status",
    "amd_cause",
    "dtmf",
    "voicemail_left",
    "transfer_requested_at",
    "transfer_answered_at",
    "transfer_ended_at",
    "transfer_status",
    "hangup_cause",
    "ended_at",
]


@pytest.mark.parametrize("order", ["forward", "reversed", "shuffled", "twice", "one-by-one"])
def test_facts_and_outcome_do_not_depend_on_order_or_repetition(
    engine: Engine, campaign: int, order: str
) -> None:
    [reference, attempt] = add_attempts(engine, campaign, ["+15550000101", "+15550000201"])
    store = CallStore(engine)
    start = time.time() - 60
    store.apply(observations(transferred(reference.custom_call_id), start))

    events = observations(transferred(attempt.custom_call_id), start)
    if order == "reversed":
        events.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(events)
    elif order == "twice":
        events = events + events
    batches = [[e] for e in events] if order == "one-by-one" else [events]
    fresh = CallStore(engine) if order == "twice" else store
    for batch in batches:
        fresh.apply(batch)
    if order == "twice":
        fresh.apply(events)  # and again, from a store that knows the call is closed

    want, got = attempt_row(engine, reference), attempt_row(engine, attempt)
    assert got.outcome == "transferred"
    for column in FACT_COLUMNS:
        assert getattr(got, column) == getattr(want, column), column
    assert got.transfer_answered_at is not None and got.transfer_ended_at is not None
    stored = fetch(
        engine, "SELECT count(*) AS n FROM call_events WHERE call_attempt_id = :id AND "
        "event <> 'DialerOutcome'", id=attempt.id,
    )[0].n  # fmt: skip
    # The transfer leg's Hangup is not about the call: one row per used event, even if repeated.
    assert stored == 8
    assert [r.call_attempt_id for r in outcome_rows(engine)] == [reference.id, attempt.id]


def test_one_batch_is_a_few_statements_whatever_its_size(
    engine: Engine, campaign: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    phones = [f"+1555010{n:04d}" for n in range(300)]
    attempts = add_attempts(engine, campaign, phones)
    events = [ev for a in attempts for ev in human(a.custom_call_id, "", "TIMEOUT")]
    batch = observations(events)
    statements: list[str] = []
    # Counted where every statement goes, the ORM's and the store's own (COPY included).
    execute, copy = psycopg.Cursor.execute, psycopg.Cursor.copy

    def counted_execute(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if str(query).strip() != ";":  # the pool's liveness ping at checkout
            statements.append(str(query).split()[0])
        return execute(cursor, query, *args, **kwargs)

    def counted_copy(cursor: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(statement).split()[0])
        return copy(cursor, statement, *args, **kwargs)

    store = CallStore(engine)
    store.apply([])  # connection set up, types loaded: not part of a batch
    monkeypatch.setattr(psycopg.Cursor, "execute", counted_execute)
    monkeypatch.setattr(psycopg.Cursor, "copy", counted_copy)
    result = store.apply(batch)
    monkeypatch.undo()
    assert result.stored == len(batch) == 300 * 5
    assert len(result.closed) == 300
    # lookup, lock, savepoint, events (COPY), release, read-for-close, counting on, close
    # (attempts, outcome rows, contacts and counts), counting off
    assert len(statements) <= 9, statements
    rows = fetch(engine, "SELECT outcome, count(*) AS n FROM call_attempts GROUP BY outcome")
    assert [(r.outcome, r.n) for r in rows] == [("human_no_press", 300)]


def test_a_batch_with_events_stored_before_keeps_each_event_once(
    engine: Engine, campaign: int
) -> None:
    """The COPY refuses the batch over one event already stored; the batch's new events must
    still be stored (through the staging table), each event once, exactly as sent."""
    first, second = add_attempts(engine, campaign, ["+15550000111", "+15550000112"])
    store = CallStore(engine)
    seen = observations(answered(first.custom_call_id))
    store.apply(seen)
    tricky = user_event(second.custom_call_id, "DialerAMD", AMDSTATUS="HUMAN")
    tricky["AMDCAUSE"] = 'tab\there, back\\slash "quoted" \u00e9t\u00e9'
    fresh = observations([*answered(second.custom_call_id), tricky])
    later = CallStore(engine)  # a new store: nothing cached
    result = later.apply([*seen, *fresh])
    assert result.stored == len(seen) + len(fresh)
    rows = fetch(
        engine,
        "SELECT call_attempt_id, event, data FROM call_events ORDER BY id",
    )
    assert [r.call_attempt_id for r in rows] == [first.id] * len(seen) + [second.id] * len(fresh)
    assert rows[-1].data["AMDCAUSE"] == tricky["AMDCAUSE"]
    assert rows[-1].event == "DialerAMD"
    # An attempt deleted after its lookup (cached) takes its events with it, and its late
    # events are those of an unknown call.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM call_attempts WHERE id = :id"), {"id": second.id})
    late = observations([hangup(second.custom_call_id, 16)])
    result = later.apply([*seen, *late])
    assert (result.stored, result.unknown) == (len(seen), 1)
    assert fetch(engine, "SELECT count(*) AS n FROM call_events")[0].n == len(seen)


def test_an_attempt_deleted_while_its_batch_is_written_takes_the_events_along(
    engine: Engine, campaign: int
) -> None:
    """call_events has no foreign key: the batch locks its attempts first, so a delete waits
    for the batch's COMMIT and then takes the batch's events too (no orphan rows)."""
    [attempt] = add_attempts(engine, campaign, ["+15550000113"])
    store = CallStore(engine)
    batch = observations(answered(attempt.custom_call_id))
    blocked = None
    with engine.begin() as conn:
        steps = store._apply(conn, batch, (), None)
        value = None
        for n in itertools.count():
            try:
                step = steps.send(value)
            except StopIteration:
                break
            value = step()
            if n == 1:  # lookup, then lock: a delete must wait from here on
                with engine.connect() as other:
                    other.exec_driver_sql("SET lock_timeout = '200ms'")
                    try:
                        other.exec_driver_sql(f"DELETE FROM call_attempts WHERE id = {attempt.id}")
                    except OperationalError as exc:
                        blocked = exc
                    other.rollback()
    assert blocked is not None and "lock timeout" in str(blocked)
    assert fetch(engine, "SELECT count(*) AS n FROM call_events")[0].n == len(batch)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM call_attempts WHERE id = {attempt.id}")
    assert fetch(engine, "SELECT count(*) AS n FROM call_events")[0].n == 0


def test_unknown_calls_are_counted_and_ignored(engine: Engine, campaign: int) -> None:
    [attempt] = add_attempts(engine, campaign, ["+15550000102"])
    store = CallStore(engine)
    result = store.apply(
        observations(human("1700000000000_999999", "2") + human(attempt.custom_call_id, "2"))
    )
    assert result.unknown == 5 and result.stored == 5
    assert [c.attempt_id for c in result.closed] == [attempt.id]
    assert fetch(engine, "SELECT count(*) AS n FROM call_events")[0].n == 6  # 5 + outcome


def test_opt_out_reaches_do_not_call_before_the_call_ends(engine: Engine, campaign: int) -> None:
    [attempt] = add_attempts(engine, campaign, ["+15550000103"])
    store = CallStore(engine)
    events = observations(human(attempt.custom_call_id, "9"))
    result = store.apply(events[:-1])  # everything but the Hangup
    assert result.dnc_added == 1 and not result.closed
    dnc = fetch(engine, "SELECT phone_e164, campaign_id, source FROM dnc_numbers")
    assert [(d.phone_e164, d.campaign_id, d.source) for d in dnc] == [
        ("+15550000103", None, "opt_out")
    ]
    assert attempt_row(engine, attempt).status == "up"
    store.apply(events[-1:])
    assert attempt_row(engine, attempt).outcome == "opted_out"
    contact = contact_row(engine, attempt)
    assert (contact.status, contact.last_outcome) == ("dnc", "opted_out")
    store.apply(events)  # replayed: still one entry
    assert len(fetch(engine, "SELECT 1 FROM dnc_numbers")) == 1


@pytest.mark.parametrize(
    ("attempts", "delays", "status", "delay"),
    [
        (1, {"busy": 120}, "pending", 120),
        (1, {}, "pending", 600),
        (3, {"busy": 120}, "exhausted", None),
    ],
)
def test_busy_is_retried_per_the_campaign_policy(
    engine: Engine, attempts: int, delays: dict[str, int], status: str, delay: int | None
) -> None:
    campaign = add_campaign(engine, max_attempts=3, retry_delays=delays)
    [attempt] = add_attempts(engine, campaign, ["+15550000104"])
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE contacts SET attempts = {attempts}")
    before = dt.datetime.now(dt.UTC)
    cid = attempt.custom_call_id
    events = [
        {"Event": "DialEnd", "DestUniqueid": cid, "DestLinkedid": cid, "DialStatus": "BUSY"},
        hangup(cid, 17),
        failed(cid, 0),
    ]
    CallStore(engine).apply(observations(events))
    row, contact = attempt_row(engine, attempt), contact_row(engine, attempt)
    assert (row.status, row.outcome, row.hangup_cause, row.originate_reason) == (
        "ended", "busy", 17, 0,
    )  # fmt: skip
    assert (contact.status, contact.last_outcome) == (status, "busy")
    if delay is not None:
        due = (contact.next_attempt_at - before).total_seconds()
        assert delay - 1 < due < delay + 5


def test_failed_originate_closes_only_when_no_call_is_up(engine: Engine, campaign: int) -> None:
    lone, live = add_attempts(engine, campaign, ["+15550000105", "+15550000106"])
    store = CallStore(engine)
    # The failure alone closes nothing until the listener says the wait for a Hangup is over.
    assert not store.apply(observations([failed(lone.custom_call_id, 0)])).closed
    assert attempt_row(engine, lone).status == "originating"
    # A live answered call then gets a failure for a duplicate send: it must stay up.
    store.apply(observations(answered(live.custom_call_id) + [failed(live.custom_call_id, 0)]))
    result = store.apply([], [lone.custom_call_id, live.custom_call_id])
    assert [(c.attempt_id, c.outcome, c.reason) for c in result.closed] == [
        (lone.id, "failed", CloseReason.ORIGINATE_FAILED)
    ]
    assert attempt_row(engine, live).status == "up"
    store.apply(observations([hangup(live.custom_call_id, 16)]))
    assert attempt_row(engine, live).outcome == "abandoned"


def test_reconciliation_closes_gone_attempts_once(engine: Engine, campaign: int) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    stuck, alive, fresh, settled, unsent = add_attempts(
        engine, campaign, [f"+155500002{n:02d}" for n in range(5)]
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE call_attempts SET sent_at = '{old.isoformat()}' "
            f"WHERE id IN ({stuck.id}, {alive.id}, {settled.id})"
        )
        conn.exec_driver_sql(
            f"UPDATE call_attempts SET sent_at = NULL, send_error = 'fate unknown: lost', "
            f"queued_at = '{old.isoformat()}' WHERE id = {unsent.id}"
        )
    # `settled` pressed the opt-out key before the listener lost its connection.
    CallStore(engine).apply(observations(human(settled.custom_call_id, "9")[:-1]))
    present = present_call_ids(
        [{"Event": "CoreShowChannel", "Uniqueid": alive.custom_call_id, "Linkedid": "x"},
         {"Event": "CoreShowChannel", "Uniqueid": "y", "Linkedid": fresh.custom_call_id}]
    )  # fmt: skip
    options = ReconcileOptions(grace_s=30, min_age_s=10)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        periodic = close_gone(
            conn, pbx="default", present=set(), snapshot=now, on_connect=False, options=options
        )
    # Periodic: only attempts past timeout + grace, and none that is still on the PBX... here
    # nothing is on the PBX, yet `fresh` (sent just now) is not a candidate.
    assert sorted(c.attempt_id for c in periodic) == sorted(
        [stuck.id, alive.id, settled.id, unsent.id]
    )
    outcomes = {c.attempt_id: c.outcome for c in periodic}
    assert outcomes[stuck.id] == "unknown" and outcomes[unsent.id] == "unknown"
    assert outcomes[settled.id] == "opted_out"
    with engine.begin() as conn:
        again = close_gone(
            conn, pbx="default", present=present, snapshot=now, on_connect=True, options=options
        )
    assert again == []  # closed once; `fresh` is both young and present
    assert attempt_row(engine, fresh).status == "originating"
    assert len(outcome_rows(engine)) == 4
    contact = contact_row(engine, stuck)
    assert (contact.status, contact.last_outcome) == ("pending", "unknown")


def test_reconnect_reconciliation_spares_present_and_young_attempts(
    engine: Engine, campaign: int
) -> None:
    a_minute_ago = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
    gone, present_one, young = add_attempts(
        engine, campaign, ["+15550000301", "+15550000302", "+15550000303"]
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE call_attempts SET sent_at = '{a_minute_ago.isoformat()}' "
            f"WHERE id IN ({gone.id}, {present_one.id})"
        )
    with engine.begin() as conn:
        closed = close_gone(
            conn,
            pbx="default",
            present={present_one.custom_call_id},
            snapshot=dt.datetime.now(dt.UTC),
            on_connect=True,
            options=ReconcileOptions(grace_s=30, min_age_s=10),
        )
    assert [(c.attempt_id, c.outcome) for c in closed] == [(gone.id, "unknown")]


# -- the listener over TCP ------------------------------------------------------------------------


def payload_for(attempt: Attempt) -> dict[str, Any]:
    return build_originate_payload(
        call_id=attempt.custom_call_id,
        to_number=attempt.phone,
        from_number="+15559990000",
        settings=CallSettings(
            ivr_file="welcome_message", ivr_vm_file="vm_message", transfer_number="+15551234599"
        ),
        trunk=TrunkRoute(),
    )


@pytest.fixture
def fast_options() -> ListenerOptions:
    return ListenerOptions(
        flush_interval=0.02,
        # Under load a busy Hangup can follow its failed OriginateResponse late (production
        # waits 1 s); the close goes as soon as it comes, so waiting longer costs nothing.
        originate_settle=3.0,
        reconcile_interval=3600,
        snapshot_settle=0.05,
        reconcile=ReconcileOptions(grace_s=1.0, min_age_s=1.0),
    )


async def _run_listener(listener: Listener) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    return stop, task


def listener_ready(pbx_sim: Any) -> bool:
    """The listener logged in and took its channel snapshot: it hears every event from now
    on. (A call placed before that can end before it listens: a busy callee's Hangup comes
    at once, its OriginateResponse a moment later.)"""
    return any(r["action"] == "CoreShowChannels" for r in pbx_sim.records())


def dial_until_closed(listener: Listener, pbx_sim: Any, attempts: list[Attempt]) -> None:
    """Originate each attempt on the simulator once the listener listens, until it closed
    them all (20 s at most)."""

    async def scenario() -> None:
        stop, task = await _run_listener(listener)
        for _ in range(200):  # 10 s at most
            if await asyncio.to_thread(listener_ready, pbx_sim):
                break
            await asyncio.sleep(0.05)
        async with AmiClient(pbx_sim.server, events=False) as client:
            for attempt in attempts:
                await client.originate(payload_for(attempt))
        for _ in range(400):
            if listener.stats.closed >= len(attempts):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def test_listener_records_simulated_calls(
    engine: Engine, campaign: int, pbx_sim: Any, fast_options: ListenerOptions
) -> None:
    phones = ["+15550000401", "+15550000404", "+15550000405", "+15550000409", "+15550000402"]
    attempts = add_attempts(engine, campaign, phones)
    listener = Listener(engine, pbx_sim.server, options=fast_options)

    dial_until_closed(listener, pbx_sim, attempts)
    outcomes = {a.phone: attempt_row(engine, a).outcome for a in attempts}
    assert outcomes == {
        "+15550000401": "transferred",
        "+15550000404": "busy",
        "+15550000405": "no_answer",
        "+15550000409": "voicemail_left",
        "+15550000402": "human_no_press",
    }
    assert listener.stats.unknown == 0 and listener.stats.write_errors == 0
    assert len(outcome_rows(engine)) == len(attempts)


def test_the_listener_remembers_the_calls_in_progress_not_the_calls_made(
    engine: Engine, campaign: int, pbx_sim: Any, fast_options: ListenerOptions
) -> None:
    """Closed calls leave the correlator's aliases and the writers' call caches but for the
    few closed last: what the listener holds does not grow with the calls it has seen."""
    phones = [f"+155500{n:03d}04" for n in range(12)]  # busy: quick calls
    attempts = add_attempts(engine, campaign, phones)
    options = dataclasses.replace(fast_options, closed_calls_kept=2)
    listener = Listener(engine, pbx_sim.server, options=options)

    dial_until_closed(listener, pbx_sim, attempts)
    # (Busy, or failed when a loaded machine delays the Hangup past originate_settle.)
    assert all(attempt_row(engine, a).status == "ended" for a in attempts)
    assert listener.stats.closed == len(attempts)
    # Every call is closed: two kept by the correlator, two per writer in the caches.
    assert len(listener.correlator) <= 2
    assert all(w.store.cached <= 2 for w in listener._writers)


def test_listener_asks_only_for_the_events_it_uses(
    engine: Engine, pbx_sim: Any, fast_options: ListenerOptions
) -> None:
    listener = Listener(engine, pbx_sim.server, options=fast_options)

    def asked() -> bool:
        records = pbx_sim.records()
        filters = sum(1 for r in records if r["action"] == "Filter")
        return filters >= len(EVENT_FILTERS) and any(
            r["action"] == "CoreShowChannels" for r in records
        )

    async def scenario() -> list[dict[str, Any]]:
        stop, task = await _run_listener(listener)
        for _ in range(200):  # until it has asked (10 s at most), not a fixed sleep
            if await asyncio.to_thread(asked):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)
        return pbx_sim.records()

    records = asyncio.run(scenario())
    filters = [r for r in records if r["action"] == "Filter"]
    assert len(filters) == len(EVENT_FILTERS) == 13
    assert any("name(Shutdown)" in str(r) for r in filters)
    assert any("name(QueueCallerJoin)" in str(r) for r in filters)
    assert any("name(QueueMemberStatus)" in str(r) for r in filters)
    assert any(r["action"] == "CoreShowChannels" for r in records)


def test_dialer_listen_with_a_wrong_secret_stops_with_a_clear_error(
    database_url: str, pbx_sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from dialer.cli import cli
    from dialer.settings import get_settings

    for name, value in {
        "DIALER_DATABASE_URL": database_url,
        "DIALER_AMI_HOST": pbx_sim.host,
        "DIALER_AMI_PORT": str(pbx_sim.port),
        "DIALER_AMI_USERNAME": pbx_sim.username,
        "DIALER_AMI_SECRET": "not-the-secret",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["listen"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert "refused login" in result.output and "DIALER_AMI_SECRET" in result.output
    assert "not-the-secret" not in result.output


def test_read_status_is_a_fact_the_close_finds_without_reading_events(
    engine: Engine, campaign: int
) -> None:
    """The prompt's read status arrives in one batch and the hangup in a later one: the close
    must still see it (TIMEOUT -> human_no_press, not abandoned), from the attempt's own row;
    closing never reads call_events (migration 0005)."""
    from dialer.outcomes.facts import _READ_FOR_CLOSE

    attempts = add_attempts(engine, campaign, ["+15550000401", "+15550000402"])
    store = CallStore(engine)
    first, second = (a.custom_call_id for a in attempts)
    events = {
        cid: human(cid, "", status) for cid, status in ((first, "TIMEOUT"), (second, "HANGUP"))
    }
    store.apply(observations([*events[first][:-1], *events[second][:-1]]))
    assert attempt_row(engine, attempts[0]).read_status == "TIMEOUT"
    assert attempt_row(engine, attempts[0]).status == "up"
    store.apply(observations([events[first][-1], events[second][-1]]))
    assert attempt_row(engine, attempts[0]).outcome == "human_no_press"
    assert attempt_row(engine, attempts[1]).outcome == "abandoned"
    with engine.begin() as conn:
        driver = conn.connection.driver_connection
        rows = driver.execute("EXPLAIN " + _READ_FOR_CLOSE, {"ids": [a.id for a in attempts]})
        plan = "\n".join(row[0] for row in rows)
    assert "call_events" not in plan, plan


def test_periodic_reconciliation_outlives_a_database_failure(
    engine: Engine, campaign: int, pbx_sim: Any, fast_options: ListenerOptions
) -> None:
    """The PBX lost the call while the database was failing: the periodic check must keep
    trying and close the attempt once the database is back."""
    (gone,) = add_attempts(engine, campaign, ["+15550000299"])
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE call_attempts SET sent_at = now() - interval '5 minutes' WHERE id = {gone.id}"
        )
        conn.exec_driver_sql("ALTER TABLE contacts RENAME TO contacts_unavailable")
    options = dataclasses.replace(fast_options, reconcile_interval=0.3)
    listener = Listener(engine, pbx_sim.server, options=options)

    async def scenario() -> None:
        stop, task = await _run_listener(listener)
        await asyncio.sleep(1.5)  # the reconnect check and several periodic ones fail
        await asyncio.to_thread(_restore_contacts, engine)
        deadline = time.monotonic() + 10
        # The close commits in its thread before the listener counts it: wait for both.
        while attempt_row(engine, gone).status != "ended" or not listener.stats.reconciled:
            assert time.monotonic() < deadline, "the attempt was never reconciled"
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    row = attempt_row(engine, gone)
    assert row.outcome == "unknown" and listener.stats.reconciled == 1


def _restore_contacts(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE contacts_unavailable RENAME TO contacts")


# -- the PBX's state, for every host (dialer.campaigns.pbxs) --------------------------------------


def test_the_listener_reports_its_pbxs_state_in_order(engine: Engine) -> None:
    """Registered at start; up when connected, shutting_down on Shutdown, down when the
    connection is lost (beating all along); unknown when it stops, with no beat."""
    from types import SimpleNamespace

    from dialer.ami.client import CONNECTED_EVENT, DISCONNECTED_EVENT
    from dialer.settings import AmiServer

    server = AmiServer("east", "127.0.0.1", 1, "u", "s")
    listener = Listener(engine, server, options=ListenerOptions(heartbeat_interval=0.05))

    def pbx() -> Any:
        rows = fetch(engine, "SELECT * FROM pbxs WHERE name = 'east'")
        return rows[0] if rows else None

    async def until(predicate, what: str) -> Any:
        for _ in range(200):
            row = await asyncio.to_thread(pbx)
            if row is not None and predicate(row):
                return row
            await asyncio.sleep(0.02)
        raise AssertionError(f"never {what}: {await asyncio.to_thread(pbx)}")

    async def scenario() -> list[Any]:
        listener._states = asyncio.Queue()
        client = SimpleNamespace(connected=False)
        reporter = asyncio.create_task(listener._report_loop(client))
        seen = [await until(lambda r: r.state == "down", "down before connecting")]
        client.connected = True
        listener.handle({"Event": CONNECTED_EVENT})
        seen.append(await until(lambda r: r.state == "up", "up"))
        listener.handle({"Event": "Shutdown", "Shutdown": "Cleanly", "Restart": "True"})
        seen.append(await until(lambda r: r.state == "shutting_down", "shutting down"))
        client.connected = False
        listener.handle({"Event": DISCONNECTED_EVENT, "Reason": "connection reset"})
        seen.append(await until(lambda r: r.state == "down", "down"))
        beat = seen[-1].heartbeat_at
        seen.append(await until(lambda r: r.heartbeat_at > beat, "a beat while down"))
        await listener._stop_reporting(reporter)
        seen.append(await asyncio.to_thread(pbx))
        return seen

    before, connected, shutting, down, beating, stopped = asyncio.run(scenario())
    assert before.state_reason == "listener not connected to its AMI"
    assert connected.state_reason == "listener connected"
    assert shutting.state_reason == "Shutdown event (restart: True)"
    assert down.state_reason == "listener lost its AMI connection: connection reset"
    assert (beating.state, beating.state_since) == ("down", down.state_since)  # still down
    assert (stopped.state, stopped.state_reason) == ("unknown", "its listener stopped")
    assert stopped.heartbeat_at < stopped.state_at  # saying it stopped is no sign of life
