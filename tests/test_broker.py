"""The Redis transport: one client per pool, acknowledgements written in batches, and
messages still flow, get acked and are never lost."""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from dialer.dialing import broker
from dialer.dialing.celery_app import (
    ORIGINATE_QUEUE,
    ORIGINATE_TASK,
    DialerCelery,
    WorkerOptions,
    celery_config,
    enqueue_originates,
)
from dialer.settings import Settings
from tests.support_celery import in_process_worker, wait_until

QUEUE = Queue("broker-test", Exchange("broker-test"), routing_key="broker-test")


@pytest.fixture
def broker_keys(settings: Settings, broker_prefix: str) -> Iterator[Callable[[str], int]]:
    """Entries in one of this test's kombu hashes or sorted sets, read with a plain client."""
    client = redis.Redis.from_url(settings.broker_url)

    def count(key: str) -> int:
        name = f"{broker_prefix}{key}"
        kind = client.type(name)
        if kind == b"hash":
            return int(client.hlen(name))
        return int(client.zcard(name)) if kind == b"zset" else 0

    yield count
    client.close()


def publish(conn: Connection, count: int) -> None:
    with conn.Producer() as producer:
        for n in range(count):
            producer.publish({"n": n}, exchange=QUEUE.exchange, routing_key="broker-test",
                             declare=[QUEUE])  # fmt: skip


def consume(conn: Connection, count: int, *, prefetch: int, ack: bool = True) -> list[int]:
    received: list[int] = []
    with conn.Consumer(QUEUE, accept=["json"]) as consumer:
        consumer.qos(prefetch_count=prefetch)

        def on_message(body: dict[str, int], message: Any) -> None:
            received.append(body["n"])
            if ack:
                message.ack()

        consumer.register_callback(on_message)
        while len(received) < count:
            conn.drain_events(timeout=5)
    return received


def test_redis_urls_get_the_dialer_transport(settings: Settings) -> None:
    assert celery_config(settings, WorkerOptions())["broker_transport"] == broker.TRANSPORT
    amqp = Settings.from_env({"DIALER_BROKER_URL": "amqp://guest@127.0.0.1:5672//"})
    assert "broker_transport" not in celery_config(amqp, WorkerOptions())


def test_acks_reuse_one_client_and_leave_nothing_unacked(
    make_app: Callable[..., DialerCelery],
    monkeypatch: pytest.MonkeyPatch,
    broker_keys: Callable[[str], int],
) -> None:
    app = make_app()
    created: list[Any] = []
    original = broker.Channel._create_client

    def counting(self: broker.Channel, asynchronous: bool = False) -> Any:
        client = original(self, asynchronous)
        if not asynchronous:
            created.append(client)
        return client

    monkeypatch.setattr(broker.Channel, "_create_client", counting)
    with app.connection_for_write() as conn:
        assert isinstance(conn, Connection)
        assert isinstance(conn.default_channel, broker.Channel)
        publish(conn, 200)
        received = consume(conn, 200, prefetch=10)
    # Closing the channel wrote the acknowledgements still held back.
    assert sorted(received) == list(range(200))
    assert broker_keys("unacked") == 0
    assert broker_keys("unacked_index") == 0
    # kombu alone builds a client per acknowledgement and per delivery's bookkeeping.
    assert len(created) <= 2, len(created)


def test_an_ack_rides_with_the_next_delivery(
    make_app: Callable[..., DialerCelery],
    monkeypatch: pytest.MonkeyPatch,
    broker_keys: Callable[[str], int],
) -> None:
    monkeypatch.setattr(broker, "ACK_FLUSH_S", 3600.0)
    monkeypatch.setattr(broker, "ACK_BATCH", 1000)
    app = make_app()
    with app.connection_for_write() as conn:
        publish(conn, 3)
        assert consume(conn, 1, prefetch=1) == [0]
        # Acked in the process (so the next message may come), not yet in Redis.
        assert broker_keys("unacked") == 1
        assert consume(conn, 1, prefetch=1) == [1]
        # The second delivery's bookkeeping removed the first one's entry.
        assert broker_keys("unacked") == 1
        assert consume(conn, 1, prefetch=1) == [2]
        assert broker_keys("unacked") == 1
    assert broker_keys("unacked") == 0
    assert broker_keys("unacked_index") == 0


def test_a_full_batch_of_acks_is_written_at_once(
    make_app: Callable[..., DialerCelery],
    monkeypatch: pytest.MonkeyPatch,
    broker_keys: Callable[[str], int],
) -> None:
    monkeypatch.setattr(broker, "ACK_FLUSH_S", 3600.0)
    monkeypatch.setattr(broker, "ACK_BATCH", 5)
    app = make_app()
    with app.connection_for_write() as conn:
        publish(conn, 5)
        # Prefetch 5 and no acks: all five delivered, each in the unacked hash.
        messages: list[Any] = []
        with conn.Consumer(QUEUE, accept=["json"]) as consumer:
            consumer.qos(prefetch_count=5)
            consumer.register_callback(lambda body, message: messages.append(message))
            while len(messages) < 5:
                conn.drain_events(timeout=5)
            assert broker_keys("unacked") == 5
            for message in messages[:4]:
                message.ack()
            assert broker_keys("unacked") == 5  # held back
            messages[4].ack()  # the fifth fills the batch
            assert broker_keys("unacked") == 0


