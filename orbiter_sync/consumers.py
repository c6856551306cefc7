"""One worker consuming several queues, in priority order (``--queue a --queue b``).

Each queue keeps its own :class:`TaskConsumer` (its group, inbox, reclaim, delayed
set and dead letters); :class:`QueueConsumers` puts them behind the one face a
worker's slots, heartbeat and stop use. A slot looks at the queues in order: a
quick look (no wait) at each but the last, then a short wait on the last, then
the first again, so a task on a higher queue starts before one waiting on a lower
queue, and within about :data:`LOW_WAIT` of its arrival when the worker is idle.
A delivery is settled by the consumer of the queue it came from
(:attr:`Delivery.queue`). A worker of one queue uses its consumer directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import redis

from orbiter_sync.connection import RetryPolicy
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.outcome import Outcome, Settled
from orbiter_sync.queue import Delivery

LOOK = 0.001  # seconds a slot waits on a higher-priority queue: a look, not a wait
LOW_WAIT = 0.1  # seconds it waits on the last queue before it looks at the others again


class QueueConsumers:
    """The consumers of a worker's queues, highest priority first."""

    def __init__(self, consumers: Sequence[TaskConsumer]) -> None:
        if not consumers:
            raise ValueError("QueueConsumers needs at least one consumer")
        self.consumers = tuple(consumers)
        self._by_queue = {c.settings.name: c for c in self.consumers}

    @property
    def name(self) -> str:
        """The worker id, as every consumer's name is."""
        return self.consumers[0].name

    def owner(self, delivery: Delivery) -> TaskConsumer:
        """The consumer of the queue ``delivery`` came from."""
        return self._by_queue[delivery.queue]

    @contextmanager
    def line(self) -> Iterator[None]:
        """A line per queue for the calling slot (each connects on first use)."""
        with ExitStack() as stack:
            for consumer in self.consumers:
                stack.enter_context(consumer.line())
            yield

    def claim(self, *, timeout: float = 5.0) -> Delivery | None:
        """The next delivery, the highest queue first; None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        *higher, last = self.consumers
        while True:
            for consumer in higher:
                delivery = consumer.claim(timeout=LOOK)
                if delivery is not None:
                    return delivery
            left = deadline - time.monotonic()
            delivery = last.claim(timeout=max(LOOK, min(LOW_WAIT, left)))
            if delivery is not None or time.monotonic() >= deadline:
                return delivery

    def release_waiting(self) -> None:
        for consumer in self.consumers:
            consumer.release_waiting()

    def in_flight(self) -> list[Delivery]:
        return [d for consumer in self.consumers for d in consumer.in_flight()]

    def started(self, delivery: Delivery) -> bool:
        return self.owner(delivery).started(delivery)

    def settle(self, delivery: Delivery, outcome: Outcome, **options: Any) -> Settled:
        return self.owner(delivery).settle(delivery, outcome, **options)

    def keep_alive(
        self, *, client: redis.Redis | None = None, retry: RetryPolicy | None = None
    ) -> list[Delivery]:
        """Keep every queue's held entries alive; the deliveries taken over meanwhile."""
        return [lost for c in self.consumers for lost in c.keep_alive(client=client, retry=retry)]

    def leave(self, *, client: redis.Redis | None = None) -> None:
        for consumer in self.consumers:
            consumer.leave(client=client)
