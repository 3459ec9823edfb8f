"""The broker through Celery's and kombu's public APIs, on Redis and RabbitMQ: configuration,
a tick's publishing, one task held at a time, and each deployment's namespace."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from kombu import Connection

from dialer.dialing import broker
from dialer.dialing.celery_app import (
    DISPATCH_TASK,
    ORIGINATE_TASK,
    DialerCelery,
    WorkerOptions,
    celery_config,
    enqueue_originates,
)
from dialer.settings import Settings
from tests.support_celery import BROKER_URLS, in_process_worker, wait_until

AMQP = "amqp://guest:guest@127.0.0.1:5672//"
REDIS = "redis://127.0.0.1:6379/0"


def queue_depth(app: DialerCelery, queue: str) -> int:
    """Messages waiting in `queue` (not those delivered and unacknowledged)."""
    url = app.dialer_settings.broker_url
    if broker.is_redis(url):
        client = redis.Redis.from_url(url)
        try:
            return int(client.llen(f"{app.broker_names.key_prefix or ''}{queue}"))
        finally:
            client.close()
    with Connection(url) as conn, conn.channel() as channel:
        return channel.queue_declare(queue, passive=True).message_count


def exists(url: str, queue: str) -> bool:
    with Connection(url) as conn:
        try:
            with conn.channel() as channel:
                channel.queue_declare(queue, passive=True)
        except conn.channel_errors:
            return False
    return True


@pytest.mark.parametrize("url", [REDIS, AMQP])
def test_the_configuration_is_plain_celery_settings(url: str) -> None:
    settings = Settings.from_env({"DIALER_BROKER_URL": url, "DIALER_BROKER_PREFIX": "site-a:"})
    config = celery_config(settings, WorkerOptions(visibility_timeout_s=300.0))
    assert "broker_transport" not in config  # kombu's own transport for the URL
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    queues = {q.name for q in config["task_queues"]}
    routes = {task: route["queue"] for task, route in config["task_routes"].items()}
    transport = config["broker_transport_options"]
    if url == REDIS:
        # Every key carries the prefix; the names stay plain.
        assert transport["global_keyprefix"] == "site-a:"
        assert transport["visibility_timeout"] == 300.0
        assert queues == {"dialer.dispatch", "dialer.originate"}
        assert config["control_exchange"] == "celery"
    else:
        assert transport == {}
        assert queues == {"site-a:dialer.dispatch", "site-a:dialer.originate"}
        assert routes == {
            DISPATCH_TASK: "site-a:dialer.dispatch",
            ORIGINATE_TASK: "site-a:dialer.originate",
        }
        assert config["control_exchange"] == "site-a:celery"
        assert config["event_exchange"] == "site-a:celeryev"


def test_a_tick_publishes_one_task_per_attempt_in_order(
    make_app: Callable[..., DialerCelery], broker_url: str
) -> None:
    app = make_app()
    queue = app.broker_names.originate_queue
    enqueue_originates(app, range(1, 1201))  # three of Redis's pipelined batches
    # RabbitMQ takes publishes without answering: the queue holds them all a moment later.
    wait_until(lambda: queue_depth(app, queue) >= 1200, 10, message="1200 messages queued")
    assert queue_depth(app, queue) == 1200

    received: list[tuple[str, list[Any]]] = []
    with app.connection_for_write() as conn:
        consumer = conn.Consumer(app.amqp.queues[queue], accept=["json"], prefetch_count=200)

        def on_message(body: Any, message: Any) -> None:
            received.append((message.headers["task"], body[0]))
            message.ack()

        consumer.register_callback(on_message)
        with consumer:
            while len(received) < 1200:
                conn.drain_events(timeout=10)
    assert received == [(ORIGINATE_TASK, [n]) for n in range(1, 1201)]


@pytest.mark.parametrize(("url", "batched"), [(REDIS, True), (AMQP, False)])
def test_publishes_are_pipelined_where_that_saves_round_trips(url: str, batched: bool) -> None:
    """kombu's public `Producer.batch()` pipelines on Redis (a round trip per publish
    otherwise) and publishes at once on RabbitMQ (nothing to wait for). Should a kombu release
    stop batching our Redis publishes, a tick's publishing cost changes: this says so."""
    with Connection(BROKER_URLS["redis" if url == REDIS else "amqp"]) as conn:
        producer = conn.Producer()
        assert producer.supports_batch_publish is batched


def test_a_worker_holds_one_task_at_a_time(
    make_app: Callable[..., DialerCelery], broker_url: str
) -> None:
    """acks_late with prefetch 1: while a task runs, the others wait in the broker, where
    another worker can take them (and where a crash of this one cannot strand them)."""
    app = make_app()
    release = threading.Event()
    ran: list[int] = []

    @app.task(name=f"tests.broker_block_{uuid.uuid4().hex[:6]}", ignore_result=True)
    def block(n: int) -> None:
        ran.append(n)
        release.wait(20)

    queue = app.broker_names.originate_queue
    for n in range(3):
        block.apply_async((n,), queue=queue)
    with in_process_worker(app, concurrency=1):
        wait_until(lambda: ran == [0], 20, message="the first task to start")
        assert queue_depth(app, queue) == 2
        release.set()
        wait_until(lambda: len(ran) == 3, 20, message="every task to run")
    assert ran == [0, 1, 2]


def test_a_prefix_keeps_deployments_apart_and_cleanup_touches_only_its_own(
    make_app: Callable[..., DialerCelery], settings: Settings, broker_url: str
) -> None:
    ours = make_app()
    other_prefix = f"dialer-test:{uuid.uuid4().hex[:12]}:"
    other = make_app(broker_key_prefix=other_prefix)
    try:
        enqueue_originates(ours, [1, 2])
        enqueue_originates(other, [3])
        assert queue_depth(ours, ours.broker_names.originate_queue) == 2
        assert queue_depth(other, other.broker_names.originate_queue) == 1

        broker.delete_namespace(broker_url, other_prefix)
        assert queue_depth(ours, ours.broker_names.originate_queue) == 2
        if broker.is_redis(broker_url):
            client = redis.Redis.from_url(broker_url)
            assert not list(client.scan_iter(match=f"*{other_prefix}*"))
            client.close()
        else:
            assert not exists(broker_url, other.broker_names.originate_queue)
            assert exists(broker_url, ours.broker_names.originate_queue)
    finally:
        broker.delete_namespace(broker_url, other_prefix)
