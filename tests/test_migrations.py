"""Migrations run forwards and backwards on a real database and match the models."""

from __future__ import annotations

import json

from sqlalchemy import inspect, text

from dialer import migrate
from dialer.db import make_engine
from dialer.models import Base
from tests.conftest import create_database, drop_database, new_database_name

# Tables revisions 0011, 0012 and 0014 add.
RULE_TABLES = {"calling_rules", "calling_holidays", "frequency_rules", "rules_version",
               "caller_id_pools", "caller_ids", "caller_id_usage", "queue_members",
               "queue_agent_minutes"}  # fmt: skip


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_and_no_drift(empty_database_url: str) -> None:
    url = empty_database_url
    migrate.upgrade(url)
    assert _tables(url) == set(Base.metadata.tables)
    migrate.check(url)

    migrate.downgrade(url, "base")
    assert _tables(url) == set()

    migrate.upgrade(url)
    assert _tables(url) == set(Base.metadata.tables)
    migrate.check(url)
    assert "(head)" in migrate.current(url)


def test_check_reports_drift(empty_database_url: str) -> None:
    url = empty_database_url
    migrate.upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE trunks DROP COLUMN enabled")
    engine.dispose()
    try:
        migrate.check(url)
    except migrate.SchemaDriftError as exc:
        assert "enabled" in str(exc)
    else:
        raise AssertionError("a dropped column went unnoticed")


def test_upgrade_over_existing_attempts_fills_counts_and_read_status(
    empty_database_url: str,
) -> None:
    """0004 counts the attempts already there and 0005 takes each attempt's read status from
    its first DialerDTMF event, so reports and closes agree after an upgrade."""
    url = empty_database_url
    migrate.upgrade(url, "0003")
    engine = make_engine(url)
    with engine.begin() as conn:
        seed = (
            "INSERT INTO trunks (id, name, cps, max_channels) OVERRIDING SYSTEM VALUE "
            "VALUES (1, 'MC', 10, 20);"
            "INSERT INTO campaigns (id, name, trunk_id, status, caller_id_number, ivr_file) "
            "OVERRIDING SYSTEM VALUE VALUES (1, 'one', 1, 'running', '+12125550100', 'w');"
            "INSERT INTO contacts (id, campaign_id, phone_e164, phone_raw) "
            "OVERRIDING SYSTEM VALUE SELECT n, 1, '+1212555' || lpad(n::text, 4, '0'), n::text "
            "FROM generate_series(1, 30) n;"
            "INSERT INTO call_attempts (id, custom_call_id, campaign_id, contact_id, trunk_id, "
            "attempt_number, status, queued_at, sent_at, answered_at, ended_at, outcome, dtmf) "
            "OVERRIDING SYSTEM VALUE SELECT n, '1_' || n, 1, n, 1, 1, "
            "CASE WHEN n % 5 = 0 THEN 'up' ELSE 'ended' END, "
            "timestamptz '2026-03-02 10:00+00' + n * interval '1 minute', "
            "timestamptz '2026-03-02 10:00+00' + n * interval '1 minute', NULL, "
            "CASE WHEN n % 5 = 0 THEN NULL "
            "ELSE timestamptz '2026-03-02 10:00+00' + n * interval '1 minute' END, "
            "CASE WHEN n % 5 = 0 THEN NULL WHEN n % 2 = 0 THEN 'busy' ELSE 'no_answer' END, "
            "CASE WHEN n % 3 = 0 THEN '1' END FROM generate_series(1, 30) n;"
            "INSERT INTO call_events (call_attempt_id, event, fingerprint, data) "
            "SELECT n, 'DialerDTMF', 'f' || n || '-' || k, "
            "jsonb_build_object('READSTATUS', CASE k WHEN 1 THEN 'TIMEOUT' ELSE 'OK' END) "
            "FROM generate_series(1, 30) n, generate_series(1, 2) k WHERE n % 4 = 0"
        )
        for statement in seed.split(";"):
            conn.execute(text(statement))
    migrate.upgrade(url)
    with engine.begin() as conn:
        kept = conn.exec_driver_sql(
            "SELECT sum(attempts), sum(sent) FROM campaign_attempt_stats"
        ).one()
        read = dict(
            conn.exec_driver_sql(
                "SELECT id, read_status FROM call_attempts WHERE read_status IS NOT NULL"
            ).all()
        )
        summary = conn.exec_driver_sql(
            "SELECT attempts, attempts_open, attempts_finished, busy, no_answer "
            "FROM campaign_summary"
        ).one()
    engine.dispose()
    assert tuple(kept) == (24, 24)  # the 24 finished attempts, all sent
    assert read == {n: "TIMEOUT" for n in range(4, 31, 4)}  # the first event's status
    assert tuple(summary) == (30, 6, 24, 12, 12)


