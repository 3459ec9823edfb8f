"""`dialer demo`: one campaign dialled end to end on this machine, with nothing to configure.

It uses the configured Postgres server and broker (Redis or RabbitMQ), but only what it creates
itself:
- a database of its own (`dialer_demo` by default), marked with a comment so that a later run
  drops and recreates only a database an earlier demo made; it is kept afterwards so the
  outcomes can be queried with SQL;
- broker keys (or queues and exchanges) under a prefix of its own (`DIALER_BROKER_PREFIX`),
  deleted at the end.

The PBX simulator, a worker (with the dispatch tick) and a listener run as child processes,
each in its own process group, with their logs in a directory of their own; they are stopped
on exit, on Ctrl-C and on SIGTERM. Contacts go in through the real CSV importer, one number per
simulator behaviour in a country where it is calling hours right now, plus one number on the
do-not-call list. Retry delays are seconds instead of minutes so the run ends in about a minute.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url

from dialer import migrate
from dialer.campaigns import service as campaigns
from dialer.campaigns import trunks
from dialer.campaigns.service import CampaignChanges
from dialer.contacts import dnc, importer
from dialer.db import make_engine, make_sessionmaker, transaction
from dialer.demo.contacts import DNC_SUFFIX, DemoContact, demo_contacts, pick_region
from dialer.dialing import broker
from dialer.outcomes.retry import DEFAULT_DELAYS
from dialer.reports import queries as reports
from dialer.settings import Settings, redact_url

DEMO_DATABASE = "dialer_demo"
# Only a database carrying this comment is ever dropped by the demo.
DEMO_MARKER = "created by `dialer demo`; dropped and recreated by its next run"
CAMPAIGN = "demo"
TRUNK = "MC"
# The Originate specification's example values, except its numbers (+19876543210,
# +15551234567), which are not valid numbers and so are refused as campaign settings.
CALLER_ID = "+12125550100"
TRANSFER_NUMBER = "+12125550199"  # the simulator answers it as a human: the transfer connects
IVR_FILE = "welcome_message"
FINAL_CONTACT_STATUSES = ("completed", "exhausted", "dnc", "cancelled")


class DemoError(RuntimeError):
    """The demo cannot run (a service is down, a name is taken...); the message says why."""


@dataclass(frozen=True)
class DemoOptions:
    speed: float = 20.0
    database: str = DEMO_DATABASE
    # Seconds before a contact is dialled again after a retryable outcome.
    retry_delay_s: int = 3
    max_attempts: int = 2
    timeout_s: float = 300.0
    # Worker processes (`dialer worker --processes`); None: its default, one per core.
    processes: int | None = None
    log_dir: Path | None = None


@dataclass
class Progress:
    """One look at the campaign while it runs."""

    elapsed_s: float
    status: str
    contacts_total: int
    contacts_done: int
    attempts: int
    attempts_open: int
    outcomes: dict[str, int]


@dataclass
class DemoResult:
    database_url: str
    log_dir: Path
    region: str
    campaign_status: str
    contacts: list[dict[str, Any]]
    summary: dict[str, Any]
    elapsed_s: float
    import_summary: dict[str, Any] = field(default_factory=dict)

    @property
    def all_final(self) -> bool:
        """Every contact reached a final state and the campaign completed."""
        return self.campaign_status == "completed" and all(
            c["status"] in FINAL_CONTACT_STATUSES for c in self.contacts
        )

    @property
    def unexpected(self) -> list[dict[str, Any]]:
        """Contacts whose outcome or status differs from the simulator's behaviour table."""
        return [
            c
            for c in self.contacts
            if (c["last_outcome"], c["status"]) != (c["expected_outcome"], c["expected_status"])
        ]


