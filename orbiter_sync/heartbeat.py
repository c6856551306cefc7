"""The worker's heartbeat thread.

Every ``heartbeat_ttl / 3`` seconds (sooner if the visibility timeout asks for it)
it writes the guide's fields to ``orbiter:workers:{id}`` with TTL ``heartbeat_ttl``,
keeps the pending entries of running tasks fresh so no other worker reclaims them,
and re-reads their status: a cancel whose pub/sub message was lost still lands.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

from orbiter_sync import keys
from orbiter_sync.control import CANCELLED, LOST
from orbiter_sync.errors import RedisUnavailableError
from orbiter_sync.models import TaskStatus

if TYPE_CHECKING:
    from orbiter_sync.worker import Worker

logger = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0


class Heartbeat:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        settings = worker.settings
        self.interval = max(0.05, min(settings.heartbeat_ttl / 3, settings.visibility_timeout / 3))
        self.key = keys.worker_heartbeat(worker.worker_id)
        self.hostname = socket.gethostname()
        self.started_at = time.time()
        self.status = "running"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orbiter-heartbeat", daemon=True)
        self._next_prune = time.monotonic() + PRUNE_EVERY

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and delete the heartbeat key."""
        self._stopping.set()
        self._thread.join(timeout=10)
        try:
            self.worker.client.delete(self.key)
        except Exception as exc:  # noqa: BLE001 - the key expires on its own anyway
            logger.warning(
                "worker %s: could not delete heartbeat key: %s", self.worker.worker_id, exc
            )

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.beat()
            except RedisUnavailableError as exc:
                logger.warning("worker %s: heartbeat skipped: %s", self.worker.worker_id, exc)
            except Exception:
                logger.exception("worker %s: heartbeat failed", self.worker.worker_id)

    def beat(self) -> None:
        worker = self.worker
        running = worker.running_ids()
        fields: dict[str, str | int] = {
            "worker_id": worker.worker_id,
            "status": self.status,
            "tasks_processed": worker.counters["processed"],
            "tasks_failed": worker.counters["failed"],
            "current_task_id": running[0] if running else "",
            "running_task_ids": ",".join(running),
            "started_at": repr(self.started_at),
            "last_heartbeat": repr(time.time()),
            "concurrency": worker.settings.concurrency,
            "hostname": self.hostname,
            "queue": worker.settings.queue_name,
            "pool": worker.settings.pool,
            "executor": worker.settings.executor,
        }
        ttl = worker.settings.heartbeat_ttl

        def write() -> None:
            pipe = worker.client.pipeline(transaction=True)
            pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
            pipe.expire(self.key, ttl)
            pipe.execute()

        worker.retry.call(write)
        if running:
            self._keep_running_tasks(running)
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY
            worker.store.prune_index()

    def _keep_running_tasks(self, running: list[str]) -> None:
        worker = self.worker
        for task_id in worker.broker.touch(worker.worker_id, running):
            worker.stop_run(task_id, LOST)
        for task_id, status in worker.store.statuses(running).items():
            if status == TaskStatus.CANCELLED:  # its pub/sub cancel may have been lost
                worker.stop_run(task_id, CANCELLED)
