"""The worker's maintenance loop: due retries back onto the queue, dead workers'
entries taken over, each on its own schedule and off the slots' claim path.

One loop per worker, run where the slots run (a thread, or a greenlet under
gevent), so what it takes over goes straight into the consumer's inbox:

- every :data:`PROMOTE_EVERY` seconds, retries whose backoff is over go back onto
  the queue (one script call, however many are due);
- when the reclaimer is due (a quarter of the visibility timeout, at most 5 s),
  it takes over idle entries of dead workers, as many as the slots have room for
  (slots waiting plus the prefetch): a worker whose slots are all busy leaves them
  to workers that can run them now.

Redis failing here is logged and waited out; the loop never ends before the
worker stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import cached_property

from redis.commands.core import Script

from orbiter_sync import lua
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.metrics.worker import redis_errors
from orbiter_sync.queue import QueueUser

logger = logging.getLogger(__name__)

PROMOTE_EVERY = 0.5  # seconds between checks for due retries
TICK = 0.1  # seconds between two looks at the schedule
MAX_BACKOFF = 5.0


class RetryPromoter(QueueUser):
    """Moves the queue's retries whose backoff is over back onto it (``promote.lua``)."""

    @cached_property
    def _promote(self) -> Script:
        return lua.register(self._client, "promote")

    def promote_due(self, limit: int = 100) -> int:
        """Re-queue up to ``limit`` retries that are due, in one call; returns how many."""
        s = self.settings
        moved = int(
            self._retry.call(
                self._promote, keys=[s.delayed_key, s.stream], args=[repr(time.time()), limit]
            )
        )
        if moved:
            logger.info("re-enqueued %d retries on %s", moved, s.label)
        return moved


class Maintenance:
    """Promotes due retries and reclaims dead workers' entries for one consumer."""

    def __init__(
        self,
        consumer: TaskConsumer,
        promoter: RetryPromoter,
        stopping: threading.Event,
        room: Callable[[], int] | None = None,
    ) -> None:
        self.consumer = consumer
        self.promoter = promoter
        self.stopping = stopping
        # how many more deliveries the slots could take: the consumer's own inbox knows,
        # unless the slots read several queues (then the worker's QueueConsumers does)
        self.room = room or consumer.room
        self._next_promote = 0.0

    def run(self) -> None:
        backoff = TICK
        while not self.stopping.is_set():
            failed = False
            for step in (self.promote, self.reclaim):  # one failing never stops the other
                try:
                    with redis_errors(step.__name__):
                        step()
                except Exception as exc:  # noqa: BLE001 - Redis away or refusing: wait, go on
                    failed = True
                    logger.warning("worker %s: %s failed (%s: %s); retrying in %.1fs",
                                   self.consumer.name, step.__name__, type(exc).__name__, exc,
                                   min(backoff * 2, MAX_BACKOFF))  # fmt: skip
            backoff = min(backoff * 2, MAX_BACKOFF) if failed else TICK
            self.stopping.wait(backoff)

    def step(self) -> None:
        """Do whatever is due now."""
        self.promote()
        self.reclaim()

    def promote(self) -> None:
        """Re-queue the retries that are due, every ``PROMOTE_EVERY`` seconds."""
        now = time.monotonic()
        if now >= self._next_promote:
            self._next_promote = now + PROMOTE_EVERY
            self.promoter.promote_due()

    def reclaim(self) -> None:
        """Take over dead workers' idle entries, as many as the slots have room for: a
        worker whose slots are all busy leaves them to workers with free slots."""
        room = self.room()
        if room <= 0 or not self.consumer.reclaimer.due():
            return
        taken = self.consumer.reclaim(count=room)
        if taken:
            self.consumer.offer(taken)  # and look again soon: there may be more
        else:
            self.consumer.reclaimer.checked()
