"""Migrations run forwards and backwards on a real database and match the models."""

from __future__ import annotations

from sqlalchemy import inspect

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