def run_demo(
    settings: Settings,
    options: DemoOptions,
    *,
    on_progress: Callable[[Progress], None] = lambda _: None,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the whole demo and return what became of every contact (see the module doc)."""
    started = time.monotonic()
    check_services(settings)
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="dialer-demo-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    database_url = recreate_database(settings.database_url, options.database)
    say(f"database   {options.database} (migrated; kept afterwards for SQL)")
    region, zone = pick_region(dt.datetime.now(dt.UTC))
    contacts = demo_contacts(region)
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    prefix = f"dialer-demo:{uuid.uuid4().hex[:10]}:"
    try:
        import_summary = load_campaign(sessions, contacts, options, log_dir)
        say(
            f"contacts   {import_summary['accepted']} imported ({region}, {zone}), "
            f"{import_summary['on_dnc']} on the do-not-call list"
        )
        with running_stack(settings, database_url, prefix, options, log_dir, say):
            with transaction(sessions) as session:
                campaigns.start(session, CAMPAIGN)
            say(f"campaign   {CAMPAIGN} started (simulator speed x{options.speed:g})")
            status = follow(engine, started, options.timeout_s, on_progress)
        with engine.connect() as conn:
            summary = reports.campaign_summary(conn, CAMPAIGN)
            rows = [
                dict(r._mapping)
                for r in conn.execute(
                    text(
                        "SELECT phone, first_name, status, attempts, last_outcome"
                        " FROM contacts_report WHERE campaign = :c ORDER BY phone"
                    ),
                    {"c": CAMPAIGN},
                )
            ]
    finally:
        engine.dispose()
        delete_broker_keys(settings.broker_url, prefix)
    by_phone = {c.phone: c for c in contacts}
    for row in rows:
        contact = by_phone[row["phone"]]
        row["behaviour"] = contact.behaviour
        row["expected_outcome"] = contact.expected_outcome
        row["expected_status"] = contact.expected_status
    return DemoResult(
        database_url=database_url,
        log_dir=log_dir,
        region=region,
        campaign_status=status,
        contacts=rows,
        summary=summary,
        elapsed_s=time.monotonic() - started,
        import_summary=import_summary,
    )


# -- services and the demo database ---------------------------------------------------------


def check_services(settings: Settings) -> None:
    """DemoError, saying how to start it, when Postgres or the broker does not answer."""
    server = _server_conninfo(settings.database_url)
    try:
        psycopg.connect(server, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        raise DemoError(
            f"PostgreSQL is not answering ({_first_line(exc)}).\n"
            "Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main "
            "start\n  or, with Docker: docker compose up -d postgres"
        ) from None
    try:
        broker.check(settings.broker_url)
    except Exception as exc:
        if broker.is_redis(settings.broker_url):
            how = (
                'redis-server --daemonize yes --bind 127.0.0.1 --save "" --appendonly no\n'
                "  or, with Docker: docker compose up -d redis"
            )
        else:
            how = "rabbitmq-server -detached\n  or, with Docker: docker compose up -d rabbitmq"
        raise DemoError(
            f"The broker is not answering at {redact_url(settings.broker_url)} "
            f"({_first_line(exc)}).\nStart it with: {how}"
        ) from None


def recreate_database(database_url: str, name: str) -> str:
    """A fresh, migrated database `name` on the configured server; its URL.

    An existing database of that name is dropped only if an earlier demo created it.
    """
    with psycopg.connect(_server_conninfo(database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (name,),
        ).fetchone()
        if row is not None:
            if row[0] != DEMO_MARKER:
                raise DemoError(
                    f"a database named {name!r} exists and was not created by the demo; "
                    "pick another name with --database"
                )
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(DEMO_MARKER)
            )
        )
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    return url


def _server_conninfo(database_url: str) -> str:
    url = make_url(database_url).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def delete_broker_keys(broker_url: str, prefix: str) -> None:
    """Remove the demo's broker keys, queues and exchanges (those under its prefix)."""
    with contextlib.suppress(Exception):
        broker.delete_namespace(broker_url, prefix)


# -- the campaign ---------------------------------------------------------------------------


def demo_retry_rules(delay_s: int) -> list[str]:
    """Every retryable outcome retried after `delay_s` seconds (minutes in production)."""
    return [f"{outcome}={delay_s}s" for outcome in DEFAULT_DELAYS]


def load_campaign(
    sessions: Any, contacts: list[DemoContact], options: DemoOptions, log_dir: Path
) -> dict[str, Any]:
    """The trunk, the campaign and its contact list, through the same code as the commands."""
    with transaction(sessions) as session:
        trunks.add(session, TRUNK, cps=10, max_channels=10)
        campaigns.create(
            session,
            CAMPAIGN,
            CampaignChanges(
                trunk=TRUNK,
                caller_id=CALLER_ID,
                caller_name=CALLER_ID,
                ivr_file=IVR_FILE,
                ivr_vm_file=IVR_FILE,
                transfer_number=TRANSFER_NUMBER,
                press_key="1",
                opt_out_key="9",
                max_attempts=options.max_attempts,
                retry=demo_retry_rules(options.retry_delay_s),
                days="mon-sun",
                region="US",
            ),
        )
        listed = [c.phone for c in contacts if c.phone.endswith(DNC_SUFFIX)]
        dnc.add(session, listed, reason="demo: asked not to be called")
    path = log_dir / "contacts.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name", "last_name", "behaviour"])
        for contact in contacts:
            writer.writerow([contact.phone, contact.first_name, "Caller", contact.behaviour])
    summary = importer.import_contacts(sessions, CAMPAIGN, path, workers=1)
    return summary.as_dict()


