"""Report query times on a generated table of call attempts (10 million by default).

Creates its own throwaway database, migrates it to head, fills it with `generate_series`
(trunks, campaigns, contacts, attempts with realistic Originate payloads, and events), runs
VACUUM ANALYZE, times each report query through `dialer.reports.queries`, prints the figures and drops
the database. Campaign sizes are skewed: the first campaign holds 40% of everything, the other
nine share the rest, and their attempts are interleaved in time as concurrent campaigns are.

Example:
    .venv/bin/python bench/report_queries.py                    # 10M attempts, ~15-25 min
    .venv/bin/python bench/report_queries.py --attempts 500000  # quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from stopping import exit_on_sigterm  # noqa: E402

from dialer import migrate
from dialer.db import make_engine
from dialer.reports import queries as reports

SERVER_URL = os.environ.get(
    "DIALER_BENCH_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
CAMPAIGNS = 10
TRUNKS = 4
CONTACTS_PER_ATTEMPT = 0.4  # 2.5 attempts per contact on average
EVENT_EVERY = 5  # one attempt in five keeps its raw events (five each)
CHUNK = 1_000_000
SPAN_DAYS = 10
TARGET_SECONDS = 1.0

# Outcome mix in thousandths, with the facts each outcome implies.
# (outcome, share, answered, amd_status, amd_cause, dtmf, transferred, voicemail, cause, dial)
# fmt: off
PROFILES = [
    ("no_answer", 300, False, None, None, None, False, None, 19, "NOANSWER"),
    ("busy", 80, False, None, None, None, False, None, 17, "BUSY"),
    ("congestion", 20, False, None, None, None, False, None, 34, "CONGESTION"),
    ("rejected", 10, False, None, None, None, False, None, 21, "CHANUNAVAIL"),
    ("failed", 10, False, None, None, None, False, None, 0, "CHANUNAVAIL"),
    ("voicemail_left", 150, True, "MACHINE", "LONGGREETING-1500-1500", None, False, True, 16, "ANSWER"),
    ("machine_no_message", 50, True, "MACHINE", "INITIALSILENCE-2500-2500", None, False, False, 16, "ANSWER"),
    ("human_no_press", 200, True, "HUMAN", "HUMAN-808-800", None, False, None, 16, "ANSWER"),
    ("human_other_key", 30, True, "HUMAN", "HUMAN-808-800", "2", False, None, 16, "ANSWER"),
    ("transferred", 100, True, "HUMAN", "HUMAN-808-800", "1", True, None, 16, "ANSWER"),
    ("opted_out", 20, True, "NOTSURE", "TOOLONG-4900", "9", False, None, 16, "ANSWER"),
    ("abandoned", 25, True, None, None, None, False, None, 16, "ANSWER"),
    ("unknown", 5, False, None, None, None, False, None, 0, None),
]
# fmt: on
assert sum(p[1] for p in PROFILES) == 1000


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _profiles_values() -> str:
    rows = []
    low = 0
    for outcome, share, answered, amd, cause, dtmf, transferred, vm, hangup, dial in PROFILES:
        rows.append(
            "("
            + ", ".join(
                [
                    sql_literal(outcome),
                    str(low),
                    str(low + share - 1),
                    "true" if answered else "false",
                    sql_literal(amd),
                    sql_literal(cause),
                    sql_literal(dtmf),
                    "true" if transferred else "false",
                    "NULL::boolean" if vm is None else ("true" if vm else "false"),
                    str(hangup),
                    sql_literal(dial),
                ]
            )
            + ")"
        )
        low += share
    return ",\n".join(rows)


def sql_literal(value: str | None) -> str:
    return "NULL::text" if value is None else "'" + value.replace("'", "''") + "'"


def _contact_campaign(c: str) -> str:
    # 40% of contacts in campaign 1, the rest spread over campaigns 2..10.
    return f"(CASE WHEN {c} % 5 < 2 THEN 1 ELSE 2 + ({c} / 5) % {CAMPAIGNS - 1} END)"


def _hash(expr: str) -> str:
    # Deterministic pseudo-random in 0 .. 2^32-1.
    return f"(hashint8(({expr})::bigint)::bigint + 2147483648)"


SETUP_SQL = f"""
INSERT INTO trunks (id, name, cps, max_channels) OVERRIDING SYSTEM VALUE
SELECT t, 'bench_t' || t, 50, 200 FROM generate_series(1, {TRUNKS}) t;
INSERT INTO campaigns (id, name, trunk_id, status, caller_id_number, caller_id_name, ivr_file,
                       ivr_vm_file, transfer_number, opt_out_key)
