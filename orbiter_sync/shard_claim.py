"""Claiming from a queue split into shards on a Redis Cluster: one inbox for all of them.

One ``XREADGROUP`` cannot span the shards' slots, so the shards of a queue share one
:class:`~orbiter_sync.inbox.Inbox` whose fetch (:class:`ShardClaim`) reads every shard
in one pipeline, without blocking (redis-py's cluster pipeline sends each master its
reads at once, so that costs one round trip), asking each for its share of what the
slots want. When every shard is empty it blocks on one of them for at most
:data:`SHARD_WAIT` and reads them all again, the next time on the next shard: an idle
worker starts a task within about that of its arrival on any shard, and no shard
starves. Each delivery is accepted, begun and settled by its own shard's
:class:`~orbiter_sync.consumer.TaskConsumer` (:attr:`Delivery.shard`).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis

from orbiter_sync.connection import RetryPolicy
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.inbox import Inbox
from orbiter_sync.queue import Delivery, QueueSettings

logger = logging.getLogger(__name__)

SHARD_WAIT = 0.05  # seconds a fetch blocks on one empty shard before it reads all again


class ShardClaim:
    """The fetch of the inbox a queue's shards share: a pipelined read of all of them."""

    def __init__(
        self, consumers: Sequence[TaskConsumer], client: redis.Redis, retry: RetryPolicy
    ) -> None:
        self.consumers = consumers  # (a list its maker fills once their inbox exists)
        self._client = client
        self._retry = retry
        self._turn = itertools.count()

    def __call__(self, count: int, deadline: float) -> list[Delivery]:
        """Up to about ``count`` new deliveries from the shards, waiting until ``deadline``
        at most; raises only when every shard failed."""
        share = -(-count // len(self.consumers))  # at least 1 from each shard
        while True:
            found = self._read_all(share)
            if found or time.monotonic() >= deadline:
                return found
            waiting = self.consumers[next(self._turn) % len(self.consumers)]  # none starves
            found = waiting.read_new(share, min(deadline, time.monotonic() + SHARD_WAIT))
            if found:
                return found

    def _read_all(self, share: int) -> list[Delivery]:
        for consumer in self.consumers:
            if not consumer.group_ready:
                consumer.ensure_group()

        def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for c in self.consumers:
                pipe.xreadgroup(c.settings.group, c.name, {c.settings.stream: ">"}, count=share)
            return pipe.execute(raise_on_error=False)

        found: list[Delivery] = []
        failures: list[Exception] = []
        for consumer, reply in zip(self.consumers, self._retry.call(read), strict=True):
            try:
                found += consumer.accept_reply(reply)
            except Exception as exc:  # noqa: BLE001 - one shard's trouble never stops the rest
                failures.append(exc)
                logger.warning("worker %s: reading %s failed (%s: %s)", consumer.name,
                               consumer.settings.label, type(exc).__name__, exc)  # fmt: skip
        if failures and len(failures) == len(self.consumers):
            raise failures[0]
        return found


def shard_consumers(
    redis_url: str,
    name: str,
    settings: QueueSettings,
    *,
    client: redis.Redis,
    retry: RetryPolicy,
    prefetch: int = 0,
    slots: int | None = None,
) -> list[TaskConsumer]:
    """The consumers of every shard of ``settings``'s queue for worker ``name``, sharing
    one inbox (``prefetch`` and ``slots`` as :class:`~orbiter_sync.inbox.Inbox` takes
    them); one plain consumer when the queue has a single shard."""
    shards = settings.all_shards()
    if len(shards) == 1:
        return [TaskConsumer(redis_url, name, settings, client=client, retry=retry,
                             prefetch=prefetch, slots=slots)]  # fmt: skip
    consumers: list[TaskConsumer] = []
    inbox = Inbox(ShardClaim(consumers, client, retry), prefetch, slots)
    consumers += [TaskConsumer(redis_url, name, shard, client=client, retry=retry, inbox=inbox)
                  for shard in shards]  # fmt: skip
    return consumers