def test_upgrade_carries_over_who_ended_the_calls(empty_database_url: str) -> None:
    """0007 reads each attempt's timeline: an operator's hang-up or transfer, the IVR's
    transfer, a cause-0 cut; the outcomes that blamed the callee are corrected, contacts
    re-scheduled for an operator's hang-up completed, and the counts rebuilt."""
    url = empty_database_url
    migrate.upgrade(url, "0006")
    engine = make_engine(url)
    # attempt: (outcome, answered, hangup cause, events of its timeline)
    attempts = {
        1: ("abandoned", True, 16, [("ControlHangup", {"By": "operator", "Cause": "16"})]),
        2: ("abandoned", True, 16, [("ControlTransfer", {"By": "operator", "Result": "ok",
                                                         "TargetKind": "queue",
                                                         "Exten": "support"})]),
        3: ("abandoned", True, 0, []),
        4: ("transferred", True, 16, [("DialerTransfer", {"TRANSFER_NUMBER": "+15551234567"})]),
        5: ("transferred", True, 16, [("ControlTransfer", {"By": "operator", "Result": "ok",
                                                           "TargetKind": "external",
                                                           "Exten": "+15551234567"})]),
        6: ("busy", False, 17, []),
        7: ("human_no_press", True, 16, []),
        8: ("unknown", False, None, []),
    }  # fmt: skip
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO trunks (id, name, cps, max_channels) OVERRIDING SYSTEM VALUE "
            "VALUES (1, 'MC', 10, 20);"
            "INSERT INTO campaigns (id, name, trunk_id, status, caller_id_number, ivr_file) "
            "OVERRIDING SYSTEM VALUE VALUES (1, 'one', 1, 'running', '+12125550100', 'w')"
        )
        for n, (outcome, answered, cause, events) in attempts.items():
            conn.execute(
                text(
                    "INSERT INTO contacts (id, campaign_id, phone_e164, phone_raw, status, "
                    "attempts, last_outcome, next_attempt_at) OVERRIDING SYSTEM VALUE VALUES "
                    "(:n, 1, :phone, :phone, :status, 1, :outcome, now() + interval '1 hour')"
                ),
                {"n": n, "phone": f"+121255500{n:02d}", "outcome": outcome,
                 "status": "pending" if outcome in ("abandoned", "busy", "unknown")
                 else "completed"},
            )  # fmt: skip
            conn.execute(
                text(
                    "INSERT INTO call_attempts (id, custom_call_id, campaign_id, contact_id, "
                    "trunk_id, attempt_number, status, queued_at, sent_at, answered_at, "
                    "transfer_requested_at, transfer_answered_at, ended_at, hangup_cause, "
                    "outcome, dtmf) OVERRIDING SYSTEM VALUE VALUES (:n, '1_' || :n, 1, :n, 1, 1, "
                    "'ended', now() - interval '1 minute', now() - interval '1 minute', "
                    "CASE WHEN :answered THEN now() - interval '50 seconds' END, "
                    "CASE WHEN :transfer THEN now() - interval '40 seconds' END, "
                    "CASE WHEN :outcome = 'transferred' THEN now() - interval '30 seconds' END, "
                    "now(), :cause, :outcome, CASE WHEN :n = 4 THEN '1' END)"
                ),
                {"n": n, "answered": answered, "cause": cause, "outcome": outcome,
                 "transfer": n in (2, 4, 5)},
            )  # fmt: skip
            for k, (event, data) in enumerate(events):
                conn.execute(
                    text(
                        "INSERT INTO call_events (call_attempt_id, event, fingerprint, data) "
                        "VALUES (:n, :event, :fp, CAST(:data AS jsonb))"
                    ),
                    {"n": n, "event": event, "fp": f"f{n}-{k}",
                     "data": json.dumps({"Event": event, **data})},
                )  # fmt: skip
    migrate.upgrade(url)
    with engine.begin() as conn:
        rows = {
            r.id: r
            for r in conn.exec_driver_sql(
                "SELECT a.id, a.outcome, a.ended_by, a.transfer_source, a.transfer_queue, "
                "a.operator_hangup_at IS NOT NULL AS by_operator, "
                "a.transfer_ended_at = a.ended_at AS transfer_ended, k.status "
                "FROM call_attempts a JOIN contacts k ON k.id = a.contact_id"
            )
        }
        summary = conn.exec_driver_sql(
            "SELECT presses, operator_transfers, ended_by, operator_hangup, queue_abandoned, "
            "interrupted FROM campaign_summary"
        ).one()
        kept = conn.exec_driver_sql(
            "SELECT count(*) FROM campaign_attempt_stats WHERE ended_by = 'operator'"
        ).scalar_one()
    engine.dispose()
    got = {
        n: (r.outcome, r.ended_by, r.transfer_source, r.transfer_queue, r.by_operator, r.status)
        for n, r in rows.items()
    }
    assert got == {
        1: ("operator_hangup", "operator", None, None, True, "completed"),
        2: ("queue_abandoned", "callee", "operator", "support", False, "pending"),
        3: ("interrupted", "pbx", None, None, False, "pending"),
        4: ("transferred", "callee", "ivr", None, False, "completed"),
        5: ("transferred", "callee", "operator", None, False, "completed"),
        6: ("busy", "callee", None, None, False, "pending"),
        7: ("human_no_press", "ivr", None, None, False, "completed"),
        8: ("unknown", "dialer", None, None, False, "pending"),
    }
    assert rows[5].transfer_ended  # the operator's answered transfer ended with the call
    assert tuple(summary) == (
        1,
        1,
        {"callee": 4, "operator": 1, "pbx": 1, "ivr": 1, "dialer": 1},
        1,
        1,
        1,
    )
    assert kept == 1