def follow(
    engine: Any, started: float, timeout_s: float, on_progress: Callable[[Progress], None]
) -> str:
    """Report progress until the campaign is completed (or cancelled); its final status."""
    deadline = time.monotonic() + timeout_s
    while True:
        with engine.connect() as conn:
            frame = reports.watch_frame(conn, CAMPAIGN)
        on_progress(
            Progress(
                elapsed_s=time.monotonic() - started,
                status=frame["status"],
                contacts_total=frame["contacts_total"],
                contacts_done=frame["contacts_done"],
                attempts=frame["attempts"],
                attempts_open=frame["attempts_open"],
                outcomes=frame["outcomes"],
            )
        )
        if frame["complete"]:
            return frame["status"]
        if time.monotonic() > deadline:
            return frame["status"]
        time.sleep(0.5)


# -- child processes ------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise DemoError(
                f"{self.name} exited with status {self.process.returncode}; "
                f"its log:\n{tail(self.log_path)}"
            )


@contextlib.contextmanager
def running_stack(
    settings: Settings,
    database_url: str,
    prefix: str,
    options: DemoOptions,
    log_dir: Path,
    say: Callable[[str], None],
) -> Iterator[list[Child]]:
    """The simulator, a worker and a listener, stopped (in reverse order) whatever happens."""
    children: list[Child] = []
    with _sigterm_as_interrupt():
        try:
            ami = settings.ami
            # Every child gets the same settings (the secret through the environment, never
            # on a command line others can read); the simulator's port is known once it runs.
            env = {
                **os.environ,
                "DIALER_DATABASE_URL": database_url,
                "DIALER_BROKER_URL": settings.broker_url,
                "DIALER_BROKER_PREFIX": prefix,
                "DIALER_AMI_HOST": "127.0.0.1",
                "DIALER_AMI_USERNAME": ami.username,
                "DIALER_AMI_SECRET": ami.secret,
                "DIALER_LOG_LEVEL": "INFO",
            }
            sim, port = start_simulator(env, options.speed, log_dir)
            children.append(sim)
            env["DIALER_AMI_PORT"] = str(port)
            listener = spawn("listener", ["listen", "--pbx", "default"], env, log_dir)
            children.append(listener)
            wait_for_log(listener, "AMI default: connected", timeout=30.0)
            processes = [] if options.processes is None else ["--processes", str(options.processes)]
            worker = spawn("worker", ["worker", *processes], env, log_dir)
            children.append(worker)
            say(f"processes  pbx-sim :{port}, listener, worker (logs in {log_dir})")
            yield children
            for child in children:
                child.check_alive()
        finally:
            for child in reversed(children):
                stop(child)


def start_simulator(env: dict[str, str], speed: float, log_dir: Path) -> tuple[Child, int]:
    """The simulator on a free port (user and secret from `env`); the child and its port."""
    args = ["pbx-sim", "--port", "0", "--json", "--speed", f"{speed:g}"]
    child = spawn("pbx-sim", args, env, log_dir, stdout=subprocess.PIPE)
    assert child.process.stdout is not None
    line = _read_line(child.process.stdout, timeout=15.0)
    if not line:
        child.check_alive()
        raise DemoError(f"the PBX simulator did not start; its log:\n{tail(child.log_path)}")
    return child, int(json.loads(line)["port"])


def spawn(
    name: str, args: list[str], env: dict[str, str], log_dir: Path, stdout: Any = None
) -> Child:
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "dialer", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else log,
            stderr=log,
            # Its own process group: Ctrl-C reaches the demo, which stops the children in order.
            start_new_session=True,
        )
    finally:
        log.close()
    return Child(name, process, log_path)


def stop(child: Child, grace: float = 10.0) -> None:
    """SIGTERM (a graceful stop), then SIGKILL for the whole group if it does not end."""
    process = child.process
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # pool processes the parent left behind
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def wait_for_log(child: Child, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check_alive()
        with contextlib.suppress(FileNotFoundError):
            if needle in child.log_path.read_text(errors="replace"):
                return
        time.sleep(0.1)
    raise DemoError(
        f"{child.name} did not get ready in {timeout:.0f}s; its log:\n{tail(child.log_path)}"
    )


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _read_line(stream: Any, timeout: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return stream.readline().decode()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the children are stopped either way."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def render_progress(progress: Progress) -> str:
    outcomes = ", ".join(
        f"{name} {count}"
        for name, count in sorted(progress.outcomes.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    return (
        f"[{progress.elapsed_s:5.1f}s] {progress.status:<9} "
        f"contacts {progress.contacts_done}/{progress.contacts_total} done, "
        f"attempts {progress.attempts} ({progress.attempts_open} open)"
        + (f"  | {outcomes}" if outcomes else "")
    )


def write_progress(out: TextIO, tty: bool) -> Callable[[Progress], None]:
    """A progress printer: one line rewritten in place on a terminal, changes only otherwise."""
    last: list[str] = [""]

    def show(progress: Progress) -> None:
        line = render_progress(progress)
        key = line.split("]", 1)[1]
        if tty:
            out.write("\r\x1b[2K" + line)
            out.flush()
        elif key != last[0]:
            out.write(line + "\n")
            out.flush()
        last[0] = key

    return show
