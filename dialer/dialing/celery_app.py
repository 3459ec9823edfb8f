"""The Celery application: Redis or RabbitMQ broker, at-least-once delivery, the dispatch tick.

Celery delivers a task at least once; exactly-once dialing comes from the database (see
`dialer.dialing.originate`). The settings here make redelivery prompt and cheap rather than rare:
`acks_late` (a task is acknowledged only after it ran, so a crash redelivers it),
`task_reject_on_worker_lost` (a killed pool process puts its task back at once), prefetch 1
(a worker holds no backlog a crash could strand), and no result backend (Postgres has the
state). On Redis, `visibility_timeout` bounds how long a task taken by a vanished worker stays
invisible; RabbitMQ gives it back when the worker's connection closes (`dialer.dialing.broker`
has the differences, and what `DIALER_BROKER_PREFIX` names on each).

Celery and kombu are used through their public APIs only: the configuration below, and
`send_task` over one producer in a `Producer.batch()` to publish a tick's attempts.

`make_celery_app(settings)` builds an app; nothing connects until a worker or a publisher
uses it. The module-level `app` reads the settings from the environment on first use, for
`celery -A dialer.celery_app worker` and `celery -A dialer.celery_app beat`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_process_shutdown,
    worker_shutdown,
)
from kombu import Queue
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from dialer import dbwatch, logs
from dialer.ami.blocking import SyncAmiClient
from dialer.ami.client import AmiError
from dialer.db import ROUND_TRIP_DEADLINE_S, connect_args, make_engine, make_sessionmaker
from dialer.dialing.broker import DISPATCH_QUEUE as DISPATCH_QUEUE
from dialer.dialing.broker import ORIGINATE_QUEUE as ORIGINATE_QUEUE
from dialer.dialing.broker import BrokerNames, broker_names, is_redis
from dialer.dialing.dispatch import TickOptions
from dialer.settings import Settings, SettingsError, get_settings

DISPATCH_TASK = "dialer.dispatch_tick"
ORIGINATE_TASK = "dialer.originate_call"
# DISPATCH_QUEUE and ORIGINATE_QUEUE (re-exported above) are the queues' names without a prefix;
# on RabbitMQ a prefix is part of them: `DialerCelery.broker_names` has a deployment's.


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    tick_interval_s: float = 1.0
    # Redis: longer than any originate task runs (up to originate.SLOT_TURNS rounds of
    # connection wait, pacing wait and send timeout), so a live worker's task is never handed
    # to a second one; a dead worker's task comes back after this.
    visibility_timeout_s: float = 300.0
    # Redis: how often a running worker looks for such tasks to put back.
    restore_interval_s: float = 10.0
    # The deployment's broker namespace (`dialer.dialing.broker`); overrides the
    # DIALER_BROKER_PREFIX setting.
    broker_key_prefix: str | None = None
    send_timeout_s: float = 10.0
    # A Postgres command unanswered this long has its connection cut (`dialer.dbwatch`).
    round_trip_deadline_s: float = ROUND_TRIP_DEADLINE_S
    # An originate task that loses the database before or under its claim, or before it could
    # give an unsent attempt back, waits this long for it to come back (well inside the
    # visibility timeout): then the attempt is left to the tick's requeue or reconciliation.
    database_wait_s: float = 120.0
    tick: TickOptions = field(default_factory=TickOptions)


# `pg_stat_activity.application_name` of a worker's sessions.
DB_ROLE = "dialer worker"
BROKER_CONNECT_TIMEOUT_S = 5.0
REDIS_SOCKET_TIMEOUT_S = 30.0
REDIS_HEALTH_CHECK_S = 25


def deployment_names(settings: Settings, options: WorkerOptions) -> BrokerNames:
    """The broker names of the deployment these settings and options describe."""
    return broker_names(settings.broker_url, options.broker_key_prefix or settings.broker_prefix)


def celery_config(settings: Settings, options: WorkerOptions) -> dict[str, Any]:
    """The Celery configuration for these settings (plain data, no connections)."""
    names = deployment_names(settings, options)
    transport: dict[str, Any] = {}
    if is_redis(settings.broker_url):
        transport = {
            "visibility_timeout": options.visibility_timeout_s,
            "unacked_restore_interval": options.restore_interval_s,
            "unacked_restore_throttle": 1,
            # No wait without a deadline: a Redis that hangs (stopped, a partition) fails the
            # call, and kombu reconnects, instead of leaving a worker waiting on the socket.
            # Longer than the transport's own 1-s BRPOP polls.
            "socket_connect_timeout": BROKER_CONNECT_TIMEOUT_S,
            "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
            "socket_keepalive": True,
            "health_check_interval": REDIS_HEALTH_CHECK_S,
        }
        if names.key_prefix:
            transport["global_keyprefix"] = names.key_prefix
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": BROKER_CONNECT_TIMEOUT_S,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A task running when the connection is lost finishes (RabbitMQ has already given its
        # message to another worker, which finds the attempt taken); said explicitly, as
        # Celery asks at start-up.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "task_queues": (Queue(names.dispatch_queue), Queue(names.originate_queue)),
        "task_default_queue": names.originate_queue,
        "task_routes": {
            DISPATCH_TASK: {"queue": names.dispatch_queue},
            ORIGINATE_TASK: {"queue": names.originate_queue},
        },
        # Remote control (`celery inspect`) and events stay within the deployment.
        "control_exchange": names.control_exchange,
        "event_exchange": names.event_exchange,
        "worker_disable_rate_limits": True,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        # An in-memory schedule: a 1-second tick needs no state file between restarts.
        "beat_scheduler": "celery.beat:Scheduler",
        "beat_schedule": {
            "dispatch-tick": {
                "task": DISPATCH_TASK,
                "schedule": options.tick_interval_s,
                # A tick that waited longer than this is stale; the next one is on its way.
                "options": {"expires": max(2.0, 2 * options.tick_interval_s)},
            }
        },
    }


class DialerCelery(Celery):
    """A Celery app that knows the dialer settings it was built from."""

    def __init__(
        self,
        settings: Settings | Callable[[], Settings],
        options: WorkerOptions,
        main: str = "dialer",
        **kwargs: Any,
    ) -> None:
        self._settings_source = settings
        self.worker_options = options
        self._runtime: Runtime | None = None
        self._runtime_lock = threading.Lock()
        kwargs.setdefault("include", ["dialer.dialing.tasks"])
        super().__init__(main, **kwargs)
        # Evaluated on first use of app.conf: importing this module reads no environment.
        self.add_defaults(lambda: celery_config(self.dialer_settings, options))

    def __reduce_keys__(self) -> dict[str, Any]:
        # Rebuilt from these when a pool process is spawned rather than forked.
        return {
            **super().__reduce_keys__(),
            "settings": self._settings_source,
            "options": self.worker_options,
        }

    @property
    def dialer_settings(self) -> Settings:
        source = self._settings_source
        return source() if callable(source) else source

    @property
    def broker_names(self) -> BrokerNames:
        """This app's queue and exchange names on its broker."""
        return deployment_names(self.dialer_settings, self.worker_options)

    @property
    def runtime(self) -> Runtime:
        """This process's database engine and AMI clients (made again after a fork)."""
        with self._runtime_lock:
            if self._runtime is None or self._runtime.pid != os.getpid():
                self._runtime = Runtime(self.dialer_settings, self.worker_options)
            return self._runtime


