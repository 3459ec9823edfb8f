"""The Redis transport shares one client per pool, and messages still flow and get acked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

from dialer import broker
from dialer.celery_app import DialerCelery, WorkerOptions, celery_config
from dialer.settings import Settings


def test_redis_urls_get_the_dialer_transport(settings: Settings) -> None:
    assert celery_config(settings, WorkerOptions())["broker_transport"] == broker.TRANSPORT
    amqp = Settings.from_env({"DIALER_BROKER_URL": "amqp://guest@127.0.0.1:5672//"})
    assert "broker_transport" not in celery_config(amqp, WorkerOptions())


def test_acks_reuse_one_client_and_leave_nothing_unacked(
    make_app: Callable[..., DialerCelery], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    created: list[Any] = []
    original = broker.Channel._create_client

    def counting(self: broker.Channel, asynchronous: bool = False) -> Any:
        client = original(self, asynchronous)
        if not asynchronous:
            created.append(client)
        return client

    queue = Queue("broker-test", Exchange("broker-test"), routing_key="broker-test")
    monkeypatch.setattr(broker.Channel, "_create_client", counting)
    with app.connection_for_write() as conn:
        assert isinstance(conn, Connection)
        assert isinstance(conn.default_channel, broker.Channel)
        with conn.Producer() as producer:
            for n in range(200):
                producer.publish({"n": n}, exchange=queue.exchange, routing_key="broker-test",
                                 declare=[queue])  # fmt: skip
        received: list[int] = []
        with conn.Consumer(queue, accept=["json"]) as consumer:
            consumer.qos(prefetch_count=10)

            def on_message(body: dict[str, int], message: Any) -> None:
                received.append(body["n"])
                message.ack()

            consumer.register_callback(on_message)
            while len(received) < 200:
                conn.drain_events(timeout=5)
        channel = conn.default_channel
        with channel.conn_or_acquire() as client:
            unacked = client.hlen(channel.unacked_key)
    assert sorted(received) == list(range(200))
    assert unacked == 0
    # kombu alone builds a client per acknowledgement and per delivery's bookkeeping.
    assert len(created) <= 2, len(created)
