"""The README's commands, the CI entry point and docker-compose.yml are real and consistent."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_has_exactly_two_setup_commands_and_they_exist() -> None:
    commands = _quickstart_commands()
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for command in commands:
        target = command.split()[1]
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no `{target}` target"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "set -Eeuo pipefail" in ci


def test_readme_documents_every_setting() -> None:
    settings_source = (ROOT / "dialer" / "settings.py").read_text()
    for name in sorted(set(re.findall(r'"(DIALER_[A-Z_]+)"', settings_source))):
        assert f"`{name}`" in README, f"{name} is read by the settings but not documented"


def test_compose_services_and_settings() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    for service in ("postgres", "redis", "migrate", "worker", "beat", "listener", "pbx-sim"):
        assert re.search(rf"^  {service}:", compose, re.M), f"docker-compose.yml lacks {service}"
    for name in re.findall(r"`(DIALER_[A-Z_]+)`", README.split("## Configuration", 1)[1]):
        assert name in compose


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
