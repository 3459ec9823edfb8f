"""Transfers into an Asterisk queue: app_queue's events as call facts, the outcomes they lead
to, the facts stored and reported, and the campaign summary's queue figures."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, text

import dialer
from dialer.ami.events import (
    EARLIEST,
    EVENT_FILTERS,
    QUEUE_MEMBER_EVENTS,
    USED_EVENTS,
    CallFacts,
    Correlator,
    extract,
    parse_frame,
)
from dialer.cli import cli
from dialer.cli.report import render_summary
from dialer.outcomes.callstore import CallStore
from dialer.outcomes.facts import FACT_COLUMNS
from dialer.outcomes.rules import Decision, EndedBy, Outcome, decide, decide_without_end
from dialer.reports import queries as reports
from dialer.settings import get_settings
from tests.support_listener import add_attempts, add_campaign, fetch, received_events
from tests.test_listener import observations

CID = "1795392951000_42"
AT = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)

# -- frames as Asterisk 22 sends them (tests/data/ami-transcripts/live_queue.txt) ----------------

# The callee's channel: with ChannelId honoured (PJSIP, Uniqueid = Linkedid = the call id), or
# a Local channel's ;1 half without it (the call id only in the channel variable).
PJSIP = ("PJSIP/MC-00000001", CID, CID)
LOCAL_1 = ("Local/+15550000002@pstn-sim-0000004a;1", "1795393191.147", "1795393191.147")
# Not the callee: the ;2 half of that Local channel, and a ;2 half whose Uniqueid is the
# Linkedid (only its name tells it apart).
LOCAL_2 = ("Local/+15550000002@pstn-sim-0000004a;2", "1795393191.148", "1795393191.147")
LOCAL_2_SAME = ("Local/+15550000002@pstn-sim-0000004a;2", "1795393191.147", "1795393191.147")
# The agent's leg, on the call's Linkedid.
MEMBER = ("Local/201@agents-0000004b;1", "1795393194.149", CID)


def frame(name: str, caller: tuple[str, str, str] | None = PJSIP, agent: bool = False,
          **headers: str) -> dict[str, Any]:  # fmt: skip
    """An app_queue event as its AMI frame text, parsed as the listener's client does."""
    lines = [f"Event: {name}", "Privilege: agent,all"]
    if caller is not None:
        channel, uniqueid, linkedid = caller
        lines += [
            f"Channel: {channel}", "ChannelState: 6", "ChannelStateDesc: Up",
            "CallerIDNum: +15550000002", "CallerIDName: <unknown>",
            "ConnectedLineNum: <unknown>", "ConnectedLineName: <unknown>", "Language: en",
            "AccountCode: ", "Context: DynamicIVR", "Exten: s", "Priority: 21",
            f"Uniqueid: {uniqueid}", f"Linkedid: {linkedid}",
            f"ChanVariable: custom_call_id={CID}", "ChanVariable: CUSTOM_CALL_ID=",
        ]  # fmt: skip
    if agent:
        lines += [
            "DestChannel: Local/201@agents-0000004b;1", "DestChannelState: 6",
            "DestChannelStateDesc: Up", "DestContext: agents", "DestExten: support",
            "DestPriority: 1", "DestUniqueid: 1795393194.149",
            f"DestLinkedid: {caller[2] if caller else CID}",
            "DestChanVariable: custom_call_id=", "DestChanVariable: CUSTOM_CALL_ID=",
        ]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return parse_frame("\r\n".join(lines) + "\r\n")


def join(caller: tuple[str, str, str] = PJSIP, queue: str = "support") -> dict[str, Any]:
    return frame("QueueCallerJoin", caller, Queue=queue, Position="1", Count="1")


def connect(caller: tuple[str, str, str] = PJSIP, hold: str = "12", member: str = "Ann",
            interface: str = "PJSIP/201") -> dict[str, Any]:  # fmt: skip
    return frame("AgentConnect", caller, agent=True, Queue="support", Interface=interface,
                 MemberName=member, HoldTime=hold, RingTime="3")  # fmt: skip


