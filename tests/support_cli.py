"""The `dialer` fixture: run the command line against this test's database."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner, Result

from dialer.cli import cli
from dialer.settings import get_settings


@pytest.fixture
def dialer(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Result]]:
    """Run `dialer ...` in-process; returns the click Result, checked to exit 0 (or 1 with
    `ok=False`: a refused command)."""
    monkeypatch.setenv("DIALER_DATABASE_URL", database_url)
    monkeypatch.setenv("DIALER_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str, ok: bool = True) -> Result:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == (0 if ok else 1), result.output
        return result

    yield run
    get_settings.cache_clear()
