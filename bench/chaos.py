"""Fault injection: a campaign dialled by real processes while they are killed, cut off and
restarted at random; then the invariants of exactly-once, compliant, paced dialing are checked.

The run owns everything it uses: a throwaway database (`dialer_chaos_<run>`), a private
`redis-server` on a free loopback port (the broker; it is the one restarted), a work directory
with every log and the simulator's action records. Child processes, each in its own process
group and marked with `DIALER_CHAOS_RUN=<run>` in their environment:

- the PBX simulator (`dialer pbx-sim --record`, one record file per incarnation);
- Celery workers (prefork, this script in `--worker` mode: the dialer's app with short
  redelivery timings), one beat (`--beat` mode) for the dispatch tick, one `dialer listen`.

The campaign: two trunks with CPS limits, contacts on numbers covering every simulator
behaviour in a zone where it is mid-afternoon; some contacts whose window is closed (zones where
it is night, or open in one zone and closed in another); a campaign whose window closes and one
whose window opens during the run; numbers on the do-not-call list before the run (global, for
the contact's campaign, and for another campaign, which must not stop the call) and numbers
added during it, in flight or not yet dialled. An opt-out key adds numbers during the run too.

Faults, at random times from a seeded RNG, one of each kind first: SIGKILL of a worker's pool
process, SIGKILL of a whole worker (a replacement is started), SIGKILL and restart of the
listener, every AMI connection cut (SIGUSR1 to the simulator), simulator killed and restarted
with calls up, private Redis killed and restarted empty, every connection to the run's database
terminated. Then it waits until every contact is settled and checks, from the simulator's
records and the database:

1. each attempt that reached the simulator did so exactly once; no Originate without an
   attempt; attempts that did not reach it are classified (nothing sent / fate unknown / send
   cut short), and none is recorded as sent without having been received;
2. every attempt ended with an outcome (or not_sent); no contact left dialing;
3. no Originate received outside the contact's calling window (in all its zones), nor after
   its number was put on an applicable do-not-call list;
4. per trunk, the most Originates received in any sliding 1-s window is within the limit.

Exit status 1 if an invariant fails. `--json FILE` writes the figures for tests.

Example:
    .venv/bin/python bench/chaos.py
    .venv/bin/python bench/chaos.py --contacts 400 --cps 6,9 --seed 7 --fault-gap 3,5
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

SCRIPT = str(Path(__file__).resolve())
ROOT = Path(SCRIPT).parent.parent
if str(ROOT) not in sys.path:  # run as a script: import the checkout's dialer
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from dial_throughput import rss_kb  # noqa: E402
from psycopg import sql  # noqa: E402
from sqlalchemy import Engine, insert, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from stopping import exit_on_sigterm  # noqa: E402

from dialer import migrate  # noqa: E402
from dialer.campaigns import calling_window  # noqa: E402
from dialer.campaigns.calling_window import CallingWindow  # noqa: E402
from dialer.contacts import dnc  # noqa: E402
from dialer.db import make_engine, make_sessionmaker, transaction  # noqa: E402
from dialer.dialing.pacing import max_in_window  # noqa: E402
from dialer.models import Campaign, Contact, Trunk, TrunkRoute  # noqa: E402
from dialer.outcomes.retry import DEFAULT_DELAYS  # noqa: E402
from dialer.pbxsim.record import read_records  # noqa: E402

SERVER_URL = os.environ.get(
    "DIALER_BENCH_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
RUN_MARKER = "DIALER_CHAOS_RUN"
FAULTS = (
    "worker_child",
    "worker_group",
    "listener",
    "ami_cut",
    "sim_restart",
    "redis_restart",
    "pg_terminate",
)
# Stalls (`--stalls`, once each): a peer that hangs instead of dying, for `--stall-seconds`:
# the simulator, the private Redis, the run's Postgres sessions (SIGSTOP, then SIGCONT). The
# shared Postgres server itself is not stopped: other databases live on it.
STALLS = ("sim_stop", "redis_stop", "pg_stop")
# Last two digits: every simulator behaviour (01-09, 99) and two plain humans.
TAILS = ("01", "02", "03", "04", "05", "06", "07", "08", "09", "99", "11", "37")
CALLER_ID = "+12125550100"
TRANSFER_NUMBER = "+12125550199"  # a simulated human: the transfer connects
OPEN_STATUSES = ("queued", "originating", "up")
# A pending contact due later than this is waiting for its window, not for a retry.
SETTLED_HORIZON_S = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cps", default="40,60", help="the trunks' CPS limits, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (parents)")
    parser.add_argument("--concurrency", type=int, default=4, help="pool processes per worker")
    parser.add_argument("--speed", type=float, default=10.0, help="simulator speed factor")
    parser.add_argument(
        "--fault-gap", default="6,12", help="seconds between faults: a random pick in MIN,MAX"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this")
    parser.add_argument(
        "--stalls", action="store_true", help=f"also stall each peer once: {', '.join(STALLS)}"
    )
    parser.add_argument("--stall-seconds", type=float, default=30.0, help="how long a stall lasts")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--work-dir", type=Path, help="logs and records (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir after a pass")
    parser.add_argument("--run-id", help="name of the run (default: random)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--beat", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cleanup", metavar="RUN_ID", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker or args.beat:
        run_celery(rest, beat=args.beat)
    elif args.cleanup:
        cleanup(args.cleanup)
    else:
        # SIGTERM unwinds like Ctrl-C: the run still stops its children, drops its database.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        sys.exit(0 if ChaosRun(args).run() else 1)


# -- --worker / --beat: the dialer's Celery app with redelivery timings for the run ----------


def chaos_app() -> Any:
    from dialer.dialing.celery_app import WorkerOptions, make_celery_app
    from dialer.dialing.dispatch import TickOptions
    from dialer.settings import Settings

    options = WorkerOptions(
        tick_interval_s=0.5,
        # The tick hands out again attempts left `queued` for 5 s (a lost message, an emptied
        # Redis): a duplicate message is harmless by design. The visibility timeout stays above
        # the longest an originate task can run, as it must.
        visibility_timeout_s=60.0,
        restore_interval_s=2.0,
        send_timeout_s=5.0,
        tick=TickOptions(requeue_after_s=5.0),
    )
    return make_celery_app(Settings.from_env(), options)


def run_celery(argv: list[str], *, beat: bool) -> None:
    app = chaos_app()
    if beat:
        app.start(["beat", *argv])
    else:
        app.worker_main(["worker", *argv])


# -- processes ------------------------------------------------------------------------------


class Child:
    """A child process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        # Children run in the log directory: nothing they write lands in the checkout.
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=log_path.parent,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def children(self) -> list[int]:
        found: list[int] = []
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{self.pid}/task"):
                path = f"/proc/{self.pid}/task/{task}/children"
                with contextlib.suppress(OSError):
                    found += [int(p) for p in Path(path).read_text().split()]
        return found

    def kill(self) -> None:
        """SIGKILL the whole group (the process and anything it forked)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        # Pool processes outlive a parent that ended first.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_processes(run_id: str) -> list[int]:
    """Every live process carrying this run's marker (children, pool processes, Redis)."""
    marker = f"{RUN_MARKER}={run_id}".encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
    return found