class Runtime:
    """Per-process resources of a worker: created lazily, never shared across a fork."""

    def __init__(self, settings: Settings, options: WorkerOptions) -> None:
        self.pid = os.getpid()
        self.settings = settings
        self.options = options
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._ami: dict[tuple[str, int], SyncAmiClient] = {}  # (pbx, thread)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[psycopg.Connection[Any]] = []
        _RUNTIMES.add(self)

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(
                    self.settings.database_url, service=True, role=DB_ROLE, pool_size=4,
                    max_overflow=4, round_trip_deadline_s=self.options.round_trip_deadline_s,
                )  # fmt: skip
            return self._engine

    @property
    def sessions(self) -> sessionmaker[Session]:
        engine = self.engine
        with self._lock:
            if self._sessions is None:
                self._sessions = make_sessionmaker(engine)
            return self._sessions

    def connection(self, connect_timeout: float | None = None) -> psycopg.Connection[Any]:
        """This thread's autocommit psycopg connection for the originate hot path: a new one
        when the last is closed, broken, or was ended by the server while idle (a Postgres
        restart, `pg_terminate_backend`); the dead one is closed and forgotten.
        `connect_timeout` overrides `dialer.db.CONNECT_TIMEOUT_S` for a new one."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or conn.broken or not still_open(conn)):
            self.drop_connection(conn)
            conn = None
        if conn is None:
            conn = psycopg.connect(
                libpq_url(self.settings.database_url),
                autocommit=True,
                **{
                    **connect_args(service=True, role=DB_ROLE),
                    **({"connect_timeout": connect_timeout} if connect_timeout else {}),
                },
            )
            dbwatch.watch(conn, self.options.round_trip_deadline_s)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def reconnect(self, waiting: DatabaseWait) -> psycopg.Connection[Any]:
        """A working connection for this thread, waiting for the database as `waiting` allows;
        raises the last error once it is out of time."""
        while True:
            conn = getattr(self._local, "conn", None)
            if conn is not None and (conn.closed or conn.broken):
                self.drop_connection(conn)
            try:
                return self.connection(connect_timeout=DatabaseWait.CONNECT_TIMEOUT_S)
            except psycopg.OperationalError as exc:
                waiting.wait_or_raise(exc)

    def drop_connection(self, conn: psycopg.Connection[Any]) -> None:
        """Close `conn` and forget it (a connection found dead)."""
        with contextlib.suppress(Exception):
            conn.close()
        with self._lock:
            self._connections = [c for c in self._connections if c is not conn]
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def ami_for(self, pbx: str) -> SyncAmiClient:
        """This thread's client for `pbx`, connected and logged in on first use.

        One connection per worker thread: a call's Originate is a blocking write and read, and
        threads sharing a connection would wait for each other's answers.
        """
        key = (pbx, threading.get_ident())
        client = self._ami.get(key)
        if client is not None:
            return client
        with self._lock:
            client = self._ami[key] = SyncAmiClient(self.settings.ami_for(pbx))
        # Connect now rather than inside the first Originate: that one has already taken its
        # pacing slot, and a login's delay would bunch it with the next process's call.
        with contextlib.suppress(AmiError):
            client.action({"Action": "Ping"}, timeout=self.options.send_timeout_s)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._ami = list(self._ami.values()), {}
            engine, self._engine, self._sessions = self._engine, None, None
            connections, self._connections = self._connections, []
        for client in clients:
            client.close()
        for conn in connections:
            conn.close()
        if engine is not None:
            engine.dispose()


_RUNTIMES: weakref.WeakSet[Runtime] = weakref.WeakSet()


class DatabaseWait:
    """Waits between tries to reach the database, backing off, for `limit_s` in all."""

    FIRST_S = 0.1
    LONGEST_S = 1.0
    # While waiting, a connection attempt is given up sooner than usual: one lost to a path
    # still down would otherwise hold the next try back by the full connect timeout.
    # (libpq's least.)
    CONNECT_TIMEOUT_S = 2

    def __init__(
        self,
        limit_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock, self._sleep = clock, sleep
        self._until = clock() + limit_s
        self._delay = self.FIRST_S

    def wait_or_raise(self, error: BaseException) -> None:
        """Sleep before the next try, or raise `error` when the time is up."""
        left = self._until - self._clock()
        if left <= 0:
            raise error
        self._sleep(min(self._delay, left))
        self._delay = min(2 * self._delay, self.LONGEST_S)


def still_open(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection is still usable, without a round trip: the server sends
    nothing on an idle connection unless it is ending it (or, rarely, a notice), so a readable
    socket is checked with a query."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
        if readable:
            conn.execute("SELECT 1")
    except (psycopg.Error, OSError, ValueError):
        return False
    return True


def libpq_url(database_url: str) -> str:
    """The settings' SQLAlchemy URL (postgresql+psycopg://...) as a plain libpq URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