def test_acks_held_back_when_a_process_dies_mean_a_redelivery_not_a_loss(
    make_app: Callable[..., DialerCelery],
    monkeypatch: pytest.MonkeyPatch,
    broker_keys: Callable[[str], int],
) -> None:
    monkeypatch.setattr(broker, "ACK_FLUSH_S", 3600.0)
    monkeypatch.setattr(broker, "ACK_BATCH", 1000)
    # The process "dies": its channel closes without writing what it held back.
    monkeypatch.setattr(broker.Channel, "flush_acks", lambda self: None)
    app = make_app(visibility_timeout_s=0.2)
    with app.connection_for_write() as conn:
        publish(conn, 3)
        assert consume(conn, 3, prefetch=1) == [0, 1, 2]
    # The first two acks rode with the next deliveries; the last one was held back.
    assert broker_keys("unacked") == 1
    monkeypatch.undo()

    time.sleep(0.3)  # past the visibility timeout
    app = make_app(visibility_timeout_s=0.2)
    with app.connection_for_write() as conn:
        # What every worker does every restore interval: the message goes back on its queue.
        conn.default_channel.qos.restore_visible(num=100)
        assert consume(conn, 1, prefetch=1) == [2]
    assert broker_keys("unacked") == 0


def test_a_running_worker_writes_its_last_acks_within_the_flush_interval(
    make_app: Callable[..., DialerCelery], broker_keys: Callable[[str], int]
) -> None:
    app = make_app()
    ran: list[int] = []

    @app.task(name="tests.broker_noop", ignore_result=True)
    def noop(n: int) -> None:
        ran.append(n)

    with in_process_worker(app, concurrency=2):
        for n in range(20):
            noop.apply_async((n,), queue=ORIGINATE_QUEUE)
        wait_until(lambda: len(ran) == 20, 20, message="every task to run")
        # No delivery follows the last ones to carry their acks: the worker's timer writes
        # them, while the worker still runs.
        wait_until(lambda: broker_keys("unacked") == 0, 2, message="the last acks written")
    assert sorted(ran) == list(range(20))


def test_task_messages_are_what_celery_would_publish(
    make_app: Callable[..., DialerCelery], settings: Settings, broker_prefix: str
) -> None:
    """The direct publisher's messages match `send_task`'s, field for field (ids aside), so a
    Celery upgrade that changes the message shape fails here, not in production."""
    app = make_app()
    client = redis.Redis.from_url(settings.broker_url)
    queue_key = f"{broker_prefix}{ORIGINATE_QUEUE}"
    try:
        with app.producer_or_acquire() as producer:
            app.send_task(
                ORIGINATE_TASK, args=(4242,), producer=producer, argsrepr="(4242,)",
                kwargsrepr="{}",
            )  # fmt: skip
        enqueue_originates(app, [4242])
        celerys, ours = (json.loads(m) for m in reversed(client.lrange(queue_key, 0, -1)))
    finally:
        client.delete(queue_key)
        client.close()

    def comparable(message: dict[str, Any]) -> dict[str, Any]:
        message = copy.deepcopy(message)
        task_id = message["headers"].pop("id")
        assert message["headers"].pop("root_id") == task_id
        assert message["properties"].pop("correlation_id") == task_id
        assert message["properties"].pop("delivery_tag") not in (task_id, None)
        body = base64.b64decode(message.pop("body"))
        message["decoded_body"] = json.loads(body)
        return message

    assert comparable(ours) == comparable(celerys)


def test_tasks_published_directly_run_once_each_in_order(
    make_app: Callable[..., DialerCelery],
) -> None:
    app = make_app()
    ran: list[int] = []

    @app.task(name="tests.broker_direct", ignore_result=True)
    def direct(n: int) -> None:
        ran.append(n)

    messages = broker.task_messages(
        "tests.broker_direct", ORIGINATE_QUEUE, ((n,) for n in range(1200)),
        origin="test", reply_to=app.thread_oid,
    )  # fmt: skip
    with app.pool.acquire(block=True) as connection:
        pushed = broker.push_task_messages(connection.default_channel, ORIGINATE_QUEUE, messages)
    assert pushed == 1200  # three LPUSH batches
    with in_process_worker(app, concurrency=1):
        wait_until(lambda: len(ran) == 1200, 30, message="every task to run")
    assert ran == list(range(1200))
