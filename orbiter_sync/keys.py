"""Every Redis key name orbiter-sync reads or writes.

The names marked *wire* are shared with the async orbiter-distributed library and
must not change; the others are orbiter-sync's own additions.
"""

from __future__ import annotations

PREFIX = "orbiter:"

DEFAULT_QUEUE = f"{PREFIX}tasks"  # wire: stream, field ``payload``
TASK_PREFIX = f"{PREFIX}task:"  # wire: hash per task, ``{TASK_PREFIX}{task_id}``

EVENT_CHANNEL_PREFIX = f"{PREFIX}events:"  # wire: pub/sub, live events
EVENT_STREAM_PREFIX = f"{PREFIX}stream:"  # wire: stream, field ``event``
CANCEL_CHANNEL_PREFIX = f"{PREFIX}cancel:"  # wire: pub/sub, message ``cancel``
WORKER_PREFIX = f"{PREFIX}workers:"  # wire: heartbeat hash per worker

CANCEL_MESSAGE = "cancel"


def consumer_group(queue: str) -> str:
    """wire: the consumer group every worker of ``queue`` reads through."""
    return f"{queue}:group"


def dead_letters(queue: str) -> str:
    """Stream of entries that could not be decoded or were delivered too many times."""
    return f"{queue}:dead"


def delayed_retries(queue: str) -> str:
    """Sorted set of payloads waiting out their retry backoff (score = due time)."""
    return f"{queue}:delayed"


COUNTS_BUCKET = 60  # seconds one recent-counts bucket covers
COUNTS_BUCKET_TTL = 600  # seconds a bucket is kept (the scripts set it)


def fleet_counts(queue: str) -> str:
    """Hash of the queue's fleet counters since it began: completed, failed, cancelled,
    retried, dead_lettered (incremented by the workers' scripts)."""
    return f"{queue}:counts"


def recent_counts(queue: str, now: float) -> str:
    """Hash of the same counters for the one-minute bucket holding ``now``; expires."""
    return f"{queue}:counts:{int(now // COUNTS_BUCKET)}"


def task_hash(task_id: str, prefix: str = TASK_PREFIX) -> str:
    """wire: status hash of one task."""
    return f"{prefix}{task_id}"


def task_index(prefix: str = TASK_PREFIX) -> str:
    """wire: set of known task ids."""
    return f"{prefix}index"


def event_channel(task_id: str) -> str:
    """wire: pub/sub channel carrying a task's events live."""
    return f"{EVENT_CHANNEL_PREFIX}{task_id}"


def event_stream(task_id: str) -> str:
    """wire: stream keeping a task's events for replay."""
    return f"{EVENT_STREAM_PREFIX}{task_id}"


def cancel_channel(task_id: str) -> str:
    """wire: pub/sub channel on which ``cancel`` asks the running worker to stop."""
    return f"{CANCEL_CHANNEL_PREFIX}{task_id}"


CANCEL_PATTERN = f"{CANCEL_CHANNEL_PREFIX}*"


def worker_heartbeat(worker_id: str) -> str:
    """wire: heartbeat hash of one worker."""
    return f"{WORKER_PREFIX}{worker_id}"


WORKER_PATTERN = f"{WORKER_PREFIX}*"


# orbiter-sync's own worker registry: who was seen in the last day, and how they left.
# Outside ``orbiter:workers:`` on purpose: everything under that prefix is taken for a
# heartbeat (``worker list`` and the reclaimer's liveness check read it that way).
REGISTRY_PREFIX = f"{PREFIX}registry:"
WORKER_REGISTRY = f"{REGISTRY_PREFIX}workers"  # sorted set: worker id -> last beat (unix time)
WORKER_RECORD_PREFIX = f"{REGISTRY_PREFIX}worker:"


def worker_record(worker_id: str) -> str:
    """Hash of a worker's last heartbeat fields, kept a day after its heartbeat key is gone."""
    return f"{WORKER_RECORD_PREFIX}{worker_id}"
