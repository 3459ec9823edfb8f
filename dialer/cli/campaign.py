"""`dialer campaign`: create and change campaigns, follow their progress, run their lifecycle."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.exc import OperationalError

from dialer.campaigns import service as campaigns
from dialer.campaigns import validation
from dialer.cli.common import echo_fields, echo_table, emit, json_option, unit_of_work
from dialer.db import make_engine
from dialer.reports import queries as reports
from dialer.reports.watch import follow, redraw, render
from dialer.settings import get_settings, redact_url


@click.group()
def campaign() -> None:
    """Campaigns: settings, progress, and start/pause/resume/stop.

    \b
    Example:
        dialer campaign create spring --trunk MC --caller-id +12125550100 --ivr-file welcome
        dialer contacts import spring contacts.csv
        dialer campaign start spring
    """


def setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The settings `create` and `set` share; an option not given leaves the setting alone."""
    options = [
        click.option("--trunk", help="Trunk the calls leave through."),
        click.option("--caller-id", help="Caller ID number (valid, E.164 or national)."),
        click.option("--caller-name", help="Caller ID name (default: the number)."),
        click.option(
            "--caller-id-pool",
            help="Pick each call's caller ID from this pool (see `dialer callerid`); '' for none.",
        ),
        click.option("--ivr-file", help="Sound played to people, without extension."),
        click.option("--ivr-vm-file", help="Sound left on answering machines."),
        click.option("--transfer-number", help="Where a key press transfers the call."),
        click.option("--transfer-prefix", help="Digits dialled before the transfer number."),
        click.option(
            "--transfer-queue",
            help="Asterisk queue a key press transfers into (instead of the number); '' for none.",
        ),
        click.option(
            "--pace-by-queue/--no-pace-by-queue",
            default=None,
            help="Start calls by the transfer queue's free agents, not the trunk's rate [off].",
        ),
        click.option(
            "--abandon-target",
            help="Queue pacing: most transfers abandoned in the queue, e.g. 3% [default: 3%].",
        ),
        click.option("--press-key", help="Key that asks for the transfer [default: 1]."),
        click.option("--opt-out-key", help="Key that puts the number on the DNC list."),
        click.option("--amd/--no-amd", default=None, help="Answering machine detection [on]."),
        click.option("--record/--no-record", "record_calls", default=None, help="Record calls."),
        click.option(
            "--alt-numbers/--no-alt-numbers",
            default=None,
            help="After busy, no answer or failed, call the contact's next number [off].",
        ),
        click.option("--wait-strategy", help="IVR wait strategy [default: random]."),
        click.option("--context", help="Dialplan context [default: DynamicIVR]."),
        click.option("--exten", help="Dialplan extension [default: s]."),
        click.option("--priority", help="Dialplan priority [default: 1]."),
        click.option("--timeout-ms", help="Ring time before giving up [default: 30000]."),
        click.option("--max-attempts", help="Calls per contact, at most [default: 3]."),
        click.option(
            "--retry",
            multiple=True,
            help="OUTCOME=DELAY, e.g. busy=30m no_answer=2h (repeatable; replaces all).",
        ),
        click.option("--hours", help="Callee-local calling hours [default: 09:00-20:00]."),
        click.option("--days", help="Calling days: mon-fri, mon,wed,sat [default: mon-fri]."),
        click.option("--region", help="Region for national-format numbers [default: US]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _changes(settings: dict[str, Any]) -> campaigns.CampaignChanges:
    retry = settings.pop("retry")
    return campaigns.CampaignChanges(retry=list(retry) if retry else None, **settings)


@campaign.command()
@click.argument("name")
@setting_options
@json_option
def create(name: str, as_json: bool, **settings: Any) -> None:
    """Create a draft campaign (--trunk, --caller-id or --caller-id-pool, and --ivr-file are
    required).

    \b
    Example:
        dialer campaign create spring --trunk MC --caller-id +12125550100 \\
            --ivr-file welcome --ivr-vm-file welcome_vm --transfer-number +12125550199 \\
            --retry busy=30m --retry no_answer=2h --hours 09:00-20:00 --days mon-fri
        dialer campaign create local --trunk MC --caller-id-pool east --ivr-file welcome
        dialer campaign create sales --trunk MC --caller-id +12125550100 --ivr-file offer \\
            --transfer-queue sales --pace-by-queue --abandon-target 3%
    """
    with unit_of_work() as session:
        created = campaigns.create(session, name, _changes(settings))
        data = campaigns.show(session, created.name)["settings"]
    emit(data, as_json, lambda: click.echo(f"created campaign {data['name']} (draft)"))


@campaign.command("set")
@click.argument("name")
@setting_options
@json_option
def set_(name: str, as_json: bool, **settings: Any) -> None:
    """Change a campaign's settings (only those given); refused while it is running.

    \b
    Example:
        dialer campaign pause spring
        dialer campaign set spring --hours 10:00-19:00 --max-attempts 5
        dialer campaign resume spring
    """
    with unit_of_work() as session:
        campaigns.update_settings(session, name, _changes(settings))
        data = campaigns.show(session, name)["settings"]
    emit(data, as_json, lambda: echo_fields(data))


@campaign.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List campaigns with their status and contact counts.

    \b
    Example:
        dialer campaign list
    """
    with unit_of_work() as session:
        rows = campaigns.list_campaigns(session)
    columns = ("name", "status", "trunk", "region", "contacts", "pending", "start_at")
    emit(rows, as_json, lambda: echo_table(rows, columns))


@campaign.command()
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """Show a campaign's settings and progress: contacts, attempts and outcomes so far.

    \b
    Example:
        dialer campaign show spring --json
    """
    with unit_of_work() as session:
        data = campaigns.show(session, name)
    emit(data, as_json, lambda: _print_show(data))


def _print_show(data: dict[str, Any]) -> None:
    echo_fields(data["settings"])
    progress = data["progress"]
    for title in ("contacts", "attempts", "outcomes"):
        click.echo(f"\n{title}:")
        if progress[title]:
            echo_fields(progress[title])
        else:
            click.echo("(none yet)")
    if data["imports"]:
        click.echo("\nimports:")
        columns = ("id", "filename", "status", "rows_total", "accepted", "on_dnc")
        echo_table(data["imports"], (*columns, "duplicates", "rejected", "error"))


@campaign.command("schedule")
@click.argument("name")
@click.option("--start", "start_at", required=True, help="ISO 8601 with offset.")
@click.option("--end", "end_at", help="ISO 8601 with offset; dialling stops then.")
@json_option
def schedule_(name: str, start_at: str, end_at: str | None, as_json: bool) -> None:
    """Schedule a draft campaign to start (and optionally end) at given times.

    \b
    Example:
        dialer campaign schedule spring --start 2026-03-02T09:00:00-05:00 \\
            --end 2026-03-06T18:00:00-05:00
    """
    with unit_of_work() as session:
        start = validation.timestamp(start_at, "start")
        end = validation.timestamp(end_at, "end") if end_at else None
        found = campaigns.schedule(session, name, start, end)
        data = _status(found)
    emit(data, as_json, lambda: click.echo(f"campaign {name} scheduled for {data['start_at']}"))


def _lifecycle(action: str, verb: str, summary: str, example: str) -> click.Command:
    @click.argument("name")
    @json_option
    def command(name: str, as_json: bool) -> None:
        with unit_of_work() as session:
            if action == "start":
                found = campaigns.start(session, name)
            elif action == "resume":
                found = campaigns.resume(session, name)
            else:
                found = campaigns.transition(session, name, action)
            data = _status(found)
        emit(data, as_json, lambda: click.echo(f"campaign {name} {verb}: now {data['status']}"))

    command.__doc__ = f"{summary}\n\n\b\nExample:\n    {example}\n"
    return campaign.command(action)(command)


def _status(found: Any) -> dict[str, Any]:
    return {
        "name": found.name,
        "status": found.status,
        "start_at": found.start_at.isoformat() if found.start_at else None,
        "end_at": found.end_at.isoformat() if found.end_at else None,
    }


_lifecycle(
    "start",
    "started",
    "Start dialling now (a draft or scheduled campaign with contacts to dial).",
    "dialer campaign start spring",
)
_lifecycle("pause", "paused", "Pause a running campaign.", "dialer campaign pause spring")
_lifecycle(
    "resume",
    "resumed",
    "Resume a paused campaign (it completes if nothing is left to dial).",
    "dialer campaign resume spring",
)
_lifecycle(
    "stop",
    "stopped",
    "Cancel a campaign for good; calls in progress finish, no new ones start.",
    "dialer campaign stop spring",
)


@campaign.command()
@click.argument("name")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option(
    "--window",
    type=click.FloatRange(min=1.0),
    default=reports.WATCH_WINDOW_SECONDS,
    show_default=True,
    help="Seconds over which the current calls per second are counted.",
)
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@json_option
def watch(name: str, interval: float, window: float, once: bool, as_json: bool) -> None:
    """Live view of a campaign: contacts by status, attempts, calls per second and channels
    per trunk against the trunk's limits, outcomes and rates.

    Redraws in place on a terminal; into a pipe or a file it prints one block per refresh.
    Stops on Ctrl-C, or by itself with a final snapshot once the campaign is completed or
    cancelled. --once prints a single snapshot, --json a single snapshot as JSON.

    \b
    Example:
        dialer campaign watch spring
        dialer campaign watch spring --once
        dialer campaign watch spring --json
    """
    live = not (once or as_json) and _stdout_is_terminal()
    shown = 0

    def show(frame: dict[str, Any]) -> None:
        nonlocal shown
        if as_json:
            emit(frame, True, lambda: None)
        elif live:
            click.echo(redraw(render(frame)), nl=False)
        else:
            click.echo(("\n" if shown else "") + render(frame))
        shown += 1

    url = get_settings().database_url
    engine = make_engine(url)

    def take() -> dict[str, Any]:
        # REPEATABLE READ: every number of a frame is from the same instant.
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            return reports.watch_frame(conn, name, window_seconds=window)

    try:
        follow(take, show, interval=interval, once=once or as_json)
    except KeyboardInterrupt:
        pass
    except reports.CampaignNotFound as exc:
        raise click.ClickException(str(exc)) from None
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
        raise click.ClickException(f"database {redact_url(url)}: {reason}") from None
    finally:
        engine.dispose()


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
