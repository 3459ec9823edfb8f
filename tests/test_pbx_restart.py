"""A PBX restart with calls up (`core restart now`), end to end: the simulator hangs every call
up with cause 0, says `Shutdown` and closes; the listener records those calls as the PBX's
doing (`interrupted`, ended by the PBX), the ringing ones too, and retries them without using
the callee's patience; an Originate refused while the PBX goes down is not sent and does not
use up an attempt."""

from __future__ import annotations

import pytest

from dialer.ami.blocking import SyncAmiClient
from dialer.dialing.dispatch import run_tick
from dialer.dialing.originate import Result, originate_attempt
from dialer.settings import Settings
from tests.support_celery import (
    add_campaign,
    add_contacts,
    add_trunk,
    in_process_worker,
    rows,
    scalar,
    simulator_numbers,
    wait_until,
)
from tests.test_dialing_e2e import running_listener, sends_per_call

# Slow enough that calls are still up (ending 99: a minute) or ringing (05: never answers,
# the Originate's 30 s timeout) when the PBX restarts.
SLOW = {"speed": 2}


@pytest.mark.parametrize("pbx_sim", [SLOW], indirect=True)
def test_calls_cut_by_a_pbx_restart_are_the_pbxs_doing(
    settings: Settings, session_factory, engine, make_app, pbx_sim
) -> None:
    dial = Settings(
        database_url=settings.database_url,
        broker_url=settings.broker_url,
        ami_servers={"default": pbx_sim.server},
    )
    trunk = add_trunk(session_factory, "MC", cps=50, max_channels=50)
    # A retry for abandoned calls, as in the run that showed the defect.
    campaign = add_campaign(
        session_factory, trunk, max_attempts=3, retry_delays={"abandoned": 3600}
    )
    up = simulator_numbers(4, ending="99")
    ringing = simulator_numbers(3, start=10, ending="05")
    add_contacts(session_factory, campaign, up + ringing)
    with running_listener(engine, pbx_sim.server):
        with in_process_worker(make_app(dial), beat=True):
            wait_until(
                lambda: (
                    scalar(
                        session_factory,
                        "SELECT count(*) FROM call_attempts WHERE status = 'up'",
                    )
                    == 4
                    and scalar(
                        session_factory,
                        "SELECT count(*) FROM call_attempts WHERE sent_at IS NOT NULL",
                    )
                    == 7
                ),
                30,
                message="four calls up and three ringing",
            )
        pbx_sim.core_restart(down_for=0.5).result(20)
        wait_until(
            lambda: (
                scalar(session_factory, "SELECT count(*) FROM call_attempts WHERE status = 'ended'")
                == 7
            ),
            20,
            message="every call closed",
        )
    attempts = rows(
        session_factory,
        "SELECT a.outcome, a.ended_by, a.hangup_cause, a.pbx_down_at IS NOT NULL AS pbx_down,"
        " a.answered_at IS NOT NULL AS answered, k.status, k.phone_e164"
        " FROM call_attempts a JOIN contacts k ON k.id = a.contact_id",
    )
    assert len(attempts) == 7
    assert {(a.outcome, a.ended_by, a.hangup_cause) for a in attempts} == {
        ("interrupted", "pbx", 0)
    }
    assert {a.phone_e164 for a in attempts if a.answered} == set(up)
    # The ringing calls' ends are only known to be the PBX's from its Shutdown.
    assert all(a.pbx_down for a in attempts if not a.answered)
    assert {a.status for a in attempts} == {"pending"}  # retried, not blamed on the callee
    counts = sends_per_call(pbx_sim)
    assert len(counts) == 7 and set(counts.values()) == {1}
    timeline = scalar(
        session_factory,
        "SELECT count(DISTINCT call_attempt_id) FROM call_events WHERE event = 'DialerPbxDown'",
    )
    assert timeline >= 3


@pytest.mark.parametrize("pbx_sim", [{"speed": 1}], indirect=True)
def test_an_originate_refused_while_the_pbx_shuts_down_is_not_sent(
    session_factory, pg_connection, pbx_sim
) -> None:
    trunk = add_trunk(session_factory, "MC")
    campaign = add_campaign(session_factory, trunk)
    add_contacts(session_factory, campaign, simulator_numbers(2, ending="99"))
    first, second = run_tick(session_factory, lambda ids: None).queued
    client = SyncAmiClient(pbx_sim.server)

    def send(attempt_id: int) -> Result:
        return originate_attempt(pg_connection, attempt_id, lambda pbx: client, send_timeout=2.0)

    try:
        # A call in progress: the PBX waits for its channels before it closes (asterisk.c).
        assert send(first) is Result.SENT
        restarted = pbx_sim.core_restart(down_for=0.5)  # returns once actions are refused
        assert send(second) is Result.NOT_SENT
        restarted.result(20)
    finally:
        client.close(timeout=2)
    row = rows(
        session_factory,
        "SELECT a.status, a.outcome, a.send_error, k.status AS contact, k.attempts"
        " FROM call_attempts a JOIN contacts k ON k.id = a.contact_id WHERE a.id = :id",
        id=second,
    )[0]
    assert (row.status, row.outcome, row.contact, row.attempts) == ("not_sent", None, "pending", 0)
    assert "shutting down" in row.send_error