def test_upgrade_gives_every_trunk_its_route_and_downgrade_puts_it_back(
    empty_database_url: str,
) -> None:
    """0008: each trunk's PBX gets its row, with limits that do not hold back what its trunks
    were dialling; the trunk's pbx and template become its route; attempts are marked with
    their trunk's PBX. A PBX name that is not one stops the upgrade until it is fixed.
    Downgrade: each trunk gets back one route (the one on default if it has it)."""
    url = empty_database_url
    migrate.upgrade(url, "0007")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO trunks (id, name, pbx, channel_template, cps, max_channels)"
            " OVERRIDING SYSTEM VALUE VALUES"
            " (1, 'MC', 'default', 'PJSIP/{number}@{trunk}', 10, 20),"
            " (2, 'BIG', 'east', 'PJSIP/{number}@carrier-east', 1500, 30000),"
            " (3, 'ALSO', 'east', 'Local/{number}@out', 700, 5),"
            " (4, 'ODD', 'East.1', 'PJSIP/{number}@odd', 1, 1);"
            "INSERT INTO campaigns (id, name, trunk_id, status, caller_id_number, ivr_file)"
            " OVERRIDING SYSTEM VALUE VALUES (1, 'one', 1, 'running', '+12125550100', 'w'),"
            " (2, 'two', 2, 'running', '+12125550100', 'w');"
            "INSERT INTO contacts (id, campaign_id, phone_e164, phone_raw)"
            " OVERRIDING SYSTEM VALUE SELECT n, 1 + n %% 2, '+1212555' || lpad(n::text, 4, '0'),"
            " 'x' FROM generate_series(1, 6) n;"
            "INSERT INTO call_attempts (id, custom_call_id, campaign_id, contact_id, trunk_id,"
            " attempt_number, status) OVERRIDING SYSTEM VALUE"
            " SELECT n, '1_' || n, 1 + n %% 2, n, 1 + n %% 2, 1, 'up' FROM generate_series(1, 6) n"
        )
    try:
        migrate.upgrade(url)
    except Exception as exc:
        assert "ODD (pbx 'East.1')" in str(exc)
    else:
        raise AssertionError("a PBX name that is not one went through")
    assert "0007" in migrate.current(url)  # nothing of 0008 stayed
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE trunks SET pbx = 'odd' WHERE name = 'ODD'")
    migrate.upgrade(url)
    with engine.begin() as conn:
        pbxs = conn.exec_driver_sql(
            "SELECT name, max_cps, max_channels, state, rate FROM pbxs ORDER BY name"
        ).all()
        routes = conn.exec_driver_sql(
            "SELECT t.name, r.pbx, r.channel_template FROM trunk_routes r"
            " JOIN trunks t ON t.id = r.trunk_id ORDER BY t.name"
        ).all()
        attempts = dict(conn.exec_driver_sql("SELECT id, pbx FROM call_attempts").all())
        reported = dict(
            conn.exec_driver_sql("SELECT attempt_id, pbx FROM call_attempts_report").all()
        )
        # A second route on MC: the downgrade keeps the one on default.
        conn.exec_driver_sql("INSERT INTO trunk_routes (trunk_id, pbx) VALUES (1, 'east')")
    assert [tuple(p) for p in pbxs] == [
        ("default", 1000.0, 10000, "unknown", None),
        ("east", 2200.0, 30005, "unknown", None),  # its trunks' sums: above the defaults
        ("odd", 1000.0, 10000, "unknown", None),
    ]
    assert [tuple(r) for r in routes] == [
        ("ALSO", "east", "Local/{number}@out"),
        ("BIG", "east", "PJSIP/{number}@carrier-east"),
        ("MC", "default", "PJSIP/{number}@{trunk}"),
        ("ODD", "odd", "PJSIP/{number}@odd"),
    ]
    assert attempts == {1: "east", 2: "default", 3: "east", 4: "default", 5: "east", 6: "default"}
    assert reported == attempts
    migrate.check(url)

    migrate.downgrade(url, "0007")
    with engine.begin() as conn:
        trunks = conn.exec_driver_sql(
            "SELECT name, pbx, channel_template FROM trunks ORDER BY name"
        ).all()
        columns = conn.exec_driver_sql(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'call_attempts' AND column_name IN ('pbx', 'originate_response_at')"
        ).all()
    engine.dispose()
    assert [tuple(t) for t in trunks] == [
        ("ALSO", "east", "Local/{number}@out"),
        ("BIG", "east", "PJSIP/{number}@carrier-east"),
        ("MC", "default", "PJSIP/{number}@{trunk}"),
        ("ODD", "odd", "PJSIP/{number}@odd"),
    ]
    assert columns == []
    assert _tables(url) == set(Base.metadata.tables) - {"pbxs", "trunk_routes"} - RULE_TABLES
    migrate.upgrade(url)
    migrate.check(url)


