"""The worker's heartbeat thread.

Every ``heartbeat_ttl / 3`` seconds (sooner if the visibility timeout asks for it)
it writes the guide's fields to ``orbiter:workers:{id}`` with TTL ``heartbeat_ttl``,
keeps the entries the worker holds fresh so no other worker reclaims them, and
re-reads the status of running tasks: a cancel whose pub/sub message was lost
still lands.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import redis

from orbiter_sync import keys
from orbiter_sync.connection import RetryPolicy
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.control import RunTracker
from orbiter_sync.errors import RedisUnavailableError
from orbiter_sync.models import TaskStatus
from orbiter_sync.outcome import StopReason
from orbiter_sync.settings import WorkerSettings
from orbiter_sync.store import TaskStore

logger = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0


class Heartbeat:
    """Beats for one worker until stopped; the worker's ``stopping`` event turns its
    status to ``stopping``."""

    def __init__(
        self,
        *,
        client: redis.Redis,
        retry: RetryPolicy,
        worker_id: str,
        settings: WorkerSettings,
        runs: RunTracker,
        consumer: TaskConsumer,
        store: TaskStore,
        stopping: threading.Event,
    ) -> None:
        self.client = client
        self.retry = retry
        self.worker_id = worker_id
        self.settings = settings
        self.runs = runs
        self.consumer = consumer
        self.store = store
        self.stopping = stopping
        self.interval = max(0.05, min(settings.heartbeat_ttl / 3, settings.visibility_timeout / 3))
        self.key = keys.worker_heartbeat(worker_id)
        self.hostname = socket.gethostname()
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orbiter-heartbeat", daemon=True)
        self._next_prune = time.monotonic() + PRUNE_EVERY

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and delete the heartbeat key."""
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self.client.delete(self.key)
        except redis.RedisError as exc:  # the key expires on its own anyway
            logger.warning("worker %s: could not delete heartbeat key: %s", self.worker_id, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except RedisUnavailableError as exc:
                logger.warning("worker %s: heartbeat skipped: %s", self.worker_id, exc)
            except Exception:
                logger.exception("worker %s: heartbeat failed", self.worker_id)

    def beat(self) -> None:
        running = self.runs.ids()
        s = self.settings
        fields: dict[str, str | int] = {
            "worker_id": self.worker_id,
            "status": "stopping" if self.stopping.is_set() else "running",
            "tasks_processed": self.runs.processed,
            "tasks_failed": self.runs.failed,
            "current_task_id": running[0] if running else "",
            "running_task_ids": ",".join(running),
            "started_at": repr(self.started_at),
            "last_heartbeat": repr(time.time()),
            "concurrency": s.concurrency,
            "hostname": self.hostname,
            "queue": s.queue_name,
            "pool": s.pool,
            "executor": s.executor,
        }

        def write() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
            pipe.expire(self.key, s.heartbeat_ttl)
            pipe.execute()

        self.retry.call(write)
        for lost in self.consumer.keep_alive():
            logger.warning(
                "worker %s: task %s was taken over by another worker", self.worker_id, lost.task_id
            )
            self.runs.stop(lost.task_id, StopReason.LOST, entry_id=lost.entry_id)
        if running:
            for task_id, status in self.store.statuses(running).items():
                if status == TaskStatus.CANCELLED:  # its pub/sub cancel may have been lost
                    self.runs.stop(task_id, StopReason.CANCELLED)
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY
            self.store.prune_index()
