"""PBX cluster: one trunk of 400 calls/s through three simulators that each sustain 150.

The dialer is told nothing of the simulators' capacity (each PBX's limit is the trunk's 400):
back-pressure has to find it. Three phases over one campaign of busy callees (each call ends
at once, so the PBXs' capacity in originates/s is what counts):

1. steady: all three simulators at 150 originates/s;
2. degraded: one simulator's capacity drops to 50 (its calls come late, then are refused), and
   the others take its share;
3. failover: another simulator is killed; its calls are closed as lost with it.

Prints, per phase: the rate achieved (Originates the simulators received, all together), each
simulator's most Originates in any 1-s window and its p99 Originate-to-OriginateResponse time
(`call_attempts.sent_at` to `originate_response_at`); the time the degraded simulator took to
answer within 1 s again; and at the end the custom_call_ids received more than once (must be
0) and the attempts left without an outcome (must be 0). It also prints each PBX's allowed rate
(back-pressure) once a second.

The machine has 2 cores shared by three simulators, the workers, the listener, Postgres and
Redis: a rate short of 400 can be the machine, not the dialer; the dialer CPU line says which.

Example:
    .venv/bin/python bench/pbx_cluster.py
    .venv/bin/python bench/pbx_cluster.py --cps 200 --capacity 80 --phase-seconds 15
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dial_throughput import process_cpu, read_records, wait_for_text  # noqa: E402
from stack import Processes, broker_namespace, dialer, dialer_env, throwaway_database  # noqa: E402
from stopping import exit_on_sigterm  # noqa: E402

from dialer.campaigns.pbxs import effective_state_sql  # noqa: E402
from dialer.db import make_engine, make_sessionmaker  # noqa: E402
from dialer.dialing.pacing import max_in_window  # noqa: E402
from dialer.dialing.pbxcontrol import close_calls_on_dead_pbxs  # noqa: E402
from dialer.models import Campaign, Contact, Pbx, Trunk, TrunkRoute  # noqa: E402

PBXS = ("alpha", "bravo", "charlie")
DEGRADED, KILLED = "bravo", "charlie"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cps", type=float, default=400.0, help="the trunk's calls/s")
    parser.add_argument("--capacity", type=float, default=150.0, help="each simulator's")
    parser.add_argument("--degraded-capacity", type=float, default=50.0)
    parser.add_argument("--phase-seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=3, help="solo worker processes")
    parser.add_argument("--speed", type=float, default=50.0, help="simulator speed factor")
    parser.add_argument(
        "--keep-database", action="store_true", help="leave the run's database for inspection"
    )
    args = parser.parse_args()
    run(args)


def run(args: argparse.Namespace) -> None:
    run_id = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="pbx-cluster-"))
    with (
        broker_namespace(f"dialer-bench:{run_id}") as prefix,
        throwaway_database(f"dialer_bench_{run_id}", keep=args.keep_database) as database_url,
        Processes() as processes,
    ):
        engine = make_engine(database_url)
        sims: dict[str, Any] = {}
        for name in PBXS:
            capacity = work / f"{name}.capacity.json"
            capacity.write_text(json.dumps({"cps": args.capacity}))
            record = work / f"{name}.jsonl"
            port, proc = processes.simulator(
                work / f"{name}.log",
                "--speed", str(args.speed), "--record", str(record),
                "--capacity-file", str(capacity),
            )  # fmt: skip
            sims[name] = {"proc": proc, "port": port, "record": record, "capacity": capacity}
        # The default PBX (DIALER_AMI_*) is one of them too: nothing else listens here.
        env = dialer_env(database_url, prefix, ami_port=sims[PBXS[0]]["port"])
        env["DIALER_PBXS"] = ",".join(PBXS)
        for name, sim in sims.items():
            upper = name.upper()
            env |= {
                f"DIALER_PBX_{upper}_HOST": "127.0.0.1",
                f"DIALER_PBX_{upper}_PORT": str(sim["port"]),
                f"DIALER_PBX_{upper}_USERNAME": "dialer",
                f"DIALER_PBX_{upper}_SECRET": "dialerpass",
            }
        total = int(args.cps * args.phase_seconds * 3.5)
        load(engine, args, total)

        processes.start(
            dialer("listen", *(a for n in PBXS for a in ("--pbx", n))),
            work / "listener.log",
            {**env, "DIALER_LOG_LEVEL": "INFO"},
        )
        wait_until(engine, "SELECT count(*) FROM pbxs WHERE state = 'up'", len(PBXS), 30)
        workers = []
        for n in range(args.workers):
            log = work / f"worker-{n}.log"
            argv = [sys.executable, "-m", "celery", "-A", "dialer.celery_app", "worker", "-P",
                    "solo", "-l", "INFO", "--without-gossip", "--without-mingle",
                    "--without-heartbeat", "-n", f"cluster{n}-{run_id}@%h",
                    *(["-B"] if n == 0 else [])]  # fmt: skip
            worker = processes.start(argv, log, env)
            workers.append(worker)
            wait_for_text(log, "ready.", worker)
        time.sleep(1.0)
        cpu_before = sum(c for w in workers for c in process_cpu(w.pid).values())

        rates: list[tuple[float, dict[str, float | None]]] = []
        with engine.begin() as conn:
            conn.execute(text("UPDATE campaigns SET status = 'running'"))
        start = time.time()
        marks = {"start": start}
        sample_until(engine, rates, start + args.phase_seconds)
        marks["degraded"] = time.time()
        sims[DEGRADED]["capacity"].write_text(json.dumps({"cps": args.degraded_capacity}))
        os.kill(sims[DEGRADED]["proc"].pid, signal.SIGHUP)
        sample_until(engine, rates, marks["degraded"] + args.phase_seconds)
        marks["killed"] = time.time()
        os.killpg(sims[KILLED]["proc"].pid, signal.SIGKILL)
        sample_until(engine, rates, marks["killed"] + args.phase_seconds * 0.75)
        marks["end"] = time.time()
        with engine.begin() as conn:
            conn.execute(text("UPDATE campaigns SET status = 'paused'"))
        cpu_s = sum(c for w in workers for c in process_cpu(w.pid).values()) - cpu_before
        # The killed PBX's calls stay open until closed as lost with it; the tick does it after
        # `pbx_down_close_after_s` (120 s by default): here it is done 5 s after the kill.
        sessions = make_sessionmaker(engine)
        left = open_attempts(engine)
        deadline = time.monotonic() + 90
        while left and time.monotonic() < deadline:
            close_calls_on_dead_pbxs(sessions, after_s=5.0)
            time.sleep(1.0)
            left = open_attempts(engine)
        report(args, engine, sims, marks, rates, cpu_s, left)
        engine.dispose()


def load(engine: Any, args: argparse.Namespace, total: int) -> None:
    """The PBXs (limit: the trunk's rate), one trunk routed through all three, one draft
    campaign of busy callees."""
    now = dt.datetime.now(dt.UTC)
    offset = 14 - now.hour  # a fixed-offset zone where it is about 14:00: always in hours
    zone = "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"
    with engine.begin() as conn:
        for name in PBXS:
            conn.execute(insert(Pbx).values(name=name, max_cps=args.cps, max_channels=100_000))
        trunk_id = conn.execute(
            insert(Trunk).values(name="T", cps=args.cps, max_channels=100_000).returning(Trunk.id)
        ).scalar_one()
        for name in PBXS:
            conn.execute(insert(TrunkRoute).values(trunk_id=trunk_id, pbx=name))
        campaign_id = conn.execute(
            insert(Campaign)
            .values(
                name="cluster",
                trunk_id=trunk_id,
                status="draft",
                caller_id_number="+19876543210",
                ivr_file="welcome_message",
                calling_days=[1, 2, 3, 4, 5, 6, 7],
                max_attempts=1,
            )
            .returning(Campaign.id)
        ).scalar_one()
        conn.execute(
            insert(Contact),
            [
                {
                    "campaign_id": campaign_id,
                    # +1 212 EEE MM 04: unique per i, ending 04: busy, ends at once.
                    "phone_e164": f"+1212{200 + i // 100:03d}{i % 100:02d}04",
                    "phone_raw": "-",
                    "timezones": [zone],
                }
                for i in range(total)
            ],
        )


_SAMPLE = text(
    f"""
    SELECT name, rate, {effective_state_sql("p")} AS state,
           extract(epoch FROM now() - heartbeat_at)::float8 AS beat
      FROM pbxs p WHERE name <> 'default' ORDER BY name
    """
)


def sample_until(engine: Any, rates: list[Any], until: float) -> None:
    """Each PBX's allowed rate (back-pressure), once a second."""
    with engine.connect() as conn:
        while time.time() < until:
            found = {row.name: (row.rate, row.state, row.beat) for row in conn.execute(_SAMPLE)}
            conn.commit()
            rates.append((time.time(), found))
            time.sleep(max(0.0, min(1.0, until - time.time())))


def open_attempts(engine: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM call_attempts WHERE status IN ('originating', 'up')")
        ).scalar_one()


def wait_until(engine: Any, query: str, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            if conn.execute(text(query)).scalar_one() == expected:
                return
            conn.commit()
            time.sleep(0.2)
    raise SystemExit(f"timed out: {query}")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(
    args: argparse.Namespace,
    engine: Any,
    sims: dict[str, Any],
    marks: dict[str, float],
    rates: list[Any],
    cpu_s: float,
    left: int,
) -> None:
    received = {name: read_records(s["record"]) for name, s in sims.items()}
    originates = {
        name: [r for r in records if r.get("action") == "Originate"]
        for name, records in received.items()
    }
    ids = [r["action_id"] for rs in originates.values() for r in rs]
    with engine.connect() as conn:
        answers = conn.execute(
            text(
                "SELECT pbx, extract(epoch FROM sent_at) AS sent,"
                " extract(epoch FROM originate_response_at - sent_at) AS latency"
                " FROM call_attempts WHERE sent_at IS NOT NULL"
            )
        ).all()
        outcomes = dict(
            conn.execute(
                text("SELECT coalesce(outcome, status), count(*) FROM call_attempts GROUP BY 1")
            ).all()
        )
        lost = conn.execute(
            text(
                "SELECT count(*) FROM call_attempts WHERE pbx = :p AND ended_by = 'pbx'"
                " AND outcome = 'unknown'"
            ),
            {"p": KILLED},
        ).scalar_one()
    phases = [
        ("steady", marks["start"] + 3.0, marks["degraded"]),
        ("degraded", marks["degraded"], marks["killed"]),
        ("failover", marks["killed"], marks["end"]),
    ]
    print(
        f"trunk: {args.cps:g} calls/s through {', '.join(PBXS)}; each simulator sustains "
        f"{args.capacity:g}/s ({DEGRADED} drops to {args.degraded_capacity:g}, {KILLED} is "
        f"killed); {args.workers} solo workers, simulator speed {args.speed:g}"
    )
    for phase, lo, hi in phases:
        alive = [n for n in PBXS if not (phase == "failover" and n == KILLED)]
        total = sum(1 for rs in originates.values() for r in rs if lo <= r["wall"] < hi)
        print(f"\n{phase} ({hi - lo:.0f} s): {total / (hi - lo):,.0f} Originates/s in all")
        for name in alive:
            times = [r["mono"] for r in originates[name] if lo <= r["wall"] < hi]
            latencies = [
                float(a.latency)
                for a in answers
                if a.pbx == name and a.latency is not None and lo <= float(a.sent) < hi
            ]
            p99 = percentile(latencies, 0.99)
            print(
                f"  {name}: {len(times) / (hi - lo):,.0f}/s, max {max_in_window(times)} in any "
                f"1-s window; p99 Originate-to-response "
                f"{'-' if p99 is None else f'{p99:.3f} s'} ({len(latencies)} responses)"
            )
    # The degraded simulator: from the drop, each second's p99 latency of calls sent in it.
    drop = marks["degraded"]
    seconds: dict[int, list[float]] = {}
    for a in answers:
        if a.pbx == DEGRADED and a.latency is not None and drop <= float(a.sent) < marks["killed"]:
            seconds.setdefault(int(float(a.sent) - drop), []).append(float(a.latency))
    span = int(marks["killed"] - drop)
    series = [percentile(seconds.get(n, []), 0.99) for n in range(span)]
    # A second in which it was sent nothing has no latency: it is not counted late.
    late = [n for n, p in enumerate(series) if p is not None and p > 1.0]
    print(
        f"\n{DEGRADED} after its drop: p99 latency of the calls sent each second ('-': none "
        "answered) " + " ".join("-" if p is None else f"{p:.2f}" for p in series)
    )
    if not late:
        print(f"{DEGRADED} answered within 1 s every second after the drop")
    elif late[-1] < span - 1:
        print(f"{DEGRADED} answers within 1 s again {late[-1] + 1} s after the drop")
    else:
        print(f"{DEGRADED} did not answer within 1 s again before the next phase")
    print("allowed rate per PBX (back-pressure), every 2 s:")
    for at, found in rates[::2]:
        shown = " ".join(
            f"{n}={'-' if r is None else f'{r:.0f}'}"
            + ("" if state == "up" else f" ({state}, last beat {beat or 0:.0f} s ago)")
            for n, (r, state, beat) in sorted(found.items())
        )
        print(f"  +{at - marks['start']:5.1f}s {shown}")
    print(f"\nOriginates received: {len(ids)}, custom_call_ids received more than once: "
          f"{len(ids) - len(set(ids))}")  # fmt: skip
    print(f"attempts without an outcome: {left}; outcomes: {outcomes}")
    print(f"{KILLED}'s calls closed as lost with it (unknown, ended by the PBX): {lost}")
    print(f"dialer workers' CPU: {cpu_s * 1000 / max(1, len(ids)):.2f} ms per Originate")
    print("note: shared 2-core machine; simulators, listener, Postgres and Redis share the CPUs")


if __name__ == "__main__":
    exit_on_sigterm()
    main()
