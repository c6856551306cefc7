"""The worker: wires slots, heartbeat and cancel listener around one queue's consumer.

``Worker.start()`` blocks until the worker has stopped; ``Worker.stop()`` is safe
from any thread (the CLI calls it from its signal handlers; the library installs
none). Stopping goes in this order, so heartbeats and keep-alives keep flowing
while tasks finish:

1. stop claiming;
2. wait up to ``shutdown_timeout`` for running tasks to finish;
3. stop what is left and release it back to the queue (not a failed attempt),
   from the main thread for runs that cannot be interrupted;
4. stop the cancel listener and the heartbeat (deleting its key), close connections.

All of it takes at most ``shutdown_timeout`` plus about half a second; a second
``stop(timeout=0)`` cuts the wait short.

Nothing else in the package imports this module: the parts below it get the
collaborators they use passed in.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Unpack

import redis

from orbiter_sync import native
from orbiter_sync.agents import ImportPolicy
from orbiter_sync.connection import DEFAULT_RETRY, connect
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.consumers import QueueConsumers
from orbiter_sync.control import CancelListener, RunTracker
from orbiter_sync.deadlines import Deadlines
from orbiter_sync.errors import ConfigurationError
from orbiter_sync.events import EventPublisher
from orbiter_sync.executors import make_executor
from orbiter_sync.heartbeat import STOP_BUDGET, Heartbeat, default_worker_id, release_stuck
from orbiter_sync.maintenance import Maintenance, RetryPromoter
from orbiter_sync.metrics.worker import MetricsServer, WorkerState, serve
from orbiter_sync.outcome import StopReason
from orbiter_sync.pools import Handle, Pool, make_pool
from orbiter_sync.settings import WorkerOptions, WorkerSettings
from orbiter_sync.shard_claim import shard_consumers
from orbiter_sync.shards import layout_of
from orbiter_sync.slot import Slot
from orbiter_sync.temporal import TemporalSettings
from orbiter_sync.urls import mask_url, resolve_redis_url

logger = logging.getLogger(__name__)

SLOT_RESTART_PAUSE = 1.0  # seconds a dead slot stays down; doubled while it keeps dying
SLOT_RESTART_MAX = 30.0
SLOT_STABLE = 30.0  # a restarted slot alive this long no longer counts its deaths
STOP_SWITCH_INTERVAL = 0.0005  # seconds: how often the GIL changes hands while stopping
STOP_GRACE = 0.3  # seconds stopped runs get to hand their task back themselves
MAIN_THREAD_TICK = 0.05

__all__ = ["Worker", "WorkerSettings", "default_worker_id"]


@dataclass
class _SlotState:
    """What the supervisor keeps per slot index: when it went down, its deaths in a
    row, when it was last started."""

    down_since: dict[int, float] = field(default_factory=dict)
    deaths: dict[int, int] = field(default_factory=dict)
    started: dict[int, float] = field(default_factory=dict)

    def pause(self, index: int) -> float:
        doublings = max(0, self.deaths.get(index, 1) - 1)
        return float(min(SLOT_RESTART_MAX, SLOT_RESTART_PAUSE * 2.0**doublings))


class Worker:
    """A worker process's engine: ``concurrency`` slots claiming from one queue.

    Settings come either whole (``settings=WorkerSettings(...)``) or as keywords
    (``concurrency=4, queue_name=...``), never both.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        worker_id: str | None = None,
        settings: WorkerSettings | None = None,
        **options: Unpack[WorkerOptions],
    ) -> None:
        if settings is not None and options:
            raise ConfigurationError(
                f"pass settings= or keyword settings, not both (got settings= and "
                f"{', '.join(sorted(options))})"
            )
        unknown = set(options) - set(WorkerSettings.names())
        if unknown:
            raise ConfigurationError(f"unknown worker setting(s): {', '.join(sorted(unknown))}")
        self.settings = settings if settings is not None else WorkerSettings(**options)
        self.redis_url = resolve_redis_url(redis_url)
        self.worker_id = worker_id or default_worker_id()
        s = self.settings
        self.policy = ImportPolicy.from_settings(s.allow_imports)
        self.policy.preload()  # a module that cannot be imported stops the worker here
        durable = s.executor == "temporal"  # what a Temporal worker in this process needs
        self.executor = make_executor(s.executor, policy=self.policy, **(dict(
            redis_url=self.redis_url, worker_id=self.worker_id, slots=s.concurrency,
            max_retries=s.max_retries, event_ttl=s.events_ttl,
            temporal=TemporalSettings.from_env(task_queue=s.temporal_task_queue),
            run_activities=s.temporal_worker) if durable else {}))  # fmt: skip
        self.client = connect(self.redis_url)
        self.layout = layout_of(self.client, s.queue_shards, record=True)
        self.stopping = threading.Event()
        queue = s.queue_settings(layout=self.layout)
        # several queues: each fetches only for the slots looking at it now, no prefetch,
        # so a lower queue never hoards tasks while the slots run a higher one's; a queue's
        # shards (on a cluster) share one inbox
        several = bool(s.also_queues)
        self.consumers = [
            consumer
            for name in s.queue_names
            for consumer in shard_consumers(self.redis_url, self.worker_id,
                                            s.queue_settings(name, self.layout),
                                            client=self.client, retry=DEFAULT_RETRY,
                                            prefetch=0 if several else s.prefetch,
                                            slots=None if several else s.concurrency)
        ]  # fmt: skip
        self.consumer: TaskConsumer | QueueConsumers = (
            QueueConsumers(self.consumers, self.client, self.stopping)
            if len(self.consumers) > 1
            else self.consumers[0]
        )
        self.publisher = EventPublisher(
            self.redis_url, stream_ttl_seconds=queue.event_ttl, client=self.client
        )
        self.runs = RunTracker(self.worker_id)
        self.deadlines = Deadlines()
        self._stop_requested = threading.Event()
        self._stop_deadline: float | None = None  # when a requested stop must be over
        self._stopped = threading.Event()

    def __repr__(self) -> str:
        url, queue = mask_url(self.redis_url), ",".join(self.settings.queue_names)
        return f"Worker({self.worker_id!r}, {url!r}, queue={queue!r})"

    def start(self, *, exit_on_overrun: bool = False) -> None:
        """Run until :meth:`stop` is called; returns once everything is shut down.

        ``exit_on_overrun`` (the CLI sets it) lets the heartbeat's watchdog end the
        process when a stop overruns its deadline: under gevent a run that never
        yields holds up the main greenlet that would finish the stop. Without it,
        the watchdog only releases the runs that did not stop.

        With ``metrics_port`` set, ``/metrics`` is served from before the first claim
        until everything is shut down; a port that cannot be bound is a
        ``ConfigurationError`` raised before anything starts.
        """
        metrics = self._serve_metrics()
        try:
            self._run(exit_on_overrun)
        finally:
            if metrics is not None:
                metrics.close()

    def _serve_metrics(self) -> MetricsServer | None:
        port = self.settings.metrics_port
        if port is None:
            return None
        state = WorkerState(
            slots=self.settings.concurrency,
            busy=lambda: len(self.runs.ids()),
            in_progress=lambda: len(self.consumer.in_flight()),
            queues=[consumer.settings for consumer in self.consumers],
            redis_url=self.redis_url,
        )
        server = serve(port, state)
        logger.info("worker %s: metrics on http://0.0.0.0:%d/metrics", self.worker_id, port)
        return server

    def _run(self, exit_on_overrun: bool) -> None:
        s = self.settings
        logger.info(
            "worker %s starting: redis=%s queue=%s concurrency=%d pool=%s executor=%s",
            self.worker_id,
            mask_url(self.redis_url),
            ",".join(s.queue_names),
            s.concurrency,
            s.pool,
            s.executor,
        )
        native.share_logging()
        for consumer in self.consumers:
            consumer.ensure_group()
        self.executor.start()  # a Temporal server that cannot be reached stops us here
        heartbeat = Heartbeat(
            connect=lambda budget: connect(self.redis_url, budget=budget),
            worker_id=self.worker_id,
            settings=s,
            runs=self.runs,
            consumer=self.consumer,
            stopping=self.stopping,
            stop_deadline=lambda: self._stop_deadline,
            exit_on_overrun=exit_on_overrun,
            layout=self.layout,
        )
        listener = CancelListener(
            self.client, lambda task_id: self.runs.stop(task_id, StopReason.CANCELLED), self.layout
        )
        pool = make_pool(s.pool)
        switch_interval = sys.getswitchinterval()  # a stop lowers it; restored at the end
        try:
            heartbeat.start()
            listener.start()
            slots = {index: self._spawn(pool, index) for index in range(s.concurrency)}
            upkeep = {c.settings.stream: self._maintain(pool, c) for c in self.consumers}
            state = _SlotState()
            # Short waits: a signal that lands on another thread only reaches its Python
            # handler when the main thread next wakes, and two signals that arrive
            # before then count as one.
            while not self._stop_requested.wait(MAIN_THREAD_TICK):
                self._supervise(pool, slots, state)
                if not heartbeat.alive():
                    heartbeat.restart()
                for consumer in self.consumers:
                    if not upkeep[consumer.settings.stream].alive():
                        logger.error("worker %s: queue %s's maintenance loop died; restarting it",
                                     self.worker_id, consumer.settings.label)  # fmt: skip
                        upkeep[consumer.settings.stream] = self._maintain(pool, consumer)
            self._shut_down(pool)
        finally:
            # The heartbeat goes last: until it stops, its watchdog bounds the rest.
            self.stopping.set()
            listener.stop()
            with self._stop_client() as client:
                self.consumer.leave(client=client)
            self.executor.close()
            self.deadlines.close()
            self.client.close()
            heartbeat.stop()
            sys.setswitchinterval(switch_interval)
            self._stopped.set()
            logger.info("worker %s stopped", self.worker_id)

    @contextmanager
    def _stop_client(self) -> Iterator[redis.Redis]:
        """A client whose calls give up fast: a stop has a deadline, Redis may hang."""
        client = connect(self.redis_url, budget=STOP_BUDGET)
        try:
            yield client
        finally:
            client.close()

    def _maintain(self, pool: Pool, consumer: TaskConsumer) -> Handle:
        """One queue's maintenance loop: its due retries back on it, dead workers' entries."""
        promoter = RetryPromoter(self.redis_url, consumer.settings, client=self.client)
        # several queues: the slots' room is known to the QueueConsumers they claim through
        room = self.consumer.room if isinstance(self.consumer, QueueConsumers) else None
        maintenance = Maintenance(consumer, promoter, self.stopping, room)
        return pool.spawn(maintenance.run, name=f"orbiter-maintenance-{consumer.settings.label}")

    def _spawn(self, pool: Pool, index: int) -> Handle:
        slot = Slot(
            index,
            worker_id=self.worker_id,
            consumer=self.consumer,
            executor=self.executor,
            publisher=self.publisher,
            runs=self.runs,
            deadlines=self.deadlines,
            stopping=self.stopping,
            claim_timeout=self.settings.claim_timeout,
        )
        return pool.spawn(slot.run, name=f"orbiter-slot-{index}")

    def _supervise(self, pool: Pool, slots: dict[int, Handle], state: _SlotState) -> None:
        """Restart slots that died, after a pause that doubles while one keeps dying (so
        a crash loop does not spin); the heartbeat says degraded while any is down."""
        now = time.monotonic()
        for index, handle in slots.items():
            if handle.alive():
                if now - state.started.get(index, now) >= SLOT_STABLE:
                    state.deaths.pop(index, None)
                continue
            if index not in state.down_since:
                state.down_since[index] = now
                state.deaths[index] = state.deaths.get(index, 0) + 1
                logger.error(
                    "worker %s: slot %d died (%d in a row); restarting it in %gs",
                    self.worker_id,
                    index,
                    state.deaths[index],
                    state.pause(index),
                )
            elif now - state.down_since[index] >= state.pause(index):
                del state.down_since[index]
                slots[index] = self._spawn(pool, index)
                state.started[index] = now
                self.runs.slot_restarted()
        self.runs.slots_down = len(state.down_since)

    def stop(self, timeout: float | None = None) -> None:
        """Ask the worker to stop; running tasks get ``timeout`` seconds (default
        ``shutdown_timeout``) to finish before they are released back to the queue.

        Safe from any thread and from signal handlers; a second call with a smaller
        timeout shortens the wait (a second Ctrl+C stops at once with ``timeout=0``).
        """
        grace = timeout if timeout is not None else self.settings.shutdown_timeout
        deadline = time.monotonic() + grace + STOP_GRACE
        if self._stop_deadline is None or deadline < self._stop_deadline:
            self._stop_deadline = deadline
        # Runs that hog the CPU hold the GIL for 5 ms at a time; the stop's own calls
        # would wait that long for it at every turn. Hand it over more often.
        sys.setswitchinterval(min(sys.getswitchinterval(), STOP_SWITCH_INTERVAL))
        self.stopping.set()
        self._stop_requested.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def _shut_down(self, pool: Pool) -> None:
        logger.info("worker %s stopping: %d running task(s)", self.worker_id, len(self.runs.ids()))
        # Wait by the clock, not by counting ticks: under load a tick takes longer.
        # A second signal moves the deadline closer while we wait.
        while not pool.join(MAIN_THREAD_TICK):
            deadline = self._stop_deadline
            if deadline is None or time.monotonic() >= deadline - STOP_GRACE:
                break
        self.runs.stop_all(StopReason.SHUTDOWN)
        joined = pool.join(STOP_GRACE)
        if joined and not self.consumer.in_flight():
            return
        # What is still held goes back to the queue from here: tasks claimed ahead that
        # no slot started, and runs that did not stop (plain sync functions cannot be
        # interrupted), whose slots are abandoned: they are daemons, gone when the
        # process exits. If one ends first after all, its own settle is fenced: too late
        # to write anything.
        with self._stop_client() as client:
            release_stuck(self.consumer, client, lambda: STOP_BUDGET, "the worker")
