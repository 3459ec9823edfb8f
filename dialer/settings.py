"""Settings, read from the environment once.

Every command and process reads the same variable names (see README, "Configuration").
Nothing here connects to anything.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/dialer"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PBX = "default"
_BROKER_PREFIX = re.compile(r"[A-Za-z0-9._:-]{1,100}")


class SettingsError(ValueError):
    """A setting from the environment is malformed; the message names the variable."""


@dataclass(frozen=True)
class AmiServer:
    """How to reach one Asterisk server's Manager Interface. A trunk names its PBX."""

    name: str
    host: str
    port: int
    username: str
    # repr=False: the secret must never reach a log line or a traceback's locals dump.
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    log_level: str = "INFO"
    # Namespace for every Celery key on the broker: several deployments can share one Redis.
    broker_prefix: str | None = None
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
        port_text = env.get("DIALER_AMI_PORT", "5038")
        try:
            port = int(port_text)
        except ValueError:
            raise SettingsError(f"DIALER_AMI_PORT: not a port number: {port_text!r}") from None
        if not 0 < port < 65536:
            raise SettingsError(f"DIALER_AMI_PORT: out of range: {port}")
        default = AmiServer(
            name=DEFAULT_PBX,
            host=env.get("DIALER_AMI_HOST", "127.0.0.1"),
            port=port,
            username=env.get("DIALER_AMI_USERNAME", "dialer"),
            secret=env.get("DIALER_AMI_SECRET", "dialerpass"),
        )
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
            ami_servers={DEFAULT_PBX: default},
        )


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