OVERRIDING SYSTEM VALUE
SELECT c, 'bench_c' || c, (c - 1) % {TRUNKS} + 1,
       CASE WHEN c <= 3 THEN 'running' ELSE 'completed' END,
       '+12125550100', 'Bench', 'welcome', 'voicemail', '+12125550199', '9'
FROM generate_series(1, {CAMPAIGNS}) c;
CREATE TABLE bench_profiles (outcome text, lo int, hi int, answered bool, amd_status text,
    amd_cause text, dtmf text, transferred bool, voicemail bool, hangup int, dial_status text);
INSERT INTO bench_profiles VALUES {_profiles_values()};
CREATE TABLE bench_buckets AS
SELECT b AS bucket, p.* FROM generate_series(0, 999) b JOIN bench_profiles p ON b BETWEEN p.lo AND p.hi;
"""


def contacts_sql(first: int, last: int, total_attempts: int, contacts: int) -> str:
    return f"""
INSERT INTO contacts (id, campaign_id, phone_e164, phone_raw, first_name, last_name, fields,
                      timezones, status, attempts, next_attempt_at, last_outcome, created_at)
OVERRIDING SYSTEM VALUE
SELECT c, {_contact_campaign("c")}, '+1212' || lpad(c::text, 8, '0'), '212-' || c,
       'First' || c, 'Last' || c,
       jsonb_build_object('account', 'A' || c, 'segment', chr(65 + (c % 5)::int)),
       '{{America/New_York}}',
       CASE WHEN {_hash("c")} % 100 < 15 THEN 'pending'
            WHEN {_hash("c")} % 100 < 60 THEN 'completed'
            WHEN {_hash("c")} % 100 < 95 THEN 'exhausted'
            WHEN {_hash("c")} % 100 < 98 THEN 'dnc' ELSE 'cancelled' END,
       ({total_attempts} - c) / {contacts} + 1,
       timestamptz '2026-01-01 00:00+00' + interval '{SPAN_DAYS} days',
       'no_answer',
       timestamptz '2025-12-31 00:00+00'
FROM generate_series({first}, {last}) c
"""


def attempts_sql(first: int, last: int, total: int, contacts: int) -> str:
    step_ms = SPAN_DAYS * 86_400_000 / total
    ts = f"(timestamptz '2026-01-01 00:00+00' + (i * {step_ms}) * interval '1 millisecond')"
    return f"""
INSERT INTO call_attempts (id, custom_call_id, campaign_id, contact_id, trunk_id, attempt_number,
    status, payload, queued_at, sent_at, answered_at, ended_at, uniqueid, channel,
    originate_response, originate_reason, dial_status, amd_status, amd_cause, dtmf,
    transfer_requested_at, transfer_answered_at, transfer_ended_at, transfer_status,
    voicemail_left, recording_file, hangup_cause, hangup_cause_txt, outcome)