def abandon(caller: tuple[str, str, str] = PJSIP, hold: str = "37") -> dict[str, Any]:
    return frame("QueueCallerAbandon", caller, Queue="support", Position="1",
                 OriginalPosition="1", HoldTime=hold)  # fmt: skip


def complete(caller: tuple[str, str, str] | None = PJSIP, reason: str = "agent") -> dict[str, Any]:
    return frame("AgentComplete", caller, agent=caller is not None, Queue="support",
                 Interface="PJSIP/201", MemberName="Ann", HoldTime="12", TalkTime="95",
                 Reason=reason)  # fmt: skip


def member_dial_end(status: str) -> dict[str, Any]:
    """app_queue ringing one agent: a DialEnd from the callee's channel."""
    return frame("DialEnd", PJSIP, agent=True, DialStatus=status)


def user_event(name: str, **fields: str) -> dict[str, Any]:
    return {"Event": "UserEvent", "Channel": PJSIP[0], "Uniqueid": CID, "Linkedid": CID,
            "ChanVariable": {"custom_call_id": CID}, "UserEvent": name, "custom_call_id": CID,
            **fields}  # fmt: skip


def hangup(cause: int) -> dict[str, Any]:
    return {"Event": "Hangup", "Channel": PJSIP[0], "Uniqueid": CID, "Linkedid": CID,
            "Cause": str(cause), "Cause-txt": "x"}  # fmt: skip


ORIGINATED = {"Event": "OriginateResponse", "ActionID": CID, "Response": "Success",
              "Channel": PJSIP[0], "Reason": "4", "Uniqueid": CID}  # fmt: skip
PRESSED = [
    ORIGINATED,
    user_event("DialerAMD", AMDSTATUS="HUMAN", AMDCAUSE="HUMAN-808-800"),
    user_event("DialerDTMF", DTMF="1", READSTATUS="OK"),
    user_event("DialerTransfer", TRANSFER_QUEUE="support"),
]


def at(seconds: float) -> dt.datetime:
    return AT + dt.timedelta(seconds=seconds)


# -- the events the listener asks for ---------------------------------------------------------


def test_queue_events_are_asked_for_and_kept() -> None:
    caller = {"QueueCallerJoin", "QueueCallerAbandon", "AgentConnect", "AgentComplete"}
    members = {"QueueMemberStatus", "QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause"}
    assert members == QUEUE_MEMBER_EVENTS
    assert caller | members <= USED_EVENTS
    filters = {criteria for criteria, _ in EVENT_FILTERS}
    assert {f"action(include),name({name})" for name in caller | members} <= filters


def test_the_manager_conf_example_reads_agent_events_and_filters_them() -> None:
    conf = (Path(dialer.__file__).parent / "asterisk" / "manager.conf").read_text()
    assert "\nread = call,user,system,agent\n" in conf
    for criteria, pattern in EVENT_FILTERS:
        assert f"\neventfilter({criteria}) = {pattern}".rstrip() in conf


# -- facts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "values"),
    [
        (join(), {"transfer_queue": "support", "queue_joined_at": AT}),
        (join(LOCAL_1), {"transfer_queue": "support", "queue_joined_at": AT}),
        (join(LOCAL_1, queue=" "), {"transfer_queue": None, "queue_joined_at": AT}),
        (connect(), {"transfer_queue": "support", "transfer_answered_at": AT,
                     "transfer_status": "ANSWER", "queue_wait_s": 12, "agent": "Ann"}),
        (connect(LOCAL_1, hold="0"), {"transfer_queue": "support", "transfer_answered_at": AT,
                                      "transfer_status": "ANSWER", "queue_wait_s": 0,
                                      "agent": "Ann"}),
        # No member name: the interface.
        (connect(member=""), {"transfer_queue": "support", "transfer_answered_at": AT,
                              "transfer_status": "ANSWER", "queue_wait_s": 12,
                              "agent": "PJSIP/201"}),
        (connect(member="", interface=""), {"transfer_queue": "support",
                                            "transfer_answered_at": AT,
                                            "transfer_status": "ANSWER", "queue_wait_s": 12,
                                            "agent": None}),
        (abandon(), {"transfer_queue": "support", "queue_wait_s": 37}),
        (abandon(LOCAL_1, hold=" 5 "), {"transfer_queue": "support", "queue_wait_s": 5}),
        (complete(), {"transfer_queue": "support", "transfer_ended_at": AT}),
        # Not the callee's channel: nothing about the call.
        (join(LOCAL_2), None),
        (join(LOCAL_2_SAME), None),
        (join(MEMBER), None),
        (connect(LOCAL_2), None),
        (abandon(LOCAL_2), None),
        (complete(LOCAL_2), None),
    ],
)  # fmt: skip
def test_queue_caller_events_give_facts_of_the_originated_channel(
    event: dict[str, Any], values: dict[str, Any] | None
) -> None:
    assert Correlator().key(event) == CID
    found = extract(event, CID, AT)
    assert (None if found is None else found.values) == values
    if found is not None:
        assert not found.final and not found.originate_failed


