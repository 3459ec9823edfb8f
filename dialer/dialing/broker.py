"""The Redis broker transport: kombu's own, with fewer round trips and objects per message.

Two changes to kombu's Redis transport, both about cost per message (one task per call):

- One client object per connection pool. kombu's channel builds a new client (`redis.Redis`,
  or `PrefixedStrictRedis` when keys are prefixed) for every acknowledgement, every delivery's
  bookkeeping and every queue operation: about a tenth of a worker's CPU. A client is only a
  facade over the pool (each command borrows a connection and gives it back), so sharing one
  per pool sends the same commands over the same connections. When kombu replaces the pool
  (after a connection error) a new client is made.
- Acknowledgements written in batches. kombu's ack emulation keeps each delivered message in
  an "unacked" hash until it is acknowledged, and an ack is one MULTI round trip. Here an ack
  updates the in-process state (prefetch) at once and its Redis side is written with the next
  delivery's bookkeeping (same MULTI), or by a timer every `ACK_FLUSH_S`, or when the batch
  reaches `ACK_BATCH`, or when the channel closes. A process that dies in between leaves
  those messages in the hash, and kombu puts them back after the visibility timeout: a
  redelivery of a task that already ran, which every dialer task tolerates (the database
  decides, see `dialer.dialing.originate`). Nothing is lost either way.
- That bookkeeping is cheaper: the message record is encoded with orjson (the same JSON but
  for spacing; kombu's restore reads either), and written in a plain pipeline, not MULTI/EXEC.
  Its commands need no isolation from other clients: the record and its index entry are for
  this delivery only. A worker killed in the middle of that write loses the delivery's record
  as it would lose an unfinished MULTI; either way its attempt stays `queued` in Postgres and
  the dispatch tick hands it out again.

Selected by `celery_config` for `redis://` broker URLs.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

TRANSPORT = "dialer.dialing.broker:Transport"

# Acks held back at most this long (timer), or this many at once.
ACK_FLUSH_S = 0.05
ACK_BATCH = 100

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks_lock = threading.Lock()
        self._pending_acks: list[str] = []
        self._oldest_ack = 0.0

    def append(self, message: Any, delivery_tag: str) -> None:
        delivery = message.delivery_info
        record = _record([message._raw, delivery["exchange"], delivery["routing_key"]])
        acks = self._take_acks()
        try:
            with self._pipeline() as pipe:
                pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
                pipe.hset(self.unacked_key, delivery_tag, record)
                if acks:
                    pipe.zrem(self.unacked_index_key, *acks).hdel(self.unacked_key, *acks)
                pipe.execute()
        except BaseException:
            self._give_back_acks(acks)
            raise
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        with self._acks_lock:
            if not self._pending_acks:
                self._oldest_ack = time.monotonic()
            self._pending_acks.append(delivery_tag)
            due = (
                len(self._pending_acks) >= ACK_BATCH
                or time.monotonic() - self._oldest_ack >= ACK_FLUSH_S
            )
        virtual.QoS.ack(self, delivery_tag)
        if due:
            self.flush_acks()

    def flush_acks(self) -> None:
        """Write the held-back acknowledgements to Redis (one MULTI round trip)."""
        acks = self._take_acks()
        if not acks:
            return
        try:
            with self._pipeline() as pipe:
                pipe.zrem(self.unacked_index_key, *acks).hdel(self.unacked_key, *acks).execute()
        except BaseException:
            self._give_back_acks(acks)
            raise

    @contextmanager
    def _pipeline(self) -> Iterator[Any]:
        with self.channel.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            yield pipe

    def _take_acks(self) -> list[str]:
        with self._acks_lock:
            acks, self._pending_acks = self._pending_acks, []
            return acks

    def _give_back_acks(self, acks: list[str]) -> None:
        if acks:
            with self._acks_lock:
                self._pending_acks[:0] = acks


def _record(fields: list[Any]) -> str | bytes:
    try:
        return orjson.dumps(fields)
    except TypeError:  # not plain JSON types (bytes): kombu's own encoder
        return dumps(fields)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client: Any = None
    _shared_client_pool: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        if self._shared_client is None or self._shared_client_pool is not pool:
            self._shared_client = self._create_client()
            self._shared_client_pool = pool
        yield self._shared_client

    def flush_acks(self) -> None:
        qos = self._qos
        if qos is not None:
            qos.flush_acks()

    def close(self) -> None:
        # Before kombu disconnects the pools; a failure leaves them for the visibility timeout.
        if not self.closed:
            try:
                self.flush_acks()
            except Exception as exc:
                log.warning("acknowledgements not written at close (redelivered later): %s", exc)
        super().close()


class Transport(kombu_redis.Transport):
    Channel = Channel
    _ack_flush_tref: Any = None

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        if self._ack_flush_tref is not None:  # from a previous connection
            self._ack_flush_tref.cancel()
        self._ack_flush_tref = loop.call_repeatedly(ACK_FLUSH_S, self._flush_acks)

    def _flush_acks(self) -> None:
        for channel in list(self.channels):
            try:
                channel.flush_acks()
            except Exception as exc:  # kept for the next flush
                log.debug("acknowledgements not written yet: %s", exc)


# -- publishing many tasks at once ----------------------------------------------------------------


def task_messages(
    task: str,
    queue: str,
    arguments: Iterable[tuple[Any, ...]],
    *,
    origin: str,
    reply_to: str,
) -> Iterator[bytes]:
    """Celery protocol-2 messages, each as kombu's Redis transport stores it in a queue's list:
    what `Celery.send_task` publishes for `task` on `queue` with each argument tuple (positional
    arguments only, no options), without its per-message copying of kombu entities, config
    lookups and signals (about 150 us of CPU per message). `tests/test_broker.py` checks them
    against `send_task`'s own.
    """
    for args in arguments:
        task_id = str(uuid.uuid4())
        body = orjson.dumps([list(args), {}, _EMBED])
        argsrepr = repr(args)
        yield orjson.dumps(
            {
                "body": base64.b64encode(body).decode(),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {
                    "lang": "py",
                    "task": task,
                    "id": task_id,
                    "shadow": None,
                    "eta": None,
                    "expires": None,
                    "group": None,
                    "group_index": None,
                    "retries": 0,
                    "timelimit": [None, None],
                    "root_id": task_id,
                    "parent_id": None,
                    "argsrepr": argsrepr,
                    "kwargsrepr": "{}",
                    "origin": origin,
                    "ignore_result": None,
                    "replaced_task_nesting": 0,
                    "stamped_headers": None,
                    "stamps": {},
                },
                "properties": {
                    "correlation_id": task_id,
                    "reply_to": reply_to,
                    "argsrepr": argsrepr,
                    "kwargsrepr": "{}",
                    "delivery_mode": 2,
                    "delivery_info": {"exchange": "", "routing_key": queue},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": str(uuid.uuid4()),
                },
            }
        )


_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def push_task_messages(
    channel: Any, queue: str, messages: Iterable[bytes], *, batch: int = 500
) -> int:
    """Append messages to a queue through `channel` (this transport's), oldest first, `batch`
    per LPUSH; returns how many. The queue must be a plain one (no priorities, no expiry)."""
    pushed = 0
    with channel.conn_or_acquire() as client:
        chunk: list[bytes] = []
        for message in messages:
            chunk.append(message)
            if len(chunk) >= batch:
                client.lpush(queue, *chunk)
                pushed, chunk = pushed + len(chunk), []
        if chunk:
            client.lpush(queue, *chunk)
            pushed += len(chunk)
    return pushed
