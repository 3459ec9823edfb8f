"""Queue pacing: a press-1 campaign into a queue of simulated agents, paced by them, against
the same campaign dialled at a fixed rate.

Each run: a fresh database, `dialer pbx-sim` with a queue of `--agents` agents (answer after a
drawn delay, talk a drawn time around `--talk` s, wrap up `--wrapup` s) and callees who wait in
the queue a drawn patience around `--patience` s, `dialer worker` and `dialer listen` as README
starts them, and `--contacts` contacts whose behaviours are drawn (seeded): answered
`--answer-rate`, of those pressing 1 `--press-rate`, the rest busy or not answering. Times are
the simulator's (`--speed` divides them all; the figures are printed in simulated time).

Runs, in order:
1. paced: `--pace-by-queue`, the trunk allowing far more than the agents need;
2. fixed: no queue pacing, the trunk's rate set to run 1's average send rate;
3. drop: paced, agents removed (`dialer queue remove`) from `--agents` to `--drop-to` once
   `--drop-at` of the contacts were dialled; the abandon rate per 5 simulated minutes after.

Per run: transfers into the queue, abandoned ones (callee left before an agent answered) over
them, agent occupancy (busy agent-seconds over staffed, from the listener's
`queue_agent_minutes`, over the minutes the campaign was dialling, the first and last weighted by their share in it), the mean queue wait, calls
sent and the average send rate.

Example:
    .venv/bin/python bench/agent_pacing.py                      # 5,000 contacts, 10 agents
    .venv/bin/python bench/agent_pacing.py --contacts 1000 --runs paced
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import Processes, broker_namespace, dialer, dialer_env, throwaway_database  # noqa: E402
from stopping import exit_on_sigterm  # noqa: E402

from dialer.db import make_engine  # noqa: E402
from dialer.models import Campaign, Contact, Trunk, TrunkRoute  # noqa: E402

QUEUE = "sales"
WINDOW_S = 300.0  # the rolling window, simulated seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--drop-to", type=int, default=4)
    parser.add_argument("--drop-at", type=float, default=0.4, help="share of contacts dialled")
    parser.add_argument("--talk", type=float, default=55.0, help="mean talk time, s")
    parser.add_argument("--wrapup", type=int, default=5, help="agents' wrap-up, s")
    parser.add_argument("--answer", type=float, default=2.0, help="agents' mean answer delay, s")
    parser.add_argument("--patience", type=float, default=20.0, help="callees' mean patience, s")
    parser.add_argument("--answer-rate", type=float, default=0.40)
    parser.add_argument("--press-rate", type=float, default=0.15)
    parser.add_argument("--target", type=float, default=0.03)
    parser.add_argument("--speed", type=float, default=4.0, help="simulator speed factor")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", default="paced,fixed,drop")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for name in args.runs.split(","):
        if name == "fixed" and "paced" not in results:
            raise SystemExit("the fixed run takes the paced run's average rate: run paced first")
        cps = results["paced"]["rate_cps_real"] if name == "fixed" else None
        results[name] = run(args, name, cps)
        print_run(args, name, results[name])
    if "paced" in results and "fixed" in results:
        paced, fixed = results["paced"], results["fixed"]
        print(
            f"paced vs fixed at the same average rate: abandoned {pct(paced['abandon_rate'])} vs"
            f" {pct(fixed['abandon_rate'])}, occupancy {pct(paced['occupancy'])} vs"
            f" {pct(fixed['occupancy'])}"
        )


def run(args: argparse.Namespace, name: str, fixed_cps: float | None) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix=f"dialer-pacing-{name}-"))
    with (
        broker_namespace(f"dialer-pacing-{run_id}") as prefix,
        throwaway_database(f"dialer_pacing_{run_id}") as database_url,
        Processes() as processes,
    ):
        engine = make_engine(database_url)
        load(engine, args, paced=fixed_cps is None, cps=fixed_cps or 200.0)
        port, _ = processes.simulator(
            work / "pbx-sim.log",
            "--speed", str(args.speed), "--queue", QUEUE,
            "--agents", str(args.agents), "--agent-answer", str(args.answer),
            "--agent-talk", str(args.talk), "--agent-wrapup", str(args.wrapup),
            "--caller-patience", str(args.patience), "--agent-seed", str(args.seed),
        )  # fmt: skip
        env = dialer_env(database_url, prefix, ami_port=port)
        processes.start(dialer("listen"), work / "listener.log", env)
        processes.dialer_worker(work / "worker.log", env)
        wait_members(engine, args.agents)
        with engine.begin() as conn:
            conn.execute(text("UPDATE campaigns SET status = 'running'"))
        started = time.monotonic()
        dropped_at: float | None = None
        while True:
            done = progress(engine)
            if name == "drop" and dropped_at is None and done.sent >= args.drop_at * args.contacts:
                drop_agents(args, env)
                dropped_at = time.time()
            if done.finished >= args.contacts:
                break
            processes.check_running(logs=work)
            time.sleep(1.0)
        elapsed = time.monotonic() - started
        with engine.connect() as conn:
            figures = measure(conn, args)
            if dropped_at is not None:
                figures["after_drop"] = windows(conn, args, dropped_at)
        figures["real_seconds"] = elapsed
        engine.dispose()
        return figures


def load(engine: Any, args: argparse.Namespace, *, paced: bool, cps: float) -> None:
    """The trunk, the campaign and its contacts, behaviours drawn with the seed."""
    rng = random.Random(args.seed)
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
                name="pacing",
                trunk_id=trunk_id,
                status="draft",
                caller_id_number="+19876543210",
                ivr_file="offer",
                calling_days=[1, 2, 3, 4, 5, 6, 7],
                max_attempts=1,
                transfer_queue=QUEUE,
                pace_by_queue=paced,
                abandon_target=args.target,
            )  # fmt: skip
            .returning(Campaign.id)
        ).scalar_one()
        contacts = []
        for i in range(args.contacts):
            contacts.append(
                {
                    "campaign_id": campaign_id,
                    "phone_e164": f"+1212{200 + i // 100 % 800:03d}{i % 100:02d}{tail(rng, args)}",
                    "phone_raw": "-",
                    "timezones": [zone],
                }
            )
        conn.execute(insert(Contact), contacts)


def tail(rng: random.Random, args: argparse.Namespace) -> str:
    """The simulator's behaviour digits: 01 presses 1, 02 listens and does not press, 03 a
    machine; 05 rings out, 04 busy."""
    if rng.random() < args.answer_rate:
        if rng.random() < args.press_rate:
            return "01"
        return "03" if rng.random() < 0.2 else "02"
    return "04" if rng.random() < 0.25 else "05"


def wait_members(engine: Any, agents: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            n = conn.execute(text("SELECT count(*) FROM queue_members")).scalar_one()
        if n >= agents:
            return
        time.sleep(0.2)
    raise SystemExit(f"the listener did not report {agents} queue members in {timeout:.0f} s")


def drop_agents(args: argparse.Namespace, env: dict[str, str]) -> None:
    for n in range(args.drop_to + 1, args.agents + 1):
        subprocess.run(
            [sys.executable, "-m", "dialer", "queue", "remove", QUEUE, f"PJSIP/agent{n}"],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )


def progress(engine: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(sent_at) AS sent, count(*) FILTER (WHERE status = 'ended') AS"
                " finished FROM call_attempts"
            )
        ).one()


_FIGURES = text(
    """
    SELECT count(*) FILTER (WHERE outcome IN ('transferred', 'queue_abandoned')) AS queued,
           count(*) FILTER (WHERE outcome = 'queue_abandoned') AS abandoned,
           avg(queue_wait_s) FILTER (WHERE outcome IN ('transferred', 'queue_abandoned'))
               AS wait_s,
           count(sent_at) AS sent, min(sent_at) AS first_sent, max(sent_at) AS last_sent
      FROM call_attempts
    """
)
# Minutes overlapping the dialling span, each weighted by its share inside the span.
_OCCUPANCY = text(
    """
    WITH span AS (
        SELECT minute, busy_s, staffed_s,
               extract(epoch FROM least(minute + interval '1 minute', CAST(:last AS timestamptz))
                                  - greatest(minute, CAST(:first AS timestamptz))) / 60 AS share
          FROM queue_agent_minutes
         WHERE minute + interval '1 minute' > CAST(:first AS timestamptz)
           AND minute < CAST(:last AS timestamptz)
    )
    SELECT sum(busy_s * share) / nullif(sum(staffed_s * share), 0) AS occupancy FROM span
    """
)


def measure(conn: Any, args: argparse.Namespace) -> dict[str, Any]:
    row = conn.execute(_FIGURES).one()
    span = (row.last_sent - row.first_sent).total_seconds() if row.sent > 1 else 0.0
    occupancy = conn.execute(_OCCUPANCY, {"first": row.first_sent, "last": row.last_sent}).scalar()
    return {
        "queued": row.queued,
        "abandoned": row.abandoned,
        "abandon_rate": row.abandoned / row.queued if row.queued else None,
        "wait_s": float(row.wait_s) if row.wait_s is not None else None,
        "sent": row.sent,
        "occupancy": float(occupancy) if occupancy is not None else None,
        "rate_cps_real": row.sent / span if span else 0.0,
        "rate_cps_sim": row.sent / span / args.speed if span else 0.0,
    }


_WINDOWS = text(
    """
    SELECT floor(extract(epoch FROM queue_joined_at - CAST(:since AS timestamptz)) / :width)
               AS n,
           count(*) FILTER (WHERE outcome IN ('transferred', 'queue_abandoned')) AS queued,
           count(*) FILTER (WHERE outcome = 'queue_abandoned') AS abandoned
      FROM call_attempts
     WHERE queue_joined_at >= CAST(:since AS timestamptz)
     GROUP BY 1 ORDER BY 1
    """
)


def windows(conn: Any, args: argparse.Namespace, since: float) -> list[tuple[int, int]]:
    """(transfers, abandoned) per 5 simulated minutes after the drop."""
    width = WINDOW_S / args.speed
    start = dt.datetime.fromtimestamp(since, dt.UTC)
    rows = conn.execute(_WINDOWS, {"since": start, "width": width}).all()
    return [(r.queued, r.abandoned) for r in rows]


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def print_run(args: argparse.Namespace, name: str, f: dict[str, Any]) -> None:
    wait = "-" if f["wait_s"] is None else f"{f['wait_s']:.1f} s"
    print(
        f"{name}: {f['sent']} calls sent at {f['rate_cps_sim']:.2f}/s (simulated), "
        f"{f['queued']} transfers into the queue, {f['abandoned']} abandoned "
        f"({pct(f['abandon_rate'])}), agent occupancy {pct(f['occupancy'])}, mean queue wait "
        f"{wait}; {f['real_seconds']:.0f} s real at speed {args.speed:g}"
    )
    after = f.get("after_drop", [])
    for n, (queued, abandoned) in enumerate(after):
        rate = abandoned / queued if queued else None
        print(
            f"  {5 * n}-{5 * n + 5} min after {args.agents} -> {args.drop_to} agents: "
            f"{queued} transfers, {abandoned} abandoned ({pct(rate)})"
        )
    if after:
        queued, abandoned = sum(q for q, _ in after), sum(a for _, a in after)
        print(
            f"  after the drop, all: {queued} transfers, {abandoned} abandoned "
            f"({pct(abandoned / queued if queued else None)})"
        )


if __name__ == "__main__":
    exit_on_sigterm()
    main()
