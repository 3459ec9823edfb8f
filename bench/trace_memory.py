"""Where a long-running dialer process's memory goes: run a `dialer` command under tracemalloc,
saving a snapshot of its live allocations every `--every` seconds; compare two snapshots.

tracemalloc sees what Python allocates (objects, buffers made by Python code), not what C
libraries allocate on their own (libpq's buffers) nor the allocator's fragmentation: growth in
RSS that no snapshot shows lies there.

Example:
    .venv/bin/python bench/trace_memory.py run --every 300 --out /tmp/snaps -- listen
    .venv/bin/python bench/trace_memory.py diff /tmp/snaps/001.snap /tmp/snaps/004.snap
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import tracemalloc
from pathlib import Path

TOP = 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run a dialer command, saving snapshots")
    run_parser.add_argument("--every", type=float, default=300.0, help="seconds between snapshots")
    run_parser.add_argument("--frames", type=int, default=8, help="traceback depth kept")
    run_parser.add_argument("--out", type=Path, required=True, help="snapshot directory")
    run_parser.add_argument("argv", nargs=argparse.REMAINDER, help="-- and the dialer command")
    diff_parser = commands.add_parser("diff", help="the allocations that grew between two")
    diff_parser.add_argument("before", type=Path)
    diff_parser.add_argument("after", type=Path)
    diff_parser.add_argument("--top", type=int, default=TOP)
    args = parser.parse_args()
    if args.command == "run":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        run(argv, args.out, args.every, args.frames)
    else:
        print("\n".join(growth(args.before, args.after, args.top)))


def run(argv: list[str], out: Path, every: float, frames: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(frames)

    def snapshots() -> None:
        n = 0
        while True:
            time.sleep(every)
            n += 1
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            snapshot.dump(str(out / f"{n:03d}.snap"))

    threading.Thread(target=snapshots, name="tracemalloc-snapshots", daemon=True).start()
    from dialer.cli import main as dialer_main

    sys.argv = ["dialer", *argv]
    dialer_main()


def growth(before: Path, after: Path, top: int = TOP) -> list[str]:
    """The `top` allocation sites (by traceback) that grew most from `before` to `after`."""
    old = tracemalloc.Snapshot.load(str(before))
    new = tracemalloc.Snapshot.load(str(after))
    total_old = sum(s.size for s in old.statistics("filename"))
    total_new = sum(s.size for s in new.statistics("filename"))
    lines = [
        f"traced: {total_old / 2**20:.1f} MB -> {total_new / 2**20:.1f} MB "
        f"({(total_new - total_old) / 2**20:+.1f} MB)"
    ]
    for stat in new.compare_to(old, "traceback")[:top]:
        lines.append(
            f"{stat.size_diff / 2**10:+9.1f} KiB {stat.count_diff:+7d} blocks "
            f"(now {stat.size / 2**10:.1f} KiB)"
        )
        for frame in stat.traceback.format(limit=6, most_recent_first=True):
            lines.append(f"      {frame.strip()}")
    return lines


if __name__ == "__main__":
    main()
