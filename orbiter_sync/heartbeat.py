"""The worker's heartbeat: a real OS thread with a Redis client of its own.

Every ``heartbeat_ttl / 3`` seconds (sooner if the visibility timeout asks for it)
it writes the guide's fields to ``orbiter:workers:{id}`` with TTL ``heartbeat_ttl``,
keeps the entries the worker holds fresh so no other worker reclaims them, and
re-reads the status of running tasks: a cancel whose pub/sub message was lost
still lands. Its status is ``degraded`` while the worker is short of slots.

It runs on an OS thread even under gevent (native.py), so a greenlet that never
yields cannot silence it: a live worker's running task is never taken over. For
the same reason it is the stop watchdog: when a stop's time is up and tasks are
still in flight (their slots stuck in code that cannot be interrupted, which
under gevent also holds up the main greenlet that would release them), it
releases them over its own connection and ends the process.

In the same transaction it registers the worker in orbiter-sync's own registry
(``orbiter:registry:workers``, score = last beat, and the same fields in
``orbiter:registry:worker:{id}``, both kept a day), so ``worker list`` can show a
worker whose heartbeat key expired as dead. A clean stop deletes the heartbeat key
and records status ``stopped`` there. The registry is pruned at the first beat and
hourly after (``health.prune_registry``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import redis
from redis.client import Pipeline

from orbiter_sync import keys, native
from orbiter_sync.connection import RetryPolicy
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.control import RunTracker
from orbiter_sync.errors import RedisUnavailableError
from orbiter_sync.health import REGISTRY_RETENTION, prune_registry
from orbiter_sync.models import TaskStatus
from orbiter_sync.outcome import Outcome, StopReason
from orbiter_sync.settings import WorkerSettings
from orbiter_sync.store import TaskStore

logger = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0
WATCHDOG_GRACE = 0.3  # seconds past a stop's deadline (timeout + STOP_GRACE) before it steps in
TICK = 0.05


class Heartbeat:
    """Beats for one worker until stopped, on its own OS thread and Redis client.

    ``connect()`` makes that client (called on the heartbeat's thread);
    ``stop_deadline()`` is when a requested stop must be over (monotonic), or None.
    """

    def __init__(
        self,
        *,
        connect: Callable[[], redis.Redis],
        retry: RetryPolicy,
        worker_id: str,
        settings: WorkerSettings,
        runs: RunTracker,
        consumer: TaskConsumer,
        stopping: threading.Event,
        stop_deadline: Callable[[], float | None],
    ) -> None:
        self.connect = connect
        self.retry = retry
        self.worker_id = worker_id
        self.settings = settings
        self.runs = runs
        self.consumer = consumer
        self.stopping = stopping
        self.stop_deadline = stop_deadline
        self.interval = max(0.05, min(settings.heartbeat_ttl / 3, settings.visibility_timeout / 3))
        self.key = keys.worker_heartbeat(worker_id)
        self.hostname = socket.gethostname()
        self.started_at = time.time()
        self.in_hub = native.hub_caller()  # runs are stopped where the slots run
        self._stop = native.Flag()
        self._first_beat = native.Flag()
        self._done = native.Flag()
        self._first_error: BaseException | None = None
        self._next_prune = time.monotonic() + PRUNE_EVERY
        self._next_registry_prune = time.monotonic()  # due at the first beat

    def start(self) -> None:
        """Start the thread; returns after its first beat (raising what that beat raised)."""
        native.start_thread(self._run, name="orbiter-heartbeat")
        self._first_beat.wait(self.retry.deadline + 5)
        if self._first_error is not None:
            raise self._first_error

    def stop(self) -> None:
        """Stop beating: the thread deletes the heartbeat key and records ``stopped``."""
        self._stop.set()
        self._done.wait(5)

    def _run(self) -> None:
        client = self.connect()
        store = TaskStore(client=client, retry=self.retry)
        try:
            try:
                self.beat(client, store)
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                self._first_error = exc
                return
            finally:
                self._first_beat.set()
            next_beat = time.monotonic() + self.interval
            while not self._stop.wait(TICK):
                self._watch(client)
                if time.monotonic() < next_beat:
                    continue
                next_beat = time.monotonic() + self.interval
                try:
                    self.beat(client, store)
                except RedisUnavailableError as exc:
                    logger.warning("worker %s: heartbeat skipped: %s", self.worker_id, exc)
                except Exception:
                    logger.exception("worker %s: heartbeat failed", self.worker_id)
            self._record_stop(client)
        finally:
            client.close()
            self._done.set()

    def _watch(self, client: redis.Redis) -> None:
        """Release what a stop could not, and end the process, once the stop's time is up."""
        deadline = self.stop_deadline()
        if deadline is None or time.monotonic() < deadline + WATCHDOG_GRACE:
            return
        stuck = self.consumer.in_flight()
        if not stuck:
            return  # the worker is finishing its own stop
        for delivery in stuck:
            logger.warning(
                "worker %s: task %s did not stop in time; the watchdog releases it",
                self.worker_id,
                delivery.task_id,
            )
            try:
                self.consumer.settle(
                    delivery, Outcome.released("worker stopped while it ran"), client=client
                )
            except Exception as exc:  # noqa: BLE001 - it is reclaimed once we are gone
                logger.error("worker %s: task %s not released: %s", self.worker_id,
                             delivery.task_id, exc)  # fmt: skip
        self._record_stop(client)
        logger.warning("worker %s: stopped by its watchdog", self.worker_id)
        logging.shutdown()
        os._exit(0)

    def _record_stop(self, client: redis.Redis) -> None:
        now = time.time()
        try:
            pipe = client.pipeline(transaction=True)
            pipe.delete(self.key)
            self._register(pipe, self._fields("stopped", now, self.runs.ids()), now)
            pipe.execute()
        except redis.RedisError as exc:  # the key expires on its own; the worker shows dead
            logger.warning("worker %s: could not record its stop: %s", self.worker_id, exc)

    def _status(self) -> str:
        if self.stopping.is_set():
            return "stopping"
        return "degraded" if self.runs.slots_down else "running"

    def _fields(self, status: str, now: float, running: list[str]) -> dict[str, str | int]:
        s = self.settings
        return {
            "worker_id": self.worker_id,
            "status": status,
            "tasks_processed": self.runs.processed,
            "tasks_failed": self.runs.failed,
            "current_task_id": running[0] if running else "",
            "running_task_ids": ",".join(running),
            "started_at": repr(self.started_at),
            "last_heartbeat": repr(now),
            "concurrency": s.concurrency,
            "slots_down": self.runs.slots_down,
            "slot_restarts": self.runs.slot_restarts,
            "hostname": self.hostname,
            "queue": s.queue_name,
            "pool": s.pool,
            "executor": s.executor,
        }

    def _register(self, pipe: Pipeline, fields: dict[str, str | int], now: float) -> None:
        """Queue the registry writes: the last fields, and the beat time in the sorted set."""
        record = keys.worker_record(self.worker_id)
        pipe.hset(record, mapping=fields)  # type: ignore[arg-type]
        pipe.expire(record, REGISTRY_RETENTION)
        pipe.zadd(keys.WORKER_REGISTRY, {self.worker_id: now})
        pipe.expire(keys.WORKER_REGISTRY, REGISTRY_RETENTION)

    def beat(self, client: redis.Redis, store: TaskStore) -> None:
        running = self.runs.ids()
        now = time.time()
        fields = self._fields(self._status(), now, running)
        ttl = self.settings.heartbeat_ttl

        def write() -> None:
            pipe = client.pipeline(transaction=True)
            pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
            pipe.expire(self.key, ttl)
            self._register(pipe, fields, now)
            pipe.execute()

        self.retry.call(write)
        for lost in self.consumer.keep_alive(client=client):
            logger.warning(
                "worker %s: task %s was taken over by another worker", self.worker_id, lost.task_id
            )
            self._stop_run(lost.task_id, StopReason.LOST, lost.entry_id)
        if running:
            for task_id, status in store.statuses(running).items():
                if status == TaskStatus.CANCELLED:  # its pub/sub cancel may have been lost
                    self._stop_run(task_id, StopReason.CANCELLED, None)
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY
            store.prune_index()
        if time.monotonic() >= self._next_registry_prune:
            self._next_registry_prune = time.monotonic() + PRUNE_EVERY
            try:
                self.retry.call(prune_registry, client, now=now)
            except (RedisUnavailableError, redis.RedisError) as exc:  # the next reader prunes
                logger.warning("worker %s: registry not pruned: %s", self.worker_id, exc)

    def _stop_run(self, task_id: str, reason: StopReason, entry_id: str | None) -> None:
        self.in_hub(lambda: self.runs.stop(task_id, reason, entry_id=entry_id))