@pytest.mark.parametrize("hold", ["", "x", "-3", "1e3", "1.5", "١٦", "99999999999", "0x10"])
@pytest.mark.parametrize("make", [connect, abandon], ids=["AgentConnect", "QueueCallerAbandon"])
def test_a_hold_time_that_is_not_seconds_is_no_wait(make: Any, hold: str) -> None:
    found = extract(make(hold=hold), CID, AT)
    assert found is not None and found.values["queue_wait_s"] is None


def test_a_hold_time_header_missing_is_no_wait() -> None:
    event = connect()
    del event["HoldTime"]
    found = extract(event, CID, AT)
    assert found is not None and found.values["queue_wait_s"] is None


def test_agent_complete_without_a_channel_does_not_correlate() -> None:
    # As Asterisk 22 sends it when the caller hung up first (live_queue.txt).
    event = complete(None, reason="caller")
    assert "Linkedid" not in event and Correlator().key(event) is None


@pytest.mark.parametrize("name", sorted(QUEUE_MEMBER_EVENTS))
def test_member_events_say_nothing_about_a_call(name: str) -> None:
    event = frame(name, None, Queue="support", MemberName="Ann", Interface="PJSIP/201",
                  StateInterface="PJSIP/201", Status="1", Paused="0", InCall="0")  # fmt: skip
    assert Correlator().key(event) is None
    assert extract(event, CID, AT) is None


@pytest.mark.parametrize(
    ("fields", "values"),
    [
        ({"TRANSFER_QUEUE": "support"},
         {"transfer_requested_at": AT, "transfer_source": "ivr", "transfer_queue": "support"}),
        ({"TRANSFER_QUEUE": ""}, {"transfer_requested_at": AT, "transfer_source": "ivr"}),
        ({"TRANSFER_NUMBER": "+15551234567", "TRANSFER_CHANNEL": "PJSIP/+15551234567@MC"},
         {"transfer_requested_at": AT, "transfer_source": "ivr"}),
    ],
)  # fmt: skip
def test_the_ivr_transfer_names_its_queue(fields: dict[str, str], values: dict[str, Any]) -> None:
    found = extract(user_event("DialerTransfer", **fields), CID, AT)
    assert found is not None and found.values == values


def test_new_facts_are_columns_and_the_join_keeps_its_earliest_time() -> None:
    assert (FACT_COLUMNS["queue_joined_at"], FACT_COLUMNS["queue_wait_s"],
            FACT_COLUMNS["agent"]) == ("timestamptz", "integer", "text")  # fmt: skip
    assert "queue_joined_at" in EARLIEST
    facts = CallFacts().merge({"queue_joined_at": at(5)}).merge({"queue_joined_at": at(2)})
    assert facts.merge({"queue_joined_at": at(9)}).queue_joined_at == at(2)


def test_the_recorded_queue_call_has_its_queue_facts() -> None:
    correlator = Correlator()
    facts = CallFacts()
    for received in received_events("live_queue"):
        if correlator.key(received.headers) != "cid-queue":
            continue
        found = extract(received.headers, "cid-queue", received.at)
        if found is not None:
            facts = facts.merge(found.values)
    assert (facts.transfer_queue, facts.queue_wait_s, facts.agent) == ("support", 0, "agent99")
    assert facts.queue_joined_at is not None and facts.transfer_answered_at is not None
    assert facts.queue_joined_at <= facts.transfer_answered_at
    assert decide(facts, press_key="1", opt_out_key=None).outcome is Outcome.TRANSFERRED