def _schema_names(url: str) -> set[tuple[str, str, str]]:
    """(table, kind, name) of every constraint and index in the public schema."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text(
                "SELECT conrelid::regclass::text, 'constraint', conname FROM pg_constraint"
                " WHERE connamespace = 'public'::regnamespace AND conrelid <> 0"
                " UNION ALL SELECT tablename, 'index', indexname FROM pg_indexes"
                " WHERE schemaname = 'public'"))  # fmt: skip
            return {tuple(r) for r in found if r[0] != "alembic_version"}
    finally:
        engine.dispose()


def test_migrations_name_constraints_and_indexes_as_the_models_do(empty_database_url: str) -> None:
    """Autogenerate's drift check does not compare CHECK constraint names: a migration that
    gives one the model's full name without `op.f` gets it prefixed twice. Compare every name
    with a database the models create themselves."""
    migrate.upgrade(empty_database_url)
    name = new_database_name("models")
    url = create_database(name)
    try:
        engine = make_engine(url)
        with engine.begin() as conn:
            Base.metadata.create_all(conn)
        engine.dispose()
        from_models = _schema_names(url)
    finally:
        drop_database(name)
    from_migrations = _schema_names(empty_database_url)
    assert from_migrations - from_models == set()
    assert from_models - from_migrations == set()
