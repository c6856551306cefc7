"""The worker's maintenance loop: due retries back onto the queue, dead workers'
entries taken over, each on its own schedule and off the slots' claim path.

One loop per worker, run where the slots run (a thread, or a greenlet under
gevent), so what it takes over goes straight into the consumer's inbox:

- every :data:`PROMOTE_EVERY` seconds, retries whose backoff is over go back onto
  the queue (one script call, however many are due);
- when the reclaimer is due (a quarter of the visibility timeout, at most 5 s),
  it takes over idle entries of dead workers, as many as the slots have room for
  (at least one, so a busy worker still does its share).

Redis failing here is logged and waited out; the loop never ends before the
worker stops.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cached_property

from redis.commands.core import Script

from orbiter_sync import lua
from orbiter_sync.consumer import TaskConsumer
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
                self._promote, keys=[s.delayed_key, s.name], args=[repr(time.time()), limit]
            )
        )
        if moved:
            logger.info("re-enqueued %d retries on %s", moved, s.name)
        return moved


class Maintenance:
    """Promotes due retries and reclaims dead workers' entries for one consumer."""

    def __init__(
        self, consumer: TaskConsumer, promoter: RetryPromoter, stopping: threading.Event
    ) -> None:
        self.consumer = consumer
        self.promoter = promoter
        self.stopping = stopping
        self._next_promote = 0.0

    def run(self) -> None:
        backoff = TICK
        while not self.stopping.is_set():
            try:
                self.step()
                backoff = TICK
            except Exception as exc:  # noqa: BLE001 - Redis away or refusing: wait, go on
                logger.warning(
                    "worker %s: maintenance failed (%s: %s); retrying in %.1fs",
                    self.consumer.name,
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                backoff = min(backoff * 2, MAX_BACKOFF)
            self.stopping.wait(backoff)

    def step(self) -> None:
        """Do whatever is due now."""
        now = time.monotonic()
        if now >= self._next_promote:
            self._next_promote = now + PROMOTE_EVERY
            self.promoter.promote_due()
        if self.consumer.reclaimer.due():
            taken = self.consumer.reclaim(count=max(1, self.consumer.room()))
            if taken:
                self.consumer.offer(taken)
            else:
                self.consumer.reclaimer.checked()
