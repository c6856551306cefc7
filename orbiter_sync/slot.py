"""One slot: claim a task, run it, settle it; then the next.

A slot never dies of a task: whatever the agent does becomes an ``Outcome``,
which the consumer settles in one script call; Redis outages are waited out;
anything unexpected is logged and the loop goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial

import redis

from orbiter_sync import hooks
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.consumers import QueueConsumers
from orbiter_sync.control import RunControl, RunTracker
from orbiter_sync.deadlines import Deadlines
from orbiter_sync.errors import (
    AgentConfigError,
    DurableRunFailed,
    RedisUnavailableError,
    RetryLaterError,
)
from orbiter_sync.events import EventPublisher
from orbiter_sync.executors import Executor, RunContext
from orbiter_sync.executors.base import stream_publisher
from orbiter_sync.metrics.worker import recorder, redis_errors
from orbiter_sync.outcome import Outcome, OutcomeKind, RunInterrupted, StopReason
from orbiter_sync.queue import MAX_TIMEOUT_SECONDS, Delivery

logger = logging.getLogger(__name__)

SHARED_KEY_BACKOFF = 5.0  # seconds a slot waits when a key every task shares is broken


class Slot:
    """The claim -> run -> settle loop of one unit of concurrency."""

    def __init__(
        self,
        index: int,
        *,
        worker_id: str,
        consumer: TaskConsumer | QueueConsumers,
        executor: Executor,
        publisher: EventPublisher,
        runs: RunTracker,
        deadlines: Deadlines,
        stopping: threading.Event,
        claim_timeout: float,
    ) -> None:
        self.index = index
        self.worker_id = worker_id
        self.consumer = consumer
        # the consumer that settles a delivery: its queue's, when the worker reads several
        self.owner = consumer.owner if isinstance(consumer, QueueConsumers) else _itself(consumer)
        self.executor = executor
        self.publisher = publisher
        self.runs = runs
        self.deadlines = deadlines
        self.stopping = stopping
        self.claim_timeout = claim_timeout

    def run(self) -> None:
        # A slot holds a connection of its own for begin and settle (lines.py).
        with self.consumer.line(), self.executor.slot():
            backoff = 0.1
            while not self.stopping.is_set():
                try:
                    with redis_errors("claim"):
                        delivery = self.consumer.claim(timeout=self.claim_timeout)
                    backoff = 0.1
                except Exception as exc:  # noqa: BLE001 - Redis away or refusing: wait, go on
                    logger.warning(
                        "worker %s slot %d: claiming failed (%s: %s); retrying in %.1fs",
                        self.worker_id,
                        self.index,
                        type(exc).__name__,
                        exc,
                        backoff,
                    )
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if delivery is not None:
                    self.process(delivery)
            self.consumer.release_waiting()  # fetched for slots that are stopping too

    def process(self, delivery: Delivery) -> None:
        """Run one claimed task and settle it; never raises for what the task or Redis did.

        Redis unreachable past the retry budget: the delivery is abandoned (no longer
        kept alive, it is reclaimed). Redis refusing a write of this very task (a key
        of the wrong type, say): the entry is dead-lettered, so no slot loops on it.
        """
        try:
            self._process(delivery)
        except RedisUnavailableError as exc:
            self.owner(delivery).abandon(delivery)
            logger.error(
                "worker %s: task %s not recorded, Redis unavailable: %s",
                self.worker_id,
                delivery.task_id,
                exc,
            )
        except redis.ResponseError as exc:
            self._refused(delivery, exc)
        except Exception:  # noqa: BLE001 - the slot outlives any one task
            self.owner(delivery).abandon(delivery)
            logger.exception(
                "worker %s: unexpected error on task %s", self.worker_id, delivery.task_id
            )
        except BaseException:
            self.owner(delivery).abandon(delivery)
            raise

    def _refused(self, delivery: Delivery, exc: redis.ResponseError) -> None:
        reason = f"Redis refused to record this task: {exc}"
        logger.error("worker %s: task %s: %s", self.worker_id, delivery.task_id, reason)
        try:
            problem = self.owner(delivery).shared_keys_problem()
        except Exception:  # noqa: BLE001 - cannot tell: the entry stays, it is reclaimed
            problem = "the queue's keys could not be checked"
        if problem:
            # Every task would fail the same way: keep the entry, and wait for an operator.
            self.owner(delivery).abandon(delivery)
            logger.error(
                "worker %s: not dead-lettering task %s: %s (fix or delete that key)",
                self.worker_id,
                delivery.task_id,
                problem,
            )
            self.stopping.wait(SHARED_KEY_BACKOFF)
            return
        try:
            with redis_errors("dead_letter"):
                self.owner(delivery).dead_letter(
                    delivery.entry_id, reason, {"payload": delivery.raw}, delivery.task_id
                )
        except Exception:  # noqa: BLE001 - it stays pending and is reclaimed later
            self.owner(delivery).abandon(delivery)
            logger.exception(
                "worker %s: task %s could not be dead-lettered", self.worker_id, delivery.task_id
            )

    def _process(self, delivery: Delivery) -> None:
        if self.stopping.is_set():
            self.settle(delivery, Outcome.released("worker stopping before it started"))
            return
        # Tracked before it begins: a cancel that lands while the task turns running
        # finds the run and stops it at once, instead of waiting for a heartbeat's poll.
        control = RunControl(delivery.task_id, delivery.entry_id)
        self.runs.track(control)
        try:
            with redis_errors("begin"):
                attempt = self.owner(delivery).begin(delivery)
            if not attempt:
                return
            recorder().started(delivery, attempt)
            logger.info(
                "worker %s: task %s started (delivery %d)",
                self.worker_id,
                delivery.task_id,
                delivery.deliveries,
            )
            with hooks.around_task(self.worker_id, delivery.task_id):
                started = time.monotonic()
                outcome = self.attempt(delivery, control)
                seconds = time.monotonic() - started
            self.settle(delivery, outcome, seconds)
        finally:
            self.runs.untrack(control)

    def attempt(self, delivery: Delivery, control: RunControl) -> Outcome:
        """Run the agent once; whatever happens becomes the outcome."""
        payload = delivery.payload
        context = RunContext(
            publish=stream_publisher(self.publisher, payload.task_id, self.worker_id),
            control=control,
            deadline=time.monotonic() + min(payload.timeout_seconds, MAX_TIMEOUT_SECONDS),
        )
        stop_at_deadline = partial(control.stop, StopReason.TIMEOUT)
        timeout = self.deadlines.call_at(context.deadline, stop_at_deadline)
        try:
            control.check()  # stopped before it started
            result = self.executor.execute(payload, context)
            control.check()  # a plain function that ran past its timeout, say
        except RunInterrupted as stop:
            return Outcome.stopped(
                stop.reason, payload.timeout_seconds, retry_timeouts=payload.retry_timeouts
            )
        except (AgentConfigError, DurableRunFailed) as exc:  # never run again by us
            return Outcome.failed(exc, retryable=False)
        except RetryLaterError as exc:
            return Outcome.failed(exc, retry_after=exc.retry_after)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any agent error is a failed attempt
            return Outcome.failed(exc, retryable=True)
        finally:
            timeout.cancel()
        try:
            return Outcome.completed(result)
        except Exception as exc:  # noqa: BLE001 - a result JSON cannot hold: no use re-running
            return Outcome.failed(exc, retryable=False)

    def settle(self, delivery: Delivery, outcome: Outcome, seconds: float = 0.0) -> None:
        """Record the outcome of an attempt that ran ``seconds``, and count it."""
        with redis_errors("settle"):
            settled = self.owner(delivery).settle(delivery, outcome)
        task_id = delivery.task_id
        if settled.written:
            recorder().settled(delivery, settled.status, seconds)
        if outcome.kind.is_failure:
            self.runs.count(failed=1)
        elif outcome.kind is OutcomeKind.COMPLETED and settled.status == "completed":
            self.runs.count(processed=1)
        if not settled.written:
            logger.warning(
                "worker %s: task %s %s, but its entry is no longer ours: nothing recorded",
                self.worker_id,
                task_id,
                outcome.kind,
            )
        elif outcome.kind.is_failure:
            log = logger.warning if settled.status == "retrying" else logger.error
            log(
                "worker %s: task %s %s (%s): %s%s",
                self.worker_id,
                task_id,
                outcome.kind,
                settled.status,
                f"{outcome.error_type}: {outcome.error}",
                f"\n{outcome.traceback}".rstrip() if outcome.traceback else "",
            )
        else:
            logger.info(
                "worker %s: task %s %s (%s)", self.worker_id, task_id, outcome.kind, settled.status
            )


def _itself(consumer: TaskConsumer) -> Callable[[Delivery], TaskConsumer]:
    return lambda _delivery: consumer
