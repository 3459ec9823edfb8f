"""Policy, no I/O: how a queue's agents and its waiting callees behave (`AgentModel`).

Means are seconds at speed 1; the engine divides each draw by the speed like a `Timings` value.
Each kind of value has its own random stream derived from the seed, so the talk time of the
n-th answered call does not depend on how many callees gave up before it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from dialer.pbxsim.config import ConfigError

# Coefficients of variation: handle times are skewed but rarely extreme; patience spreads more.
HANDLING_CV = 0.5
PATIENCE_CV = 0.6


@dataclass(frozen=True)
class AgentModel:
    answer: float = 2.0  # an agent answers this long after being rung
    talk: float = 60.0  # handle time, answer to the agent hanging up
    wrapup: float = 5.0  # after-call work before the agent takes another call
    patience: float | None = None  # a callee waiting in a queue hangs up after this; None: never
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("answer", "talk", "wrapup", "patience"):
            value = getattr(self, name)
            if value is None and name == "patience":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"agents.{name} must be a number of seconds, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"agents.{name} must be 0 or more seconds, got {value}")
        if self.talk <= 0:
            raise ConfigError(f"agents.talk must be more than 0 seconds, got {self.talk}")
        if self.patience is not None and self.patience <= 0:
            raise ConfigError(f"agents.patience must be more than 0 seconds, got {self.patience}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"agents.seed must be an integer, got {self.seed!r}")

    def draws(self) -> AgentDraws:
        """A fresh, reproducible sequence of draws for this model."""
        return AgentDraws(self)


class AgentDraws:
    def __init__(self, model: AgentModel) -> None:
        self.model = model
        self._streams = {
            kind: random.Random(f"{model.seed}/{kind}")
            for kind in ("answer", "talk", "wrapup", "patience")
        }

    def _draw(self, kind: str, mean: float, cv: float) -> float:
        if mean <= 0:
            return 0.0
        sigma2 = math.log1p(cv * cv)
        return self._streams[kind].lognormvariate(math.log(mean) - sigma2 / 2, math.sqrt(sigma2))

    def answer(self) -> float:
        return self._draw("answer", self.model.answer, HANDLING_CV)

    def talk(self) -> float:
        return self._draw("talk", self.model.talk, HANDLING_CV)

    def wrapup(self) -> float:
        return self._draw("wrapup", self.model.wrapup, HANDLING_CV)

    def patience(self) -> float | None:
        if self.model.patience is None:
            return None
        return self._draw("patience", self.model.patience, PATIENCE_CV)


def agent_interfaces(count: int) -> list[tuple[str, str]]:
    """(interface, member name) of the `count` agents a simulator starts with."""
    return [(f"PJSIP/agent{k}", f"Agent {k}") for k in range(1, count + 1)]


def cli_args(model: AgentModel | None, agents: int = 0) -> list[str]:
    """The `dialer pbx-sim` options that start a simulator with this model and these agents."""
    args = ["--agents", str(agents)] if agents else []
    if model is not None:
        args += [
            "--agent-answer", repr(float(model.answer)),
            "--agent-talk", repr(float(model.talk)),
            "--agent-wrapup", repr(float(model.wrapup)),
            "--agent-seed", str(model.seed),
        ]  # fmt: skip
        if model.patience is not None:
            args += ["--caller-patience", repr(float(model.patience))]
    return args
