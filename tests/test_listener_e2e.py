"""End to end over TCP: attempts created here, Originates sent with the AMI adapter, calls played
by the PBX simulator, the listener recording them in Postgres. Then the faults: listener killed
and restarted, AMI connection dropped, simulator restarted with calls up. Every attempt must end
with an outcome, exactly once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dialer.ami.client import AmiClient
from dialer.dialing.payload import CallSettings, TrunkRoute, build_originate_payload
from dialer.outcomes.listener import Listener, ListenerOptions
from dialer.outcomes.reconcile import ReconcileOptions
from tests.support_listener import Attempt, add_attempts, add_campaign, fetch, wait_for

TRANSFER_TARGET = "+15551234567"  # a simulated human: answers the transfer
PJSIP = "PJSIP/{number}@{trunk}"
LOCAL = "Local/{number}@pstn-sim"
# Shorter than the spec's 30 s so that stuck attempts are due for reconciliation quickly.
TIMEOUT_MS = 2000

BEHAVIOUR = {
    "01": "transferred",
    "02": "human_no_press",
    "03": "voicemail_left",
    "04": "busy",
    "05": "no_answer",
    "06": "congestion",
    "07": "abandoned",
    "08": "human_other_key",
    "09": "voicemail_left",
    "11": "abandoned",  # any other number: a human who hangs up during the prompt
}
RETRIED = {"busy": 300, "no_answer": 1200}


def fast_options(**overrides: Any) -> ListenerOptions:
    values: dict[str, Any] = {
        "flush_interval": 0.02,
        "originate_settle": 1.0,  # as in production: a loaded machine delivers the Hangup late
        "reconcile_interval": 1.0,
        "snapshot_settle": 0.1,
        "reconcile": ReconcileOptions(grace_s=1.0, min_age_s=1.0),
        **overrides,
    }
    return ListenerOptions(**values)


def payload(attempt: Attempt, template: str, press_key: str = "1") -> dict[str, Any]:
    return build_originate_payload(
        call_id=attempt.custom_call_id,
        to_number=attempt.phone,
        from_number="+15559990000",
        settings=CallSettings(
            ivr_file="welcome_message",
            ivr_vm_file="vm_message",
            transfer_number=TRANSFER_TARGET,
            press_key=press_key,
            timeout_ms=TIMEOUT_MS,
        ),
        trunk=TrunkRoute(name="MC", channel_template=template),
    )


async def send(
    server: Any, engine: Engine, attempts: list[Attempt], template: str, gap: float = 0.0
) -> None:
    """Originate each attempt once, recording its send time as the worker does."""
    async with AmiClient(server, events=False) as client:
        for attempt in attempts:
            await client.originate(payload(attempt, template))
            await asyncio.to_thread(_mark_sent, engine, attempt.id)
            if gap:
                await asyncio.sleep(gap)


def _mark_sent(engine: Engine, attempt_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE call_attempts SET sent_at = now() WHERE id = :id"), {"id": attempt_id}
        )


async def connected(listener: Listener, timeout: float = 10.0) -> None:
    """Until the listener has logged in (its first event is the DialerConnected marker)."""
    deadline = time.monotonic() + timeout
    while not listener.stats.events:
        if time.monotonic() > deadline:
            raise AssertionError("the listener did not connect")
        await asyncio.sleep(0.02)


def open_count(engine: Engine) -> int:
    return fetch(engine, "SELECT count(*) AS n FROM call_attempts WHERE status <> 'ended'")[0].n


async def wait_all_ended(engine: Engine, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(open_count, engine):
        if time.monotonic() > deadline:
            raise AssertionError(f"{open_count(engine)} attempts still open after {timeout}s")
        await asyncio.sleep(0.1)


def assert_each_ended_once(engine: Engine, attempts: list[Attempt]) -> dict[int, Any]:
    rows = fetch(
        engine,
        """
        SELECT a.id, a.status, a.outcome, a.ended_at, k.status AS contact_status,
               k.last_outcome, k.next_attempt_at,
               (SELECT count(*) FROM call_events e
                 WHERE e.call_attempt_id = a.id AND e.event = 'DialerOutcome') AS closes,
               (SELECT min(e.data ->> 'reason') FROM call_events e
                 WHERE e.call_attempt_id = a.id AND e.event = 'DialerOutcome') AS closed_by
          FROM call_attempts a JOIN contacts k ON k.id = a.contact_id
        """,
    )
    by_id = {r.id: r for r in rows}
    assert set(by_id) == {a.id for a in attempts}
    for row in rows:
        assert row.status == "ended" and row.outcome and row.ended_at, row
        assert row.closes == 1, row
        assert row.contact_status != "dialing" and row.last_outcome == row.outcome, row
    return by_id


# -- the behaviour table --------------------------------------------------------------------------


@pytest.mark.parametrize("template", [PJSIP, LOCAL], ids=["pjsip", "local"])
def test_campaign_outcomes_follow_the_behaviour_table(
    engine: Engine, pbx_sim: Any, template: str
) -> None:
    plain = add_campaign(
        engine, retry_delays=RETRIED, max_attempts=3, originate_timeout_ms=TIMEOUT_MS
    )
    opt_out = add_campaign(engine, opt_out_key="2", max_attempts=3)
    attempts = add_attempts(engine, plain, [f"+1555000{n}{n}{tail}" for n, tail in
                                            enumerate(BEHAVIOUR)])  # fmt: skip
    [opting] = add_attempts(engine, opt_out, ["+15550007708"])
    listener = Listener(engine, pbx_sim.server, options=fast_options())

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(listener.run(stop))
        await connected(listener)
        await send(pbx_sim.server, engine, [*attempts, opting], template)
        await wait_all_ended(engine, 30)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    rows = assert_each_ended_once(engine, [*attempts, opting])
    got = {a.phone[-2:]: rows[a.id].outcome for a in attempts}
    assert got == BEHAVIOUR
    assert rows[opting.id].outcome == "opted_out"
    # Every call ended on its own Hangup (or failed Originate): none needed reconciliation.
    assert {r.closed_by for r in rows.values()} <= {"hangup", "originate_failed"}

    # Retries: busy and no-answer come back after the campaign's delays; the rest are done.
    now = fetch(engine, "SELECT now() AS db_now")[0].db_now
    for attempt in attempts:
        row = rows[attempt.id]
        if row.outcome in RETRIED:
            assert row.contact_status == "pending", row
            wait = (row.next_attempt_at - now).total_seconds()
            assert RETRIED[row.outcome] - 60 < wait <= RETRIED[row.outcome], row
        elif row.outcome in ("congestion", "abandoned"):
            assert row.contact_status == "pending", row  # retryable by default
        else:
            assert row.contact_status == "completed", row
    assert rows[opting.id].contact_status == "dnc"
    dnc = fetch(engine, "SELECT phone_e164, campaign_id, source FROM dnc_numbers")
    assert [(d.phone_e164, d.campaign_id, d.source) for d in dnc] == [
        ("+15550007708", None, "opt_out")
    ]
    # The transfer's times are kept.
    transfer = fetch(
        engine,
        "SELECT answered_at, transfer_requested_at, transfer_answered_at, transfer_ended_at "
        "FROM call_attempts WHERE id = :id",
        id=attempts[0].id,
    )[0]
    assert (
        transfer.answered_at
        < transfer.transfer_requested_at
        <= transfer.transfer_answered_at
        <= transfer.transfer_ended_at
    )
    assert listener.stats.unknown == 0 and listener.stats.write_errors == 0


def test_events_of_other_calls_are_counted_and_ignored(engine: Engine, pbx_sim: Any) -> None:
    campaign = add_campaign(engine)
    [ours] = add_attempts(engine, campaign, ["+15550000102"])
    stranger = Attempt(0, 0, "1700000000000_424242", "+15550000104")
    listener = Listener(engine, pbx_sim.server, options=fast_options())

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(listener.run(stop))
        await connected(listener)
        await send(pbx_sim.server, engine, [stranger], PJSIP)
        await send(pbx_sim.server, engine, [ours], PJSIP)
        await wait_all_ended(engine, 20)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    assert listener.stats.unknown == 3  # the stranger's DialEnd, Hangup and OriginateResponse
    assert fetch(engine, "SELECT outcome FROM call_attempts")[0].outcome == "human_no_press"
    assert fetch(engine, "SELECT count(DISTINCT call_attempt_id) AS n FROM call_events")[0].n == 1


# -- faults ---------------------------------------------------------------------------------------


@pytest.fixture
def listener_process(database_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(sim: Any, name: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "DIALER_DATABASE_URL": database_url,
            "DIALER_AMI_HOST": sim.host,
            "DIALER_AMI_PORT": str(sim.port),
            "DIALER_AMI_USERNAME": sim.username,
            "DIALER_AMI_SECRET": sim.secret,
            "DIALER_LOG_LEVEL": "INFO",
        }
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "dialer", "listen", "--flush-ms", "20",
             "--reconcile-every", "1", "--grace", "1", "--min-age", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("pbx_sim", [{"speed": 10}], indirect=True)
def test_listener_killed_and_restarted_mid_campaign(
    engine: Engine, pbx_sim: Any, listener_process: Any
) -> None:
    campaign = add_campaign(engine, max_attempts=3, originate_timeout_ms=TIMEOUT_MS)
    tails = list(BEHAVIOUR)
    attempts = add_attempts(
        engine, campaign, [f"+15551{n:04d}{tails[n % len(tails)]}" for n in range(40)]
    )
    first = listener_process(pbx_sim, "first")
    wait_for(lambda: _has_session(pbx_sim), 10, what="the first listener to log in")

    async def scenario() -> None:
        sending = asyncio.create_task(send(pbx_sim.server, engine, attempts, PJSIP, gap=0.05))
        await asyncio.sleep(0.8)
        first.kill()  # SIGKILL: no flush, no goodbye
        await asyncio.to_thread(first.wait, 10)
        await sending
        await asyncio.sleep(1.5)  # calls end while nobody listens
        listener_process(pbx_sim, "second")
        await wait_all_ended(engine, 40)

    asyncio.run(scenario())
    rows = assert_each_ended_once(engine, attempts)
    reasons = {r.closed_by for r in rows.values()}
    # Both paths were exercised: calls the listeners saw end, and calls found gone afterwards.
    assert "hangup" in reasons and "gone" in reasons, reasons


def _has_session(sim: Any) -> bool:
    return any(r["action"] == "CoreShowChannels" for r in sim.records())


@pytest.mark.parametrize("pbx_sim", [{"speed": 10}], indirect=True)
def test_ami_connection_dropped_mid_campaign(engine: Engine, pbx_sim: Any) -> None:
    campaign = add_campaign(engine, max_attempts=3, originate_timeout_ms=TIMEOUT_MS)
    tails = list(BEHAVIOUR)
    attempts = add_attempts(
        engine, campaign, [f"+15552{n:04d}{tails[n % len(tails)]}" for n in range(30)]
    )
    listener = Listener(engine, pbx_sim.server, options=fast_options())

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(listener.run(stop))
        await connected(listener)
        await send(pbx_sim.server, engine, attempts, PJSIP)
        await asyncio.sleep(0.3)
        # Drop every AMI session (the sender's is closed already): the listener reconnects.
        dropped = await asyncio.to_thread(pbx_sim.thread.call, _drop_sessions)
        assert dropped >= 1
        await wait_all_ended(engine, 40)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    assert_each_ended_once(engine, attempts)


def _drop_sessions(sim: Any) -> int:
    sessions = list(sim.sessions)
    for session in sessions:
        session.abort()
    return len(sessions)


@pytest.mark.parametrize("pbx_sim", [{"speed": 5}], indirect=True)
def test_simulator_restarted_with_calls_up(engine: Engine, pbx_sim: Any) -> None:
    campaign = add_campaign(engine, max_attempts=3, originate_timeout_ms=TIMEOUT_MS)
    # Humans who take seconds to finish the prompt, and machines still greeting.
    phones = [f"+15553{n:04d}{'02' if n % 2 else '03'}" for n in range(12)]
    attempts = add_attempts(engine, campaign, phones)
    listener = Listener(engine, pbx_sim.server, options=fast_options())

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(listener.run(stop))
        await connected(listener)
        await send(pbx_sim.server, engine, attempts, PJSIP)
        for _ in range(200):  # every call up (10 s at most), not a fixed sleep
            if await asyncio.to_thread(pbx_sim.active_calls) == len(attempts):
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(pbx_sim.active_calls) == len(attempts)
        await asyncio.to_thread(pbx_sim.restart)  # every call vanishes without an event
        await wait_all_ended(engine, 40)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    rows = assert_each_ended_once(engine, attempts)
    assert {r.closed_by for r in rows.values()} == {"gone"}
    # Nothing settled these calls before they vanished: unknown, and retried.
    assert {r.outcome for r in rows.values()} == {"unknown"}
    assert {r.contact_status for r in rows.values()} == {"pending"}