OVERRIDING SYSTEM VALUE
SELECT i, x.call_id, x.campaign_id, x.contact_id, (x.campaign_id - 1) % {TRUNKS} + 1,
    x.attempt_number,
    CASE WHEN NOT x.open THEN 'ended' WHEN p.answered THEN 'up' ELSE 'originating' END,
    jsonb_build_object(
        'action', 'Originate', 'actionid', x.call_id,
        'channel', 'PJSIP/' || x.phone || '@bench_t' || ((x.campaign_id - 1) % {TRUNKS} + 1),
        'context', 'DynamicIVR', 'exten', 's', 'priority', 1,
        'callerid', '"Bench" <+12125550100>', 'timeout', 30000, 'async', true,
        'variable', jsonb_build_object(
            'to', x.phone, 'from', '+12125550100', 'transfer_number', '+12125550199',
            'ivr_file', 'welcome', 'ivr_vm_file', 'voicemail', 'wait_strategy', 'random',
            'press_key', '1', 'amd_enabled', 'true', 'transfer_prefix', '',
            'custom_call_id', x.call_id, 'trunk', 'bench_t' || ((x.campaign_id - 1) % {TRUNKS} + 1),
            'TRANSFER_NUMBER', '+12125550199', 'FROM_NUMBER', '+12125550100', 'TO_NUMBER', x.phone,
            'TRUNK', 'bench_t' || ((x.campaign_id - 1) % {TRUNKS} + 1), 'IVR_FILE', 'welcome',
            'IVR_VM_FILE', 'voicemail', 'PRESS_KEY', '1', 'AMD_ENABLED', 'true')),
    x.queued_at,
    x.sent_at,
    CASE WHEN p.answered THEN x.sent_at + x.ring END,
    CASE WHEN NOT x.open THEN x.sent_at + x.ring + CASE WHEN p.answered THEN x.talk ELSE interval '0' END END,
    x.call_id,
    'PJSIP/bench-' || lpad(to_hex(i), 8, '0'),
    CASE WHEN p.answered THEN 'Success' ELSE 'Failure' END,
    CASE WHEN p.answered THEN 4 WHEN p.outcome = 'busy' THEN 5 ELSE 3 END,
    p.dial_status, p.amd_status, p.amd_cause, p.dtmf,
    CASE WHEN p.transferred THEN x.sent_at + x.ring + interval '12 seconds' END,
    CASE WHEN p.transferred THEN x.sent_at + x.ring + interval '15 seconds' END,
    CASE WHEN p.transferred AND NOT x.open THEN x.sent_at + x.ring + x.talk END,
    CASE WHEN p.transferred THEN 'ANSWER' END,
    p.voicemail,
    CASE WHEN p.answered AND i % 10 = 0 THEN 'rec/' || x.call_id || '.wav' END,
    CASE WHEN NOT x.open THEN p.hangup END,
    CASE WHEN NOT x.open THEN CASE p.hangup WHEN 16 THEN 'Normal Clearing' WHEN 17 THEN 'User busy'
        WHEN 19 THEN 'No answer' WHEN 21 THEN 'Call rejected' WHEN 34 THEN 'Circuit congestion'
        ELSE 'Unknown' END END,
    CASE WHEN NOT x.open THEN p.outcome END
FROM (
    SELECT i,
        (i - 1) % {contacts} + 1 AS contact_id,
        (i - 1) / {contacts} + 1 AS attempt_number,
        {_contact_campaign(f"((i - 1) % {contacts} + 1)")} AS campaign_id,
        '+1212' || lpad(((i - 1) % {contacts} + 1)::text, 8, '0') AS phone,
        (extract(epoch FROM {ts}) * 1000)::bigint || '_' || i AS call_id,
        {ts} AS queued_at,
        {ts} + interval '40 milliseconds' AS sent_at,
        ({_hash("i * 7")} % 23 + 3) * interval '1 second' AS ring,
        ({_hash("i * 11")} % 115 + 5) * interval '1 second' AS talk,
        {_hash("i")} % 1000 AS bucket,
        i > {total} - 500 AS open
    FROM generate_series({first}, {last}) i
) x
JOIN bench_buckets p ON p.bucket = x.bucket
"""


def events_sql(first: int, last: int) -> str:
    return f"""
INSERT INTO call_events (call_attempt_id, event, fingerprint, received_at, data)
SELECT a.id, e.name, md5(a.id || '/' || e.k), a.queued_at + e.k * interval '2 seconds',
    jsonb_build_object('Event', e.name, 'Linkedid', a.custom_call_id, 'Uniqueid', a.custom_call_id,
        'Channel', a.channel, 'ChannelState', '6', 'Context', 'DynamicIVR', 'Exten', 's',
        'Cause', coalesce(a.hangup_cause, 16)::text, 'UserEvent', e.user_event,
        'AMDSTATUS', coalesce(a.amd_status, ''), 'DTMF', coalesce(a.dtmf, ''))
