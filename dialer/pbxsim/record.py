"""`--record FILE`: one JSON line per action received, so tests and benchmarks see what was sent.

Each line is written with a single O_APPEND write, so a concurrent reader sees whole lines (it
should ignore a last line without its newline: that one is still being written).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from dialer.pbxsim.wire import Message, originate_variables

# A login's password never reaches the file.
REDACTED = {"secret", "key"}


def action_record(message: Message, *, session: int) -> dict[str, Any]:
    headers = [
        [name, "***" if name.strip().lower() in REDACTED else value]
        for name, value in message.pairs()
    ]
    return {
        "mono": time.monotonic(),
        "wall": time.time(),
        "session": session,
        "action": message.get("Action"),
        "action_id": message.get("ActionID"),
        "channel": message.get("Channel"),
        "channel_id": message.get("ChannelId"),
        "variables": originate_variables(message),
        "headers": headers,
        "error": message.error,
    }


class ActionRecorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(self, message: Message, *, session: int) -> None:
        if self._fd is None:
            return
        line = json.dumps(action_record(message, session=session), ensure_ascii=True) + "\n"
        os.write(self._fd, line.encode("ascii"))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a record file (a partly written last line is skipped)."""
    try:
        data = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    lines = data.split("\n")
    return [json.loads(line) for line in lines[:-1] if line]
