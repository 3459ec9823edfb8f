"""The broker as the dialer uses it: Redis or RabbitMQ, through Celery's and kombu's public APIs.

The broker only carries task messages; every call's state is in Postgres (see
`dialer.dialing.originate`), so whatever the broker loses or delivers twice costs time, never a
second call. The two brokers differ in how a deployment's messages are kept apart and how a
task taken by a vanished worker comes back:

| | Redis | RabbitMQ |
|---|---|---|
| `DIALER_BROKER_PREFIX` | kombu's `global_keyprefix`: every key starts with it | queue and exchange names start with it (Celery's remote-control and event exchanges too) |
| task of a worker that vanished | back after the visibility timeout (`WorkerOptions.visibility_timeout_s`, 300 s) | back as soon as the broker sees its connection close (at once for a dead process; AMQP heartbeats, Celery's `broker_heartbeat`, for a host that is gone) |
| a task that runs long | must end within the visibility timeout, or it is handed out again while it runs | must end within RabbitMQ's `consumer_timeout` (30 min by default), or its channel is closed and the task handed out again |
| broker restarted | queued messages are lost; the dispatch tick hands their attempts out again after `TickOptions.requeue_after_s` | durable queues and persistent messages survive it |

Either way a second delivery finds its attempt taken. An originate task ends within
`originate.SLOT_TURNS` rounds of connection wait, pacing wait and send timeout, far below both.

`broker_names` gives a deployment's names, `check` says whether the broker answers, and
`delete_namespace` removes what one prefix left (tests, benchmarks and the demo clean up with
it); neither touches anything outside the prefix. `worker_pool` is the pool a worker process
runs best with on each broker.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import redis
from kombu import Connection

DISPATCH_QUEUE = "dialer.dispatch"
ORIGINATE_QUEUE = "dialer.originate"
# Celery's defaults for its remote-control ("<name>.pidbox") and event exchanges.
CONTROL_EXCHANGE = "celery"
EVENT_EXCHANGE = "celeryev"


def is_redis(broker_url: str) -> bool:
    return broker_url.split("://", 1)[0] in ("redis", "rediss", "redis+socket")


@dataclass(frozen=True, slots=True)
class BrokerNames:
    """Where one deployment's tasks travel on its broker."""

    dispatch_queue: str
    originate_queue: str
    control_exchange: str
    event_exchange: str
    # Redis only: kombu's global key prefix (None elsewhere, and without a prefix).
    key_prefix: str | None

    @property
    def queues(self) -> tuple[str, str]:
        return (self.dispatch_queue, self.originate_queue)


def worker_pool(broker_url: str) -> str:
    """The Celery pool of one worker process (one task at a time) on this broker.

    `solo` runs the task in the worker's own event loop: the fewest CPU cycles per call, and
    what the Redis transport is measured with (BENCHMARKS.md). On RabbitMQ, kombu 5.7's event
    loop sends the acknowledgement of a task run inside it only after its next poll, and with
    prefetch 1 the broker sends nothing until that acknowledgement: the worker then sleeps
    until a timer (up to 10 s; bench/dial_throughput.py measured ~190 calls/s where one thread
    gives ~520). With `threads` the task runs on a thread, whose acknowledgement wakes the loop.
    """
    return "solo" if is_redis(broker_url) else "threads"


def broker_names(broker_url: str, prefix: str | None) -> BrokerNames:
    """The names a deployment with this prefix uses (see the module doc)."""
    if is_redis(broker_url) or not prefix:
        return BrokerNames(
            DISPATCH_QUEUE, ORIGINATE_QUEUE, CONTROL_EXCHANGE, EVENT_EXCHANGE, prefix or None
        )
    return BrokerNames(
        f"{prefix}{DISPATCH_QUEUE}",
        f"{prefix}{ORIGINATE_QUEUE}",
        f"{prefix}{CONTROL_EXCHANGE}",
        f"{prefix}{EVENT_EXCHANGE}",
        None,
    )


def check(broker_url: str, timeout: float = 3.0) -> None:
    """Raise (OSError, or the client's error) unless the broker answers."""
    if is_redis(broker_url):
        client = redis.Redis.from_url(broker_url, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
        return
    with Connection(broker_url, connect_timeout=timeout) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)


def delete_namespace(broker_url: str, prefix: str) -> None:
    """Remove what a deployment under `prefix` left on the broker, and nothing else: on Redis
    the keys that carry the prefix, on RabbitMQ the queues and exchanges named with it.

    Meant for throwaway prefixes (tests, benchmarks, the demo), once their workers stopped.
    """
    if not prefix:
        raise ValueError("a prefix is required: without one this would name shared entities")
    if is_redis(broker_url):
        client = redis.Redis.from_url(broker_url, socket_connect_timeout=3)
        try:
            # kombu also keeps bookkeeping keys that carry the prefix in the middle.
            keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
        finally:
            client.close()
        return
    names = broker_names(broker_url, prefix)
    exchanges = [
        *names.queues,  # each queue's own direct exchange (Celery's default)
        f"{names.control_exchange}.pidbox",
        f"reply.{names.control_exchange}.pidbox",
        names.event_exchange,
    ]
    with Connection(broker_url, connect_timeout=3) as conn:
        # Deleting what is not there is not an error on RabbitMQ; a channel per operation all
        # the same, since an error closes the channel it happened on.
        for queue in names.queues:
            with conn.channel() as channel:
                channel.queue_delete(queue)
        for exchange in exchanges:
            with contextlib.suppress(conn.channel_errors), conn.channel() as channel:
                channel.exchange_delete(exchange)
