"""Dialing throughput: a 20,000-contact campaign against the PBX simulator, trunks not limiting.

Creates a throwaway database and a broker namespace of its own (`DIALER_BROKER_PREFIX`: a key
prefix on Redis, queue and exchange names on RabbitMQ), starts `dialer pbx-sim` with `--record`,
loads the contacts, starts Celery workers running the dialer (this script in `--worker` mode: the
dialer's app with the benchmark's prefix; the first worker carries the dispatch tick; by default
three `solo` workers), or with `--dialer-worker` the `dialer worker` command as README starts it
(its defaults), then starts the campaigns and waits until every attempt was sent. It prints:

- attempts/s sustained (Originates the simulator received, middle 90% of the run) and overall;
- dialer CPU per attempt: user + system time of every dialer process (worker parents, pool
  processes, the embedded beat), read from /proc before and after;
- the most calls any trunk started within a sliding 1-s window, against the trunk's limit.

With `--calling-rules N` and `--frequency-rules N` the dispatch tick and the last checks judge
every call against that many region rules (the contacts' country, region and area code among
them) and frequency rules (the number locked and its history read before each send), all of
which allow the calls: the cost of the rules, not their effect. With `--caller-ids N` every
campaign picks each call's caller ID from one pool of N numbers over many area codes (local
presence, least used today, a cap no number reaches).

The machine is shared and has 2 cores: the simulator, Postgres and the broker run on the same
cores, so figures vary from run to run.

Example:
    .venv/bin/python bench/dial_throughput.py
    .venv/bin/python bench/dial_throughput.py --broker amqp://guest:guest@127.0.0.1:5672//
    .venv/bin/python bench/dial_throughput.py --dialer-worker
    .venv/bin/python bench/dial_throughput.py --workers 2 --pool threads -c 6
    .venv/bin/python bench/dial_throughput.py --contacts 10000 --calling-rules 10 --frequency-rules 10
    .venv/bin/python bench/dial_throughput.py --contacts 10000 --caller-ids 1000 --frequency-rules 10
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import redis
from kombu import Connection
from psycopg import sql
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url
from stopping import exit_on_sigterm  # noqa: E402

from dialer import migrate
from dialer.campaigns.caller_ids import where_is
from dialer.db import make_engine
from dialer.dialing.pacing import max_in_window
from dialer.models import (
    CallerId,
    CallerIdPool,
    CallingHoliday,
    CallingRule,
    Campaign,
    Contact,
    FrequencyRule,
    Trunk,
    TrunkRoute,
)

SERVER_URL = os.environ.get(
    "DIALER_BENCH_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BROKER_URL = os.environ.get("DIALER_BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--trunks", type=int, default=2, help="campaigns, one per trunk")
    parser.add_argument("--cps", type=float, default=100_000.0, help="each trunk's limit")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (parents)")
    parser.add_argument("--concurrency", type=int, default=6, help="pool size of each worker")
    parser.add_argument("--pool", default="solo", choices=["prefork", "threads", "solo"])
    parser.add_argument("--prefetch", type=int, default=1, help="worker prefetch multiplier")
    parser.add_argument("--speed", type=float, default=50.0, help="simulator speed factor")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--broker",
        default=BROKER_URL,
        help="broker URL: redis://... or amqp://... (default: $DIALER_BENCH_BROKER_URL or the "
        "local Redis)",
    )
    parser.add_argument(
        "--dialer-worker",
        action="store_true",
        help="run `dialer worker` with its defaults instead of --workers x --pool workers",
    )
    parser.add_argument(
        "--dialer-worker-args",
        default="",
        help="with --dialer-worker: its options, e.g. '--processes 3' (default: none)",
    )
    parser.add_argument(
        "--calling-rules", type=int, default=0, help="region hours rules and holidays (0-12)"
    )
    parser.add_argument("--frequency-rules", type=int, default=0, help="frequency rules")
    parser.add_argument("--caller-ids", type=int, default=0, help="numbers of a caller-ID pool")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker:
        run_worker(rest)
    else:
        run_benchmark(args)


# -- worker mode: the dialer's Celery app with the benchmark's key prefix --------------------


def run_worker(argv: list[str]) -> None:
    from dialer.dialing.celery_app import WorkerOptions, make_celery_app
    from dialer.settings import Settings

    options = WorkerOptions(broker_key_prefix=os.environ["DIALER_BENCH_BROKER_PREFIX"])
    app = make_celery_app(Settings.from_env(), options)
    app.worker_main(["worker", *argv])


# -- the benchmark ----------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> None:
    run = uuid.uuid4().hex[:8]
    db_name = f"dialer_bench_{run}"
    prefix = f"dialer-bench:{run}:"
    work = Path(tempfile.mkdtemp(prefix="dial-bench-"))
    admin = make_url(SERVER_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    database_url = make_url(SERVER_URL).set(database=db_name).render_as_string(hide_password=False)
    processes: list[subprocess.Popen[bytes]] = []
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
    try:
        migrate.upgrade(database_url)
        engine = make_engine(database_url)
        port = free_port()
        record = work / "actions.jsonl"
        sim = spawn(
            [sys.executable, "-m", "dialer", "pbx-sim", "--host", "127.0.0.1", "--port",
             str(port), "--speed", str(args.speed), "--record", str(record)],
            work / "pbx-sim.log", {"DIALER_LOG_LEVEL": "WARNING"},
        )  # fmt: skip
        processes.append(sim)
        wait_for_port(port, sim)

        trunk_limits = load(engine, args)
        env = {
            "DIALER_DATABASE_URL": database_url,
            "DIALER_BROKER_URL": args.broker,
            "DIALER_AMI_HOST": "127.0.0.1",
            "DIALER_AMI_PORT": str(port),
            "DIALER_LOG_LEVEL": "WARNING",
            "DIALER_BENCH_BROKER_PREFIX": prefix,
        }
        workers = []
        if args.dialer_worker:
            # As README starts it; the prefix through the setting every command reads.
            log_path = work / "dialer-worker.log"
            worker = spawn(
                [sys.executable, "-m", "dialer", "worker", *shlex.split(args.dialer_worker_args)],
                log_path,
                {**env, "DIALER_BROKER_PREFIX": prefix, "DIALER_LOG_LEVEL": "INFO"},
            )
            processes.append(worker)
            workers.append(worker)
            wait_for_text(log_path, "ready.", worker)
            ready = wait_until_settled(lambda: log_path.read_text(errors="replace").count("ready."))
            print(f"dialer worker: {ready} Celery worker(s) ready")
        for n in range(0 if args.dialer_worker else args.workers):
            argv = [sys.executable, __file__, "--worker", "-P", args.pool, "-c",
                    str(args.concurrency), "--prefetch-multiplier", str(args.prefetch), "-l", "INFO", "--without-gossip", "--without-mingle",
                    "--without-heartbeat", "-n", f"bench{n}-{run}@%h", *(["-B"] if n == 0 else [])]  # fmt: skip
            log_path = work / f"worker-{n}.log"
            worker = spawn(argv, log_path, env)
            processes.append(worker)
            workers.append(worker)
            wait_for_text(log_path, "ready.", worker)
        time.sleep(1.0)  # pool processes settle (imports, first connections)

        before = {p: c for w in workers for p, c in process_cpu(w.pid).items()}
        cpu_before = sum(before.values())
        services_before = service_cpu()
        started = time.monotonic()
        with engine.begin() as conn:
            conn.execute(text("UPDATE campaigns SET status = 'running'"))
        sent = wait_for_sends(engine, args.contacts, args.timeout)
        elapsed = time.monotonic() - started
        after = {p: c for w in workers for p, c in process_cpu(w.pid).items()}
        cpu_after = sum(after.values())
        services = {k: v - services_before.get(k, 0.0) for k, v in service_cpu().items()}
        sim_cpu = tree_cpu_seconds(sim.pid)
        parents = {w.pid for w in workers}
        for pid, cpu in sorted(after.items()):
            role = "worker" if pid in parents else "child"
            print(f"  {role} {pid}: {cpu - before.get(pid, 0.0):.1f} s CPU")

        report(
            args, record, trunk_limits, sent, elapsed, cpu_after - cpu_before, sim_cpu, engine,
            services,
        )  # fmt: skip
        engine.dispose()
    finally:
        for proc in reversed(processes):
            stop(proc)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name))
            )
        delete_broker_namespace(args.broker, prefix)


def load(engine: Any, args: argparse.Namespace) -> dict[str, float]:
    """Trunks, one draft campaign per trunk, and the contacts split between them."""
    now = dt.datetime.now(dt.UTC)
    offset = 14 - now.hour  # a fixed-offset zone where it is about 14:00: always in hours
    zone = "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"
    limits = {}
    with engine.begin() as conn:
        pool_id = add_pool(conn, args.caller_ids) if args.caller_ids else None
        # The PBX must not limit either.
        conn.execute(
            text("UPDATE pbxs SET max_cps = :cps, max_channels = :channels WHERE name = 'default'"),
            {"cps": args.cps * args.trunks, "channels": 10 * args.contacts},
        )
        for t in range(args.trunks):
            name = f"T{t}"
            trunk_id = conn.execute(
                insert(Trunk)
                .values(name=name, cps=args.cps, max_channels=10 * args.contacts)
                .returning(Trunk.id)
            ).scalar_one()
            conn.execute(insert(TrunkRoute).values(trunk_id=trunk_id, pbx="default"))
            limits[name] = args.cps
            campaign_id = conn.execute(
                insert(Campaign)
                .values(
                    name=f"bench {t}",
                    trunk_id=trunk_id,
                    status="draft",
                    caller_id_number="+19876543210",
                    ivr_file="welcome_message",
                    calling_days=[1, 2, 3, 4, 5, 6, 7],
                    caller_id_pool_id=pool_id,
                )
                .returning(Campaign.id)
            ).scalar_one()
            share = range(t, args.contacts, args.trunks)
            conn.execute(
                insert(Contact),
                [
                    {
                        "campaign_id": campaign_id,
                        # +1 212 EEE MM TT, unique per i; TT 10-99: a human who answers
                        # and stays on briefly.
                        "phone_e164": f"+1212{200 + i // 100:03d}{i % 100:02d}{10 + i % 90:02d}",
                        "phone_raw": "-",
                        "timezones": [zone],
                    }
                    for i in share
                ],
            )
        add_rules(conn, args.calling_rules, args.frequency_rules)
    return limits


# Rules that allow the benchmark's calls (contacts are +1212 numbers, about 14:00 local): the
# first three are the contacts' own country, region and area code.
CALLING_RULES = [
    ("hours", "country", "US"), ("hours", "region", "US-NY"), ("hours", "area_code", "+1212"),
    ("hours", "region", "US-CA"), ("hours", "region", "US-TX"), ("hours", "area_code", "+1646"),
    ("hours", "country", "GB"), ("hours", "region", "CA-ON"), ("holiday", "country", "US"),
    ("holiday", "region", "US-NY"), ("holiday", "area_code", "+1212"),
    ("holiday", "region", "US-CA"),
]  # fmt: skip


# Area codes of the pool's numbers: the contacts' own (212) among many others.
POOL_AREAS = [212, 646, 718, 917, 305, 310, 415, 213, 312, 617, 202, 214, 713, 404, 602, 303,
              206, 503, 702, 801, 612, 314, 816, 615, 704, 919, 804, 410, 215, 412, 716, 518,
              860, 401, 207, 603, 802, 302, 843, 912, 850, 504, 601, 205, 502, 317, 614, 313,
              414, 319]  # fmt: skip


def add_pool(conn: Any, count: int) -> int:
    pool_id = conn.execute(
        insert(CallerIdPool).values(name="bench", daily_cap=1_000_000).returning(CallerIdPool.id)
    ).scalar_one()
    rows = []
    for i in range(count):
        number = f"+1{POOL_AREAS[i % len(POOL_AREAS)]}555{i // len(POOL_AREAS):04d}"
        country, regions, area = where_is(number)
        rows.append({"pool_id": pool_id, "number": number, "country": country,
                     "regions": sorted(regions), "area": area, "is_default": i == 0})  # fmt: skip
    conn.execute(insert(CallerId), rows)
    return pool_id


def add_rules(conn: Any, calling: int, frequency: int) -> None:
    if calling > len(CALLING_RULES):
        raise SystemExit(f"--calling-rules: at most {len(CALLING_RULES)}")
    far = dt.date.today() + dt.timedelta(days=200)
    for kind, scope, value in CALLING_RULES[:calling]:
        if kind == "hours":
            conn.execute(insert(CallingRule).values(
                scope=scope, value=value, days=[1, 2, 3, 4, 5, 6, 7],
                hours_start=dt.time(8), hours_end=dt.time(21)))  # fmt: skip
        else:
            conn.execute(insert(CallingHoliday).values(scope=scope, value=value, day=far))
    for n in range(frequency):
        if n == 0:
            values: dict[str, Any] = {"after_conversation": dt.timedelta(hours=1)}
        else:
            values = {"max_attempts": 100 + n, "period": dt.timedelta(days=n)}
        conn.execute(insert(FrequencyRule).values(name=f"bench-{n}", **values))


def wait_for_sends(engine: Any, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    sent = 0
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            sent = conn.execute(
                text("SELECT count(*) FROM call_attempts WHERE sent_at IS NOT NULL")
            ).scalar_one()
            conn.commit()
            if sent >= expected:
                break
            time.sleep(0.5)
    return sent


def report(
    args: argparse.Namespace,
    record: Path,
    limits: dict[str, float],
    sent: int,
    elapsed: float,
    cpu_s: float,
    sim_cpu_s: float,
    engine: Any,
    services: dict[str, float],
) -> None:
    originates = [r for r in read_records(record) if r.get("action") == "Originate"]
    times = sorted(r["mono"] for r in originates)
    ids = [r["action_id"] for r in originates]
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(text("SELECT status, count(*) FROM call_attempts GROUP BY 1")).all()
        )
    print(f"contacts: {args.contacts}   trunks: {args.trunks} x {args.cps:g} cps")
    print(f"rules: {args.calling_rules} calling, {args.frequency_rules} frequency;"
          f" caller-ID pool: {args.caller_ids or 'none'}")  # fmt: skip
    import dialer

    shape = (
        f"`dialer worker {args.dialer_worker_args or '(defaults)'}`"
        if args.dialer_worker
        else f"{args.workers} x {args.pool} {args.concurrency}"
    )
    print(f"workers: {shape}   simulator speed {args.speed:g}   broker {broker_kind(args.broker)}")
    print(f"dialer code: {Path(dialer.__file__).parent}")
    print(f"attempts sent: {sent} (DB), Originates received: {len(originates)} (simulator)")
    print(f"attempt statuses: {statuses}")
    print(f"duplicate custom_call_ids received: {len(ids) - len(set(ids))}")
    if len(times) < 2:
        print("not enough sends to measure")
        return
    span = times[-1] - times[0]
    lo, hi = times[len(times) // 20], times[len(times) * 19 // 20]
    middle = len(times) * 9 // 10
    print(f"overall: {len(times) / elapsed:,.0f} attempts/s ({len(times)} in {elapsed:.1f} s)")
    print(
        f"sustained (middle 90%): {middle / (hi - lo):,.0f} attempts/s; first-to-last {span:.1f} s"
    )
    print(
        f"dialer CPU: {cpu_s * 1000 / max(1, len(times)):.2f} ms per attempt ({cpu_s:.1f} s total)"
    )
    print(
        f"simulator CPU (not the dialer): {sim_cpu_s * 1000 / max(1, len(times)):.2f} ms per call"
    )
    for name, seconds in sorted(services.items()):
        print(f"{name} CPU (whole server): {seconds * 1000 / max(1, len(times)):.2f} ms per call")
    for trunk, limit in sorted(limits.items()):
        trunk_times = [
            r["mono"] for r in originates if (r.get("channel") or "").endswith(f"@{trunk}")
        ]
        print(
            f"trunk {trunk}: max {max_in_window(trunk_times)} calls in any 1-s window "
            f"(limit {limit:g}), {len(trunk_times)} calls"
        )
    print("note: shared 2-core machine; simulator, Postgres and broker compete for the same CPUs")


# -- helpers ----------------------------------------------------------------------------------


def read_records(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="ascii", errors="replace").split("\n")
    return [json.loads(line) for line in lines[:-1] if line]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its live descendants (and reaped children)."""
    return sum(process_cpu(pid).values())