def admin_conninfo() -> str:
    return make_url(SERVER_URL).set(drivername="postgresql").render_as_string(hide_password=False)


def database_name(run_id: str) -> str:
    return f"dialer_chaos_{run_id}"


def cleanup(run_id: str) -> None:
    """Kill what is left of a run and drop its database (safe to call more than once)."""
    for pid in run_processes(run_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with psycopg.connect(admin_conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(database_name(run_id))
            )
        )


# -- the run --------------------------------------------------------------------------------


@dataclasses.dataclass
class Plan:
    """Where it is day and night, and when the two moving windows change (from the start)."""

    zone_open: str
    zone_closed: str
    close_after_s: float
    open_after_s: float


class ChaosRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = args.run_id or uuid.uuid4().hex[:8]
        self.rng = random.Random(args.seed)
        self.cps = [float(c) for c in args.cps.split(",")]
        lo, hi = (float(x) for x in args.fault_gap.split(","))
        self.fault_gap = (lo, hi)
        self.work = args.work_dir or Path(tempfile.mkdtemp(prefix="dialer-chaos-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.db_name = database_name(self.run_id)
        self.database_url = (
            make_url(SERVER_URL).set(database=self.db_name).render_as_string(hide_password=False)
        )
        self.redis_port = free_port()
        self.sim_port = free_port()
        self.children: dict[str, Child] = {}
        self.workers: list[Child] = []
        self.incarnations = 0
        self.worker_count = 0
        self.faults: list[tuple[float, str, str]] = []
        # (kind, wall times the fault began and ended) for the time to resume dialing.
        self.fault_spans: list[tuple[str, float, float]] = []
        self.rss_kb: dict[str, list[int]] = {"listener": [], "workers": []}  # samples
        self.pg_sessions: list[int] = []  # sampled with each progress line, then at the end
        self.killed: set[int] = set()  # pids this run killed on purpose
        self.unplanned: list[tuple[str, int | None]] = []
        self.dnc_added: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.t0 = self.started
        self.engine: Engine | None = None

    # -- output -------------------------------------------------------------------------------

    def say(self, line: str) -> None:
        print(line, flush=True)

    def at(self) -> str:
        return f"+{time.monotonic() - self.t0:6.1f}s"

    # -- processes ----------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            RUN_MARKER: self.run_id,
            "DIALER_DATABASE_URL": self.database_url,
            "DIALER_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "DIALER_BROKER_PREFIX": f"dialer-chaos:{self.run_id}:",
            "DIALER_AMI_HOST": "127.0.0.1",
            "DIALER_AMI_PORT": str(self.sim_port),
            "DIALER_LOG_LEVEL": "INFO",
            **extra,
        }

    def spawn(self, name: str, argv: list[str], **env: str) -> Child:
        child = Child(name, argv, self.env(**env), self.work / f"{name}.log")
        self.children[name] = child
        return child

    def start_redis(self) -> None:
        redis = self.spawn(
            "redis",
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.work)],
        )  # fmt: skip
        wait_for(lambda: accepts(self.redis_port) or not redis.alive(), 20, "redis-server")
        if not redis.alive():
            raise RuntimeError(f"redis-server exited:\n{redis.log()[-2000:]}")

    def start_simulator(self) -> None:
        record = self.work / f"pbx-actions-{self.incarnations}.jsonl"
        self.incarnations += 1
        sim = self.spawn(
            "pbx-sim",
            [sys.executable, "-m", "dialer", "pbx-sim", "--host", "127.0.0.1", "--port",
             str(self.sim_port), "--speed", str(self.args.speed), "--record", str(record)],
            DIALER_LOG_LEVEL="WARNING",
        )  # fmt: skip
        wait_for(lambda: accepts(self.sim_port) or not sim.alive(), 20, "the simulator")
        if not sim.alive():
            raise RuntimeError(f"the simulator exited:\n{sim.log()[-2000:]}")

    def start_worker(self) -> Child:
        n = self.worker_count
        self.worker_count += 1
        worker = self.spawn(
            f"worker-{n}",
            [sys.executable, SCRIPT, "--worker", "-P", "prefork", "-c",
             str(self.args.concurrency), "-l", "INFO", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"chaos{n}-{self.run_id}@%h"],
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def start_beat(self) -> None:
        self.spawn("beat", [sys.executable, SCRIPT, "--beat", "-l", "INFO"])

    def start_listener(self) -> None:
        self.spawn(
            "listener",
            [sys.executable, "-m", "dialer", "listen", "--flush-ms", "50", "--reconcile-every",
             "2", "--grace", "3", "--min-age", "2"],
        )  # fmt: skip

    def kill(self, child: Child) -> None:
        self.killed.add(child.pid)
        child.kill()

    def live_workers(self) -> list[Child]:
        return [w for w in self.workers if w.alive()]

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> bool:
        args = self.args
        cps = ", ".join(f"T{i} {c:g} cps" for i, c in enumerate(self.cps))
        self.say(
            f"chaos run {self.run_id}: {args.contacts} contacts, seed {args.seed}, trunks {cps}, "
            f"{args.workers} workers x prefork {args.concurrency}, simulator speed {args.speed:g}"
        )
        if shutil.which("redis-server") is None:
            raise SystemExit("redis-server is not installed: the run needs a private Redis")
        passed = False
        with psycopg.connect(admin_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.db_name)))
        try:
            migrate.upgrade(self.database_url)
            self.engine = make_engine(self.database_url)
            plan = self.load()
            self.start_redis()
            self.start_simulator()
            for _ in range(args.workers):
                self.start_worker()
            self.start_beat()
            self.start_listener()
            for worker in self.workers:
                wait_for(lambda w=worker: "ready." in w.log(), 60, f"{worker.name} to start")
            self.go(plan)
            self.inject_until_settled(plan)
            elapsed = time.monotonic() - self.t0
            self.stop_all()
            results = self.check(plan, elapsed)
            passed = results["passed"]
            self.print_results(results)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2, default=str))
        finally:
            self.stop_all()
            if self.engine is not None:
                self.engine.dispose()
            cleanup(self.run_id)
            if passed and not args.keep and not args.work_dir:
                shutil.rmtree(self.work, ignore_errors=True)
            else:
                self.say(f"logs and records: {self.work}")
        return passed

    def stop_all(self) -> None:
        # The dialer first, its peers last: a worker that loses Redis while stopping says so.
        others = [self.children.get(n) for n in ("beat", "listener", "pbx-sim", "redis")]
        for child in [*self.workers, *(c for c in others if c is not None)]:
            child.stop()

    # -- the campaign -------------------------------------------------------------------------

    def load(self) -> Plan:
        """Trunks, campaigns (draft) and contacts; the do-not-call entries made beforehand."""
        n = self.args.contacts
        now = dt.datetime.now(dt.UTC)
        rates = self.cps
        closing_n = max(30, n // 20)
        opening_n = max(20, n // 20)
        plan = Plan(
            zone_open=fixed_zone(now, 14),
            zone_closed=fixed_zone(now, 3),
            # The closing campaign shares the last trunk, at about half its rate: its window
            # closes with about half of its first calls made, and some in flight.
            close_after_s=max(6.0, 0.5 * closing_n / (rates[-1] / 2)),
            # The opening one waits for about a quarter of the run (1.3 attempts a contact).
            open_after_s=max(8.0, 0.25 * n * 1.3 / sum(rates)),
        )
        retry = {outcome: 3 for outcome in DEFAULT_DELAYS}
        sessions = make_sessionmaker(self.engine)
        phones = iter(phone_number(i) for i in range(n))
        with transaction(sessions) as session:
            trunk_ids = []
            for i, limit in enumerate(rates):
                trunk = Trunk(name=f"T{i}", cps=limit, max_channels=1000)
                trunk.routes.append(TrunkRoute(pbx="default"))
                session.add(trunk)
                session.flush()
                trunk_ids.append(trunk.id)

            def campaign(name: str, trunk_id: int, **fields: Any) -> int:
                row = Campaign(
                    name=name,
                    trunk_id=trunk_id,
                    status="draft",
                    caller_id_number=CALLER_ID,
                    ivr_file="welcome_message",
                    ivr_vm_file="vm_message",
                    transfer_number=TRANSFER_NUMBER,
                    # Short, so that attempts whose events were lost are reconciled soon.
                    originate_timeout_ms=5_000,
                    max_attempts=3,
                    retry_delays=retry,
                    calling_days=[1, 2, 3, 4, 5, 6, 7],
                    calling_hours_start=dt.time(9, 0),
                    calling_hours_end=dt.time(20, 0),
                    **fields,
                )
                session.add(row)
                session.flush()
                return row.id

            main_ids = [
                campaign(f"main-{i}", trunk_id, opt_out_key="2" if i == 0 else None)
                for i, trunk_id in enumerate(trunk_ids)
            ]
            closing = campaign("closing", trunk_ids[-1])
            opening = campaign("opening", trunk_ids[0])

        rows: list[dict[str, Any]] = []

        def add(campaign_id: int, zones: list[str], group: str) -> str:
            phone = next(phones)
            rows.append(
                {
                    "campaign_id": campaign_id,
                    "phone_e164": phone,
                    "phone_raw": phone,
                    "timezones": zones,
                    "fields": {"chaos_group": group},
                }
            )
            return phone

        dnc_global, dnc_own, dnc_other = [], [], []
        for _ in range(closing_n):
            add(closing, [plan.zone_open], "closing")
        for _ in range(opening_n):
            add(opening, [plan.zone_open], "opening")
        special = max(4, n // 50)
        rest = n - closing_n - opening_n - 3 * special
        if rest <= 0:
            raise SystemExit(f"--contacts {n} is too few for the run's contact groups")
        for i in range(rest + 3 * special):
            # Each trunk's campaign gets contacts in proportion to its rate.
            campaign_id = main_ids[pick_by_rate(i, rates)]
            if i < special:
                zones = [plan.zone_closed] if i % 2 else [plan.zone_open, plan.zone_closed]
                add(campaign_id, zones, "window_closed")
            elif i < 2 * special:
                phone = add(campaign_id, [plan.zone_open], "dnc_before")
                if i % 2:
                    dnc_global.append(phone)
                else:
                    dnc_own.append((phone, campaign_id))
            elif i < 3 * special:
                other = main_ids[(main_ids.index(campaign_id) + 1) % len(main_ids)]
                phone = add(campaign_id, [plan.zone_open], "dnc_other_campaign")
                dnc_other.append((phone, other))
            else:
                add(campaign_id, [plan.zone_open], "open")
        with transaction(sessions) as session:
            # Listed before the contacts exist (as if loaded by another tool): only the
            # dispatcher's and the worker's checks stand between these numbers and a call.
            dnc.add_e164(session, dnc_global, campaign_id=None, source="chaos")
            for phone, campaign_id in dnc_own + dnc_other:
                dnc.add_e164(session, [phone], campaign_id=campaign_id, source="chaos")
        with self.engine.begin() as conn:
            conn.execute(insert(Contact), rows)
        self.say(
            f"loaded: {n} contacts; window closed now {special}, closing after "
            f"{plan.close_after_s:.0f}s {closing_n}, opening after {plan.open_after_s:.0f}s "
            f"{opening_n}, on DNC before the run {len(dnc_global) + len(dnc_own)} (+{special} "
            f"listed for another campaign only); zones {plan.zone_open} / {plan.zone_closed}"
        )
        return plan

    def go(self, plan: Plan) -> None:
        """Set the moving windows relative to now, and start every campaign."""
        assert self.engine is not None
        now = dt.datetime.now(dt.UTC)
        local = now.astimezone(ZoneInfo(plan.zone_open)).replace(tzinfo=None)
        closes = (local + dt.timedelta(seconds=plan.close_after_s)).time()
        opens = (local + dt.timedelta(seconds=plan.open_after_s)).time()
        with self.engine.begin() as conn:
            conn.execute(
                text("UPDATE campaigns SET calling_hours_end = :t WHERE name = 'closing'"),
                {"t": closes},
            )
            conn.execute(
                text("UPDATE campaigns SET calling_hours_start = :t WHERE name = 'opening'"),
                {"t": opens},
            )
            conn.execute(text("UPDATE campaigns SET status = 'running'"))
        self.t0 = time.monotonic()
        self.say(
            f"{self.at()} campaigns running (windows: closing at {closes}, opening at {opens})"
        )

    # -- faults -------------------------------------------------------------------------------

    def inject_until_settled(self, plan: Plan) -> None:
        args = self.args
        pending_kinds = list(FAULTS)
        self.rng.shuffle(pending_kinds)
        if args.stalls:
            pending_kinds += list(STALLS)
        next_fault = time.monotonic() + self.rng.uniform(*self.fault_gap)
        dnc_rounds = max(3, min(10, args.contacts // 100))
        next_dnc = time.monotonic() + self.rng.uniform(1.0, 3.0)
        next_progress = time.monotonic() + 15
        deadline = self.started + args.timeout
        settled_since: float | None = None
        while True:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"not settled after {args.timeout:.0f}s")
            state = self.state()
            dialing = state["due"] + state["queued"] + state["dialing"] > 0
            if now >= next_fault and (dialing or pending_kinds):
                kind = pending_kinds.pop(0) if pending_kinds else self.rng.choice(FAULTS)
                self.fault(kind)
                next_fault = time.monotonic() + self.rng.uniform(*self.fault_gap)
            if now >= next_dnc and dnc_rounds and dialing:
                self.add_dnc_now()
                dnc_rounds -= 1
                next_dnc = time.monotonic() + self.rng.uniform(2.0, 6.0)
            if now >= next_progress:
                self.say(
                    f"{self.at()} progress: {state['attempts']} attempts, {state['open']} open, "
                    f"{state['final']}/{args.contacts} contacts final, {state['due']} due"
                )
                next_progress = now + 15
                self.pg_sessions.append(self.run_sessions())
            self.keep_alive()
            self.sample_rss()
            quiet = not pending_kinds and state["open"] == 0 and not dialing
            if quiet:
                settled_since = settled_since or now
                # Settled for a few seconds: no straggler event or redelivery changes it.
                if now - settled_since > 3:
                    self.say(f"{self.at()} settled: {state}")
                    self.pg_sessions.append(self.run_sessions())
                    return
            else:
                settled_since = None
            time.sleep(0.5)

    def state(self) -> dict[str, int]:
        assert self.engine is not None
        query = text(
            f"""
            SELECT (SELECT count(*) FROM call_attempts) AS attempts,
                   (SELECT count(*) FROM call_attempts
                     WHERE status IN {OPEN_STATUSES}) AS open,
                   (SELECT count(*) FROM call_attempts WHERE status = 'queued') AS queued,
                   (SELECT count(*) FROM contacts WHERE status = 'dialing') AS dialing,
                   (SELECT count(*) FROM contacts WHERE status = 'pending'
                       AND next_attempt_at < now() + make_interval(secs => :horizon)) AS due,
                   (SELECT count(*) FROM contacts
                     WHERE status NOT IN ('pending', 'dialing')) AS final
            """
        )
        for _ in range(5):  # our own connections are terminated too
            try:
                with self.engine.connect() as conn:
                    row = conn.execute(query, {"horizon": SETTLED_HORIZON_S}).one()
                    return dict(row._mapping)
            except Exception:
                time.sleep(0.5)
        raise RuntimeError("the run's database does not answer")

    def keep_alive(self) -> None:
        """A process that died on its own is a finding, not a fault: note it, start another."""
        restart = {
            "listener": self.start_listener,
            "pbx-sim": self.start_simulator,
            "redis": self.start_redis,
            "beat": self.start_beat,
        }
        for name, start in restart.items():
            child = self.children.get(name)
            if child is not None and not child.alive() and child.pid not in self.killed:
                self.unplanned.append((name, child.proc.returncode))
                self.say(f"{self.at()} NOTE: {name} exited by itself ({child.proc.returncode})")
                start()
        for worker in self.workers:
            if not worker.alive() and worker.pid not in self.killed:
                self.killed.add(worker.pid)
                self.unplanned.append((worker.name, worker.proc.returncode))
                self.say(f"{self.at()} NOTE: {worker.name} exited by itself")
                self.start_worker()

    def fault(self, kind: str) -> None:
        begun = time.time()
        detail = getattr(self, f"fault_{kind}")()
        self.faults.append((time.monotonic() - self.t0, kind, detail))
        self.fault_spans.append((kind, begun, time.time()))
        self.say(f"{self.at()} fault {kind}: {detail}")

    def stall(self, pids: list[int]) -> float:
        """SIGSTOP `pids` for `--stall-seconds`, then SIGCONT; returns how long it lasted."""
        started = time.monotonic()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(self.args.stall_seconds)
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        return time.monotonic() - started

    def fault_sim_stop(self) -> str:
        took = self.stall([self.children["pbx-sim"].pid])
        return f"simulator stopped (SIGSTOP) for {took:.1f}s: sockets open, nothing answered"

    def fault_redis_stop(self) -> str:
        took = self.stall([self.children["redis"].pid])
        return f"private Redis stopped (SIGSTOP) for {took:.1f}s"

    def fault_pg_stop(self) -> str:
        with psycopg.connect(admin_conninfo(), autocommit=True) as conn:
            pids = [
                row[0]
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                    " AND backend_type = 'client backend'",
                    (self.db_name,),
                )
            ]
        took = self.stall(pids)
        return f"{len(pids)} Postgres sessions of {self.db_name} stopped (SIGSTOP) for {took:.1f}s"

    def run_sessions(self) -> int:
        """Sessions open on the run's database (the dialer's, this script's own pool too)."""
        with psycopg.connect(admin_conninfo(), autocommit=True) as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                " AND backend_type = 'client backend'",
                (self.db_name,),
            ).fetchone()[0]

    def sample_rss(self) -> None:
        listener = self.children.get("listener")
        if listener is not None and listener.alive():
            self.rss_kb["listener"].append(rss_kb(listener.pid))
        pids = [p for w in self.live_workers() for p in (w.pid, *w.children())]
        if pids:
            self.rss_kb["workers"].append(max(rss_kb(p) for p in pids))

    def fault_worker_child(self) -> str:
        candidates = [(w, c) for w in self.live_workers() for c in w.children()]
        if not candidates:
            return self.fault_worker_group()
        worker, child = self.rng.choice(sorted(candidates, key=lambda p: (p[0].name, p[1])))
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        return f"SIGKILL pool process {child} of {worker.name} (its parent forks a new one)"

    def fault_worker_group(self) -> str:
        live = self.live_workers()
        victim = self.rng.choice(live)
        self.kill(victim)
        replacement = self.start_worker()
        return f"SIGKILL {victim.name} and its pool; started {replacement.name}"

    def fault_listener(self) -> str:
        listener = self.children["listener"]
        self.kill(listener)
        pause = self.rng.uniform(0.5, 2.0)
        time.sleep(pause)  # calls end while nobody listens
        self.start_listener()
        return f"SIGKILL listener, restarted after {pause:.1f}s"

    def fault_ami_cut(self) -> str:
        sim = self.children["pbx-sim"]
        before = sim.log().count("SIGUSR1")
        os.kill(sim.pid, signal.SIGUSR1)
        wait_for(lambda: sim.log().count("SIGUSR1") > before, 10, "the simulator to cut")
        line = [x for x in sim.log().splitlines() if "SIGUSR1" in x][-1]
        return line.split("SIGUSR1: ", 1)[-1]

    def fault_sim_restart(self) -> str:
        calls = self.state()["open"]
        sim = self.children["pbx-sim"]
        self.kill(sim)
        pause = self.rng.uniform(0.2, 1.5)
        time.sleep(pause)
        self.start_simulator()
        return f"SIGKILL simulator ({calls} attempts open), restarted after {pause:.1f}s"

    def fault_redis_restart(self) -> str:
        self.kill(self.children["redis"])
        pause = self.rng.uniform(0.2, 1.5)
        time.sleep(pause)
        self.start_redis()
        return f"SIGKILL private Redis (every queued task lost), restarted after {pause:.1f}s"

    def fault_pg_terminate(self) -> str:
        with psycopg.connect(admin_conninfo(), autocommit=True) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.db_name,),
            ).fetchone()[0]
        return f"terminated {killed} connections to {self.db_name}"

    def add_dnc_now(self) -> None:
        """Put numbers on the list mid-run: some with an attempt in flight, some not dialled."""
        assert self.engine is not None
        with self.engine.connect() as conn:
            in_flight = conn.execute(
                text(
                    "SELECT k.phone_e164, k.campaign_id FROM contacts k JOIN call_attempts a"
                    " ON a.contact_id = k.id WHERE a.status = 'queued'"
                    " OR (a.status = 'originating' AND a.sent_at IS NULL) ORDER BY a.id"
                )
            ).all()
            waiting = conn.execute(
                text(
                    "SELECT phone_e164, campaign_id FROM contacts WHERE status = 'pending'"
                    " AND fields ->> 'chaos_group' = 'open' ORDER BY id"
                )
            ).all()
        picks = self.rng.sample(in_flight, min(5, len(in_flight)))
        picks += self.rng.sample(waiting, min(3, len(waiting)))
        sessions = make_sessionmaker(self.engine)
        for phone, campaign_id in picks:
            scoped = self.rng.random() < 0.5
            with transaction(sessions) as session:
                dnc.add_e164(
                    session, [phone], campaign_id=campaign_id if scoped else None, source="chaos"
                )
        self.say(
            f"{self.at()} do-not-call: added {len(picks)} numbers "
            f"({min(5, len(in_flight))} with an attempt queued or waiting for its slot)"
        )
        self.dnc_added += [{"phone": p, "campaign_id": c} for p, c in picks]

    # -- the checks ---------------------------------------------------------------------------

    def check(self, plan: Plan, elapsed: float) -> dict[str, Any]:
        assert self.engine is not None
        records = []
        for n in range(self.incarnations):
            records += read_records(self.work / f"pbx-actions-{n}.jsonl")
        originates = [r for r in records if r["action"] == "Originate"]
        with self.engine.connect() as conn:
            attempts = {
                r.custom_call_id: r
                for r in conn.execute(
                    text(
                        """
                        SELECT a.id, a.custom_call_id, a.status, a.outcome, a.sent_at,
                               a.send_error, a.ended_at, a.trunk_id, a.campaign_id,
                               k.id AS contact_id, k.phone_e164, k.timezones,
                               (SELECT e.data ->> 'reason' FROM call_events e
                                 WHERE e.call_attempt_id = a.id AND e.event = 'DialerOutcome'
                                 LIMIT 1) AS closed_by
                          FROM call_attempts a JOIN contacts k ON k.id = a.contact_id
                        """
                    )
                )
            }
            windows = {
                r.id: CallingWindow(
                    r.calling_hours_start, r.calling_hours_end, frozenset(r.calling_days)
                )
                for r in conn.execute(text("SELECT * FROM campaigns"))
            }
            trunks = {r.id: (r.name, r.cps) for r in conn.execute(text("SELECT * FROM trunks"))}
            dnc_rows = conn.execute(
                text("SELECT phone_e164, campaign_id, added_at FROM dnc_numbers")
            ).all()
            contacts = conn.execute(
                text(
                    "SELECT id, status, attempts, next_attempt_at, timezones, phone_e164,"
                    " campaign_id, fields ->> 'chaos_group' AS grp FROM contacts"
                )
            ).all()
            outcomes = dict(
                conn.execute(
                    text("SELECT coalesce(outcome, status), count(*) FROM call_attempts GROUP BY 1")
                ).all()
            )
            db_now = conn.execute(text("SELECT now()")).scalar_one()

        # 1. Originates per attempt.
        received = Counter(r["action_id"] for r in originates)
        mismatched_ids = sum(1 for r in originates if r["channel_id"] != r["action_id"])
        unknown_ids = sorted(i for i in received if i not in attempts)
        duplicates = {i: c for i, c in received.items() if c > 1}
        classes: Counter[str] = Counter({key: 0 for key, _, _ in ATTEMPT_CLASSES})
        for call_id, a in attempts.items():
            got = received.get(call_id, 0)
            if got:
                key = "received_not_sent" if a.status == "not_sent" else "received_once"
                classes["received_more" if got > 1 else key] += 1
            elif a.status == "not_sent":
                classes["not_sent"] += 1
            elif a.send_error and a.send_error.startswith("fate unknown"):
                classes["fate_unknown"] += 1
            elif a.sent_at is None:
                classes["send_cut_short"] += 1
            else:
                classes["recorded_sent"] += 1
        late = sum(
            1
            for r in originates
            if (a := attempts.get(r["action_id"])) is not None
            and a.ended_at is not None
            and r["wall"] > a.ended_at.timestamp()
        )
        inv1 = {
            "originates": len(originates),
            "attempts": len(attempts),
            "attempts_received_more_than_once": len(duplicates),
            "originates_without_attempt": len(unknown_ids),
            "channel_id_not_action_id": mismatched_ids,
            "classes": dict(classes),
            "received_after_attempt_closed": late,
        }
        inv1["passed"] = (
            not unknown_ids
            and not mismatched_ids
            and all(classes[key] == 0 for key, _, must_be_zero in ATTEMPT_CLASSES if must_be_zero)
        )

        # 2. Attempts without a final outcome.
        still_open = [a for a in attempts.values() if a.status in OPEN_STATUSES]
        no_outcome = [a for a in attempts.values() if a.status == "ended" and not a.outcome]
        dialing = [c for c in contacts if c.status == "dialing"]
        inv2 = {
            "open": len(still_open),
            "ended_without_outcome": len(no_outcome),
            "contacts_dialing": len(dialing),
            "outcomes": dict(sorted(outcomes.items())),
        }
        inv2["passed"] = not still_open and not no_outcome and not dialing

        # 3. Window and do-not-call at receive time.
        by_phone: dict[str, list[tuple[int | None, dt.datetime]]] = defaultdict(list)
        for phone, campaign_id, added_at in dnc_rows:
            by_phone[phone].append((campaign_id, added_at))
        outside, on_dnc = [], []
        for r in originates:
            a = attempts.get(r["action_id"])
            if a is None:
                continue
            at = dt.datetime.fromtimestamp(r["wall"], dt.UTC)
            zones = calling_window.zones_for(a.phone_e164, tuple(a.timezones or ()))
            if not calling_window.is_open(windows[a.campaign_id], zones, at):
                outside.append((a.custom_call_id, at.isoformat()))
            for scope, added_at in by_phone.get(a.phone_e164, ()):
                if (scope is None or scope == a.campaign_id) and added_at <= at:
                    on_dnc.append((a.custom_call_id, at.isoformat(), added_at.isoformat()))
        groups: dict[str, Counter[str]] = defaultdict(Counter)
        for c in contacts:
            groups[c.grp][c.status] += 1
        # Contacts still pending must be waiting for their window, never for a forgotten call.
        pending_wrong = [
            c.id
            for c in contacts
            if c.status == "pending"
            and (c.next_attempt_at - db_now).total_seconds() < SETTLED_HORIZON_S
        ]
        dialled_other = sum(
            1
            for a in attempts.values()
            if a.custom_call_id in received
            and a.phone_e164 in by_phone
            and not any(s is None or s == a.campaign_id for s, _ in by_phone[a.phone_e164])
        )
        inv3 = {
            "outside_window": len(outside),
            "on_dnc": len(on_dnc),
            "examples": (outside + on_dnc)[:10],
            "dnc_added_during_run": len(self.dnc_added),
            "listed_for_another_campaign_dialled": dialled_other,
            "contacts_by_group": {g: dict(sorted(c.items())) for g, c in sorted(groups.items())},
            "pending_not_waiting_for_window": len(pending_wrong),
        }
        inv3["passed"] = not outside and not on_dnc and not pending_wrong

        # 4. Rate per trunk.
        per_trunk: dict[str, list[float]] = defaultdict(list)
        trunk_of = {a.custom_call_id: a.trunk_id for a in attempts.values()}
        # Originates written while the simulator was stopped wait in its socket and are read
        # together when it resumes: that burst is the PBX's, not the dialer's (the dialer's
        # own times below still count them).
        stopped = [(b, e) for kind, b, e in self.fault_spans if kind == "sim_stop"]
        held_in_socket = 0
        for r in originates:
            trunk_id = trunk_of.get(r["action_id"])
            sent_at = attempts[r["action_id"]].sent_at if r["action_id"] in attempts else None
            if sent_at is not None and any(b <= sent_at.timestamp() <= e for b, e in stopped):
                held_in_socket += 1
                continue
            if trunk_id is not None:
                per_trunk[trunks[trunk_id][0]].append(r["mono"])
        # The dialer's own record of when it wrote each Originate, for telling a dialer
        # overrun from a simulator that read its sockets late.
        sent_times: dict[str, list[float]] = defaultdict(list)
        for a in attempts.values():
            if a.sent_at is not None and a.custom_call_id in received:
                sent_times[trunks[a.trunk_id][0]].append(a.sent_at.timestamp())
        rates = {}
        for name, limit in sorted(trunks.values()):
            times = sorted(per_trunk.get(name, []))
            over = int(limit) + 1
            rates[name] = {
                "limit": limit,
                "max_in_1s": max_in_window(times),
                "calls": len(times),
                "max_in_1s_by_sent_at": max_in_window(sent_times.get(name, [])),
                # Headroom: the shortest time any limit + 1 consecutive calls took (over 1 s
                # means no window held more than the limit).
                "tightest_span_s": min(
                    (b - a for a, b in zip(times, times[over - 1 :], strict=False)), default=None
                ),
            }
        inv4 = {
            "trunks": rates,
            "sent_while_the_simulator_was_stopped": held_in_socket,
            "passed": all(t["max_in_1s"] <= t["limit"] for t in rates.values()),
        }

        faults = Counter(kind for _, kind, _ in self.faults)
        return {
            "run_id": self.run_id,
            "contacts": self.args.contacts,
            "seed": self.args.seed,
            "run_time_s": round(elapsed, 1),
            "faults": {kind: faults.get(kind, 0) for kind in FAULTS},
            "fault_log": self.faults,
            # Processes that died without being killed (restarted as a supervisor would).
            "exited_by_themselves": [name for name, _ in self.unplanned],
            "originates_per_attempt": inv1,
            "final_outcomes": inv2,
            "window_and_dnc": inv3,
            "rate": inv4,
            "recovery": self.recovery(attempts, received),
            "passed": all(i["passed"] for i in (inv1, inv2, inv3, inv4)),
        }

    def recovery(self, attempts: dict[str, Any], received: Counter[str]) -> dict[str, Any]:
        """Per fault, the seconds from its end to the first call sent after it that reached
        the simulator; the peak RSS of the listener and of the largest worker process; the
        run's Postgres sessions before the faults and once settled."""
        sent = sorted(
            a.sent_at.timestamp()
            for call_id, a in attempts.items()
            if a.sent_at is not None and received.get(call_id)
        )
        resumed = []
        for kind, begun, ended in self.fault_spans:
            after = next((t for t in sent if t >= ended), None)
            resumed.append(
                {
                    "fault": kind,
                    "lasted_s": round(ended - begun, 1),
                    "sent_during": sum(1 for t in sent if begun <= t < ended),
                    "resume_s": None if after is None else round(after - ended, 2),
                }
            )
        rss = {
            role: {
                "first_mb": round(samples[0] / 1024, 1),
                "peak_mb": round(max(samples) / 1024, 1),
                "last_mb": round(samples[-1] / 1024, 1),
            }
            for role, samples in self.rss_kb.items()
            if samples
        }
        sessions = self.pg_sessions
        return {
            "resume": resumed,
            "rss": rss,
            "pg_sessions": {
                "first": sessions[0] if sessions else None,
                "max": max(sessions, default=None),
                "settled": sessions[-1] if sessions else None,
            },
        }

    def print_results(self, r: dict[str, Any]) -> None:
        def verdict(ok: bool) -> str:
            return "PASS" if ok else "FAIL"

        i1, i2, i3, i4 = (
            r["originates_per_attempt"],
            r["final_outcomes"],
            r["window_and_dnc"],
            r["rate"],
        )
        say = self.say
        say("")
        say(f"1. Originates received per attempt [{verdict(i1['passed'])}]")
        say(f"   {i1['originates']} Originates received, {i1['attempts']} attempts")
        say(f"   Originates whose id has no attempt: {i1['originates_without_attempt']}")
        say(f"   Originates whose ChannelId is not the ActionID: {i1['channel_id_not_action_id']}")
        for key, label, must_be_zero in ATTEMPT_CLASSES:
            say(f"   {label}: {i1['classes'][key]}{' (must be 0)' if must_be_zero else ''}")
        say(f"   received after their attempt was closed: {i1['received_after_attempt_closed']}")
        say(f"2. Attempts without a final outcome [{verdict(i2['passed'])}]")
        say(
            f"   open: {i2['open']}, ended without outcome: {i2['ended_without_outcome']}, "
            f"contacts still dialing: {i2['contacts_dialing']}"
        )
        say("   attempts by outcome: " + ", ".join(f"{k} {v}" for k, v in i2["outcomes"].items()))
        say(f"3. Dialled outside the window or on do-not-call [{verdict(i3['passed'])}]")
        say(
            f"   outside the calling window: {i3['outside_window']}, on do-not-call at send: "
            f"{i3['on_dnc']} ({i3['dnc_added_during_run']} numbers listed during the run)"
        )
        for example in i3["examples"]:
            say(f"     {example}")
        say(
            "   listed for another campaign only, dialled (allowed): "
            f"{i3['listed_for_another_campaign_dialled']}; pending contacts not waiting for "
            f"their window: {i3['pending_not_waiting_for_window']}"
        )
        for group, statuses in i3["contacts_by_group"].items():
            say(f"   contacts {group}: " + ", ".join(f"{k} {v}" for k, v in statuses.items()))
        say(f"4. Calls in any sliding 1-s window per trunk [{verdict(i4['passed'])}]")
        if i4["sent_while_the_simulator_was_stopped"]:
            say(
                f"   not counted by the simulator's clock: {i4['sent_while_the_simulator_was_stopped']}"
                " Originates written while it was stopped (read together when it resumed)"
            )
        for name, t in i4["trunks"].items():
            span = t["tightest_span_s"]
            tightest = (
                "" if span is None else f"; {t['limit'] + 1:g} calls took {span:.3f} s at least"
            )
            say(
                f"   {name}: max {t['max_in_1s']} (limit {t['limit']:g}), {t['calls']} calls"
                + tightest
                + f" (by the dialer's sent_at: max {t['max_in_1s_by_sent_at']})"
            )
        say(
            "5. Faults injected: "
            + ", ".join(f"{kind} {count}" for kind, count in r["faults"].items())
            + f" ({sum(r['faults'].values())} in all)"
        )
        exited = r["exited_by_themselves"]
        if exited:
            say(f"   exited by themselves (restarted, not counted as faults): {', '.join(exited)}")
        say(f"   run time: {r['run_time_s']:.1f} s")
        rec = r["recovery"]
        say("6. Time to resume dialing after each fault (the first call sent after it, received)")
        by_kind: dict[str, list[float]] = defaultdict(list)
        for x in rec["resume"]:
            if x["resume_s"] is not None:
                by_kind[x["fault"]].append(x["resume_s"])
        for kind, values in sorted(by_kind.items()):
            values.sort()
            say(
                f"   {kind}: {len(values)} times, median {values[len(values) // 2]:.1f} s, "
                f"max {values[-1]:.1f} s"
            )
        for x in rec["resume"]:
            if x["fault"] in STALLS:
                say(
                    f"   {x['fault']} ({x['lasted_s']:g} s): {x['sent_during']} calls sent during"
                    f" it, the first after it {_seconds(x['resume_s'])} after its end"
                )
        for role, m in rec["rss"].items():
            say(
                f"   {role} RSS: {m['first_mb']} MB at start, peak {m['peak_mb']}, last {m['last_mb']}"
            )
        say(f"   Postgres sessions on the run's database: {rec['pg_sessions']}")
        say(f"RESULT: {verdict(r['passed'])}")


