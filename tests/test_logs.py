"""The dialer's logs: JSON lines when asked for, a custom_call_id on every line about a call,
beat's per-tick line and the tick's own kept out of INFO, no secret anywhere."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from typing import Any

import pytest

from dialer import logs
from dialer.dialing.dispatch import TickReport, TickSummary
from dialer.settings import Settings, SettingsError


def record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("dialer.test", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


@pytest.mark.parametrize(
    "extra, fields",
    [
        ({}, {}),
        (logs.call_fields("1764633600000_42"), {"custom_call_id": "1764633600000_42"}),
        (logs.call_fields(None, attempt_id=7), {"attempt_id": 7}),
        (logs.call_fields("1_2", pbx="east"), {"custom_call_id": "1_2", "pbx": "east"}),
    ],
)
def test_a_json_line_carries_the_calls_fields(extra: dict[str, Any], fields: dict) -> None:
    line = logs.JsonFormatter().format(record("attempt %s: not sent: %s", "1_2", "x", **extra))
    data = json.loads(line)
    assert data["message"] == "attempt 1_2: not sent: x"
    assert (data["level"], data["logger"]) == ("WARNING", "dialer.test")
    assert data["time"].endswith("+00:00")
    assert {k: v for k, v in data.items() if k in logs.FIELDS} == fields


def test_a_json_line_holds_its_traceback_on_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        made = record("failed")
        made.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(made)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


@pytest.mark.parametrize("value, accepted", [("text", "text"), ("JSON", "json"), ("xml", None)])
def test_the_log_format_setting(value: str, accepted: str | None) -> None:
    env = {"DIALER_LOG_FORMAT": value}
    if accepted is None:
        with pytest.raises(SettingsError, match="DIALER_LOG_FORMAT"):
            Settings.from_env(env)
    else:
        assert Settings.from_env(env).log_format == accepted


@pytest.mark.parametrize("level, shown", [(logging.INFO, []), (logging.DEBUG, ["DEBUG"])])
def test_beats_line_per_tick_is_kept_for_debug(level: int, shown: list[str]) -> None:
    beat = logging.getLogger("celery.beat")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    beat.addHandler(handler)
    before = beat.level
    beat.setLevel(level)
    try:
        logs.quiet_beat()
        logs.quiet_beat()  # once is enough: no second filter
        beat.info("Scheduler: Sending due task %s (%s)", "dispatch-tick", "dialer.dispatch_tick")
        beat.info("beat: Starting...")
    finally:
        beat.removeHandler(handler)
        beat.setLevel(before)
    lines = stream.getvalue().splitlines()
    assert [line.split()[0] for line in lines if "Sending due task" in line] == shown
    assert "INFO beat: Starting..." in lines


@pytest.mark.parametrize("level, shown", [(logging.INFO, []), (logging.DEBUG, ["DEBUG"])])
def test_an_expired_tick_is_discarded_quietly(level: int, shown: list[str]) -> None:
    """A tick that expired waiting for a busy worker: the next one comes a second later."""
    request = logging.getLogger("celery.worker.request")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    request.addHandler(handler)
    before = request.level
    request.setLevel(level)
    try:
        logs.quiet_expired("dialer.dispatch_tick")
        logs.quiet_expired("dialer.dispatch_tick")  # once is enough
        request.info("Discarding revoked task: %s[%s]", "dialer.dispatch_tick", "t-1")
        request.info("Discarding revoked task: %s[%s]", "dialer.originate_call", "t-2")
    finally:
        request.removeHandler(handler)
        request.setLevel(before)
    lines = stream.getvalue().splitlines()
    assert [line.split()[0] for line in lines if "dispatch_tick" in line] == shown
    # Any other task discarded is still said at INFO.
    assert "INFO Discarding revoked task: dialer.originate_call[t-2]" in lines


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tick(summary: TickSummary, clock: Clock, at: float, **report: Any) -> list[str]:
    clock.now = at
    return summary.add(TickReport(**report))


def test_the_tick_sums_up_its_work_every_ten_seconds_and_only_then() -> None:
    clock = Clock()
    summary = TickSummary(10.0, clock=clock)
    assert tick(summary, clock, 1, queued=[1, 2, 3]) == []
    assert tick(summary, clock, 5, queued=[4], dnc=2) == []
    [line] = tick(summary, clock, 10, rescheduled=1)
    assert line == (
        "ticks over the last 10 s: 4 queued, 0 requeued, 2 dnc, 1 rescheduled, 0 no window"
    )
    assert tick(summary, clock, 15) == []
    assert tick(summary, clock, 21) == []  # nothing done: nothing said


def test_a_campaign_that_starts_or_completes_is_said_at_once() -> None:
    clock = Clock()
    summary = TickSummary(10.0, clock=clock)
    lines = tick(summary, clock, 1, campaigns_started=["spring"], campaigns_completed=["winter"])
    assert lines == [
        "campaign spring started",
        "campaign winter completed (nothing left to dial)",
    ]


@pytest.mark.slow
def test_an_idle_worker_says_nothing_each_second(worker_processes, pbx_sim) -> None:
    """`dialer worker` (with the tick) at INFO, no campaign: no line per tick or per beat."""
    worker = worker_processes(
        ami=pbx_sim.server,
        command=[sys.executable, "-m", "dialer", "worker", "--processes", "1"],
        env={"DIALER_LOG_FORMAT": "json"},
    )
    ready_at = len(worker.log().splitlines())
    time.sleep(6.0)  # six ticks
    worker.stop()
    after = worker.log().splitlines()[ready_at:]
    chatter = [line for line in after if "Sending due task" in line or "tick" in line]
    assert chatter == [], after
    # What the dialer's loggers wrote is JSON, one object per line.
    dialer_lines = [line for line in worker.log().splitlines() if line.startswith("{")]
    assert dialer_lines and all(json.loads(line)["level"] for line in dialer_lines)


AMI_SECRET = "ami-S3cr3t-7f2e"
DB_PASSWORD = "db-S3cr3t-9c1a"


def test_no_secret_reaches_a_log_line(
    pbx_sim_factory, settings, session_factory, make_app, caplog, capfd, monkeypatch
) -> None:
    """A campaign dialled at DEBUG with a plain-text AMI login (its secret on the wire) and a
    database URL with a password (trust auth takes it), then `dialer listen` refused with a
    wrong secret: neither secret is in any log line, message or traceback."""
    from click.testing import CliRunner
    from sqlalchemy.engine import make_url

    from dialer.cli import cli
    from dialer.db import make_engine
    from dialer.settings import AmiServer, get_settings
    from tests.support_celery import (
        add_campaign,
        add_contacts,
        add_trunk,
        in_process_worker,
        scalar,
        simulator_numbers,
        wait_until,
    )
    from tests.test_dialing_e2e import running_listener

    caplog.set_level(logging.DEBUG)
    sim = pbx_sim_factory(secret=AMI_SECRET)
    server = AmiServer("default", sim.host, sim.port, sim.username, AMI_SECRET, auth="plain")
    url = make_url(settings.database_url).set(password=DB_PASSWORD)
    database_url = url.render_as_string(hide_password=False)
    app_settings = Settings(
        database_url=database_url,
        broker_url=settings.broker_url,
        log_level="DEBUG",
        ami_servers={"default": server},
    )
    trunk = add_trunk(session_factory, "MC", cps=20, max_channels=50)
    campaign = add_campaign(session_factory, trunk, max_attempts=1)
    add_contacts(session_factory, campaign, simulator_numbers(12))
    listener_engine = make_engine(database_url, service=True, role="dialer listener")
    try:
        with (
            running_listener(listener_engine, server),
            in_process_worker(make_app(app_settings), beat=True),
        ):
            logging.getLogger().setLevel(logging.DEBUG)  # the worker set it to its own
            wait_until(
                lambda: scalar(session_factory, "SELECT status FROM campaigns") == "completed",
                60,
                message="the campaign to complete",
            )
    finally:
        listener_engine.dispose()
    for name, value in {
        "DIALER_DATABASE_URL": database_url,
        "DIALER_AMI_HOST": sim.host,
        "DIALER_AMI_PORT": str(sim.port),
        "DIALER_AMI_USERNAME": sim.username,
        "DIALER_AMI_SECRET": AMI_SECRET + "-wrong",
        "DIALER_AMI_AUTH": "plain",
        "DIALER_LOG_LEVEL": "DEBUG",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        refused = CliRunner().invoke(cli, ["listen"])
    finally:
        get_settings.cache_clear()
    assert refused.exit_code != 0
    # The worker's logging (Celery's, on stderr) and what reached pytest's handler.
    written = capfd.readouterr()
    everything = (
        written.out + written.err + caplog.text + refused.output
        + "".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    )  # fmt: skip
    assert everything.count("DEBUG") > 50  # the dialer's, Celery's, kombu's...
    assert "refused login" in everything, everything[-3000:]
    assert AMI_SECRET not in everything
    assert DB_PASSWORD not in everything
