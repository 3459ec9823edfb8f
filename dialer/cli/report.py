"""`dialer report` and `dialer calls`: outcomes from the report views."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from dialer.csvsafe import neutralise
from dialer.db import make_engine
from dialer.reports import queries as reports
from dialer.settings import get_settings, redact_url

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("table", "csv", "json")
LIST_TABLE_COLUMNS = (
    ("queued_at", "queued"),
    ("call_id", "call id"),
    ("campaign", "campaign"),
    ("phone", "phone"),
    ("attempt_number", "#"),
    ("status", "status"),
    ("ring_seconds", "ring s"),
    ("talk_seconds", "talk s"),
    ("amd_status", "amd"),
    ("dtmf", "dtmf"),
    ("outcome", "outcome"),
    ("ended_by", "ended by"),
)

# Event headers that are the same on every event of a call: left out of the timeline.
QUIET_HEADERS = {"Linkedid", "Privilege"}


class SinceParam(click.ParamType):
    name = "T"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            return reports.parse_since(str(value), dt.datetime.now(dt.UTC))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SINCE = SinceParam()
SINCE_HELP = (
    "Only attempts queued at or after T: an age (30m, 24h, 7d) or an ISO time "
    "(2026-05-01, 2026-05-01T09:00+02:00; local time when no offset)."
)
RAW_CSV_HELP = (
    "CSV cells exactly as stored, for programs. By default text starting with = + - @, "
    "a tab or a CR (not a number such as +14155550100 or -3) gets a leading ' so that a "
    "spreadsheet shows it instead of running it as a formula."
)
raw_csv_option = click.option("--raw-csv", is_flag=True, help=RAW_CSV_HELP)


def format_option(command: F) -> F:
    """--format table|csv|json, its --json shortcut and --raw-csv."""
    command = raw_csv_option(command)
    command = click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (same as --format json)."
    )(command)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format.",
    )(command)


@contextmanager
def _connection(engine: Engine | None = None) -> Iterator[Connection]:
    """A read connection to the configured database, with errors an operator can act on."""
    url = get_settings().database_url
    own = engine is None
    engine = engine or make_engine(url)
    try:
        with engine.connect() as conn:
            yield conn
    except (reports.CampaignNotFound, reports.CallNotFound) as exc:
        raise click.ClickException(str(exc)) from None
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
        raise click.ClickException(f"database {redact_url(url)}: {reason}") from None
    finally:
        if own:
            engine.dispose()


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_json_default, indent=2, ensure_ascii=False))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _csv_cell(value: Any, *, raw: bool) -> Any:
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, dt.datetime):
        value = value.isoformat()
    # Only text can be a formula: numbers (-3, 2.5) are written as they are.
    return neutralise(value) if isinstance(value, str) and not raw else value


def _echo_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [
        max([len(title), *(len(line[i]) for line in cells)]) for i, (_, title) in enumerate(columns)
    ]
    click.echo("  ".join(title.ljust(w) for (_, title), w in zip(columns, widths, strict=True)))
    for line in cells:
        click.echo("  ".join(value.ljust(w) for value, w in zip(line, widths, strict=True)))


def _echo_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, raw: bool) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_cell(row.get(key), raw=raw) for key in columns})
    sys.stdout.flush()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_summary(s: dict[str, Any], since: dt.datetime | None) -> str:
    window = f" queued since {_cell(since)}" if since else ""
    finished = s["attempts_finished"]
    lines = [
        f"campaign   {s['campaign']} ({s['campaign_status']})",
        f"contacts   {_n(s['contacts_total'])} total, {_n(s['contacts_remaining'])} remaining "
        f"({_n(s['contacts_pending'])} pending, {_n(s['contacts_dialing'])} dialing), "
        f"{_n(s['contacts_completed'])} completed, {_n(s['contacts_exhausted'])} exhausted, "
        f"{_n(s['contacts_dnc'])} dnc, {_n(s['contacts_cancelled'])} cancelled",
        f"attempts   {_n(s['attempts'])}{window}: {_n(finished)} finished, "
        f"{_n(s['attempts_open'])} open, {_n(s['attempts_sent'])} sent",
        f"answered   {_n(s['answered'])} ({_pct(s['answer_rate'])} of finished), "
        f"human {_n(s['human_answered'])} ({_pct(s['human_rate'])})",
        f"presses    {_n(s['presses'])} ({_pct(s['press_rate'])} of human answers), "
        f"transferred {_n(s['transferred'] - s['operator_transfers'])} by the IVR "
        f"({_pct(s['transfer_rate'])}), {_n(s['operator_transfers'])} by operators",
        "ended by   "
        + (
            ", ".join(
                f"{who} {_n(n)}"
                for who, n in sorted(s["ended_by"].items(), key=lambda item: (-item[1], item[0]))
            )
            or "-"
        ),
        f"talk       {_num(s['avg_talk_seconds'], '.1f')} s average",
        f"pace       {_num(s['attempts_per_hour'], ',.1f')} attempts/hour"
        f" (first sent {_cell(s['first_sent_at']) or '-'},"
        f" last sent {_cell(s['last_sent_at']) or '-'})",
    ]
    if "transfer_abandon_rate" in s:
        # Only campaigns that transfer into a queue have these (reports.queue_figures).
        for label, suffix in (("queue", ""), ("last 5 min", "_5m")):
            lines.append(
                f"{label:<11}{_pct(s['transfer_abandon_rate' + suffix])} of queued transfers"
                f" abandoned, wait {_num(s['avg_queue_wait_seconds' + suffix], '.1f')} s"
                f" average, agent occupancy {_pct(s['agent_occupancy' + suffix])}"
            )
    lines.append("")
    outcome_rows = [
        {"outcome": name, "attempts": count, "share": _pct(count / finished if finished else None)}
        for name, count in sorted(s["outcomes"].items(), key=lambda item: (-item[1], item[0]))
    ]
    header = f"{'outcome':<20}{'attempts':>10}{'share':>9}"
    body = [f"{r['outcome']:<20}{r['attempts']:>10,}{r['share']:>9}" for r in outcome_rows]
    return "\n".join(lines + [header, *body] if body else [*lines, "no finished attempts"])


@click.command()
@click.argument("campaign")
@click.option("--since", type=SINCE, help=SINCE_HELP)
@format_option
def report(
    campaign: str, since: dt.datetime | None, fmt: str, as_json: bool, raw_csv: bool
) -> None:
    """Summary and outcome breakdown of CAMPAIGN (the campaign_summary view).

    Rates: answer and human rates per finished attempt, press and transfer rates per human
    answer. CSV prints one header line and one row with every summary column.

    \b
    Example:
        dialer report spring
        dialer report spring --since 24h --format json
    """
    with _connection() as conn:
        summary = reports.campaign_summary(conn, campaign, since)
    fmt = "json" if as_json else fmt
    if fmt == "json":
        _echo_json({**summary, "since": since})
    elif fmt == "csv":
        _echo_csv([summary], list(summary), raw=raw_csv)
    else:
        click.echo(render_summary(summary, since))


@click.group()
def calls() -> None:
    """Call attempts: list, show one with its event timeline, export to CSV.

    \b
    Example:
        dialer calls list --campaign spring --outcome transferred --since 24h
    """


@calls.command("list")
@click.option("--campaign", help="Only this campaign.")
@click.option("--outcome", type=click.Choice(reports.OUTCOMES), help="Only this outcome.")
@click.option("--since", type=SINCE, help=SINCE_HELP)
@click.option(
    "--limit",
    type=click.IntRange(1, reports.MAX_LIST_LIMIT),
    default=50,
    show_default=True,
    help="At most this many attempts, newest first.",
)
@format_option
def list_calls(
    campaign: str | None,
    outcome: str | None,
    since: dt.datetime | None,
    limit: int,
    fmt: str,
    as_json: bool,
    raw_csv: bool,
) -> None:
    """List call attempts, newest first (rows of the call_attempts_report view).

    CSV cells a spreadsheet would run as a formula get a leading ' (see --raw-csv).

    \b
    Example:
        dialer calls list --campaign spring --outcome opted_out --limit 20
        dialer calls list --since 2026-05-01 --format csv > calls.csv
        dialer calls list --campaign spring --format csv --raw-csv > calls-raw.csv
    """
    with _connection() as conn:
        rows = reports.list_calls(
            conn, campaign=campaign, outcome=outcome, since=since, limit=limit
        )
    fmt = "json" if as_json else fmt
    if fmt == "json":
        _echo_json(rows)
    elif fmt == "csv":
        _echo_csv(rows, reports.EXPORT_COLUMNS, raw=raw_csv)
    elif rows:
        _echo_table(rows, LIST_TABLE_COLUMNS)
    else:
        click.echo("no call attempts match")


def render_call(call: dict[str, Any]) -> str:
    skip = {"payload", "events", "contact_fields"}
    width = max(len(key) for key in call)
    lines = [f"{key:<{width}}  {_cell(value)}" for key, value in call.items() if key not in skip]
    lines.append(f"{'contact_fields':<{width}}  {_cell(call['contact_fields'])}")
    lines.append(f"{'payload':<{width}}  {_cell(call['payload'])}")
    lines.append("")
    if not call["events"]:
        lines.append("no events recorded")
        return "\n".join(lines)
    lines.append(f"events ({len(call['events'])})")
    start = call["events"][0]["received_at"]
    for event in call["events"]:
        data = dict(event["data"])
        name = str(data.pop("Event", event["event"]))
        if "UserEvent" in data:
            name = f"{name} {data.pop('UserEvent')}"
        offset = (event["received_at"] - start).total_seconds()
        fields = " ".join(
            f"{k}={v}" for k, v in data.items() if k not in QUIET_HEADERS and v not in ("", None)
        )
        lines.append(f"  {_cell(event['received_at'])}  +{offset:7.3f}s  {name:<26} {fields}")
    return "\n".join(lines)


@calls.command("show")
@click.argument("call_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_call(call_id: str, as_json: bool) -> None:
    """Show one attempt (by custom_call_id or attempt id) and its AMI event timeline.

    \b
    Example:
        dialer calls show 1767225600000_42
    """
    with _connection() as conn:
        call = reports.get_call(conn, call_id)
    if as_json:
        _echo_json(call)
    else:
        click.echo(render_call(call))


@calls.command("export")
@click.argument("campaign")
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--since", type=SINCE, help=SINCE_HELP)
@raw_csv_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export_calls(
    campaign: str, out: str, since: dt.datetime | None, raw_csv: bool, as_json: bool
) -> None:
    """Write every attempt of CAMPAIGN to OUT as CSV ("-" for standard output).

    Streams from the database with constant memory whatever the size. Columns are those of the
    call_attempts_report view; times are in UTC. The file appears under its name only once
    complete. Text a spreadsheet would run as a formula (a name such as =HYPERLINK(...))
    gets a leading '; phone numbers and other numbers stay as they are. --raw-csv writes
    every cell as stored, for programs.

    \b
    Example:
        dialer calls export spring spring-calls.csv
        dialer calls export spring - --since 7d | gzip > last-week.csv.gz
        dialer calls export spring spring-raw.csv --raw-csv
    """
    safe = not raw_csv
    if out == "-":
        with _connection() as conn, click.open_file("-", "wb") as stdout:
            reports.export_calls(conn, campaign, stdout, since=since, spreadsheet_safe=safe)
        return
    partial = f"{out}.partial"
    try:
        with _connection() as conn, open(partial, "wb") as handle:
            rows = reports.export_calls(conn, campaign, handle, since=since, spreadsheet_safe=safe)
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    if as_json:
        _echo_json({"campaign": campaign, "rows": rows, "path": out})
    else:
        click.echo(f"exported {rows:,} call attempts of {campaign} to {out}")
