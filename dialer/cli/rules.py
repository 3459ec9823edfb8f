"""`dialer rules`: region calling rules, holidays and frequency rules, for every campaign."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from dialer.campaigns import calling_window, regions, validation
from dialer.campaigns import rules as rules_store
from dialer.cli.common import (
    echo_fields,
    echo_table,
    emit,
    json_option,
    operator_errors,
    session_factory,
    unit_of_work,
)

WHERE_HELP = "US (a country), US-CA (a region), +1415 (an area code as an E.164 prefix)."


@click.group()
def rules() -> None:
    """Calling rules over all campaigns: allowed hours per country, region or area code,
    holidays, and how often one number may be called.

    A call is allowed only when the campaign's hours, the 08:00-21:00 guard and every rule of
    the callee's country, regions and area code allow it, in the callee's local time: the
    strictest applies. Values here are the operator's: the project makes no legal claims.

    \b
    Example:
        dialer rules hours add US-TX --days mon-fri --hours 09:00-20:00
        dialer rules holiday add US 2027-07-05 --name "Independence Day (observed)"
        dialer rules frequency add seven-in-seven --max-attempts 7 --period 7d
    """


@rules.group()
def hours() -> None:
    """Hours calls are allowed on some weekdays in a country, region or area code.

    A scope's rules add up; a weekday none of its rules names is closed there.

    \b
    Example:
        dialer rules hours add US --days mon-fri --hours 08:00-21:00
        dialer rules hours add US --days sat --hours 09:00-17:00
    """


@hours.command("add")
@click.argument("where")
@click.option("--days", required=True, help="Weekdays: mon-fri, sat, mon,wed,fri.")
@click.option("--hours", "hours_", required=True, help="Local hours, HH:MM-HH:MM.")
@click.option("--note", default="", help="Why (kept with the rule).")
@json_option
def hours_add(where: str, days: str, hours_: str, note: str, as_json: bool) -> None:
    """Allow calls in WHERE on --days during --hours.

    WHERE is US (a country), US-CA (a region) or +1415 (an area code). One rule per weekday
    and scope: remove a rule before giving its days other hours.

    \b
    Example:
        dialer rules hours add US-TX --days mon-fri --hours 09:00-20:00 --note "state rule"
        dialer rules hours add +1415 --days mon-sat --hours 10:00-19:00
    """
    with unit_of_work() as session:
        data = rules_store.describe_hours(
            rules_store.add_hours(session, where, days=days, hours=hours_, note=note)
        )
    emit(data, as_json, lambda: click.echo(
        f"rule {data['id']}: {data['where']} {data['days']} {data['hours']}"
    ))  # fmt: skip


@hours.command("list")
@json_option
def hours_list(as_json: bool) -> None:
    """Every hours rule.

    \b
    Example:
        dialer rules hours list --json
    """
    with unit_of_work() as session:
        data = rules_store.list_hours(session)
    emit(data, as_json, lambda: echo_table(data, ["id", "where", "days", "hours", "note"]))


@hours.command("remove")
@click.argument("rule_id", type=int)
def hours_remove(rule_id: int) -> None:
    """Remove hours rule RULE_ID (see `dialer rules hours list`).

    \b
    Example:
        dialer rules hours remove 3
    """
    with unit_of_work() as session:
        rules_store.remove_hours(session, rule_id)
    click.echo(f"removed rule {rule_id}")


@rules.group()
def holiday() -> None:
    """Local dates with no calls at all in a country, region or area code.

    \b
    Example:
        dialer rules holiday add US-CA 2027-03-31 --name "Cesar Chavez Day"
    """


@holiday.command("add")
@click.argument("where")
@click.argument("date")
@click.option("--name", default="", help="The holiday's name.")
@json_option
def holiday_add(where: str, date: str, name: str, as_json: bool) -> None:
    """No calls in WHERE on DATE (YYYY-MM-DD, the callee's local date).

    \b
    Example:
        dialer rules holiday add US 2027-01-01 --name "New Year's Day"
        dialer rules holiday add CA-QC 2027-06-24
    """
    with unit_of_work() as session:
        data = rules_store.describe_holiday(
            rules_store.add_holiday(session, where, day=date, name=name)
        )
    emit(data, as_json, lambda: click.echo(f"holiday: {data['where']} {data['date']}"))


@holiday.command("list")
@json_option
def holiday_list(as_json: bool) -> None:
    """Every holiday, by date.

    \b
    Example:
        dialer rules holiday list
    """
    with unit_of_work() as session:
        data = rules_store.list_holidays(session)
    emit(data, as_json, lambda: echo_table(data, ["date", "where", "name"]))


@holiday.command("remove")
@click.argument("where")
@click.argument("date")
def holiday_remove(where: str, date: str) -> None:
    """Remove the holiday of WHERE on DATE.

    \b
    Example:
        dialer rules holiday remove US 2027-01-01
    """
    with unit_of_work() as session:
        rules_store.remove_holiday(session, where, date)
    click.echo(f"removed the holiday of {where} on {date}")


@rules.group()
def frequency() -> None:
    """How often one number may be called, over all campaigns.

    Checked at the last moment before each call, with the number locked: a call a rule holds
    back is rescheduled to when the rule allows it, not failed.

    \b
    Example:
        dialer rules frequency add seven-in-seven --max-attempts 7 --period 7d
        dialer rules frequency add rest-after-talk --after-conversation 24h
    """


@frequency.command("add")
@click.argument("name")
@click.option("--max-attempts", help="Calls sent to one number within --period, at most.")
@click.option("--period", help="The period of --max-attempts: 30m, 12h, 7d.")
@click.option("--after-conversation", help="No call within this of one a person answered: 4h, 1d.")
@json_option
def frequency_add(
    name: str,
    max_attempts: str | None,
    period: str | None,
    after_conversation: str | None,
    as_json: bool,
) -> None:
    """Add frequency rule NAME: --max-attempts in --period, or --after-conversation.

    \b
    Example:
        dialer rules frequency add seven-in-seven --max-attempts 7 --period 7d
        dialer rules frequency add rest-after-talk --after-conversation 24h
    """
    with unit_of_work() as session:
        data = rules_store.describe_frequency(
            rules_store.add_frequency(
                session,
                name,
                max_attempts=max_attempts,
                period=period,
                after_conversation=after_conversation,
            )  # fmt: skip
        )
    emit(data, as_json, lambda: click.echo(f"added frequency rule {name}"))


@frequency.command("list")
@json_option
def frequency_list(as_json: bool) -> None:
    """Every frequency rule.

    \b
    Example:
        dialer rules frequency list
    """
    with unit_of_work() as session:
        data = rules_store.list_frequency(session)
    emit(data, as_json, lambda: echo_table(
        data, ["name", "max_attempts", "period", "after_conversation"]
    ))  # fmt: skip


@frequency.command("remove")
@click.argument("name")
def frequency_remove(name: str) -> None:
    """Remove frequency rule NAME.

    \b
    Example:
        dialer rules frequency remove seven-in-seven
    """
    with unit_of_work() as session:
        rules_store.remove_frequency(session, name)
    click.echo(f"removed frequency rule {name}")


@rules.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def import_(path: Path, as_json: bool) -> None:
    """Load hours rules and holidays from a CSV file: all of its rows, or none.

    Columns: where, days, hours, date, note. A row with days and hours allows calls; a row
    with a date is a holiday. Every bad row is reported with its line number and field.

    \b
    Example:
        dialer rules example > rules.csv
        dialer rules import rules.csv
    """
    with unit_of_work() as session, path.open(newline="", encoding="utf-8-sig") as handle:
        result = rules_store.import_rules(session, handle)
        if result.errors:
            for error in result.errors:
                click.echo(f"{path}: {error}", err=True)
            # Nothing was added; leaving the block by an error rolls the transaction back.
            raise click.ClickException(
                f"{len(result.errors)} bad row(s) in {path}: nothing was loaded"
            )
    data = {"hours": result.hours, "holidays": result.holidays}
    emit(data, as_json, lambda: click.echo(
        f"loaded {result.hours} hours rule(s) and {result.holidays} holiday(s)"
    ))  # fmt: skip


@rules.command()
def example() -> None:
    """Print an example rules file (made-up values) to start from.

    \b
    Example:
        dialer rules example > rules.csv
    """
    click.echo(rules_store.example_csv(), nl=False)


@rules.command()
@click.argument("number")
@click.option("--at", "at_", help="Instant to judge, ISO 8601 with its offset [default: now].")
@click.option("--days", default="mon-sun", show_default=True, help="Campaign days to apply.")
@click.option("--hours", "hours_", default="00:00-23:59", show_default=True,
              help="Campaign hours to apply.")  # fmt: skip
@json_option
def check(number: str, at_: str | None, days: str, hours_: str, as_json: bool) -> None:
    """Which rules apply to NUMBER (E.164), and when it may next be called.

    \b
    Example:
        dialer rules check +14155550123
        dialer rules check +14155550123 --at 2027-01-01T10:00:00-08:00 --hours 09:00-20:00
    """
    with operator_errors():
        phone = validation.phone_number(number, "number", "US")
        at = validation.timestamp(at_, "at") if at_ else dt.datetime.now(dt.UTC)
        window = calling_window.CallingWindow(
            *validation.calling_hours(hours_, "hours"),
            frozenset(validation.calling_days(days, "days")),
        )
        with session_factory() as factory, factory() as session:
            book, freq = rules_store.load_rulebook(session.connection())
    scopes = book.scopes_for(phone)
    schedule = window.schedule()
    if scopes:
        schedule = schedule.intersect(book.schedule(scopes) or schedule)
    zones = calling_window.zones_for(phone)
    opens = calling_window.next_open(schedule, zones, at)
    data: dict[str, Any] = {
        "number": phone,
        "country": regions.country_of(phone),
        "regions": sorted(regions.regions_of(phone)),
        "time_zones": list(zones),
        "rules": [rules_store.describe_scope(s, v) for s, v in scopes],
        "frequency_rules": [r.name for r in freq],
        "open": opens == at,
        "next_open": opens.isoformat() if opens else None,
    }
    emit(data, as_json, lambda: echo_fields(data))
