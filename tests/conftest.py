"""Shared fixtures: throwaway Postgres databases cloned from a migrated template.

Every test run creates its own databases (`dialer_t_<run>_*`) on the local server and drops
them at the end; nothing that the run did not create is touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from dialer import migrate
from dialer.db import make_engine, make_sessionmaker
from dialer.settings import AmiServer, Settings

# Fixtures of other areas live in their own modules.
pytest_plugins: list[str] = [
    "tests.support_celery",
    "tests.support_pbx",
    "tests.support_listener",
    "tests.support_cli",
]

SERVER_URL = os.environ.get(
    "DIALER_TEST_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
RUN_ID = uuid.uuid4().hex[:8]


def _admin_conninfo() -> str:
    return make_url(SERVER_URL).set(drivername="postgresql").render_as_string(hide_password=False)


def _database_url(name: str) -> str:
    return make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)


def _admin(statement: sql.Composable) -> None:
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(statement)


def create_database(name: str, template: str | None = None) -> str:
    if template:
        stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    else:
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    _admin(stmt)
    return _database_url(name)


def drop_database(name: str) -> None:
    _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def new_database_name(label: str) -> str:
    return f"dialer_t_{RUN_ID}_{label}_{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    """Name of a database migrated to head, used as the template for per-test copies."""
    name = f"dialer_t_{RUN_ID}_template"
    url = create_database(name)
    try:
        migrate.upgrade(url)
        # A template must have no open connections when it is copied.
        yield name
    finally:
        drop_database(name)


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """A brand-new empty database (for migration tests)."""
    name = new_database_name("empty")
    url = create_database(name)
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture
def database_url(template_database: str) -> Iterator[str]:
    """A fresh migrated database for one test."""
    name = new_database_name("db")
    url = create_database(name, template=template_database)
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def settings(database_url: str, broker_url: str) -> Settings:
    """Settings pointing at this test's database and broker (`tests.support_celery`: Redis, or
    each broker in turn for tests that run workers); AMI at the simulator's default address."""
    return Settings(
        database_url=database_url,
        broker_url=broker_url,
        log_level="DEBUG",
        ami_servers={"default": AmiServer("default", "127.0.0.1", 5038, "dialer", "dialerpass")},
    )