@after_setup_logger.connect
def _quiet_per_task_logs(
    logger: logging.Logger | None = None, loglevel: int | str = logging.INFO, **_: Any
) -> None:
    """No "received"/"succeeded" INFO lines per task, nor beat's "Sending due task" line per
    tick, unless debugging; and the dialer's log format (`DIALER_LOG_FORMAT`).

    At hundreds of calls a second they are noise, and every attempt's fate is in Postgres;
    failures are still logged. Set before the worker builds its task strategies, which read
    the level once.
    """
    level = logging.getLevelName(loglevel) if isinstance(loglevel, str) else loglevel
    if isinstance(level, int) and level > logging.DEBUG:
        for name in ("celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
    logs.quiet_beat()
    logs.quiet_expired(DISPATCH_TASK)
    if logger is not None:
        logs.use_format(logger, _log_format())


@after_setup_task_logger.connect
def _task_log_format(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is not None:
        logs.use_format(logger, _log_format())


def _log_format() -> str:
    try:
        return get_settings().log_format
    except SettingsError:
        return "text"


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_runtimes(**_: Any) -> None:
    """Log off the AMI and close database connections when a worker process ends."""
    for runtime in list(_RUNTIMES):
        if runtime.pid == os.getpid():
            runtime.close()


def make_celery_app(
    settings: Settings | Callable[[], Settings], options: WorkerOptions | None = None
) -> DialerCelery:
    """A Celery app for these settings (or a function returning them, called on first use)."""
    return DialerCelery(settings, options or WorkerOptions())


# Messages published per broker round trip when a tick hands out its attempts.
PUBLISH_BATCH = 500


def enqueue_originates(app: Celery, attempt_ids: Sequence[int]) -> None:
    """Publish one originate task per attempt, over one producer, many per round trip.

    A publish is one Redis round trip otherwise, and a tick hands out thousands: kombu's
    `Producer.batch()` pipelines them (`PUBLISH_BATCH` to a round trip) where the transport can
    (Redis), and publishes them one by one where that costs no round trip anyway (RabbitMQ,
    whose publishes are not waited for). Should the broker fail mid-batch, the attempts are
    committed already: the tick hands out again those left `queued`
    (TickOptions.requeue_after_s).
    """
    with app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH):
        for attempt_id in attempt_ids:
            # argsrepr given: Celery would otherwise build it with saferepr for every message.
            app.send_task(
                ORIGINATE_TASK,
                args=(attempt_id,),
                producer=producer,
                argsrepr=f"({attempt_id},)",
                kwargsrepr="{}",
            )


app = make_celery_app(get_settings)