# -- outcomes -----------------------------------------------------------------------------------


def replayed(events: list[dict[str, Any]]) -> CallFacts:
    correlator, facts = Correlator(), CallFacts()
    for n, event in enumerate(events):
        key = correlator.key(event)
        found = extract(event, key, at(n)) if key else None
        if found is not None:
            facts = facts.merge(found.values)
    return facts


CALLEE = EndedBy.CALLEE
QUEUE_CASES = {
    "abandoned": ([*PRESSED, join(), abandon(), hangup(16)], Outcome.QUEUE_ABANDONED, CALLEE),
    # An agent's phone rang unanswered (app_queue's DialEnd), then the callee left.
    "abandoned after an agent's ring": (
        [*PRESSED, join(), member_dial_end("NOANSWER"), member_dial_end("CANCEL"), abandon(),
         hangup(16)], Outcome.QUEUE_ABANDONED, CALLEE),
    "abandoned, a busy agent": (
        [*PRESSED, join(), member_dial_end("BUSY"), abandon(), hangup(16)],
        Outcome.QUEUE_ABANDONED, CALLEE),
    # Without `agent` in read: only the IVR's events.
    "abandoned, no queue events": (
        [*PRESSED, user_event("DialerTransferResult", QUEUESTATUS=""), hangup(16)],
        Outcome.QUEUE_ABANDONED, CALLEE),
    "answered": (
        [*PRESSED, join(), member_dial_end("ANSWER"), connect(), complete(),
         user_event("DialerTransferResult", QUEUESTATUS=""), hangup(16)],
        Outcome.TRANSFERRED, CALLEE),
    "answered by a second agent": (
        [*PRESSED, join(), member_dial_end("NOANSWER"), member_dial_end("ANSWER"), connect(),
         hangup(16)], Outcome.TRANSFERRED, CALLEE),
    "answered, only AgentConnect": (
        [*PRESSED, join(), connect(), hangup(16)], Outcome.TRANSFERRED, CALLEE),
    # Another leg's agent is not the callee's.
    "a ;2 half's agent": (
        [*PRESSED, join(), connect(LOCAL_2), hangup(16)], Outcome.QUEUE_ABANDONED, CALLEE),
    "cut by the PBX in the queue": (
        [*PRESSED, join(), hangup(0)], Outcome.INTERRUPTED, EndedBy.PBX),
}  # fmt: skip


@pytest.mark.parametrize("order", ["forward", "reversed"])
@pytest.mark.parametrize("case", sorted(QUEUE_CASES))
def test_queue_transfer_outcomes(case: str, order: str) -> None:
    events, outcome, ended_by = QUEUE_CASES[case]
    facts = replayed(events if order == "forward" else events[::-1])
    assert facts.transfer_queue == "support"
    assert decide(facts, press_key="1", opt_out_key="9") == Decision(outcome, ended_by)


def test_queue_waits_and_agents_as_facts() -> None:
    left = replayed(QUEUE_CASES["abandoned"][0])
    assert (left.queue_wait_s, left.agent, left.transfer_answered_at) == (37, None, None)
    assert left.queue_joined_at == at(4)
    taken = replayed(QUEUE_CASES["answered"][0])
    assert (taken.queue_wait_s, taken.agent, taken.transfer_status) == (12, "Ann", "ANSWER")
    # The agent's DialEnd ANSWER came first; AgentComplete before the IVR's result.
    assert taken.transfer_answered_at == at(5) and taken.transfer_ended_at == at(7)


def test_an_agent_answer_settles_the_call_even_without_its_end() -> None:
    facts = replayed([*PRESSED, join(), connect()])
    decision = decide_without_end(facts, press_key="1", opt_out_key="9")
    assert decision == Decision(Outcome.TRANSFERRED, EndedBy.DIALER)
    facts = replayed([*PRESSED, join()])
    decision = decide_without_end(facts, press_key="1", opt_out_key="9")
    assert decision == Decision(Outcome.UNKNOWN, EndedBy.DIALER)


