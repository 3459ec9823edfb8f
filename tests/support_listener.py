"""Helpers for the listener's tests: the shared AMI transcripts and campaign rows.

Transcripts (`tests/data/ami-transcripts`, real Asterisk 22 sessions) are read frame by frame:
`<<< +t RECV` frames are what Asterisk sent, `>>> +t SENT` frames what the client sent.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select, text

from dialer.ami.events import parse_frame
from dialer.models import Campaign, Trunk, TrunkRoute

TRANSCRIPTS = Path(__file__).resolve().parent / "data" / "ami-transcripts"
BASE_TIME = dt.datetime(2026, 11, 23, 0, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Frame:
    direction: str  # RECV or SENT
    offset: float  # seconds since the session started
    headers: dict[str, Any]

    @property
    def at(self) -> dt.datetime:
        return BASE_TIME + dt.timedelta(seconds=self.offset)


def transcript_frames(name: str) -> list[Frame]:
    frames: list[Frame] = []
    lines: list[str] = []
    head: tuple[str, float] | None = None

    def close() -> None:
        if head is not None and any(lines):
            frames.append(Frame(head[0], head[1], parse_frame("\n".join(lines))))

    for line in (TRANSCRIPTS / f"{name}.txt").read_text().splitlines():
        if line.startswith(("<<< ", ">>> ")):
            close()
            parts = line.split()
            head, lines = (parts[2], float(parts[1].lstrip("+").rstrip("s"))), []
        elif line.startswith("###"):
            close()
            head, lines = None, []
        elif head is not None:
            lines.append(line)
    close()
    return frames


def received_events(name: str) -> list[Frame]:
    return [f for f in transcript_frames(name) if f.direction == "RECV" and "Event" in f.headers]


def originate_call_ids(name: str) -> dict[str, str]:
    """ActionID -> the custom_call_id variable, for each Originate the transcript sent."""
    ids: dict[str, str] = {}
    for frame in transcript_frames(name):
        headers = frame.headers
        if frame.direction != "SENT" or headers.get("Action") != "Originate":
            continue
        for line in headers.get("Variable", "").split("\n"):
            var, _, value = line.partition("=")
            if var == "custom_call_id" and "ActionID" in headers:
                ids[headers["ActionID"]] = value
    return ids


# -- rows -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    id: int
    contact_id: int
    custom_call_id: str
    phone: str


def add_campaign(engine: Engine, *, trunk: str = "MC", **fields: Any) -> int:
    """A running campaign (and its trunk, on the default PBX, if new)."""
    with engine.begin() as conn:
        trunk_id = conn.execute(select(Trunk.id).where(Trunk.name == trunk)).scalar()
        if trunk_id is None:
            trunk_id = conn.execute(
                insert(Trunk).values(name=trunk, cps=1000, max_channels=10000).returning(Trunk.id)
            ).scalar_one()
            conn.execute(insert(TrunkRoute).values(trunk_id=trunk_id, pbx="default"))
        count = conn.execute(select(func.count()).select_from(Campaign)).scalar_one()
        values = {
            "name": f"campaign-{count + 1}",
            "caller_id_number": "+15559990000",
            "ivr_file": "welcome_message",
            "ivr_vm_file": "vm_message",
            "transfer_number": "+15551234567",
            "status": "running",
            **fields,
        }
        return conn.execute(
            insert(Campaign).values(trunk_id=trunk_id, **values).returning(Campaign.id)
        ).scalar_one()


def add_attempts(
    engine: Engine, campaign_id: int, phones: list[str], *, status: str = "originating"
) -> list[Attempt]:
    """One dialing contact and one open attempt per phone, as the dispatcher leaves them."""
    out: list[Attempt] = []
    epoch_ms = int(time.time() * 1000)
    with engine.begin() as conn:
        trunk_id = conn.execute(
            text("SELECT trunk_id FROM campaigns WHERE id = :id"), {"id": campaign_id}
        ).scalar_one()
        for phone in phones:
            contact_id = conn.execute(
                text(
                    "INSERT INTO contacts (campaign_id, phone_e164, phone_raw, status, attempts) "
                    "VALUES (:c, :p, :p, 'dialing', 1) RETURNING id"
                ),
                {"c": campaign_id, "p": phone},
            ).scalar_one()
            attempt_id = conn.execute(
                text("SELECT nextval(pg_get_serial_sequence('call_attempts', 'id'))")
            ).scalar_one()
            call_id = f"{epoch_ms}_{attempt_id}"
            conn.execute(
                text(
                    "INSERT INTO call_attempts (id, custom_call_id, campaign_id, contact_id, "
                    "trunk_id, attempt_number, status, sent_at) OVERRIDING SYSTEM VALUE "
                    "VALUES (:id, :cid, :c, :k, :t, 1, :s, now())"
                ),
                {
                    "id": attempt_id,
                    "cid": call_id,
                    "c": campaign_id,
                    "k": contact_id,
                    "t": trunk_id,
                    "s": status,
                },
            )
            out.append(Attempt(attempt_id, contact_id, call_id, phone))
    return out


def fetch(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params))


def wait_for(
    condition: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)
