"""Soak: a campaign dialled at the simulator's pace for a long time, memory sampled throughout.

`dialer worker` (as README starts it) and `dialer listen` against one simulator; one trunk of
`--cps` calls/s and contacts enough for the whole run, on numbers covering the simulator's
callee behaviours (humans who press or not, machines, busy, no answer, voicemail...), so calls
are up for seconds and every kind of event and outcome goes through. Every `--sample-every`
seconds the resident memory (RSS) of the listener and of each worker process is read, and the
run's Postgres sessions counted.

Prints, per process: RSS at the end of the warm-up, peak, last, and the growth after warm-up
per hour (least-squares slope over the samples after `--warmup` seconds); the listener's RSS
every 5 minutes and its growth over the last third (caches filling stop growing, a leak does
not); the Postgres sessions at the start and at the end; calls sent and ended.

Example:
    .venv/bin/python bench/soak.py                       # an hour at 20 calls/s
    .venv/bin/python bench/soak.py --minutes 10 --cps 10
    .venv/bin/python bench/soak.py --minutes 30 --trace-listener   # where the listener's grows
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dial_throughput import descendants, rss_kb  # noqa: E402
from stack import (  # noqa: E402
    ADMIN_URL,
    Processes,
    broker_namespace,
    dialer,
    dialer_env,
    throwaway_database,
)
from stopping import exit_on_sigterm  # noqa: E402
from trace_memory import growth  # noqa: E402

from dialer.db import make_engine  # noqa: E402
from dialer.models import Campaign, Contact, Trunk, TrunkRoute  # noqa: E402

# Callee behaviours of the simulator, by the number's last two digits (README, "pbx-sim").
TAILS = ("01", "02", "03", "04", "05", "06", "07", "08", "09", "11", "37")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--cps", type=float, default=20.0, help="the trunk's calls/s")
    parser.add_argument("--speed", type=float, default=5.0, help="simulator speed factor")
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds before the slope")
    parser.add_argument("--sample-every", type=float, default=10.0)
    parser.add_argument(
        "--trace-listener",
        action="store_true",
        help="run the listener under tracemalloc (bench/trace_memory.py) and print the"
        " allocations that grew after warm-up",
    )
    args = parser.parse_args()
    run(args)


def run(args: argparse.Namespace) -> None:
    run_id = uuid.uuid4().hex[:8]
    db_name = f"dialer_soak_{run_id}"
    work = Path(tempfile.mkdtemp(prefix="dialer-soak-"))
    with (
        broker_namespace(f"dialer-soak-{run_id}") as prefix,
        throwaway_database(db_name) as database_url,
        Processes() as processes,
    ):
        engine = make_engine(database_url)
        seconds = args.minutes * 60
        load(engine, args.cps, int(args.cps * (seconds + 60)))
        port, _ = processes.simulator(work / "pbx-sim.log", "--speed", str(args.speed))
        env = dialer_env(database_url, prefix, ami_port=port)
        snapshots = work / "listener-snapshots"
        listen = dialer("listen")
        if args.trace_listener:
            listen = [
                sys.executable, str(Path(__file__).with_name("trace_memory.py")), "run",
                "--every", str(args.warmup / 2), "--out", str(snapshots), "--", "listen",
            ]  # fmt: skip
        listener = processes.start(listen, work / "listener.log", env)
        worker = processes.dialer_worker(work / "worker.log", env)
        with engine.begin() as conn:
            conn.execute(text("UPDATE campaigns SET status = 'running'"))
        started = time.monotonic()
        samples: dict[str, list[tuple[float, float]]] = {}
        sessions: list[int] = []
        while time.monotonic() - started < seconds:
            at = time.monotonic() - started
            roles = {"listener": [listener.pid], "worker supervisor": [worker.pid]}
            for n, pid in enumerate(descendants(worker.pid)[1:]):
                roles[f"worker process {n}"] = [pid]
            for role, pids in roles.items():
                mb = sum(rss_kb(p) for p in pids) / 1024
                if mb:
                    samples.setdefault(role, []).append((at, mb))
            sessions.append(run_sessions(ADMIN_URL, db_name))
            processes.check_running()
            time.sleep(args.sample_every)
        with engine.connect() as conn:
            counts = conn.execute(
                text(
                    "SELECT count(sent_at) AS sent, count(*) FILTER (WHERE status = 'ended')"
                    " AS ended, count(*) FILTER (WHERE status IN ('queued', 'originating', 'up'))"
                    " AS open FROM call_attempts"
                )
            ).one()
        engine.dispose()
        report(args, samples, sessions, counts)
        taken = sorted(snapshots.glob("*.snap"))
        if args.trace_listener and len(taken) >= 3:
            # The first snapshot after warm-up (every warmup/2 s: the second) against the last.
            print("listener allocations grown after warm-up (tracemalloc):")
            print("\n".join(growth(taken[1], taken[-1])))


def load(engine: Any, cps: float, total: int) -> None:
    now = dt.datetime.now(dt.UTC)
    offset = 14 - now.hour  # a fixed-offset zone where it is about 14:00: always in hours
    zone = "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"
    with engine.begin() as conn:
        trunk_id = conn.execute(
            insert(Trunk).values(name="T", cps=cps, max_channels=10_000).returning(Trunk.id)
        ).scalar_one()
        conn.execute(insert(TrunkRoute).values(trunk_id=trunk_id, pbx="default"))
        campaign_id = conn.execute(
            insert(Campaign)
            .values(
                name="soak",
                trunk_id=trunk_id,
                status="draft",
                caller_id_number="+19876543210",
                ivr_file="welcome_message",
                calling_days=[1, 2, 3, 4, 5, 6, 7],
                max_attempts=1,
            )  # fmt: skip
            .returning(Campaign.id)
        ).scalar_one()
        for start in range(0, total, 20_000):
            conn.execute(
                insert(Contact),
                [
                    {
                        "campaign_id": campaign_id,
                        "phone_e164": phone_number(i),
                        "phone_raw": "-",
                        "timezones": [zone],
                    }
                    for i in range(start, min(total, start + 20_000))
                ],
            )


def phone_number(i: int) -> str:
    """Unique for i < 880,000; its last two digits pick the callee's behaviour."""
    n = i // len(TAILS)
    return f"+1212{200 + n // 100 % 800:03d}{n % 100:02d}{TAILS[i % len(TAILS)]}"


