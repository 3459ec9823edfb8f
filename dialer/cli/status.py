"""`dialer status`: is the deployment healthy? One line per part, and an exit code."""

from __future__ import annotations

import logging

import click

from dialer.cli.common import echo_table, emit, json_option
from dialer.db import make_engine
from dialer.dialing.celery_app import make_celery_app
from dialer.reports import health
from dialer.settings import get_settings


@click.command()
@json_option
def status(as_json: bool) -> None:
    """Check the database (schema current), the broker, the workers, every PBX configured on
    this host (login, Asterisk version, fully booted), their listeners, and calls left open
    past their reconciliation bound.

    Exits 0 when all is well, 1 when degraded (calls are made, something needs a look),
    2 when down (no call can be made): usable as a container health check.

    \b
    Example:
        dialer status
        dialer status --json
    """
    settings = get_settings()
    if settings.log_level != "DEBUG":
        # Each PBX check logs in: a health check's output is its table, not login lines.
        logging.getLogger("dialer.ami.client").setLevel(logging.WARNING)
    engine = make_engine(settings.database_url)
    app = make_celery_app(settings)
    try:
        checks = health.run_checks(settings, app, engine)
    finally:
        engine.dispose()
        app.close()
    level = health.overall(checks)
    rows = [c.as_dict() for c in checks]
    emit(
        {"status": str(level), "checks": rows},
        as_json,
        lambda: (
            echo_table(rows, ("component", "status", "detail")),
            click.echo(f"\ndialer: {level}"),
        ),
    )
    raise SystemExit(int(level))