FROM call_attempts a
CROSS JOIN (VALUES (1, 'Newchannel', ''), (2, 'OriginateResponse', ''),
                   (3, 'UserEvent', 'DialerAMD'), (4, 'UserEvent', 'DialerDTMF'),
                   (5, 'Hangup', '')) e(k, name, user_event)
WHERE a.id BETWEEN {first} AND {last} AND a.id % {EVENT_EVERY} = 0
"""


def _chunks(total: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + CHUNK - 1, total)) for lo in range(1, total + 1, CHUNK)]


def _secondary_indexes(conn: psycopg.Connection, tables: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, definition) of indexes that back no constraint: dropped during the bulk load."""
    rows = conn.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        WHERE i.indrelid = ANY(%s::regclass[])
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        """,
        (list(tables),),
    ).fetchall()
    return [(name, definition) for name, definition in rows]


def generate(conninfo: str, attempts: int) -> None:
    contacts = max(int(attempts * CONTACTS_PER_ATTEMPT), 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # generated rows are consistent
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(SETUP_SQL)
        tables = ("contacts", "call_attempts", "call_events")
        secondary = _secondary_indexes(conn, tables)
        for name, _ in secondary:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        stages: list[tuple[str, int, Callable[[int, int], str]]] = [
            ("contacts", contacts, lambda lo, hi: contacts_sql(lo, hi, attempts, contacts)),
            ("attempts", attempts, lambda lo, hi: attempts_sql(lo, hi, attempts, contacts)),
            ("events", attempts, events_sql),
        ]
        for label, total, build in stages:
            started = time.perf_counter()
            for lo, hi in _chunks(total):
                conn.execute(build(lo, hi))
                _progress(f"{label}: {hi:,}/{total:,} ({time.perf_counter() - started:.0f} s)")
            _progress(f"{label}: done in {time.perf_counter() - started:.1f} s\n")
        started = time.perf_counter()
        for _, definition in secondary:
            conn.execute(definition)
        for table in ("contacts", "call_attempts", "call_events"):
            conn.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence({t}, 'id'), "
                    "coalesce((SELECT max(id) FROM {i}), 1))"
                ).format(t=sql.Literal(table), i=sql.Identifier(table))
            )
        _progress(f"secondary indexes rebuilt in {time.perf_counter() - started:.1f} s\n")
        # The load ran without triggers (replica role): count the finished attempts the way
        # the migration does for existing data.
        started = time.perf_counter()
        groups = conn.execute("SELECT campaign_attempt_stats_rebuild()").fetchone()
        _progress(
            f"campaign_attempt_stats rebuilt ({groups[0] if groups else 0} rows) in "
            f"{time.perf_counter() - started:.1f} s\n"
        )
        conn.execute("DROP TABLE bench_buckets, bench_profiles")
        started = time.perf_counter()
        conn.execute(
            "VACUUM (ANALYZE) contacts, call_attempts, call_events, campaigns, trunks, "
            "campaign_attempt_stats"
        )
        _progress(f"vacuum analyze in {time.perf_counter() - started:.1f} s\n")


def _progress(message: str) -> None:
    sys.stderr.write(f"\r{message}")
    sys.stderr.flush()


def timed(label: str, runs: int, fn: Callable[[], Any]) -> dict[str, Any]:
    times = []
    result = None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    first, median = times[0], statistics.median(times)
    verdict = "ok" if max(median, first) < TARGET_SECONDS else "SLOW"
    size = len(result) if isinstance(result, list) else ""
    print(
        f"{label:<58} first {first * 1000:8.1f} ms   median {median * 1000:8.1f} ms"
        f"   {verdict} {size}"
    )
    return {"label": label, "first": first, "median": median}


def run_queries(database_url: str, attempts: int, runs: int) -> None:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            sizes = dict(
                conn.exec_driver_sql(
                    "SELECT campaign_id, count(*) FROM call_attempts GROUP BY campaign_id"
                ).all()
            )
            big, typical = "bench_c1", "bench_c5"
            print(
                f"\n{attempts:,} attempts; {big}: {sizes[1]:,} attempts; "
                f"{typical}: {sizes[5]:,} attempts"
            )
            mid_time = conn.exec_driver_sql(
                "SELECT queued_at FROM call_attempts WHERE id = %s" % (attempts * 9 // 10)
            ).scalar_one()
            sample = conn.exec_driver_sql(
                "SELECT custom_call_id FROM call_attempts WHERE id = %s"
                % (attempts // 2 // EVENT_EVERY * EVENT_EVERY)
            ).scalar_one()
            middle_phone = conn.exec_driver_sql(
                "SELECT phone_e164 FROM contacts WHERE campaign_id = 5 "
                "ORDER BY phone_e164 OFFSET 1000 LIMIT 1"
            ).scalar_one()
            conn.rollback()

            def q(fn: Callable[[Connection], Any]) -> Callable[[], Any]:
                def run() -> Any:
                    with engine.connect() as c:
                        return fn(c)

                return run

            cases: list[tuple[str, Callable[[], Any]]] = [
                (f"summary {typical}", q(lambda c: reports.campaign_summary(c, typical))),
                (
                    f"summary {big} (40% of all attempts)",
                    q(lambda c: reports.campaign_summary(c, big)),
                ),
                (
                    f"summary {typical} --since (last 10%)",
                    q(lambda c: reports.campaign_summary(c, typical, mid_time)),
                ),
                ("calls list (no filter) limit 50", q(lambda c: reports.list_calls(c))),
                (
                    f"calls list {typical} limit 50",
                    q(lambda c: reports.list_calls(c, campaign=typical)),
                ),
                (
                    f"calls list {typical} outcome=transferred since limit 50",
                    q(
                        lambda c: reports.list_calls(
                            c, campaign=typical, outcome="transferred", since=mid_time
                        )
                    ),
                ),
                (
                    f"calls list {typical} outcome=unknown (0.5%) limit 50",
                    q(lambda c: reports.list_calls(c, campaign=typical, outcome="unknown")),
                ),
                (
                    "calls list outcome=opted_out (all campaigns) limit 50",
                    q(lambda c: reports.list_calls(c, outcome="opted_out")),
                ),
                (f"calls show {sample}", q(lambda c: reports.get_call(c, sample)["events"])),
                (
                    f"contacts report page {typical} (100 rows)",
                    q(lambda c: reports.contacts_page(c, typical, after_phone=middle_phone)),
                ),
                (f"campaign watch frame {typical}", q(lambda c: reports.watch_frame(c, typical))),
            ]
            for label, fn in cases:
                timed(label, runs, fn)

            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "export.csv")
                started = time.perf_counter()
                with engine.connect() as c, open(path, "wb") as out:
                    rows = reports.export_calls(c, typical, out)
                elapsed = time.perf_counter() - started
                mb = os.path.getsize(path) / 1e6
                print(
                    f"{'calls export ' + typical:<58} {rows:,} rows, {mb:.0f} MB in {elapsed:.1f} s"
                    f" = {rows / elapsed:,.0f} rows/s, {mb / elapsed:.1f} MB/s"
                )
    finally:
        engine.dispose()


def table_sizes(conninfo: str) -> None:
    with psycopg.connect(conninfo) as conn:
        for name, total, heap in conn.execute(
            """
            SELECT relname, pg_size_pretty(pg_total_relation_size(oid)),
                   pg_size_pretty(pg_relation_size(oid))
            FROM pg_class WHERE relname IN ('contacts', 'call_attempts', 'call_events')
            ORDER BY relname
            """
        ):
            print(f"  {name:<14} {total:>8} total, {heap:>8} heap")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    name = f"dialer_bench_reports_{uuid.uuid4().hex[:8]}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    admin = _conninfo(SERVER_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate.upgrade(url)
        started = time.perf_counter()
        generate(_conninfo(url), args.attempts)
        print(f"generated in {time.perf_counter() - started:.0f} s; sizes:")
        table_sizes(_conninfo(url))
        run_queries(url, args.attempts, args.runs)
    finally:
        if args.keep:
            print(f"kept database {name}")
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


if __name__ == "__main__":
    exit_on_sigterm()
    main()
