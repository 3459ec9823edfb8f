"""Settings, read from the environment once.

Every command and process reads the same variable names (see README, "Configuration").
Nothing here connects to anything.

PBXs (Asterisk servers, each reached through its AMI): the default one is described by
`DIALER_AMI_*`; others are listed by name in `DIALER_PBXS` (`east,west`) and each described by
`DIALER_PBX_<NAME>_*` (the name upper-cased, `-` as `_`). Per PBX: `HOST`, `PORT`, `USERNAME`,
`SECRET`, `TLS`, `TLS_CA`, `TLS_VERIFY`, `AUTH`. A setting that is malformed, missing or meant
for a PBX that is not listed stops start-up with a `SettingsError` naming the variable; a
secret is never part of a message or a repr.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/dialer"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PBX = "default"
AMI_PORT = 5038
AMI_TLS_PORT = 5039  # manager.conf `tlsbindaddr`'s customary port
# `md5`: Action Challenge, then Login with Key = md5(challenge + secret): the secret never
# crosses the network. `plain`: Login with Secret (only over TLS by default).
AUTH_MD5 = "md5"
AUTH_PLAIN = "plain"
AUTH_TYPES = (AUTH_MD5, AUTH_PLAIN)
PBX_NAME = re.compile(r"[a-z][a-z0-9_-]{0,30}")
PBX_LIST_VARIABLE = "DIALER_PBXS"
_PBX_PREFIX = "DIALER_PBX_"
# Longest first: `_TLS_CA` must not be taken for a name ending in `_TLS` plus `_CA`.
_PBX_SUFFIXES = ("TLS_VERIFY", "USERNAME", "TLS_CA", "SECRET", "AUTH", "HOST", "PORT", "TLS")
_BROKER_PREFIX = re.compile(r"[A-Za-z0-9._:-]{1,100}")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class SettingsError(ValueError):
    """A setting from the environment is malformed; the message names the variable."""


@dataclass(frozen=True)
class AmiServer:
    """How to reach one Asterisk server's Manager Interface. A trunk names its PBX.

    tls: connect over TLS (manager.conf `tlsenable`); tls_ca: the CA file the server's
    certificate must chain to (None: the system's CAs); tls_verify: check the certificate and
    the host name (False only on purpose: the connection is then encrypted but not
    authenticated). auth: `md5` (Challenge, then Login with Key: the secret is never sent) or
    `plain` (Login with Secret). Built directly the defaults are those of a plain Login over
    TCP; from the environment (`Settings.from_env`) `md5` is the default without TLS.
    """

    name: str
    host: str
    port: int
    username: str
    # repr=False: the secret must never reach a log line or a traceback's locals dump.
    secret: str = field(repr=False)
    tls: bool = False
    tls_ca: str | None = None
    tls_verify: bool = True
    auth: str = AUTH_PLAIN

    def __post_init__(self) -> None:
        if self.auth not in AUTH_TYPES:
            raise ValueError(
                f"AMI {self.name}: auth must be one of {AUTH_TYPES}, not {self.auth!r}"
            )

    @property
    def address(self) -> str:
        """`host:port`, and `(TLS)` when it is: for log lines and error messages."""
        return f"{self.host}:{self.port}" + (" (TLS)" if self.tls else "")


def pbx_variable(pbx: str, setting: str) -> str:
    """The environment variable of one setting of a PBX: `DIALER_AMI_SECRET` for the default
    PBX, `DIALER_PBX_EAST_SECRET` for `east` (`setting` is HOST, PORT, SECRET, TLS_CA...)."""
    if pbx == DEFAULT_PBX:
        return f"DIALER_AMI_{setting}"
    return f"{_PBX_PREFIX}{pbx.upper().replace('-', '_')}_{setting}"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    log_level: str = "INFO"
    # "text" (for people) or "json" (one object per line, for log shippers): dialer.logs.
    log_format: str = "text"
    # Where `dialer worker` and `dialer listen` serve Prometheus metrics (dialer.metrics);
    # None: not served.
    worker_metrics_port: int | None = None
    listener_metrics_port: int | None = None
    # Namespace for every Celery key on the broker: several deployments can share one Redis.
    broker_prefix: str | None = None
    # name -> server; `default` (DIALER_AMI_*) is always there when read from the environment.
    ami_servers: Mapping[str, AmiServer] = field(default_factory=dict)

    @property
    def ami(self) -> AmiServer:
        """The default PBX (the one `DIALER_AMI_*` describes)."""
        return self.ami_servers[DEFAULT_PBX]

    def ami_for(self, pbx: str) -> AmiServer:
        try:
            return self.ami_servers[pbx]
        except KeyError:
            raise SettingsError(
                f"no AMI server configured for PBX {pbx!r}; known: {sorted(self.ami_servers)}"
            ) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        database_url = env.get("DIALER_DATABASE_URL", DEFAULT_DATABASE_URL)
        if not database_url.startswith("postgresql+psycopg://"):
            raise SettingsError(
                "DIALER_DATABASE_URL must use the postgresql+psycopg:// form "
                "(psycopg 3), e.g. postgresql+psycopg://user@host:5432/dialer"
            )
        log_level = env.get("DIALER_LOG_LEVEL", "INFO").upper()
        if log_level not in logging.getLevelNamesMapping():
            raise SettingsError(f"DIALER_LOG_LEVEL: unknown level {log_level!r}")
        log_format = env.get("DIALER_LOG_FORMAT", "text").lower()
        if log_format not in ("text", "json"):
            raise SettingsError(f"DIALER_LOG_FORMAT: {log_format!r} is not text or json")
        metrics_ports = {
            name: _port_or_none(env, name)
            for name in ("DIALER_WORKER_METRICS_PORT", "DIALER_LISTENER_METRICS_PORT")
        }
        broker_prefix = env.get("DIALER_BROKER_PREFIX") or None
        if broker_prefix is not None and not _BROKER_PREFIX.fullmatch(broker_prefix):
            raise SettingsError(
                f"DIALER_BROKER_PREFIX: {broker_prefix!r} is not a key prefix "
                "(letters, digits and . _ : - only)"
            )
        return cls(
            database_url=database_url,
            broker_url=env.get("DIALER_BROKER_URL", DEFAULT_BROKER_URL),
            broker_prefix=broker_prefix,
            log_level=log_level,
            log_format=log_format,
            worker_metrics_port=metrics_ports["DIALER_WORKER_METRICS_PORT"],
            listener_metrics_port=metrics_ports["DIALER_LISTENER_METRICS_PORT"],
            ami_servers=ami_servers_from_env(env),
        )


def ami_servers_from_env(env: Mapping[str, str]) -> dict[str, AmiServer]:
    """Every configured PBX by name, `default` first (see the module doc)."""
    servers = {DEFAULT_PBX: _server_from_env(env, DEFAULT_PBX)}
    names = _pbx_names(env)
    expected = {pbx_variable(n, s) for n in names for s in _PBX_SUFFIXES}
    for variable in sorted(env):
        # An empty one is unset (compose's ${X:-}), as for every optional setting.
        if variable.startswith(_PBX_PREFIX) and variable not in expected and env[variable]:
            raise SettingsError(_stray_variable(variable, names))
    for name in names:
        servers[name] = _server_from_env(env, name)
    return servers


def _pbx_names(env: Mapping[str, str]) -> list[str]:
    text = env.get(PBX_LIST_VARIABLE, "").strip()
    if not text:
        return []
    names: list[str] = []
    prefixes: dict[str, str] = {}
    for item in text.split(","):
        name = item.strip()
        if not PBX_NAME.fullmatch(name):
            raise SettingsError(
                f"{PBX_LIST_VARIABLE}: {name!r} is not a PBX name (a lower-case letter, then up "
                "to 30 lower-case letters, digits, _ or -; names are separated by commas)"
            )
        if name == DEFAULT_PBX:
            raise SettingsError(
                f"{PBX_LIST_VARIABLE}: 'default' is the PBX of DIALER_AMI_*; do not list it"
            )
        if name in names:
            raise SettingsError(f"{PBX_LIST_VARIABLE}: {name!r} is listed twice")
        prefix = pbx_variable(name, "")
        if prefix in prefixes:
            raise SettingsError(
                f"{PBX_LIST_VARIABLE}: {prefixes[prefix]!r} and {name!r} would share the "
                f"variables {prefix}*; rename one"
            )
        prefixes[prefix] = name
        names.append(name)
    return names


def _stray_variable(variable: str, names: list[str]) -> str:
    rest = variable[len(_PBX_PREFIX) :]
    for suffix in _PBX_SUFFIXES:
        if rest.endswith(f"_{suffix}") and len(rest) > len(suffix) + 1:
            pbx = rest[: -len(suffix) - 1].lower()
            return (
                f"{variable}: no PBX {pbx!r} in {PBX_LIST_VARIABLE} "
                f"(listed: {', '.join(names) or 'none'}); add it there or remove the variable"
            )
    return (
        f"{variable}: not a PBX setting (DIALER_PBX_<NAME>_ followed by "
        f"{', '.join(sorted(_PBX_SUFFIXES))})"
    )


def _server_from_env(env: Mapping[str, str], pbx: str) -> AmiServer:
    default = pbx == DEFAULT_PBX

    def var(setting: str) -> str:
        return pbx_variable(pbx, setting)

    def value(setting: str) -> str | None:
        text = env.get(var(setting))
        return text.strip() if text is not None and text.strip() else None

    tls = _flag(var("TLS"), value("TLS"), default=False)
    host = value("HOST")
    if host is None:
        if not default:
            raise SettingsError(f"{var('HOST')}: PBX {pbx!r} needs a host")
        host = "127.0.0.1"
    port = _port(var("PORT"), value("PORT"), AMI_TLS_PORT if tls else AMI_PORT)
    username = value("USERNAME") or "dialer"
    # The secret is taken as it is (spaces included) and never shown.
    secret = env.get(var("SECRET"))
    if not secret:
        if not default:
            raise SettingsError(f"{var('SECRET')}: PBX {pbx!r} needs the AMI user's secret")
        secret = "dialerpass" if secret is None else secret
    tls_ca = value("TLS_CA")
    verify_text = value("TLS_VERIFY")
    if not tls:
        for setting, given in (("TLS_CA", tls_ca), ("TLS_VERIFY", verify_text)):
            if given is not None:
                raise SettingsError(f"{var(setting)}: only meaningful with {var('TLS')}=true")
    tls_verify = _flag(var("TLS_VERIFY"), verify_text, default=True)
    if tls_ca is not None:
        path = Path(tls_ca).expanduser()
        if not path.is_file():
            raise SettingsError(f"{var('TLS_CA')}: no CA file at {tls_ca!r}")
        tls_ca = str(path)
    auth_text = value("AUTH")
    auth = auth_text.lower() if auth_text else (AUTH_PLAIN if tls else AUTH_MD5)
    if auth not in AUTH_TYPES:
        raise SettingsError(
            f"{var('AUTH')}: unknown authentication {auth_text!r} "
            "(md5: challenge and response, the secret never sent; plain: the secret sent)"
        )
    return AmiServer(
        name=pbx,
        host=host,
        port=port,
        username=username,
        secret=secret,
        tls=tls,
        tls_ca=tls_ca,
        tls_verify=tls_verify,
        auth=auth,
    )


def _flag(variable: str, text: str | None, *, default: bool) -> bool:
    if text is None:
        return default
    word = text.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise SettingsError(f"{variable}: {text!r} is neither true nor false")


def _port(variable: str, text: str | None, default: int) -> int:
    if text is None:
        return default
    if not re.fullmatch(r"[0-9]{1,5}", text):
        raise SettingsError(f"{variable}: not a port number: {text!r}")
    port = int(text)
    if not 0 < port < 65536:
        raise SettingsError(f"{variable}: out of range: {port}")
    return port


def _port_or_none(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise SettingsError(f"{name}: {value!r} is not a TCP port (1-65535)")
    return int(value)


@cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()


def redact_url(url: str) -> str:
    """A URL safe to log: any password replaced by ***."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"
