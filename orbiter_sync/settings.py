"""A worker's settings, written once: ``WorkerSettings`` holds every default.

``Worker(settings=...)`` takes them whole, ``Worker(concurrency=4, ...)`` takes
some as keywords (:class:`WorkerOptions`), and ``orbiter-sync start worker``
reads its option defaults from the fields here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, TypedDict

from orbiter_sync import keys
from orbiter_sync.errors import ConfigurationError
from orbiter_sync.executors.base import check_executor
from orbiter_sync.layout import STANDALONE, KeyLayout
from orbiter_sync.pools import check_pool
from orbiter_sync.queue import (
    DEFAULT_EVENT_TTL,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TASK_TTL,
    DEFAULT_VISIBILITY_TIMEOUT,
    QueueSettings,
    exponential_backoff,
)
from orbiter_sync.shards import check_shards


@dataclass(frozen=True)
class WorkerSettings:
    """Everything that shapes a worker besides its Redis URL and id."""

    concurrency: int = 1
    """Concurrent task slots in this process."""
    queue_name: str = keys.DEFAULT_QUEUE
    """Redis Streams queue name (the first, when the worker reads several)."""
    also_queues: Sequence[str] = ()
    """Queues read after ``queue_name``, in priority order (kept as a tuple)."""
    heartbeat_ttl: int = 30
    """Heartbeat key TTL in seconds (the worker beats every third of it)."""
    executor: str = "local"
    """Execution backend: local or temporal."""
    temporal_task_queue: str | None = None
    """The Temporal task queue of the temporal executor's workflows and activities
    (None: ``$ORBITER_TEMPORAL_TASK_QUEUE``, else ``orbiter-sync-tasks``)."""
    temporal_worker: bool = True
    """Whether a temporal-executor worker also runs Temporal's workflows and activities
    (False: it only starts workflows; ``orbiter-sync start temporal-worker`` runs them)."""
    pool: str = "thread"
    """What slots run on: thread or gevent."""
    shutdown_timeout: float = 25.0
    """Seconds running tasks get to finish on a graceful stop before they are released."""
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    """Seconds after which a dead worker's tasks are reclaimed."""
    allow_imports: Sequence[str] = ()
    """Module prefixes payload entrypoints may be imported from (kept as a tuple)."""
    max_retries: int = DEFAULT_MAX_RETRIES
    """Failed attempts retried before a task fails for good."""
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    """Deliveries of an entry whose workers keep dying before it is dead-lettered."""
    retry_backoff: float = 1.0
    """Base of the exponential retry backoff, in seconds (1 s, 2 s, 4 s ... capped at 60 s)."""
    claim_timeout: float = 1.0
    """Seconds a slot waits for a task before it checks whether to stop."""
    prefetch: int = 8
    """Most tasks claimed ahead of the free slots; only as many as the worker finishes
    in 50 ms, so long runs are never held back from other workers (0: none)."""
    result_ttl: int = DEFAULT_TASK_TTL
    """Seconds a task's hash (its status and result) is kept after it was last written."""
    events_ttl: int = DEFAULT_EVENT_TTL
    """Seconds a task's event stream is kept after its last event."""
    metrics_port: int | None = None
    """Port this worker serves its Prometheus ``/metrics`` on, on every interface
    (None: no metrics, and nothing of them on the hot path)."""
    queue_shards: int | None = None
    """Shards of every queue on a Redis Cluster (None: ``$ORBITER_QUEUE_SHARDS``, else
    the number recorded in Redis, else 1); the whole deployment shares one (shards.py)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_imports", tuple(self.allow_imports))
        if isinstance(self.also_queues, str):  # a name is not a list of one-letter names
            raise ConfigurationError("also_queues must be a list of queue names, not a string")
        object.__setattr__(self, "also_queues", tuple(self.also_queues))
        names = self.queue_names
        if not all(isinstance(n, str) and n and "," not in n for n in names) or len(
            set(names)
        ) < len(names):
            raise ConfigurationError(
                f"queues must be distinct, non-empty names without ',' (repeat --queue for "
                f"several): {names}"
            )
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.heartbeat_ttl < 1:
            raise ConfigurationError(
                f"heartbeat_ttl must be at least 1 second, got {self.heartbeat_ttl}"
            )
        if min(self.shutdown_timeout, self.retry_backoff, self.claim_timeout) < 0:
            raise ConfigurationError("timeouts and backoff must not be negative")
        if self.visibility_timeout <= 0:
            raise ConfigurationError("visibility_timeout must be greater than 0")
        if self.prefetch < 0:
            raise ConfigurationError(f"prefetch must not be negative, got {self.prefetch}")
        if self.max_retries < 0 or self.max_deliveries < 1:
            raise ConfigurationError("max_retries must be >= 0 and max_deliveries >= 1")
        if self.result_ttl < 1 or self.events_ttl < 1:
            raise ConfigurationError("result_ttl and events_ttl must be at least 1 second")
        check_executor(self.executor)
        if self.pool == "gevent" and self.executor == "temporal":
            raise ConfigurationError(
                "--pool gevent cannot run the temporal executor: temporalio runs on asyncio "
                "with a native core, which a monkey-patched process breaks; use --pool thread"
            )
        check_pool(self.pool)
        if self.metrics_port is not None and not 0 < self.metrics_port < 65536:
            raise ConfigurationError(
                f"metrics_port must be from 1 to 65535, got {self.metrics_port}"
            )
        check_shards(self.queue_shards)
        if self.temporal_task_queue is not None and not self.temporal_task_queue.strip():
            raise ConfigurationError("the Temporal task queue must not be empty")

    @classmethod
    def default_of(cls, name: str) -> Any:
        """The default of setting ``name`` (the CLI's option defaults come from here)."""
        return cls.__dataclass_fields__[name].default

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @property
    def queue_names(self) -> tuple[str, ...]:
        """Every queue this worker reads, highest priority first."""
        return (self.queue_name, *self.also_queues)

    def queue_settings(
        self, name: str | None = None, layout: KeyLayout = STANDALONE
    ) -> QueueSettings:
        """The settings of queue ``name`` (default: ``queue_name``) as this worker reads it,
        its shard 0 in ``layout``."""
        return QueueSettings(
            layout=layout,
            name=name or self.queue_name,
            max_retries=self.max_retries,
            max_deliveries=self.max_deliveries,
            visibility_timeout=self.visibility_timeout,
            retry_backoff=exponential_backoff(self.retry_backoff),
            task_ttl=self.result_ttl,
            event_ttl=self.events_ttl,
        )


class WorkerOptions(TypedDict, total=False):
    """``WorkerSettings`` fields, as keywords of ``Worker(...)`` (kept in step by a test)."""

    concurrency: int
    queue_name: str
    also_queues: Sequence[str]
    heartbeat_ttl: int
    executor: str
    temporal_task_queue: str | None
    temporal_worker: bool
    pool: str
    shutdown_timeout: float
    visibility_timeout: float
    allow_imports: Sequence[str]
    max_retries: int
    max_deliveries: int
    retry_backoff: float
    claim_timeout: float
    prefetch: int
    result_ttl: int
    events_ttl: int
    metrics_port: int | None
    queue_shards: int | None
