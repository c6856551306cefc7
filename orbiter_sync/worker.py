"""The worker: wires slots, heartbeat, cancel listener and reclaim around one queue.

``Worker.start()`` blocks until the worker has stopped; ``Worker.stop()`` is safe
from any thread (the CLI calls it from its signal handlers; the library installs
none). Stopping goes in this order, so heartbeats and keep-alives keep flowing
while tasks finish:

1. stop claiming;
2. wait up to ``shutdown_timeout`` for running tasks to finish;
3. stop what is left and release it back to the queue (not a failed attempt);
4. stop the cancel listener and the heartbeat (deleting its key), close connections.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field

import tenacity

from orbiter_sync import keys
from orbiter_sync.agents import ImportPolicy
from orbiter_sync.broker import DEFAULT_MAX_DELIVERIES, DEFAULT_MAX_RETRIES, TaskBroker
from orbiter_sync.connection import DEFAULT_RETRY, connect, mask_url, resolve_redis_url
from orbiter_sync.control import CANCELLED, SHUTDOWN, CancelListener, RunControl
from orbiter_sync.errors import ConfigurationError
from orbiter_sync.events import EventPublisher
from orbiter_sync.executors import Executor, LocalExecutor, check_executor
from orbiter_sync.heartbeat import Heartbeat
from orbiter_sync.pools import Pool, check_pool, make_pool
from orbiter_sync.slot import Slot
from orbiter_sync.store import TaskStore

logger = logging.getLogger(__name__)

RELEASE_GRACE = 5.0  # seconds stopped runs get to hand their task back
MAIN_THREAD_TICK = 0.05


def default_worker_id() -> str:
    """``{hostname}-{pid}-{8 hex}``, unique per process."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class WorkerSettings:
    """Everything that shapes a worker besides its Redis URL and id."""

    concurrency: int = 1
    queue_name: str = keys.DEFAULT_QUEUE
    heartbeat_ttl: int = 30
    executor: str = "local"
    pool: str = "thread"
    shutdown_timeout: float = 25.0
    visibility_timeout: float = 60.0
    allow_imports: tuple[str, ...] = ()
    max_retries: int = DEFAULT_MAX_RETRIES
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    retry_backoff: float = 1.0
    """Base of the exponential retry backoff, in seconds (1 s, 2 s, 4 s ... capped at 60 s)."""
    claim_timeout: float = 1.0
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.heartbeat_ttl < 1:
            raise ConfigurationError(
                f"heartbeat_ttl must be at least 1 second, got {self.heartbeat_ttl}"
            )
        if self.shutdown_timeout < 0 or self.visibility_timeout <= 0 or self.retry_backoff < 0:
            raise ConfigurationError("timeouts and backoff must not be negative")
        check_executor(self.executor)
        check_pool(self.pool)


