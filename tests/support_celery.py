"""Fixtures for dialing tests: campaign data, Celery apps in a per-test broker namespace,
in-process and subprocess workers, on Redis and on RabbitMQ.

The broker: `broker_url` is the local Redis, except for tests that talk to a broker through
the dialer (they use `make_app`, `worker_processes` or `broker_prefix`): those run once per
broker, `[redis]` and `[amqp]` (`DIALER_TEST_BROKER_URL`, `DIALER_TEST_AMQP_URL`;
`DIALER_TEST_BROKERS=redis` runs them on one). Every test's broker entities carry its own
prefix (`DIALER_BROKER_PREFIX`: kombu's `global_keyprefix` on Redis, queue and exchange names
on RabbitMQ) and are deleted afterwards; nothing else on the shared brokers is touched.

`subprocess_app` is what worker subprocesses run (`celery -A tests.support_celery:subprocess_app`):
it reads the test's settings, key prefix and visibility timeout from the environment the
fixture gives it. `DIALER_TEST_HOLD_ACK_S` makes a worker pause after each originate task has
run and before it is acknowledged, the moment a crash must not cause a second Originate.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import after_setup_logger, task_postrun
from sqlalchemy import insert, text
from sqlalchemy.orm import Session, sessionmaker

from dialer.dialing import broker
from dialer.dialing.celery_app import (
    ORIGINATE_TASK,
    DialerCelery,
    WorkerOptions,
    libpq_url,
    make_celery_app,
)
from dialer.dialing.dispatch import TickOptions
from dialer.models import DEFAULT_CHANNEL_TEMPLATE, Campaign, Contact, Trunk, TrunkRoute
from dialer.settings import Settings

REPO = Path(__file__).resolve().parent.parent
ALL_DAYS = [1, 2, 3, 4, 5, 6, 7]


# -- campaign data --------------------------------------------------------------------------


def zone_open_now(now: dt.datetime | None = None) -> str:
    """A fixed-offset zone where it is about 14:00 now: any window 09:00-19:00 is open.

    Tests that run real workers cannot choose the wall clock, so their contacts are placed
    where the calling window is open whatever time the suite runs.
    """
    now = now or dt.datetime.now(dt.UTC)
    offset = 14 - now.hour  # -9 .. +14
    # Etc/GMT signs are inverted: Etc/GMT-5 is UTC+5.
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


def add_trunk(
    sessions: sessionmaker[Session],
    name: str = "MC",
    *,
    cps: float = 1000.0,
    max_channels: int = 1000,
    pbx: str | Sequence[str] = "default",
    channel_template: str = DEFAULT_CHANNEL_TEMPLATE,
    **fields: Any,
) -> int:
    """A trunk with a route on each PBX named (registered with the default limits if new)."""
    with sessions.begin() as session:
        trunk = Trunk(name=name, cps=cps, max_channels=max_channels, **fields)
        for each in [pbx] if isinstance(pbx, str) else pbx:
            add_pbx(session, each)
            trunk.routes.append(TrunkRoute(pbx=each, channel_template=channel_template))
        session.add(trunk)
        session.flush()
        return trunk.id


def add_pbx(target: sessionmaker[Session] | Session, name: str, **fields: Any) -> None:
    """Register PBX `name` if new, and set the given columns of its row (state='up' with a
    fresh heartbeat, max_cps=...)."""
    statements = [
        ("INSERT INTO pbxs (name) VALUES (:name) ON CONFLICT (name) DO NOTHING", {"name": name})
    ]
    if fields:
        sets = ", ".join(f"{column} = :{column}" for column in fields)
        statements.append((f"UPDATE pbxs SET {sets} WHERE name = :name", {"name": name, **fields}))
    if isinstance(target, Session):
        for sql, params in statements:
            target.execute(text(sql), params)
        return
    with target.begin() as session:
        for sql, params in statements:
            session.execute(text(sql), params)


def add_campaign(
    sessions: sessionmaker[Session],
    trunk_id: int,
    name: str = "campaign",
    *,
    status: str = "running",
    hours: tuple[str, str] = ("08:00", "21:00"),
    days: Sequence[int] = ALL_DAYS,
    **fields: Any,
) -> int:
    values: dict[str, Any] = {
        "caller_id_number": "+19876543210",
        "ivr_file": "welcome_message",
        **fields,
    }
    with sessions.begin() as session:
        campaign = Campaign(
            name=name,
            trunk_id=trunk_id,
            status=status,
            calling_hours_start=dt.time.fromisoformat(hours[0]),
            calling_hours_end=dt.time.fromisoformat(hours[1]),
            calling_days=list(days),
            **values,
        )
        session.add(campaign)
        session.flush()
        return campaign.id


def add_contacts(
    sessions: sessionmaker[Session],
    campaign_id: int,
    phones: Sequence[str],
    *,
    timezones: Sequence[str] | None = None,
    next_attempt_at: dt.datetime | None = None,
    **fields: Any,
) -> list[int]:
    """Insert contacts (bulk); `timezones=None` stores the zone open now."""
    zones = list(timezones) if timezones is not None else [zone_open_now()]
    rows = [
        {
            "campaign_id": campaign_id,
            "phone_e164": phone,
            "phone_raw": phone,
            "timezones": zones,
            **({"next_attempt_at": next_attempt_at} if next_attempt_at else {}),
            **fields,
        }
        for phone in phones
    ]
    with sessions.begin() as session:
        ids = session.execute(
            insert(Contact).returning(Contact.id, sort_by_parameter_order=True), rows
        )
        return list(ids.scalars())


def simulator_numbers(count: int, *, start: int = 0, ending: str | None = None) -> list[str]:
    """Distinct NANP numbers +1 212 EEE MMTT; TT (the simulator's behaviour digits) is
    `ending`, or cycles through 00-99."""
    numbers = []
    for i in range(start, start + count):
        tail = ending if ending is not None else f"{i % 100:02d}"
        numbers.append(f"+1212{200 + i // 100:03d}{i % 100:02d}{tail}")
    return numbers


def rows(sessions: sessionmaker[Session], sql: str, **params: Any) -> list[Any]:
    with sessions() as session:
        return list(session.execute(text(sql), params))


def scalar(sessions: sessionmaker[Session], sql: str, **params: Any) -> Any:
    with sessions() as session:
        return session.execute(text(sql), params).scalar()


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05, message: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting: {message or predicate}")
        time.sleep(interval)


@pytest.fixture
def pg_connection(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit psycopg connection to this test's database (the originate hot path's kind)."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield conn


def pg_connect(database_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq_url(database_url), autocommit=True)


# -- brokers and their isolation ------------------------------------------------------------

BROKER_URLS = {
    "redis": os.environ.get("DIALER_TEST_BROKER_URL", "redis://127.0.0.1:6379/0"),
    "amqp": os.environ.get("DIALER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}
# Fixtures through which a test reaches the broker: such a test runs on each broker.
BROKER_FIXTURES = {"make_app", "worker_processes", "broker_prefix"}


def brokers_under_test() -> list[str]:
    names = [n.strip() for n in os.environ.get("DIALER_TEST_BROKERS", "redis,amqp").split(",")]
    unknown = set(names) - BROKER_URLS.keys()
    if unknown:
        raise pytest.UsageError(f"DIALER_TEST_BROKERS: unknown broker(s) {sorted(unknown)}")
    return [n for n in names if n]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if BROKER_FIXTURES & set(metafunc.fixturenames) and "broker_url" in metafunc.fixturenames:
        metafunc.parametrize("broker_url", brokers_under_test(), indirect=True)


@pytest.fixture
def broker_url(request: pytest.FixtureRequest) -> str:
    """The broker of this test: each in turn where parametrised (see the module doc), else
    Redis."""
    return BROKER_URLS[getattr(request, "param", "redis")]


@pytest.fixture
def broker_prefix(broker_url: str) -> Iterator[str]:
    """A prefix for this test's broker entities; they are deleted afterwards."""
    prefix = f"dialer-test:{uuid.uuid4().hex[:12]}:"
    try:
        broker.check(broker_url)
    except Exception as exc:
        pytest.fail(
            f"the broker at {broker_url} is not answering ({exc}); start it (.ci/services), or "
            "run on the others with DIALER_TEST_BROKERS"
        )
    yield prefix
    broker.delete_namespace(broker_url, prefix)


def worker_options(prefix: str, **overrides: Any) -> WorkerOptions:
    tick = overrides.pop("tick", TickOptions(requeue_after_s=30.0))
    return WorkerOptions(
        broker_key_prefix=overrides.pop("broker_key_prefix", prefix),
        tick_interval_s=overrides.pop("tick_interval_s", 0.5),
        visibility_timeout_s=overrides.pop("visibility_timeout_s", 60.0),
        restore_interval_s=overrides.pop("restore_interval_s", 1.0),
        send_timeout_s=overrides.pop("send_timeout_s", 5.0),
        tick=tick,
        **overrides,
    )


@pytest.fixture
def make_app(settings: Settings, broker_prefix: str) -> Iterator[Callable[..., DialerCelery]]:
    """Build dialer Celery apps bound to this test's database and key prefix."""
    apps: list[DialerCelery] = []

    def build(app_settings: Settings | None = None, **overrides: Any) -> DialerCelery:
        app = make_celery_app(app_settings or settings, worker_options(broker_prefix, **overrides))
        apps.append(app)
        return app

    yield build
    for app in apps:
        with contextlib.suppress(Exception):
            app.runtime.close()
        app.close()


@contextlib.contextmanager
def in_process_worker(
    app: DialerCelery, *, concurrency: int = 4, beat: bool = False
) -> Iterator[Any]:
    """A real Celery worker in this process (thread pool: prefetch `concurrency`), optionally
    with the beat schedule."""
    import dialer.dialing.tasks  # noqa: F401  (registers the tasks on every app)

    app.loader.import_default_modules()
    # Celery's worker would replace the root logger's handlers with its own, and with them
    # pytest's capture: a test's caplog would then see nothing the worker logs.
    app.conf.worker_hijack_root_logger = False
    beat_service = None
    with contextlib.ExitStack() as stack:
        begin_waking = stack.enter_context(_woken_while_stopping(app))
        worker = stack.enter_context(
            start_worker(
                app,
                pool="threads",
                concurrency=concurrency,
                perform_ping_check=False,
                shutdown_timeout=30.0,
                loglevel="WARNING",
                queues=list(app.broker_names.queues),
            )
        )
        stack.callback(begin_waking)  # the first thing done on the way out
        if beat:
            from celery.beat import EmbeddedService

            beat_service = EmbeddedService(app, thread=True)
            beat_service.start()
        try:
            yield worker
        finally:
            if beat_service is not None:
                beat_service.stop()
                beat_service.join(5)


@contextlib.contextmanager
def _woken_while_stopping(app: DialerCelery) -> Iterator[Callable[[], None]]:
    """A worker stopped from another thread sees it when its event loop wakes: on RabbitMQ at
    its next timer, up to 10 s later. Yields a function that starts broadcasting remote-control
    pings to `app`'s workers (its own control exchange: this test's only) every 0.1 s, until
    the context ends; each ping wakes the loop."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.1):
            with contextlib.suppress(Exception):
                app.control.broadcast("ping", reply=False)

    thread = threading.Thread(target=run, name="wake-worker", daemon=True)
    try:
        yield thread.start
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(5)


# -- worker subprocesses ---------------------------------------------------------------------

subprocess_app = make_celery_app(
    Settings.from_env,
    WorkerOptions(
        broker_key_prefix=os.environ.get("DIALER_TEST_BROKER_PREFIX") or None,
        tick_interval_s=float(os.environ.get("DIALER_TEST_TICK_S", "0.5")),
        visibility_timeout_s=float(os.environ.get("DIALER_TEST_VISIBILITY_TIMEOUT_S", "60")),
        restore_interval_s=1.0,
        send_timeout_s=5.0,
        tick=TickOptions(requeue_after_s=30.0),
    ),
)


@after_setup_logger.connect
def _per_task_log_lines(**_: Any) -> None:
    """Worker subprocesses log each task's "received" and "succeeded" lines again (the dialer
    silences them): tests read them to know which delivery of a task did what."""
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).setLevel(logging.INFO)


@task_postrun.connect
def _hold_ack_after_originate(sender: Any = None, **_: Any) -> None:
    hold = os.environ.get("DIALER_TEST_HOLD_ACK_S")
    if hold and getattr(sender, "name", None) == ORIGINATE_TASK:
        time.sleep(float(hold))


class WorkerProcess:
    """`celery worker` running `subprocess_app` in its own process group."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []

    def kill_group(self) -> None:
        """SIGKILL the worker and its pool processes at once (a host crash, as seen by Redis)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """Warm shutdown (SIGTERM); SIGKILL if it does not end in time."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
        return self.proc.returncode


