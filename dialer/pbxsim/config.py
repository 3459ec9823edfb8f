"""The simulator's options, validated once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dialer.pbxsim.behaviour import Timings
from dialer.pbxsim.dialplan import Dialplan


class ConfigError(ValueError):
    """An option is out of range; the message names it."""


@dataclass(frozen=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 5038  # 0: any free port (see PbxSimulator.port once started)
    username: str = "dialer"
    secret: str = field(default="dialerpass", repr=False)
    speed: float = 1.0  # every duration, the Originate Timeout included, is divided by this
    record: Path | None = None  # append one JSON line per action received
    max_channels: int | None = None  # concurrent originated calls; beyond: Reason 0, cause 34
    queues: tuple[str, ...] = ("support",)
    # manager.conf `channelvars`: shown as `ChanVariable: name=value` on channel events.
    channelvars: tuple[str, ...] = ("custom_call_id", "CUSTOM_CALL_ID")
    # PJSIP endpoints (trunks) that exist; None accepts any endpoint name.
    endpoints: frozenset[str] | None = None
    dialplan: Dialplan = field(default_factory=Dialplan)
    varset_events: bool = False  # VarSet for each Originate variable (Asterisk sends them)
    # manager.conf `write` of the user: the privileges it may send actions with (`call`,
    # `reporting`...; `all` is every one). None: everything, as before. An action none of whose
    # privileges the user has is answered `Permission denied` (manager.c process_message).
    write: frozenset[str] | None = None
    timings: Timings = field(default_factory=Timings)  # at speed 1

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ConfigError(f"speed must be greater than 0, got {self.speed}")
        if self.max_channels is not None and self.max_channels < 0:
            raise ConfigError(f"max_channels must be 0 or more, got {self.max_channels}")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if not self.username:
            raise ConfigError("username must not be empty")
        for name in self.queues:
            if not name or any(ch in name for ch in "\r\n,"):
                raise ConfigError(f"queue name {name!r} is not usable")
        if self.write is not None:
            unknown = {p for p in self.write if p != p.strip().lower() or not p.isalpha()}
            if unknown:
                raise ConfigError(f"write privileges must be lower-case words, got {unknown}")

    @property
    def scaled_timings(self) -> Timings:
        return self.timings.scaled(self.speed)
