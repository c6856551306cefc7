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
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.client import Pipeline

from orbiter_sync import native
from orbiter_sync.cluster_client import REDIS_ERRORS, REDIS_FAILURES
from orbiter_sync.connection import Budget
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.consumers import QueueConsumers
from orbiter_sync.control import RunTracker
from orbiter_sync.errors import RedisUnavailableError
from orbiter_sync.health import REGISTRY_RETENTION, prune_registry
from orbiter_sync.layout import STANDALONE, KeyLayout
from orbiter_sync.models import TaskStatus
from orbiter_sync.outcome import Outcome, StopReason
from orbiter_sync.settings import WorkerSettings
from orbiter_sync.store import TaskStore

logger = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0
STOP_BUDGET = Budget(0.6)  # each Redis call of a stop's cleanup gives up within it
# The watchdog steps in WATCHDOG_GRACE after a stop's deadline (its timeout plus the
# worker's STOP_GRACE), and the process is gone EXIT_WITHIN after that deadline.
WATCHDOG_GRACE = 0.2
EXIT_WITHIN = 0.6
EXIT_MARGIN = 0.05  # left for logging and os._exit
TICK = 0.05


class Heartbeat:
    """Beats for one worker until stopped, on its own OS thread and Redis client.

    ``connect()`` makes that client (called on the heartbeat's thread);
    ``stop_deadline()`` is when a requested stop must be over (monotonic), or None.
    """

    def __init__(
        self,
        *,
        connect: Callable[[Budget], redis.Redis],
        worker_id: str,
        settings: WorkerSettings,
        runs: RunTracker,
        consumer: TaskConsumer | QueueConsumers,
        stopping: threading.Event,
        stop_deadline: Callable[[], float | None],
        exit_on_overrun: bool = False,
        layout: KeyLayout = STANDALONE,
    ) -> None:
        self.connect = connect
        self.layout = layout
        self.exit_on_overrun = exit_on_overrun
        # A call gives up within a third of the TTL, so a hung Redis cannot hold one
        # beat past the next; at a stop, calls give up fast (the stop has a deadline).
        self.budget = Budget(max(1.0, settings.heartbeat_ttl / 3))
        self.retry = self.budget.retry
        self.worker_id = worker_id
        self.settings = settings
        self.runs = runs
        self.consumer = consumer
        self.stopping = stopping
        self.stop_deadline = stop_deadline
        self.interval = max(0.05, min(settings.heartbeat_ttl / 3, settings.visibility_timeout / 3))
        self.key = layout.worker_heartbeat(worker_id)
        self.hostname = socket.gethostname()
        self.started_at = time.time()
        self.in_hub = native.hub_caller()  # runs are stopped where the slots run
        self._stop = native.Flag()
        self._first_beat = native.Flag()
        self._done = native.Flag()
        self._first_error: BaseException | None = None
        self._watched = False  # the watchdog acts once
        self._next_prune = time.monotonic() + PRUNE_EVERY
        self._next_registry_prune = time.monotonic()  # due at the first beat

    def start(self) -> None:
        """Start the thread; returns after its first beat (raising what that beat raised)."""
        self._first_beat, self._done, self._first_error = native.Flag(), native.Flag(), None
        native.start_thread(self._run, name="orbiter-heartbeat")
        self._first_beat.wait(self.retry.deadline + 5)
        if self._first_error is not None:
            raise self._first_error

    def alive(self) -> bool:
        """False once the thread has ended (stopped, or died: the worker restarts it)."""
        return not self._done.is_set()

    def restart(self) -> None:
        """Start the thread again after it died (its first beat's failure is only logged)."""
        logger.error("worker %s: the heartbeat thread died; restarting it", self.worker_id)
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - it beats on from its thread
            logger.warning("worker %s: heartbeat restarted, first beat failed: %s",
                           self.worker_id, exc)  # fmt: skip

    def stop(self) -> None:
        """Stop beating: the thread deletes the heartbeat key and records ``stopped``."""
        self._stop.set()
        self._done.wait(STOP_BUDGET.seconds * 2)

    def _run(self) -> None:
        client: redis.Redis | None = None
        try:
            client = self.connect(self.budget)
            store = TaskStore(client=client, retry=self.retry)
            try:
                self.beat(client, store)
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                self._first_error = exc
                return
            finally:
                self._first_beat.set()
            next_beat = time.monotonic() + self.interval
            while not self._stop.wait(TICK):
                self._watch()
                if time.monotonic() < next_beat:
                    continue
                next_beat = time.monotonic() + self.interval
                try:
                    self.beat(client, store)
                except RedisUnavailableError as exc:
                    logger.warning("worker %s: heartbeat skipped: %s", self.worker_id, exc)
                except Exception:
                    logger.exception("worker %s: heartbeat failed", self.worker_id)
            self._record_stop()
        except BaseException:  # noqa: BLE001 - logged; the worker restarts the thread
            logger.exception("worker %s: heartbeat thread failed", self.worker_id)
        finally:
            self._first_beat.set()
            if client is not None:
                client.close()
            self._done.set()

    def _watch(self) -> None:
        """End the process once a stop's time is up and the worker has not finished it:
        release what is still in flight first, over a connection of its own, giving
        up on Redis in time to be gone by the deadline plus ``EXIT_WITHIN``."""
        deadline = self.stop_deadline()
        if deadline is None or time.monotonic() < deadline + WATCHDOG_GRACE or self._watched:
            return
        self._watched = True
        exit_by = deadline + EXIT_WITHIN

        def time_left() -> Budget | None:
            left = exit_by - time.monotonic() - EXIT_MARGIN
            return Budget(min(STOP_BUDGET.seconds, left)) if left > 0.05 else None

        if self.consumer.in_flight():
            first = time_left() or Budget(0.05)
            client = self.connect(first)
            try:
                release_stuck(self.consumer, client, time_left, "the watchdog")
            finally:
                client.close()
        if not self.exit_on_overrun:
            return
        left = exit_by - time.monotonic() - EXIT_MARGIN
        if left > 0.05:
            self._record_stop(Budget(min(STOP_BUDGET.seconds, left)))
        logger.warning("worker %s: stop overran its deadline; ended by the watchdog",
                       self.worker_id)  # fmt: skip
        logging.shutdown()
        os._exit(0)

    def _record_stop(self, budget: Budget = STOP_BUDGET) -> None:
        """Delete the heartbeat key and record ``stopped``, giving up fast (best effort)."""
        now = time.time()
        client = self.connect(budget)
        try:
            pipe = client.pipeline(transaction=True)
            pipe.delete(self.key)
            self._register(pipe, self._fields("stopped", now, self.runs.ids()), now)
            pipe.execute(raise_on_error=False)
        except REDIS_ERRORS as exc:  # the key expires on its own; the worker shows dead
            logger.warning("worker %s: could not record its stop: %s", self.worker_id, exc)
        finally:
            client.close()

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
            "queues": ",".join(s.queue_names),
            "pool": s.pool,
            "executor": s.executor,
        }

    def _register(self, pipe: Pipeline, fields: dict[str, str | int], now: float) -> None:
        """Queue the registry writes: the last fields, and the beat time in the sorted set."""
        record, registry = self.layout.worker_record(self.worker_id), self.layout.worker_registry
        pipe.hset(record, mapping=fields)  # type: ignore[arg-type]
        pipe.expire(record, REGISTRY_RETENTION)
        pipe.zadd(registry, {self.worker_id: now})
        pipe.expire(registry, REGISTRY_RETENTION)

    def beat(self, client: redis.Redis, store: TaskStore) -> None:
        running = self.runs.ids()
        now = time.time()
        fields = self._fields(self._status(), now, running)
        ttl = self.settings.heartbeat_ttl

        def write() -> list[Any]:
            pipe = client.pipeline(transaction=True)
            pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
            pipe.expire(self.key, ttl)
            self._register(pipe, fields, now)
            return pipe.execute(raise_on_error=False)

        replies = self.retry.call(write)
        if isinstance(replies[0], Exception):  # the wire heartbeat itself was refused
            raise replies[0]
        if any(isinstance(reply, Exception) for reply in replies[2:]):
            # the registry is ours and only for `worker list`: a junk key there must not
            # stop the beat, the keep-alives or the cancel re-poll
            logger.warning("worker %s: worker registry not written: %s", self.worker_id,
                           next(r for r in replies[2:] if isinstance(r, Exception)))  # fmt: skip
        for lost in self.consumer.keep_alive(client=client, retry=self.retry):
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
            except REDIS_FAILURES as exc:  # the next reader prunes
                logger.warning("worker %s: registry not pruned: %s", self.worker_id, exc)

    def _stop_run(self, task_id: str, reason: StopReason, entry_id: str | None) -> None:
        def stop() -> None:
            try:
                self.runs.stop(task_id, reason, entry_id=entry_id)
            except Exception:  # noqa: BLE001 - a hub callback must never raise
                logger.exception("worker %s: could not stop task %s", self.worker_id, task_id)

        self.in_hub(stop)


def default_worker_id() -> str:
    """``{hostname}-{pid}-{8 hex}``, unique per process."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def release_stuck(
    consumer: TaskConsumer | QueueConsumers,
    client: redis.Redis,
    budget: Callable[[], Budget | None],
    who: str,
) -> None:
    """Put every delivery still held back on the queue, at a stop, over ``client``.

    ``budget()`` gives each call its time, or None when no time is left. The
    first failure ends it (Redis is away: the stop's deadline matters more); what
    is not released is reclaimed once this worker is gone.
    """
    for delivery in consumer.in_flight():
        call_budget = budget()
        if call_budget is None:
            return
        started = consumer.started(delivery)
        if started:
            logger.warning("worker %s: task %s did not stop in time; %s releases it",
                           consumer.name, delivery.task_id, who)  # fmt: skip
        try:
            consumer.settle(
                delivery,
                Outcome.released(
                    "worker stopped while it ran" if started else "worker stopped before it started"
                ),
                client=client,
                retry=call_budget.retry,
            )
        except Exception as exc:  # noqa: BLE001 - reclaimed once we are gone
            logger.error(
                "worker %s: task %s not released (%s); it will be reclaimed",
                consumer.name,
                delivery.task_id,
                exc,
            )
            return
