"""The Redis broker transport: kombu's own, with one client object per connection pool.

kombu's Redis channel builds a new client object (`redis.Redis`, or `PrefixedStrictRedis`
when keys are prefixed) for every acknowledgement, every delivery's bookkeeping and every
queue operation; with one task per call that was about a tenth of a worker's CPU. A client is
only a facade over the channel's connection pool (each command takes a connection from the
pool and gives it back), so sharing one per pool sends the same commands over the same
connections. When kombu replaces the pool (after a connection error) a new client is made.

Selected by `celery_config` for `redis://` broker URLs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

TRANSPORT = "dialer.broker:Transport"


class Channel(kombu_redis.Channel):
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


class Transport(kombu_redis.Transport):
    Channel = Channel