def run_sessions(admin: str, db_name: str) -> int:
    with psycopg.connect(admin, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            " AND backend_type = 'client backend'",
            (db_name,),
        ).fetchone()[0]


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB), in MB per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / var * 3600


def report(
    args: argparse.Namespace,
    samples: dict[str, list[tuple[float, float]]],
    sessions: list[int],
    counts: Any,
) -> None:
    print(
        f"soak: {args.minutes:g} min at {args.cps:g} calls/s, simulator speed {args.speed:g}; "
        f"{counts.sent} calls sent, {counts.ended} ended, {counts.open} open at the end"
    )
    for role, points in samples.items():
        after = [(t, mb) for t, mb in points if t >= args.warmup]
        warm = after[0][1] if after else points[-1][1]
        slope = slope_per_hour(after)
        growth = "-" if slope is None else f"{slope:+.1f} MB/hour"
        print(
            f"  {role}: {points[0][1]:.1f} MB at start, {warm:.1f} after warm-up, peak "
            f"{max(mb for _, mb in points):.1f}, last {points[-1][1]:.1f}; after warm-up {growth}"
        )
    listener = samples.get("listener", [])
    if listener:
        # Caches filling show as growth that stops; a leak as growth that does not.
        series = ", ".join(
            f"{t / 60:.0f} min {mb:.1f}" for t, mb in listener if int(t) % 300 < args.sample_every
        )
        late = [(t, mb) for t, mb in listener if t >= listener[-1][0] * 2 / 3]
        slope = slope_per_hour(late)
        print(f"  listener every 5 minutes (MB): {series}")
        print(
            "  listener over the last third of the run: "
            + ("-" if slope is None else f"{slope:+.1f} MB/hour")
        )
    if sessions:
        print(
            f"  Postgres sessions of the run's database: {sessions[0]} at start, "
            f"{max(sessions)} at most, {sessions[-1]} at the end"
        )


if __name__ == "__main__":
    exit_on_sigterm()
    main()
