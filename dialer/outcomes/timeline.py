"""What the dialer did to a call, as rows of its timeline (`call_events`), and the recording
the listener starts on answer: event names, the document shape, the file name, the action.

Live call control (`dialer.control`) writes these too; they live here, below it, because the
listener records what it did itself (a campaign's recording) the same way.
"""

from __future__ import annotations

import re
from typing import Any

TRANSFER_EVENT = "ControlTransfer"
RECORDING_EVENT = "ControlRecording"
HANGUP_EVENT = "ControlHangup"


def timeline_event(name: str, **fields: Any) -> dict[str, Any]:
    """A `call_events.data` document for something the dialer did to a call: flat string
    values, `Event` first (as the listener stores AMI events)."""
    data: dict[str, Any] = {"Event": name}
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = "; ".join(str(v) for v in value)
        data[key] = value if isinstance(value, str) else str(value)
    return data


def recording_file(base_id: str) -> str:
    """The recording's file name, from the call id (the dialplan's RECORDING_FILE too)."""
    safe = re.sub(r"[^0-9A-Za-z_.-]", "_", base_id)
    return f"{safe}.wav"


def mixmonitor_headers(channel: str, file_name: str) -> list[tuple[str, str]]:
    # `a`: append, so that recording again after a stop continues the same file.
    return [("Action", "MixMonitor"), ("Channel", channel), ("File", file_name), ("Options", "a")]
