"""Settings come from the environment, are validated, and never leak the AMI secret."""

from __future__ import annotations

import logging

import pytest

from dialer.settings import DEFAULT_DATABASE_URL, Settings, SettingsError, redact_url


def test_defaults_work_on_the_local_machine() -> None:
    s = Settings.from_env({})
    assert s.database_url == DEFAULT_DATABASE_URL
    assert s.broker_url.startswith("redis://127.0.0.1:6379")
    assert (s.ami.host, s.ami.port) == ("127.0.0.1", 5038)


def test_secret_not_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.from_env({"DIALER_AMI_SECRET": "s3cr3t-value"})
    assert s.ami.secret == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(s)
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings %s %r", s, s.ami)
    assert "s3cr3t-value" not in caplog.text


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"DIALER_DATABASE_URL": "postgresql://x@h/db"}, "DIALER_DATABASE_URL"),
        ({"DIALER_AMI_PORT": "five"}, "DIALER_AMI_PORT"),
        ({"DIALER_AMI_PORT": "70000"}, "DIALER_AMI_PORT"),
        ({"DIALER_LOG_LEVEL": "LOUD"}, "DIALER_LOG_LEVEL"),
        ({"DIALER_BROKER_PREFIX": "has space"}, "DIALER_BROKER_PREFIX"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(SettingsError, match=field):
        Settings.from_env(env)


def test_broker_prefix_reaches_the_celery_transport() -> None:
    from dialer.dialing.celery_app import WorkerOptions, celery_config

    settings = Settings.from_env({"DIALER_BROKER_PREFIX": "site-a:"})
    assert settings.broker_prefix == "site-a:"
    transport = celery_config(settings, WorkerOptions())["broker_transport_options"]
    assert transport["global_keyprefix"] == "site-a:"
    # An explicit worker option wins (tests and benchmarks isolate themselves this way).
    transport = celery_config(settings, WorkerOptions(broker_key_prefix="run-1:"))[
        "broker_transport_options"
    ]
    assert transport["global_keyprefix"] == "run-1:"
    assert (
        "global_keyprefix"
        not in celery_config(Settings.from_env({}), WorkerOptions())["broker_transport_options"]
    )


def test_unknown_pbx_is_a_clear_error() -> None:
    with pytest.raises(SettingsError, match="lab"):
        Settings.from_env({}).ami_for("lab")


def test_redact_url_hides_password() -> None:
    assert "hunter2" not in redact_url("postgresql+psycopg://u:hunter2@h/db")


@pytest.mark.parametrize(
    ("level", "quiet"), [("INFO", True), (logging.WARNING, True), ("DEBUG", False)]
)
def test_per_task_log_lines_are_silenced_unless_debugging(level: int | str, quiet: bool) -> None:
    from dialer.dialing.celery_app import _quiet_per_task_logs

    names = ("celery.worker.strategy", "celery.app.trace")
    before = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.NOTSET)
        _quiet_per_task_logs(loglevel=level)
        expected = logging.WARNING if quiet else logging.NOTSET
        assert [logging.getLogger(n).level for n in names] == [expected, expected]
    finally:
        for n, value in before.items():
            logging.getLogger(n).setLevel(value)
