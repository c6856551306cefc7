"""Claiming from a queue split into shards on a Redis Cluster: one inbox for all of them.

One ``XREADGROUP`` cannot span the shards' slots, so the shards of a queue share one
:class:`~orbiter_sync.inbox.Inbox` whose fetch (:class:`ShardClaim`) reads every shard
in one pipeline, without blocking (redis-py's cluster pipeline sends each master its
reads at once, so that costs one round trip), asking each for its share of what the
slots want. When every shard is empty it blocks on one of them for at most
:data:`SHARD_WAIT` and reads them all again, the next time on the next shard: an idle
worker starts a task within about that of its arrival on any shard (and reads Redis
about 20 times a second meanwhile), and no shard starves. Each delivery is accepted,
begun and settled by its own shard's :class:`~orbiter_sync.consumer.TaskConsumer`
(:attr:`Delivery.shard`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import redis

from orbiter_sync.cluster_client import REDIS_ERRORS, REDIS_FAILURES
from orbiter_sync.connection import RetryPolicy
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.inbox import Inbox
from orbiter_sync.queue import Delivery, QueueSettings

logger = logging.getLogger(__name__)

SHARD_WAIT = 0.05  # seconds a fetch blocks on one empty shard before it reads all again


class ShardClaim:
    """The fetch of the inbox a queue's shards share: a pipelined read of all of them."""

    def __init__(self, consumers: Sequence[TaskConsumer], client: redis.Redis) -> None:
        self.consumers = consumers  # (a list its maker fills once their inbox exists)
        self._client = client
        self._turn = itertools.count()

    def __call__(self, count: int, deadline: float) -> list[Delivery]:
        """Up to ``count`` new deliveries from the shards, waiting until ``deadline`` at
        most; raises only when every shard read failed.

        ``count`` is split over the shards, starting at the next one in turn (with fewer
        than there are shards, the others are read next time): never more than asked,
        so nothing waits here that another worker could run. Each read is one attempt:
        a shard whose master is away is skipped (and logged) while the others go on."""
        n = len(self.consumers)
        while True:
            start = next(self._turn)
            order = [self.consumers[(start + i) % n] for i in range(n)]
            asked = [(c, count // n + (i < count % n)) for i, c in enumerate(order)]
            asked = [(c, k) for c, k in asked if k]
            found = self._read(asked, block_ms=0)
            if found or time.monotonic() >= deadline:
                return found
            # all empty: wait a moment on one of them (one not asked, when some were not)
            waiting = order[len(asked) % n]
            left = min(deadline - time.monotonic(), SHARD_WAIT)
            found = self._read([(waiting, asked[0][1])], block_ms=max(1, math.ceil(left * 1000)))
            if found or time.monotonic() >= deadline:
                return found

    def _read(self, asked: list[tuple[TaskConsumer, int]], block_ms: int) -> list[Delivery]:
        """One ``XREADGROUP`` of each shard asked (pipelined; one by one when the pipeline
        fails, so a master that is away does not stop the others)."""
        for consumer, _ in asked:
            if not consumer.group_ready:
                with contextlib.suppress(*REDIS_FAILURES):  # (logged by the read below)
                    consumer.ensure_group()
        try:
            replies = self._pipelined(asked, block_ms)
        except REDIS_ERRORS:
            replies = [self._one(consumer, count, block_ms) for consumer, count in asked]
        found: list[Delivery] = []
        failures: list[Exception] = []
        for (consumer, _), reply in zip(asked, replies, strict=True):
            try:
                found += consumer.accept_reply(reply)
            except Exception as exc:  # noqa: BLE001 - one shard's trouble never stops the rest
                failures.append(exc)
                logger.warning("worker %s: reading %s failed (%s: %s)", consumer.name,
                               consumer.settings.label, type(exc).__name__, exc)  # fmt: skip
        if failures and len(failures) == len(asked):
            raise failures[0]
        return found

    def _pipelined(self, asked: list[tuple[TaskConsumer, int]], block_ms: int) -> list[Any]:
        if len(asked) == 1:  # (a blocking read: never in a pipeline)
            return [self._one(*asked[0], block_ms)]
        pipe = self._client.pipeline(transaction=False)
        for c, count in asked:
            pipe.xreadgroup(c.settings.group, c.name, {c.settings.stream: ">"}, count=count)
        return pipe.execute(raise_on_error=False)

    def _one(self, c: TaskConsumer, count: int, block_ms: int) -> Any:
        try:
            return self._client.xreadgroup(c.settings.group, c.name, {c.settings.stream: ">"},
                                           count=count, block=block_ms or None)  # fmt: skip
        except REDIS_ERRORS as exc:
            return exc


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
    inbox = Inbox(ShardClaim(consumers, client), prefetch, slots)
    consumers += [TaskConsumer(redis_url, name, shard, client=client, retry=retry, inbox=inbox)
                  for shard in shards]  # fmt: skip
    return consumers