class Worker:
    """A worker process's engine: ``concurrency`` slots claiming from one queue."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        worker_id: str | None = None,
        concurrency: int = 1,
        queue_name: str = keys.DEFAULT_QUEUE,
        heartbeat_ttl: int = 30,
        executor: str = "local",
        pool: str = "thread",
        shutdown_timeout: float = 25.0,
        visibility_timeout: float = 60.0,
        allow_imports: tuple[str, ...] | list[str] = (),
        settings: WorkerSettings | None = None,
    ) -> None:
        self.settings = settings or WorkerSettings(
            concurrency=concurrency,
            queue_name=queue_name,
            heartbeat_ttl=heartbeat_ttl,
            executor=executor,
            pool=pool,
            shutdown_timeout=shutdown_timeout,
            visibility_timeout=visibility_timeout,
            allow_imports=tuple(allow_imports),
        )
        self.redis_url = resolve_redis_url(redis_url)
        self.worker_id = worker_id or default_worker_id()
        self.policy = ImportPolicy.from_settings(self.settings.allow_imports)
        self.retry = DEFAULT_RETRY
        self.client = connect(self.redis_url)
        s = self.settings
        self.broker = TaskBroker(
            self.redis_url,
            queue_name=s.queue_name,
            max_retries=s.max_retries,
            max_deliveries=s.max_deliveries,
            visibility_timeout=s.visibility_timeout,
            retry_backoff=tenacity.wait_exponential(multiplier=s.retry_backoff, max=60)
            + tenacity.wait_random(0, s.retry_backoff),
            client=self.client,
        )
        self.store = TaskStore(self.redis_url, client=self.client)
        self.publisher = EventPublisher(self.redis_url, client=self.client)
        self.executor: Executor = LocalExecutor(self.policy)
        self.stopping = threading.Event()
        self.counters: Counter[str] = Counter(processed=0, failed=0)
        self._running: dict[str, RunControl] = {}
        self._lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._stop_timeout: float | None = None
        self._stopped = threading.Event()

    def __repr__(self) -> str:
        url, queue = mask_url(self.redis_url), self.settings.queue_name
        return f"Worker({self.worker_id!r}, {url!r}, queue={queue!r})"

    # -- the running set, shared by slots, heartbeat and cancel listener ----------------

    def track(self, control: RunControl) -> None:
        with self._lock:
            self._running[control.task_id] = control

    def untrack(self, control: RunControl) -> None:
        with self._lock:
            if self._running.get(control.task_id) is control:
                del self._running[control.task_id]

    def running_ids(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def stop_run(self, task_id: str, reason: str) -> bool:
        """Stop the run of ``task_id`` if it runs here; True if it did."""
        with self._lock:
            control = self._running.get(task_id)
        if control is None:
            return False
        logger.info("worker %s: stopping task %s (%s)", self.worker_id, task_id, reason)
        control.stop(reason)
        return True

    def count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Run until :meth:`stop` is called; returns once everything is shut down."""
        s = self.settings
        logger.info(
            "worker %s starting: redis=%s queue=%s concurrency=%d pool=%s executor=%s",
            self.worker_id,
            mask_url(self.redis_url),
            s.queue_name,
            s.concurrency,
            s.pool,
            s.executor,
        )
        self.broker.ensure_group()
        heartbeat = Heartbeat(self)
        listener = CancelListener(self.client, lambda task_id: self.stop_run(task_id, CANCELLED))
        pool = make_pool(s.pool)
        try:
            heartbeat.start()
            listener.start()
            for index in range(s.concurrency):
                pool.spawn(Slot(self, index).run, name=f"orbiter-slot-{index}")
            # Short waits: a signal that lands on another thread only reaches its Python
            # handler when the main thread next wakes, and two signals that arrive
            # before then count as one.
            while not self._stop_requested.wait(MAIN_THREAD_TICK):
                pass
            self._shut_down(pool, heartbeat)
        finally:
            self.stopping.set()
            listener.stop()
            heartbeat.stop()
            self._forget_consumer()
            self.client.close()
            self._stopped.set()
            logger.info("worker %s stopped", self.worker_id)

    def stop(self, timeout: float | None = None) -> None:
        """Ask the worker to stop; running tasks get ``timeout`` seconds (default
        ``shutdown_timeout``) to finish before they are released back to the queue.

        Safe from any thread and from signal handlers; a second call with a smaller
        timeout shortens the wait (a second Ctrl+C stops at once with ``timeout=0``).
        """
        self._stop_timeout = timeout if timeout is not None else self.settings.shutdown_timeout
        self.stopping.set()
        self._stop_requested.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def _shut_down(self, pool: Pool, heartbeat: Heartbeat) -> None:
        heartbeat.status = "stopping"
        logger.info(
            "worker %s stopping: %d running task(s)", self.worker_id, len(self.running_ids())
        )
        waited = 0.0
        while not pool.join(MAIN_THREAD_TICK):
            waited += MAIN_THREAD_TICK
            timeout = self._stop_timeout if self._stop_timeout is not None else 0.0
            if waited >= timeout:
                break
        for task_id in self.running_ids():
            self.stop_run(task_id, SHUTDOWN)
        if not pool.join(RELEASE_GRACE):
            # Plain sync functions cannot be interrupted: hand their tasks back ourselves.
            for task_id in self.running_ids():
                logger.warning(
                    "worker %s: task %s did not stop; releasing it", self.worker_id, task_id
                )
                self.broker.release(task_id, reason="worker stopped while it ran")

    def _forget_consumer(self) -> None:
        """Remove this worker's consumer from the group when it owns no pending entry."""
        try:
            group, queue = self.broker.group, self.settings.queue_name
            pending = self.client.xpending_range(
                queue, group, "-", "+", 1, consumername=self.worker_id
            )
            if not pending:
                self.client.xgroup_delconsumer(queue, group, self.worker_id)
        except Exception as exc:  # noqa: BLE001 - best effort at exit
            logger.debug("worker %s: consumer not removed: %s", self.worker_id, exc)
