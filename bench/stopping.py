"""Benchmarks end their run on SIGTERM as on Ctrl-C: their `finally` blocks drop the run's
database and broker keys and stop the processes they started.

Python's default SIGTERM kills the process without unwinding, and a benchmark started in the
background (`nohup ... &`) ignores SIGINT, so without this a stopped run leaves all of that
behind.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def exit_on_sigterm() -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
