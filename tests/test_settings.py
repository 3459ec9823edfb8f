"""Settings come from the environment, are validated, and never leak the AMI secret."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dialer.settings import (
    DEFAULT_DATABASE_URL,
    AmiServer,
    Settings,
    SettingsError,
    pbx_variable,
    redact_url,
)


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


# -- several PBXs ---------------------------------------------------------------------------------

SECRET = "s3cr3t-pbx-value"


def pbx_env(**extra: str) -> dict[str, str]:
    return {
        "DIALER_PBXS": "east,west-2",
        "DIALER_PBX_EAST_HOST": "10.0.0.1",
        "DIALER_PBX_EAST_SECRET": SECRET,
        "DIALER_PBX_WEST_2_HOST": "pbx-west.example",
        "DIALER_PBX_WEST_2_SECRET": SECRET,
        **extra,
    }


def test_named_pbxs_and_their_defaults() -> None:
    s = Settings.from_env(pbx_env(DIALER_PBX_WEST_2_TLS="true", DIALER_PBX_WEST_2_USERNAME="w"))
    assert list(s.ami_servers) == ["default", "east", "west-2"]
    east, west = s.ami_for("east"), s.ami_for("west-2")
    assert (east.name, east.host, east.port, east.username, east.secret) == (
        "east", "10.0.0.1", 5038, "dialer", SECRET,
    )  # fmt: skip
    # Without TLS the secret never crosses the network: MD5 challenge by default.
    assert (east.tls, east.tls_ca, east.tls_verify, east.auth) == (False, None, True, "md5")
    # Over TLS: port 5039, certificate and host name verified, plain Login.
    assert (west.host, west.port, west.username) == ("pbx-west.example", 5039, "w")
    assert (west.tls, west.tls_ca, west.tls_verify, west.auth) == (True, None, True, "plain")
    assert s.ami.auth == "md5" and not s.ami.tls


def test_default_pbx_takes_tls_and_auth_too(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    s = Settings.from_env(
        {
            "DIALER_AMI_TLS": "TRUE",
            "DIALER_AMI_TLS_CA": str(ca),
            "DIALER_AMI_TLS_VERIFY": "false",
            "DIALER_AMI_AUTH": "MD5",
        }
    )
    assert (s.ami.port, s.ami.tls, s.ami.tls_ca, s.ami.tls_verify, s.ami.auth) == (
        5039, True, str(ca), False, "md5",
    )  # fmt: skip
    explicit = Settings.from_env({"DIALER_AMI_TLS": "1", "DIALER_AMI_PORT": "6000"}).ami
    assert (explicit.port, explicit.auth) == (6000, "plain")
    assert Settings.from_env({"DIALER_AMI_AUTH": "plain"}).ami.auth == "plain"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DIALER_PBXS": "East"}, "DIALER_PBXS"),
        ({"DIALER_PBXS": "9east"}, "DIALER_PBXS"),
        ({"DIALER_PBXS": "east,,west"}, "DIALER_PBXS"),
        ({"DIALER_PBXS": "a" * 32}, "DIALER_PBXS"),
        ({"DIALER_PBXS": "default"}, "DIALER_PBXS"),
        ({"DIALER_PBXS": "east,west-2,east"}, "DIALER_PBXS"),
        # Both would read DIALER_PBX_WEST_2_*.
        ({"DIALER_PBXS": "west-2,west_2"}, "DIALER_PBXS"),
        ({"DIALER_PBX_EAST_HOST": ""}, "DIALER_PBX_EAST_HOST"),
        ({"DIALER_PBX_EAST_SECRET": ""}, "DIALER_PBX_EAST_SECRET"),
        ({"DIALER_PBX_EAST_PORT": "5o38"}, "DIALER_PBX_EAST_PORT"),
        ({"DIALER_PBX_EAST_PORT": "0"}, "DIALER_PBX_EAST_PORT"),
        ({"DIALER_PBX_EAST_PORT": "65536"}, "DIALER_PBX_EAST_PORT"),
        ({"DIALER_PBX_EAST_TLS": "maybe"}, "DIALER_PBX_EAST_TLS"),
        ({"DIALER_PBX_EAST_AUTH": "sha1"}, "DIALER_PBX_EAST_AUTH"),
        (
            {"DIALER_PBX_EAST_TLS": "yes", "DIALER_PBX_EAST_TLS_VERIFY": "sometimes"},
            "DIALER_PBX_EAST_TLS_VERIFY",
        ),  # fmt: skip
        (
            {"DIALER_PBX_EAST_TLS": "on", "DIALER_PBX_EAST_TLS_CA": "/nonexistent/ca.pem"},
            "DIALER_PBX_EAST_TLS_CA",
        ),  # fmt: skip
        # Meaningless without TLS: the operator believes the connection is encrypted.
        ({"DIALER_PBX_EAST_TLS_VERIFY": "false"}, "DIALER_PBX_EAST_TLS_VERIFY"),
        ({"DIALER_AMI_TLS_CA": "/etc/hosts"}, "DIALER_AMI_TLS_CA"),
        ({"DIALER_AMI_TLS": "2"}, "DIALER_AMI_TLS"),
        ({"DIALER_AMI_AUTH": "none"}, "DIALER_AMI_AUTH"),
        # A PBX that is not listed, and a setting no PBX has.
        ({"DIALER_PBX_NORTH_HOST": "10.0.0.9"}, "DIALER_PBX_NORTH_HOST"),
        ({"DIALER_PBX_NORTH_SECRET": SECRET}, "DIALER_PBX_NORTH_SECRET"),
        ({"DIALER_PBX_EAST_HOSTNAME": "x"}, "DIALER_PBX_EAST_HOSTNAME"),
    ],
)
def test_bad_pbx_settings_name_the_variable_and_never_the_secret(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(pbx_env(**env))
    assert variable in str(raised.value)
    assert SECRET not in str(raised.value)


def test_a_pbx_variable_for_an_unlisted_name_says_so() -> None:
    with pytest.raises(SettingsError, match=r"DIALER_PBX_NORTH_TLS_CA: no PBX 'north'"):
        Settings.from_env(pbx_env(DIALER_PBX_NORTH_TLS_CA="/x"))
    # Without DIALER_PBXS no DIALER_PBX_* variable is valid.
    with pytest.raises(SettingsError, match="DIALER_PBX_EAST_HOST"):
        Settings.from_env({"DIALER_PBX_EAST_HOST": "10.0.0.1"})


def test_pbx_secrets_never_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.from_env(pbx_env(DIALER_AMI_SECRET=SECRET + "-default"))
    assert s.ami_for("east").secret == SECRET
    assert SECRET not in repr(s)
    assert all(SECRET not in repr(server) for server in s.ami_servers.values())
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings %s %r", s, s.ami_servers)
    assert SECRET not in caplog.text
    with pytest.raises(SettingsError) as raised:
        s.ami_for("north")
    assert "east" in str(raised.value) and SECRET not in str(raised.value)


def test_pbx_variable_names() -> None:
    assert pbx_variable("default", "SECRET") == "DIALER_AMI_SECRET"
    assert pbx_variable("west-2", "TLS_CA") == "DIALER_PBX_WEST_2_TLS_CA"


def test_ami_server_refuses_an_unknown_auth() -> None:
    with pytest.raises(ValueError, match="auth"):
        AmiServer("x", "h", 1, "u", "s", auth="ntlm")
