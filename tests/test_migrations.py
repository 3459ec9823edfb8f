"""Migrations run forwards and backwards on a real database and match the models."""

from __future__ import annotations

from sqlalchemy import inspect, text

from dialer import migrate
from dialer.db import make_engine
from dialer.models import Base


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
