"""The simulator's options, validated once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dialer.pbxsim.behaviour import Timings
from dialer.pbxsim.capacity import DEFAULT_MAX_WAIT, check_limits
from dialer.pbxsim.dialplan import Dialplan

if TYPE_CHECKING:
    from dialer.pbxsim.agents import AgentModel


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
    # What the PBX sustains (dialer.pbxsim.capacity): Originates placed per second, and
    # concurrent calls. None: unlimited. Past them calls start late, then Originates are refused
    # (Reason 0, cause 34); capacity_wait is the longest wait (seconds) before refusing.
    capacity_cps: float | None = None
    capacity_channels: int | None = None
    capacity_wait: float = DEFAULT_MAX_WAIT
    # manager.conf `tlsenable`: serve TLS with this certificate (PEM, the chain) and key.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # How queue agents and waiting callees behave (dialer.pbxsim.agents); None: members behave
    # by their number's last two digits and callees wait in a queue until they hang up.
    agents: AgentModel | None = None
    # Members PJSIP/agent1..N ("Agent 1"...) in every queue from the start; their endpoints
    # exist even when `endpoints` lists the trunks.
    agent_count: int = 0

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
        try:
            check_limits(self.capacity_cps, self.capacity_channels, self.capacity_wait)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key go together: give both, or neither")
        for name, path in (("tls_cert", self.tls_cert), ("tls_key", self.tls_key)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name}: no file at {str(path)!r}")
        if isinstance(self.agent_count, bool) or not isinstance(self.agent_count, int):
            raise ConfigError(f"agent_count must be an integer, got {self.agent_count!r}")
        if self.agent_count < 0:
            raise ConfigError(f"agent_count must be 0 or more, got {self.agent_count}")
        if self.write is not None:
            unknown = {p for p in self.write if p != p.strip().lower() or not p.isalpha()}
            if unknown:
                raise ConfigError(f"write privileges must be lower-case words, got {unknown}")

    @property
    def scaled_timings(self) -> Timings:
        return self.timings.scaled(self.speed)
