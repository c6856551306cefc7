"""What the fleet looks like now, read from Redis: the numbers the exporter serves and
the alert rules judge (``read_fleet`` in fleet.py fills these)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

    from orbiter_sync.queue import QueueSettings

RECENT_WINDOW = 300.0  # seconds: the window of the recent counts (five one-minute buckets)
# retries wait at most a minute (the backoff's cap): the delayed entries due within it
# count in a queue's depth; a task submitted with a longer delay is not work waiting yet
DUE_SOON = 60.0


def undelivered(length: int, pending: int, lag: int | None) -> int:
    """Entries no worker has been given yet: the group's lag, or, when Redis cannot tell
    (deleted entries lie ahead of the group), length - pending, since settled entries
    are deleted from the stream."""
    return max(0, length - pending if lag is None else lag)


@dataclass(frozen=True)
class RecentCounts:
    """Tasks that ended (or were retried) in the last ``window`` seconds, fleet-wide."""

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    window: float = RECENT_WINDOW

    @property
    def finished(self) -> int:
        """Completed plus failed: the denominator of the failure rate."""
        return self.completed + self.failed

    @property
    def failure_rate(self) -> float | None:
        """failed / (completed + failed); None when nothing finished."""
        return self.failed / self.finished if self.finished else None


@dataclass(frozen=True)
class QueueSnapshot:
    """One queue: its entries, and its fleet counters since they began."""

    queue: str
    length: int  # entries in the stream (waiting, plus claimed and not yet settled)
    pending: int  # claimed by a worker, not yet settled
    waiting: int  # not yet delivered to any worker
    delayed: int  # retries and delayed submits waiting for their time
    dead_letters: int  # in the dead-letter stream now
    oldest_pending_age: float | None  # seconds since the oldest claimed entry was queued
    oldest_waiting_age: float | None  # seconds since the oldest undelivered task was created
    delayed_due: int = 0  # of the delayed, those due within a minute (or overdue)
    completed_total: int = 0
    failed_total: int = 0
    cancelled_total: int = 0
    retried_total: int = 0
    dead_lettered_total: int = 0
    recent: RecentCounts = RecentCounts()

    @property
    def depth(self) -> int:
        """The alert rules' queue depth: entries not yet delivered plus delayed retries
        (the delayed entries due within a minute: a retry waits at most that long, and
        a task submitted for tomorrow is not work waiting now)."""
        return self.waiting + self.delayed_due

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "depth": self.depth}


@dataclass(frozen=True)
class FleetSnapshot:
    """Every queue asked about (and every queue a live worker reads), and the workers."""

    queues: tuple[QueueSnapshot, ...]
    workers_alive: int  # with a live heartbeat
    workers_stopped: int  # stopped cleanly in the last day
    workers_dead: int  # stopped beating without saying so, in the last day
    slots_total: int  # of live workers
    slots_busy: int  # of live workers: tasks running now
    read_at: float  # unix time

    def queue(self, name: str) -> QueueSnapshot | None:
        return next((q for q in self.queues if q.queue == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "queues": [q.to_dict() for q in self.queues],
            "workers": {
                "alive": self.workers_alive,
                "stopped": self.workers_stopped,
                "dead": self.workers_dead,
            },  # fmt: skip
            "slots": {"total": self.slots_total, "busy": self.slots_busy},
            "read_at": self.read_at,
        }


def queue_depths(client: redis.Redis, queues: Sequence[QueueSettings]) -> dict[str, int]:
    """The depth of each queue (of each name: its shards added up) read in one pipeline:
    entries not yet delivered plus delayed entries due within :data:`DUE_SOON`. A queue
    a shard of which could not be read is left out, rather than shown too low."""
    pipe = client.pipeline(transaction=False)
    for q in queues:
        pipe.xlen(q.stream)
        pipe.zcount(q.delayed_key, "-inf", time.time() + DUE_SOON)
        pipe.xinfo_groups(q.stream)
    replies = pipe.execute(raise_on_error=False)
    depths: dict[str, int] = {}
    unread: set[str] = set()
    for index, q in enumerate(queues):
        length, delayed, groups = replies[3 * index : 3 * index + 3]
        if isinstance(length, Exception) or isinstance(delayed, Exception):
            unread.add(q.name)
            continue
        group: dict[str, Any] = {} if isinstance(groups, Exception) else (
            next((g for g in groups if g.get("name") == q.group), {}))  # fmt: skip
        lag, pending = group.get("lag"), int(group.get("pending") or 0)
        waiting = undelivered(int(length), pending, None if lag is None else int(lag))
        depths[q.name] = depths.get(q.name, 0) + waiting + int(delayed)
    return {name: depth for name, depth in depths.items() if name not in unread}