@pytest.fixture
def worker_processes(
    settings: Settings, broker_prefix: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `celery worker` subprocesses for this test's database, broker prefix and PBX."""
    started: list[WorkerProcess] = []
    names = broker.broker_names(settings.broker_url, broker_prefix)

    def start(
        *,
        ami: Any = None,
        concurrency: int = 1,
        beat: bool = False,
        queues: Sequence[str] = names.queues,
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        ready: int = 1,
    ) -> WorkerProcess:
        """`ready`: how many Celery workers the command starts (each logs "ready.")."""
        server = ami or settings.ami
        environment = {
            **os.environ,
            "DIALER_DATABASE_URL": settings.database_url,
            "DIALER_BROKER_URL": settings.broker_url,
            "DIALER_AMI_HOST": server.host,
            "DIALER_AMI_PORT": str(server.port),
            "DIALER_AMI_USERNAME": server.username,
            "DIALER_AMI_SECRET": server.secret,
            "DIALER_LOG_LEVEL": "INFO",
            "DIALER_TEST_BROKER_PREFIX": broker_prefix,
            # `dialer worker` reads this one: without it the worker used the broker's shared
            # names (on RabbitMQ the `dialer0@host` remote-control queue of any other worker).
            "DIALER_BROKER_PREFIX": broker_prefix,
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        argv = list(command) if command else [
            sys.executable, "-m", "celery", "-A", "tests.support_celery:subprocess_app",
            "worker", "-P", "prefork", "-c", str(concurrency), "-Q", ",".join(queues),
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
            "-n", f"w{len(started)}-{uuid.uuid4().hex[:6]}@%h",
            *(["-B"] if beat else []),
        ]  # fmt: skip
        log_path = tmp_path / f"worker-{len(started)}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=environment,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(proc, log_path)
        started.append(worker)
        try:
            wait_until(
                lambda: worker.log().count("ready.") >= ready or proc.poll() is not None,
                timeout=30,
                message="worker start",
            )
        except AssertionError as exc:  # what the worker said so far is the diagnosis
            raise AssertionError(f"{exc}; its log:\n{worker.log()[-4000:]}") from None
        if proc.poll() is not None:
            raise AssertionError(f"worker exited at start:\n{worker.log()}")
        return worker

    yield start
    for worker in started:  # all at once: each warm shutdown takes a moment
        if worker.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
    deadline = time.monotonic() + 8
    for worker in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.proc.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.proc.wait(5)
