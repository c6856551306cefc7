"""One worker consuming several queues, in priority order (``--queue a --queue b``).

Each queue keeps its own :class:`TaskConsumer` (its group, inbox, reclaim, delayed
set and dead letters); :class:`QueueConsumers` puts them behind the one face a
worker's slots, heartbeat and stop use. A slot looks at the queues in order: one
non-blocking read of each but the last, then a wait of at most :data:`LOW_WAIT` on
the last, then the first again, so a task on a higher queue starts before one
waiting on a lower queue, and within about :data:`LOW_WAIT` of its arrival when the
worker is idle. A queue that fails (Redis refusing its keys, say) is skipped, so
the others go on. A delivery is begun and settled by the consumer of the queue it
came from (:attr:`Delivery.queue`). A worker of one queue uses its consumer
directly.

On a Redis Cluster each queue is split into shards (layout.py), one consumer each,
and a queue's shards share one inbox that reads them all (shard_claim.py): a slot
claims through the first of them, and each delivery goes back to its own shard's
consumer (:attr:`Delivery.shard`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import redis

from orbiter_sync.connection import RetryPolicy
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.lines import Line
from orbiter_sync.outcome import Outcome, Settled
from orbiter_sync.queue import Delivery

logger = logging.getLogger(__name__)

LOW_WAIT = 0.1  # seconds a slot waits on the last queue before it looks at the others again
# seconds a higher queue found empty is not read again by any slot: an idle worker's
# slots would otherwise each read it every round (a task arriving meanwhile waits that long)
QUIET = 0.05


class QueueConsumers:
    """The consumers of a worker's queues, highest priority first, on one client."""

    def __init__(
        self,
        consumers: Sequence[TaskConsumer],
        client: redis.Redis,
        stopping: threading.Event | None = None,
    ) -> None:
        if not consumers:
            raise ValueError("QueueConsumers needs at least one consumer")
        self.consumers = tuple(consumers)
        self._by_queue = {(c.settings.name, c.settings.shard): c for c in self.consumers}
        readers: dict[str, TaskConsumer] = {}  # a queue's first shard, whose inbox all share
        for consumer in self.consumers:
            readers.setdefault(consumer.settings.name, consumer)
        self._readers = tuple(readers.values())  # highest priority first
        self._client = client
        self._stopping = stopping or threading.Event()
        self._lock = threading.Lock()
        self._looking = 0  # slots inside claim(): what reclaim may take over for
        self._quiet_until: dict[str, float] = {}  # a higher queue found empty: until when

    @property
    def name(self) -> str:
        """The worker id, as every consumer's name is."""
        return self.consumers[0].name

    def owner(self, delivery: Delivery) -> TaskConsumer:
        """The consumer of the queue ``delivery`` came from."""
        return self._by_queue[(delivery.queue, delivery.shard)]

    @contextmanager
    def line(self) -> Iterator[None]:
        """One line for the calling slot, whatever queue its task came from."""
        shared = Line(self._client)
        try:
            with ExitStack() as stack:
                for consumer in self.consumers:
                    stack.enter_context(consumer.line(shared))
                yield
        finally:
            shared.close()

    def claim(self, *, timeout: float = 5.0) -> Delivery | None:
        """The next delivery, the highest queue first; None after ``timeout`` seconds.
        Raises only when every queue failed (the slot then backs off)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._looking += 1
        try:
            while True:
                delivery, failures = self._look(deadline)
                if delivery is not None:
                    return delivery
                if len(failures) == len(self._readers):
                    raise failures[0]
                if time.monotonic() >= deadline or self._stopping.is_set():
                    return None
        finally:
            with self._lock:
                self._looking -= 1

    def _look(self, deadline: float) -> tuple[Delivery | None, list[Exception]]:
        """One round over the queues: a read of each, a short wait on the last."""
        failures: list[Exception] = []
        last = self._readers[-1]
        for consumer in self._readers:
            name, now = consumer.settings.name, time.monotonic()
            wait = 0.0  # take(0) is exactly one read that does not block
            if consumer is last:  # (the only one: all the time left)
                low = LOW_WAIT if len(self._readers) > 1 else deadline - now
                wait = min(low, max(0.0, deadline - now))
            elif now < self._quiet_until.get(name, 0.0):
                continue  # another slot found it empty a moment ago
            try:
                delivery = consumer.claim(timeout=wait)
            except Exception as exc:  # noqa: BLE001 - one queue's trouble never stops the rest
                failures.append(exc)
                logger.warning("worker %s: reading queue %s failed (%s: %s)", self.name,
                               consumer.settings.label, type(exc).__name__, exc)  # fmt: skip
                continue
            if delivery is not None:
                return delivery, failures
            if consumer is not last:
                self._quiet_until[name] = time.monotonic() + QUIET
        return None, failures

    def room(self) -> int:
        """How many deliveries the slots could take now: those looking for one (the
        inbox's room, when the queues are one queue's shards)."""
        return self._readers[0].room() if len(self._readers) == 1 else self._looking

    def release_waiting(self) -> None:
        """Put back what was claimed for the slots and not taken, each by its consumer."""
        for reader in self._readers:
            for delivery in reader.inbox.drain():
                self.owner(delivery).release(delivery)

    def in_flight(self) -> list[Delivery]:
        return [d for consumer in self.consumers for d in consumer.in_flight()]

    def started(self, delivery: Delivery) -> bool:
        return self.owner(delivery).started(delivery)

    def settle(self, delivery: Delivery, outcome: Outcome, **options: Any) -> Settled:
        return self.owner(delivery).settle(delivery, outcome, **options)

    def keep_alive(
        self, *, client: redis.Redis | None = None, retry: RetryPolicy | None = None
    ) -> list[Delivery]:
        """Keep every queue's held entries alive; the deliveries taken over meanwhile.
        A queue that fails is logged and skipped: what the others lost is still
        returned, so their runs are stopped."""
        lost: list[Delivery] = []
        for consumer in self.consumers:
            try:
                lost += consumer.keep_alive(client=client, retry=retry)
            except Exception as exc:  # noqa: BLE001 - the next beat tries that queue again
                logger.warning("worker %s: keeping queue %s's entries alive failed (%s: %s)",
                               self.name, consumer.settings.label, type(exc).__name__,
                               exc)  # fmt: skip
        return lost

    def leave(self, *, client: redis.Redis | None = None) -> None:
        for consumer in self.consumers:
            consumer.leave(client=client)