# What became of each attempt, as the simulator's records and the attempt's row tell it.
ATTEMPT_CLASSES = (
    # (key, label, must be 0)
    ("received_once", "received exactly once", False),
    ("received_more", "received more than once", True),
    ("received_not_sent", "received, yet recorded not_sent (nothing sent)", True),
    ("not_sent", "not received, not_sent: nothing left the dialer", False),
    ("fate_unknown", "not received, send fate unknown (left to reconciliation)", False),
    ("send_cut_short", "not received, claimed but no send recorded (process or database lost)",
     False),
    ("recorded_sent", "not received, yet recorded as sent", True),
)  # fmt: skip


# -- helpers --------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def fixed_zone(now: dt.datetime, local_hour: int) -> str:
    """A fixed-offset zone where it is `local_hour` o'clock (give or take the minutes) now."""
    offset = (local_hour - now.hour + 12) % 24 - 12
    # Etc/GMT signs are inverted: Etc/GMT-5 is UTC+5.
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


def phone_number(i: int) -> str:
    """+1 212 EEE MMTT, unique per i (up to 80,000); TT picks the simulator behaviour."""
    return f"+1212{200 + i // 100:03d}{i % 100:02d}{TAILS[i % len(TAILS)]}"


def pick_by_rate(i: int, rates: list[float]) -> int:
    """Spread contacts over trunks in proportion to their rates (deterministically)."""
    total = sum(rates)
    position = (i * 0.618034) % 1.0 * total
    for index, rate in enumerate(rates):
        if position < rate:
            return index
        position -= rate
    return len(rates) - 1


if __name__ == "__main__":
    exit_on_sigterm()
    main()
