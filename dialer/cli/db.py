"""`dialer db`: create and migrate the database."""

from __future__ import annotations

import click

from dialer import migrate
from dialer.settings import get_settings, redact_url


@click.group()
def db() -> None:
    """Database schema: upgrade, show the current revision, check for drift.

    \b
    Example:
        DIALER_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/dialer dialer db upgrade
    """


@db.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option(
    "--create/--no-create",
    default=True,
    show_default=True,
    help="Create the database first if it does not exist.",
)
def upgrade(revision: str, create: bool) -> None:
    """Create the database if needed and apply migrations up to REVISION.

    \b
    Example:
        dialer db upgrade
    """
    url = get_settings().database_url
    if create and migrate.ensure_database(url):
        click.echo(f"created database {redact_url(url)}")
    migrate.upgrade(url, revision)
    click.echo(f"database at {migrate.current(url)}")


@db.command()
def current() -> None:
    """Print the database's migration revision.

    \b
    Example:
        dialer db current
    """
    click.echo(migrate.current(get_settings().database_url))


@db.command()
def check() -> None:
    """Exit non-zero if the models and the migrated schema differ.

    \b
    Example:
        dialer db check && echo "schema matches"
    """
    try:
        migrate.check(get_settings().database_url)
    except migrate.SchemaDriftError as exc:
        raise click.ClickException(f"schema drift: {exc}") from None
    click.echo("no drift: the database matches the models")
