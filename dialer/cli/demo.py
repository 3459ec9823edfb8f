"""`dialer demo`: dial a demo campaign end to end against the PBX simulator."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dialer.cli.report import render_summary
from dialer.demo.run import (
    CAMPAIGN,
    DEMO_DATABASE,
    FINAL_CONTACT_STATUSES,
    DemoError,
    DemoOptions,
    run_demo,
    write_progress,
)
from dialer.settings import get_settings, redact_url


@click.command()
@click.option(
    "--speed",
    type=click.FloatRange(min=1.0, max=200.0),
    default=20.0,
    show_default=True,
    help="Simulator speed-up: every call duration (and the Originate timeout) is divided by it.",
)
@click.option(
    "--database",
    default=DEMO_DATABASE,
    show_default=True,
    help="Name of the demo's own database on the configured server (recreated each run).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=10.0),
    default=300.0,
    show_default=True,
    help="Give up (exit status 1) if the campaign has not completed after this many seconds.",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the simulator's, worker's and listener's logs go.  [default: a new temp dir]",
)
def demo(speed: float, database: str, timeout: float, log_dir: Path | None) -> None:
    """Dial a demo campaign end to end: PBX simulator, worker and listener on this machine.

    Creates its own database (DATABASE on the configured Postgres server) and broker key
    prefix, a trunk and a campaign with the Originate specification's example values, and a
    contact list with one number per simulator behaviour (transfer, no press, other key,
    voicemail, busy, no answer, congestion, hang-up, silence) plus one on the do-not-call
    list. It dials the campaign to completion, showing progress, then prints each contact's
    outcome and the SQL to query them. Exit status 0 only if every contact reached a final
    state. Ctrl-C stops every process it started.

    \b
    Example:
        dialer demo
        dialer demo --speed 50 --database my_demo
    """
    settings = get_settings()
    tty = sys.stdout.isatty()
    progress = write_progress(sys.stdout, tty)
    try:
        result = run_demo(
            settings,
            DemoOptions(speed=speed, database=database, timeout_s=timeout, log_dir=log_dir),
            on_progress=progress,
            say=click.echo,
        )
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted: every process the demo started has been stopped", err=True)
        sys.exit(130)
    if tty:
        click.echo()
    click.echo()
    rows = result.contacts
    widths = {key: max(len(key), *(len(str(r[key] or "-")) for r in rows)) for key in _COLUMNS}
    click.echo("  ".join(k.upper().ljust(widths[k]) for k in _COLUMNS).rstrip())
    for row in rows:
        click.echo("  ".join(str(row[k] or "-").ljust(widths[k]) for k in _COLUMNS).rstrip())
    click.echo()
    click.echo(render_summary(result.summary, None))
    click.echo()
    url = redact_url(result.database_url).replace("postgresql+psycopg://", "postgresql://")
    click.echo("Query the outcomes yourself:")
    click.echo(
        f'  psql "{url}" -c "SELECT phone, attempt_number, amd_status, dtmf, outcome'
        f" FROM call_attempts_report WHERE campaign = '{CAMPAIGN}' ORDER BY phone, attempt_number\""
    )
    click.echo(f'  psql "{url}" -c "SELECT * FROM campaign_summary"')
    click.echo(f"  dialer calls list --campaign {CAMPAIGN}   (with DIALER_DATABASE_URL set to it)")
    if not result.all_final:
        open_ = [r["phone"] for r in rows if r["status"] not in FINAL_CONTACT_STATUSES]
        raise click.ClickException(
            f"campaign {result.campaign_status} after {result.elapsed_s:.0f}s; contacts not in a "
            f"final state: {', '.join(open_) or '-'} (logs in {result.log_dir})"
        )
    if result.unexpected:
        wrong = ", ".join(
            f"{r['phone']} ({r['last_outcome']}/{r['status']}, expected "
            f"{r['expected_outcome']}/{r['expected_status']})"
            for r in result.unexpected
        )
        raise click.ClickException(f"outcomes differ from the behaviour table: {wrong}")
    click.echo(
        f"\nall {len(rows)} contacts reached a final state, each as the behaviour table says, "
        f"in {result.elapsed_s:.1f}s"
    )


_COLUMNS = ("phone", "behaviour", "attempts", "status", "last_outcome")