def process_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of a process and each live descendant (reaped children count with their
    parent)."""
    found = {}
    for member in descendants(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # Fields after the command name (which may contain spaces) start after ')'.
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
            found[member] = (utime + stime + cutime + cstime) / CLOCK_TICKS
    return found


def broker_kind(url: str) -> str:
    return "RabbitMQ" if url.startswith(("amqp://", "pyamqp://", "amqps://")) else "Redis"


def delete_broker_namespace(url: str, prefix: str) -> None:
    """Remove what the run left on the broker: keys under the prefix (Redis), or the queues and
    exchanges named with it (RabbitMQ); nothing else."""
    if broker_kind(url) == "Redis":
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            client.delete(key)
        client.close()
        return
    with Connection(url, connect_timeout=5) as conn:
        for name in ("dialer.dispatch", "dialer.originate"):
            with contextlib.suppress(Exception), conn.channel() as channel:
                channel.queue_delete(f"{prefix}{name}")
        for name in ("dialer.dispatch", "dialer.originate", "celery.pidbox", "celeryev"):
            for exchange in (f"{prefix}{name}", f"reply.{prefix}{name}"):
                with contextlib.suppress(Exception), conn.channel() as channel:
                    channel.exchange_delete(exchange)


def wait_until_settled(count: Any, quiet_s: float = 3.0, timeout: float = 60.0) -> int:
    """`count()` once it has not changed for `quiet_s` seconds."""
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(0.2)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
    return last


def service_cpu() -> dict[str, float]:
    """CPU seconds of every Postgres, Redis and RabbitMQ process (exited backends count with
    their parent: the postmaster reaps them)."""
    totals = {"postgres": 0.0, "redis": 0.0, "rabbitmq": 0.0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            head, tail = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)
            comm = head.split("(", 1)[1]
            name = (
                "postgres"
                if comm.startswith("postgres")
                else "redis"
                if "redis" in comm
                else "rabbitmq"
                if comm.startswith("beam")
                else ""
            )
            if name:
                fields = tail.split()
                ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
                totals[name] += ticks / CLOCK_TICKS
    return totals


def rss_kb(pid: int) -> int:
    """Resident memory of `pid` in kB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                stack.extend(int(c) for c in children)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"simulator exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SystemExit("simulator did not start listening")


def wait_for_text(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited:\n{path.read_text(errors='replace')}")
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {needle!r} in {path}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


if __name__ == "__main__":
    exit_on_sigterm()
    main()
