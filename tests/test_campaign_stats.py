"""campaign_attempt_stats stays exact under any writes, and the summary read from it equals the
summary computed from every attempt (revision 0007's reference definition)."""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, text

ROOT = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
CONTACTS = 12
OUTCOMES = (
    "transferred",
    "human_no_press",
    "no_answer",
    "busy",
    "voicemail_left",
    "failed",
    "operator_hangup",
    "interrupted",
)
ENDED_BY = (None, "callee", "ivr", "operator", "pbx")
TRANSFER_SOURCES = (None, "ivr", "operator")
AMD = (None, "HUMAN", "MACHINE", "NOTSURE")
DTMF = (None, "1", "2", "19")
OPEN = ("queued", "originating", "up")

# What the triggers must keep: the finished attempts' counts, computed straight from them.
EXPECTED_STATS = """
SELECT campaign_id, date_bin(interval '10 minutes', queued_at, timestamptz 'epoch'), outcome,
       amd_status, dtmf, ended_by, transfer_source, count(*), count(sent_at), count(answered_at),
       coalesce(sum(ended_at - answered_at), interval '0'), count(ended_at - answered_at),
       min(sent_at), max(sent_at)
  FROM call_attempts WHERE status IN ('ended', 'not_sent')
 GROUP BY 1, 2, 3, 4, 5, 6, 7
"""
KEPT_STATS = """
SELECT campaign_id, bucket, outcome, amd_status, dtmf, ended_by, transfer_source, attempts, sent,
       answered_at, talk_total, talk_count, first_sent_at, last_sent_at
  FROM campaign_attempt_stats
"""