# -- stored and reported ------------------------------------------------------------------------


def _calls(cid: str, tail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events above for call `cid` instead of CID."""

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        return value.replace(CID, cid) if isinstance(value, str) else value

    return [swap(e) for e in [*PRESSED, *tail]]


def test_queue_facts_are_stored_and_reported(engine: Engine) -> None:
    campaign = add_campaign(engine, transfer_queue="support")
    left, taken = add_attempts(engine, campaign, ["+15550000301", "+15550000302"])
    store = CallStore(engine)
    store.apply(observations(_calls(left.custom_call_id, [join(), abandon(), hangup(16)])))
    store.apply(
        observations(_calls(taken.custom_call_id, [join(), connect(), complete(), hangup(16)]))
    )
    rows = {
        r.attempt_id: r
        for r in fetch(
            engine,
            "SELECT attempt_id, outcome, ended_by, transfer_queue, transfer_source,"
            " queue_wait_s, agent FROM call_attempts_report WHERE campaign_id = :c",
            c=campaign,
        )
    }
    assert tuple(rows[left.id])[1:] == ("queue_abandoned", "callee", "support", "ivr", 37, None)
    assert tuple(rows[taken.id])[1:] == ("transferred", "callee", "support", "ivr", 12, "Ann")
    joined = fetch(
        engine,
        "SELECT queue_joined_at IS NOT NULL AS joined FROM call_attempts WHERE id = :id",
        id=taken.id,
    )
    assert joined[0].joined
    name = fetch(engine, "SELECT name FROM campaigns WHERE id = :c", c=campaign)[0].name
    with engine.connect() as conn:
        out = io.BytesIO()
        reports.export_calls(conn, name, out)
        listed = reports.list_calls(conn, campaign=name)
    exported = {r["attempt_id"]: r for r in csv.DictReader(io.StringIO(out.getvalue().decode()))}
    assert (exported[str(taken.id)]["queue_wait_s"], exported[str(taken.id)]["agent"]) == (
        "12",
        "Ann",
    )
    assert {r["attempt_id"]: (r["queue_wait_s"], r["agent"]) for r in listed} == {
        left.id: (37, None),
        taken.id: (12, "Ann"),
    }


# -- the campaign summary's queue figures ------------------------------------------------------

T0 = dt.datetime(2025, 6, 2, 9, 0, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(hours=1)
_PHONES = itertools.count(1000)


def _insert_attempt(
    conn: Connection,
    campaign: int,
    *,
    sent: float,
    ended: float | None,
    outcome: str | None,
    queue: str | None = "support",
    wait: int | None = None,
) -> None:
    phone = f"+1555{next(_PHONES):07d}"
    trunk = conn.execute(
        text("SELECT trunk_id FROM campaigns WHERE id = :c"), {"c": campaign}
    ).scalar_one()
    contact = conn.execute(
        text(
            "INSERT INTO contacts (campaign_id, phone_e164, phone_raw, status)"
            " VALUES (:c, :p, :p, 'completed') RETURNING id"
        ),
        {"c": campaign, "p": phone},
    ).scalar_one()
    conn.execute(
        text(
            "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id,"
            " attempt_number, status, queued_at, sent_at, answered_at, ended_at, outcome,"
            " transfer_queue, queue_wait_s)"
            " VALUES (:cid, :c, :k, :t, 1, :status, :queued, :sent, :sent, :ended, :outcome,"
            " :queue, :wait)"
        ),
        {
            "cid": f"{int(T0.timestamp() * 1000)}_{contact}",
            "c": campaign,
            "k": contact,
            "t": trunk,
            "status": "ended" if outcome else "up",
            "queued": T0 + dt.timedelta(seconds=sent - 1),
            "sent": T0 + dt.timedelta(seconds=sent),
            "ended": None if ended is None else T0 + dt.timedelta(seconds=ended),
            "outcome": outcome,
            "queue": queue,
            "wait": wait,
        },
    )


def _agent_minutes(conn: Connection, rows: list[tuple[str, str, float, float, float]]) -> None:
    """(pbx, queue, minutes after T0, staffed_s, busy_s) rows."""
    conn.execute(text("INSERT INTO pbxs (name) VALUES ('pbx-a'), ('pbx-b')"))
    for pbx, queue, minute, staffed, busy in rows:
        conn.execute(
            text(
                "INSERT INTO queue_agent_minutes (pbx, queue, minute, staffed_s, busy_s)"
                " VALUES (:pbx, :queue, :minute, :staffed, :busy)"
            ),
            {
                "pbx": pbx,
                "queue": queue,
                "minute": T0 + dt.timedelta(minutes=minute),
                "staffed": staffed,
                "busy": busy,
            },  # fmt: skip
        )


@pytest.fixture
def queue_campaign(engine: Engine) -> tuple[int, str]:
    """A running queue campaign: 20 transfers into its queue, 1 abandoned; other attempts
    that are not queue transfers; another campaign's; agent minutes in and out of its span."""
    campaign = add_campaign(engine, transfer_queue="support")
    other = add_campaign(engine, transfer_queue="support")
    with engine.begin() as conn:
        # 19 answered by an agent after 1..19 s, ended long before NOW...
        for i in range(1, 17):
            _insert_attempt(conn, campaign, sent=10 * i, ended=10 * i + 60, outcome="transferred",
                            wait=i)  # fmt: skip
        # ...but 3 of them within the last 5 minutes, with the one that left the queue.
        for i in (17, 18, 19):
            _insert_attempt(conn, campaign, sent=3300, ended=3400 + i, outcome="transferred",
                            wait=i)  # fmt: skip
        _insert_attempt(conn, campaign, sent=3300, ended=3590, outcome="queue_abandoned", wait=40)
        # Not queue transfers: no queue, a failed queue transfer, one still in progress.
        _insert_attempt(conn, campaign, sent=5, ended=30, outcome="human_no_press", queue=None)
        _insert_attempt(conn, campaign, sent=3500, ended=3550, outcome="failed", wait=500)
        _insert_attempt(conn, campaign, sent=3580, ended=None, outcome=None, wait=300)
        # Another campaign's abandoned transfers.
        for _ in range(3):
            _insert_attempt(conn, other, sent=100, ended=3500, outcome="queue_abandoned", wait=90)
        _agent_minutes(
            conn,
            [
                ("pbx-a", "support", -2, 60, 60),  # before the first send (T0 + 10 s)
                ("pbx-a", "support", 0, 60, 30),  # the first send's minute
                ("pbx-a", "support", 30, 120, 60),
                ("pbx-b", "support", 30, 60, 60),
                ("pbx-a", "support", 52, 60, 0),  # before the last 5 minutes
                ("pbx-a", "support", 58, 100, 90),  # within them
                ("pbx-a", "support", 61, 60, 0),  # after NOW
                ("pbx-a", "sales", 30, 1000, 0),  # another queue
            ],
        )
    name = fetch(engine, "SELECT name FROM campaigns WHERE id = :c", c=campaign)[0].name
    return campaign, name


def test_queue_figures_of_a_running_campaign(
    engine: Engine, queue_campaign: tuple[int, str]
) -> None:
    campaign, _ = queue_campaign
    with engine.connect() as conn:
        figures = reports.queue_figures(conn, campaign, now=NOW)
    assert tuple(figures) == reports.QUEUE_FIGURES
    assert figures == {
        "transfer_abandon_rate": 0.05,  # 1 of 20
        "avg_queue_wait_seconds": 11.5,  # (1 + ... + 19 + 40) / 20
        "agent_occupancy": 0.6,  # (30 + 60 + 60 + 0 + 90) / (60 + 120 + 60 + 60 + 100)
        "transfer_abandon_rate_5m": 0.25,  # 1 of 4 ended after NOW - 5 min
        "avg_queue_wait_seconds_5m": 23.5,  # (17 + 18 + 19 + 40) / 4
        "agent_occupancy_5m": 0.9,  # 90 / 100
    }


def test_queue_figures_since_count_later_attempts_only(
    engine: Engine, queue_campaign: tuple[int, str]
) -> None:
    campaign, _ = queue_campaign
    with engine.connect() as conn:
        figures = reports.queue_figures(conn, campaign, since=T0 + dt.timedelta(seconds=3000),
                                        now=NOW)  # fmt: skip
    assert (figures["transfer_abandon_rate"], figures["avg_queue_wait_seconds"]) == (0.25, 23.5)
    # From the minute of the first send since then (55 min past T0).
    assert figures["agent_occupancy"] == 0.9


def test_a_finished_campaign_counts_agent_time_until_its_last_call(engine: Engine) -> None:
    campaign = add_campaign(engine, transfer_queue="support", status="completed")
    with engine.begin() as conn:
        _insert_attempt(conn, campaign, sent=60, ended=600, outcome="transferred", wait=8)
        _insert_attempt(conn, campaign, sent=70, ended=700, outcome="queue_abandoned", wait=2)
        _agent_minutes(
            conn,
            [
                ("pbx-a", "support", 1, 60, 45),
                ("pbx-b", "support", 11, 60, 15),  # the minute of the last end
                ("pbx-a", "support", 12, 60, 0),  # after it
            ],
        )
    with engine.connect() as conn:
        figures = reports.queue_figures(conn, campaign, now=NOW)
    assert figures == {
        "transfer_abandon_rate": 0.5,
        "avg_queue_wait_seconds": 5.0,
        "agent_occupancy": 0.5,  # (45 + 15) / 120
        "transfer_abandon_rate_5m": None,
        "avg_queue_wait_seconds_5m": None,
        "agent_occupancy_5m": None,
    }


def test_queue_figures_are_null_without_queue_transfers_or_agent_time(engine: Engine) -> None:
    campaign = add_campaign(engine, transfer_queue="support")
    with engine.connect() as conn:
        assert set(reports.queue_figures(conn, campaign).values()) == {None}
    with engine.begin() as conn:
        _insert_attempt(conn, campaign, sent=60, ended=90, outcome="human_no_press", queue=None)
        _agent_minutes(conn, [("pbx-a", "support", 1, 0, 0)])
    with engine.connect() as conn:
        assert set(reports.queue_figures(conn, campaign, now=NOW).values()) == {None}


def test_the_summary_has_queue_figures_only_for_queue_campaigns(
    engine: Engine, queue_campaign: tuple[int, str]
) -> None:
    campaign, name = queue_campaign
    plain = add_campaign(engine)
    plain_name = fetch(engine, "SELECT name FROM campaigns WHERE id = :c", c=plain)[0].name
    with engine.connect() as conn:
        summary = reports.campaign_summary(conn, name)
        since = reports.campaign_summary(conn, name, since=T0 + dt.timedelta(seconds=3000))
        now = reports.queue_figures(conn, campaign)
        without = reports.campaign_summary(conn, plain_name)
        watched = reports.watch_frame(conn, name)
    assert {key: summary[key] for key in reports.QUEUE_FIGURES} == now
    assert (summary["transfer_abandon_rate"], summary["avg_queue_wait_seconds"]) == (0.05, 11.5)
    assert since["transfer_abandon_rate"] == 0.25 and since["attempts"] == 6
    assert not set(reports.QUEUE_FIGURES) & set(without)
    assert watched["campaign"] == name

    text_ = render_summary(summary, None)
    assert "queue      5.0% of queued transfers abandoned, wait 11.5 s average" in text_
    assert "\nlast 5 min -" in text_  # nothing ended in the last 5 minutes
    assert "queued transfers" not in render_summary(without, None)


def test_the_report_command_shows_the_queue_figures(
    database_url: str, queue_campaign: tuple[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, name = queue_campaign
    monkeypatch.setenv("DIALER_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        table = runner.invoke(cli, ["report", name])
        as_json = runner.invoke(cli, ["report", name, "--json"])
    finally:
        get_settings.cache_clear()
    assert table.exit_code == 0, table.output
    assert "5.0% of queued transfers abandoned" in table.output
    assert as_json.exit_code == 0, as_json.output
    assert '"transfer_abandon_rate": 0.05' in as_json.output
