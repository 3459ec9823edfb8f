"""AMI frame parsing rate: the adapter's `parse_frame` against panoramisk's `Message.from_line`.

Frames are every event Asterisk sent in the recorded sessions (tests/data/ami-transcripts), parsed
over and over in one process; printed: frames/s for each parser on one core.

Example:
    .venv/bin/python bench/parse_frames.py
    .venv/bin/python bench/parse_frames.py --seconds 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panoramisk.message import Message  # noqa: E402

from dialer.ami.client import parse_frame  # noqa: E402
from tests.support_listener import received_events  # noqa: E402

TRANSCRIPTS = sorted((ROOT / "tests" / "data" / "ami-transcripts").glob("*.txt"))


def encode(headers: dict) -> bytes:
    """The frame as Asterisk sent it (channel variables as repeated headers)."""
    lines = []
    for name, value in headers.items():
        if isinstance(value, dict):
            lines += [f"{name}: {k}={v}" for k, v in value.items()]
        else:
            lines += [f"{name}: {line}" for line in str(value).split("\n")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def rate(parse, frames: list[bytes], seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for frame in frames:
            parse(frame)
        done += len(frames)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per parser")
    args = parser.parse_args()
    frames = [
        encode(event.headers)
        for path in TRANSCRIPTS
        if not path.name.startswith("login")
        for event in received_events(path.stem)
    ]
    size = sum(map(len, frames)) / len(frames)
    print(f"{len(frames)} frames from {len(TRANSCRIPTS)} transcripts, {size:.0f} bytes on average")
    ours = rate(parse_frame, frames, args.seconds)
    theirs = rate(lambda raw: Message.from_line(raw.decode().strip("\r\n")), frames, args.seconds)
    print(f"dialer.ami.client.parse_frame:           {ours:,.0f} frames/s")
    print(f"panoramisk Message.from_line:     {theirs:,.0f} frames/s (headers only, no folding)")


if __name__ == "__main__":
    main()