def _reference_function() -> str:
    path = ROOT / "migrations" / "versions" / "0007_who_ended_the_call.py"
    spec = importlib.util.spec_from_file_location("reference_0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    definition: str = module.reference_summary_since("reference_summary_since")
    return definition


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    with engine.begin() as conn:
        conn.execute(text(_reference_function()))
        conn.execute(
            text(
                "INSERT INTO trunks (id, name, cps, max_channels) OVERRIDING SYSTEM VALUE "
                "VALUES (1, 'MC', 10, 20)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO campaigns (id, name, trunk_id, status, caller_id_number, ivr_file, "
                "press_key) OVERRIDING SYSTEM VALUE VALUES "
                "(1, 'one', 1, 'running', '+12125550100', 'welcome', '1'), "
                "(2, 'two', 1, 'running', '+12125550100', 'welcome', '9')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO contacts (id, campaign_id, phone_e164, phone_raw) "
                "OVERRIDING SYSTEM VALUE SELECT n, 1 + n % 2, '+1212555' || lpad(n::text, 4, '0'),"
                " n::text FROM generate_series(1, :n) n"
            ),
            {"n": CONTACTS},
        )
    yield engine


def _stats_match(conn: Connection) -> None:
    expected = sorted(map(tuple, conn.execute(text(EXPECTED_STATS))), key=repr)
    kept = sorted(map(tuple, conn.execute(text(KEPT_STATS))), key=repr)
    assert kept == expected


def _summaries_match(conn: Connection, sinces: list[Any]) -> None:
    for since in sinces:
        params = {"since": since}
        got = conn.execute(
            text("SELECT * FROM campaign_summary_since(:since) ORDER BY campaign_id"), params
        ).all()
        want = conn.execute(
            text("SELECT * FROM reference_summary_since(:since) ORDER BY campaign_id"), params
        ).all()
        assert [r._asdict() for r in got] == [r._asdict() for r in want], since


def _at(minute: float | None) -> dt.datetime | None:
    return None if minute is None else T0 + dt.timedelta(minutes=minute)


minutes = st.floats(min_value=0, max_value=95, allow_nan=False).map(lambda m: round(m, 2))
insert = st.tuples(
    st.just("insert"),
    st.integers(1, CONTACTS),
    st.sampled_from(("queued", "originating", "up", "ended", "ended", "not_sent")),
    minutes,
    st.sampled_from(OUTCOMES),
    st.sampled_from(AMD),
    st.sampled_from(DTMF),
    st.booleans(),  # answered
    st.sampled_from(ENDED_BY),
    st.sampled_from(TRANSFER_SOURCES),
)
close = st.tuples(
    st.just("close"),
    st.integers(0, 50),
    st.sampled_from(OUTCOMES),
    st.booleans(),
    st.sampled_from(ENDED_BY),
)
late_fact = st.tuples(
    st.just("late_fact"), st.integers(0, 50), st.sampled_from(AMD), st.sampled_from(DTMF)
)
move = st.tuples(st.just("move"), st.integers(0, 50), minutes)
resend = st.tuples(st.just("resend"), st.integers(0, 50), minutes)
delete = st.tuples(st.just("delete"), st.integers(0, 50))
bulk = st.tuples(st.just("bulk"), st.sampled_from(DTMF))
operations = st.lists(
    st.one_of(insert, insert, insert, close, late_fact, move, resend, delete, bulk),
    min_size=5,
    max_size=60,
)


def _pick(conn: Connection, index: int, where: str = "true") -> int | None:
    ids = conn.execute(text(f"SELECT id FROM call_attempts WHERE {where} ORDER BY id")).scalars()
    found = list(ids)
    return found[index % len(found)] if found else None


def _apply(conn: Connection, op: tuple[Any, ...], serial: list[int]) -> None:
    kind = op[0]
    if kind == "insert":
        _, contact, status, minute, outcome, amd, dtmf, answered, ended_by, source = op
        serial[0] += 1
        queued = _at(minute)
        assert queued is not None
        sent = None if status in ("queued", "not_sent") else queued + dt.timedelta(seconds=1)
        answer = sent + dt.timedelta(seconds=4) if sent and answered else None
        finished = status in ("ended", "not_sent")
        ended = queued + dt.timedelta(seconds=40) if finished else None
        conn.execute(
            text(
                "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id, "
                "attempt_number, status, queued_at, sent_at, answered_at, ended_at, amd_status, "
                "dtmf, outcome, ended_by, transfer_source) SELECT :cid, k.campaign_id, k.id, 1, "
                ":n, :status, :queued, :sent, :answer, :ended, :amd, :dtmf, :outcome, :ended_by, "
                ":source FROM contacts k WHERE k.id = :contact"
            ),
            {
                "cid": f"1_{serial[0]}",
                "n": serial[0],
                "status": status,
                "queued": queued,
                "sent": sent,
                "answer": answer,
                "ended": ended,
                "amd": amd if status != "queued" else None,
                "dtmf": dtmf if status != "queued" else None,
                "outcome": outcome if finished else None,
                "ended_by": ended_by if finished else None,
                "source": source if answered else None,
                "contact": contact,
            },
        )
    elif kind == "close":
        _, index, outcome, answered, ended_by = op
        attempt = _pick(conn, index, "status IN ('queued', 'originating', 'up')")
        if attempt is not None:
            conn.execute(
                text(
                    "UPDATE call_attempts SET status = 'ended', outcome = :outcome, "
                    "ended_by = :ended_by, "
                    "sent_at = coalesce(sent_at, queued_at), "
                    "answered_at = CASE WHEN :answered THEN coalesce(answered_at, queued_at + "
                    "interval '3 seconds') END, ended_at = queued_at + interval '33 seconds' "
                    "WHERE id = :id"
                ),
                {"id": attempt, "outcome": outcome, "answered": answered, "ended_by": ended_by},
            )
    elif kind == "late_fact":
        _, index, amd, dtmf = op
        attempt = _pick(conn, index)
        if attempt is not None:
            conn.execute(
                text("UPDATE call_attempts SET amd_status = :amd, dtmf = :dtmf WHERE id = :id"),
                {"id": attempt, "amd": amd, "dtmf": dtmf},
            )
    elif kind == "move":
        _, index, minute = op
        attempt = _pick(conn, index)
        if attempt is not None:
            conn.execute(
                text("UPDATE call_attempts SET queued_at = :at WHERE id = :id"),
                {"id": attempt, "at": _at(minute)},
            )
    elif kind == "resend":
        _, index, minute = op
        attempt = _pick(conn, index, "sent_at IS NOT NULL")
        if attempt is not None:
            conn.execute(
                text("UPDATE call_attempts SET sent_at = :at WHERE id = :id"),
                {"id": attempt, "at": _at(minute)},
            )
    elif kind == "delete":
        attempt = _pick(conn, op[1])
        if attempt is not None:
            conn.execute(text("DELETE FROM call_attempts WHERE id = :id"), {"id": attempt})
    elif kind == "bulk":
        conn.execute(
            text("UPDATE call_attempts SET dtmf = :dtmf WHERE status <> 'queued' AND id % 2 = 0"),
            {"dtmf": op[1]},
        )


SINCES = [
    dt.datetime.min.replace(tzinfo=dt.UTC),
    T0,
    T0 + dt.timedelta(minutes=10),
    T0 + dt.timedelta(minutes=14, seconds=30),
    T0 + dt.timedelta(minutes=59, seconds=59),
    T0 + dt.timedelta(days=1),
]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_kept_counts_and_summary_match_a_full_recount(db: Engine, ops: list[Any]) -> None:
    with db.begin() as conn:
        conn.execute(text("DELETE FROM call_attempts"))
        assert conn.execute(text("SELECT count(*) FROM campaign_attempt_stats")).scalar() == 0
        serial = [conn.execute(text("SELECT coalesce(max(attempt_number), 0) FROM call_attempts"))
                  .scalar_one() + 10_000]  # fmt: skip
        for op in ops:
            _apply(conn, op, serial)
        _stats_match(conn)
        _summaries_match(conn, ["-infinity", *SINCES])


def test_open_attempts_never_reach_the_kept_counts(db: Engine) -> None:
    """The dialer's own path (insert queued, then originating, then up) writes no stats."""
    with db.begin() as conn:
        serial = [0]
        for n in range(1, 6):
            _apply(
                conn,
                ("insert", n, "queued", n * 3.0, "busy", None, None, False, None, None),
                serial,
            )
        conn.execute(text("UPDATE call_attempts SET status = 'originating', sent_at = queued_at"))
        conn.execute(text("UPDATE call_attempts SET status = 'up', answered_at = sent_at"))
        assert conn.execute(text("SELECT count(*) FROM campaign_attempt_stats")).scalar() == 0
        conn.execute(
            text(
                "UPDATE call_attempts SET status = 'ended', outcome = 'human_no_press', "
                "ended_at = answered_at + interval '20 seconds' WHERE id % 2 = 1"
            )
        )
        _stats_match(conn)
        _summaries_match(conn, ["-infinity", T0 + dt.timedelta(minutes=7)])


def test_changed_send_time_moves_first_and_last_send(db: Engine) -> None:
    with db.begin() as conn:
        serial = [0]
        for n in (1, 3, 5):  # one group: same campaign, bucket, outcome, AMD and DTMF
            _apply(
                conn,
                ("insert", n, "ended", float(n), "busy", None, None, False, "callee", None),
                serial,
            )
        first, last = conn.execute(text("SELECT min(id), max(id) FROM call_attempts")).one()
        conn.execute(
            text("UPDATE call_attempts SET sent_at = sent_at + interval '1 minute' WHERE id = :i"),
            {"i": first},
        )
        conn.execute(
            text("UPDATE call_attempts SET sent_at = sent_at - interval '1 minute' WHERE id = :i"),
            {"i": last},
        )
        _stats_match(conn)
        conn.execute(text("DELETE FROM call_attempts WHERE id = :i"), {"i": last})
        _stats_match(conn)
        _summaries_match(conn, ["-infinity"])


def test_batch_close_counts_its_own_closes_and_later_writes_are_tracked(db: Engine) -> None:
    """The listener's close counts the calls it ends in the same statement (the row trigger
    skips it); a late fact written afterwards in the same transaction is tracked again."""
    from dialer.outcomes.facts import CloseReason, CloseRequest, close_attempts

    now = dt.datetime.now(dt.UTC)
    with db.begin() as conn:
        serial = [0]
        for n in range(1, CONTACTS + 1):
            status = ("up", "originating", "ended")[n % 3]
            _apply(
                conn,
                ("insert", n, status, n * 4.0, "busy", "HUMAN", None, True, "callee", "ivr"),
                serial,
            )
        open_ids = list(
            conn.execute(text("SELECT id FROM call_attempts WHERE status <> 'ended'")).scalars()
        )
        pending = {i: {"hangup_cause": 16, "dtmf": "1" if i % 2 else None} for i in open_ids}
        closed, _ = close_attempts(
            conn, [CloseRequest(i, CloseReason.HANGUP, now) for i in open_ids], now, pending
        )
        assert len(closed) == len(open_ids) > 0
        _stats_match(conn)
        conn.execute(text("UPDATE call_attempts SET amd_status = 'MACHINE' WHERE id % 4 = 0"))
        _stats_match(conn)
        _summaries_match(conn, ["-infinity", T0 + dt.timedelta(minutes=21)])


def test_truncate_rebuild_and_campaign_delete(db: Engine) -> None:
    with db.begin() as conn:
        serial = [0]
        for n in range(1, CONTACTS + 1):
            _apply(
                conn,
                ("insert", n, "ended", n * 7.0, "busy", None, None, False, "callee", None),
                serial,
            )
        kept = conn.execute(text("SELECT count(*) FROM campaign_attempt_stats")).scalar_one()
        assert kept > 0
        # A bulk load with triggers off leaves the counts behind; the rebuild catches up.
        conn.execute(text("ALTER TABLE call_attempts DISABLE TRIGGER USER"))
        conn.execute(text("UPDATE call_attempts SET outcome = 'no_answer' WHERE id % 3 = 0"))
        conn.execute(text("ALTER TABLE call_attempts ENABLE TRIGGER USER"))
        with pytest.raises(AssertionError):
            _stats_match(conn)
        rebuilt = conn.execute(text("SELECT campaign_attempt_stats_rebuild()")).scalar_one()
        assert rebuilt == conn.execute(text("SELECT count(*) FROM campaign_attempt_stats")).scalar()
        _stats_match(conn)
        # Deleting a campaign takes its attempts and counts with it.
        conn.execute(text("DELETE FROM campaigns WHERE id = 2"))
        _stats_match(conn)
        _summaries_match(conn, ["-infinity"])
        conn.execute(text("TRUNCATE call_attempts CASCADE"))
        assert conn.execute(text("SELECT count(*) FROM campaign_attempt_stats")).scalar() == 0
