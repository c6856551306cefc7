"""One slot: claim a task, run it, record how it ended; then the next.

Each slot owns one asyncio loop, created when the slot starts and reused for every
async run on it. A slot never dies of a task: agent errors become failed attempts,
Redis outages are waited out, anything unexpected is logged and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from orbiter_sync.broker import Delivery
from orbiter_sync.control import CANCELLED, LOST, SHUTDOWN, RunControl
from orbiter_sync.errors import AgentConfigError, RedisUnavailableError, RunInterrupted
from orbiter_sync.events import StatusEvent, StreamEvent
from orbiter_sync.executors import RunContext
from orbiter_sync.models import TaskStatus

if TYPE_CHECKING:
    from orbiter_sync.worker import Worker

logger = logging.getLogger(__name__)


class Slot:
    """The claim -> run -> record loop of one unit of concurrency."""

    def __init__(self, worker: Worker, index: int) -> None:
        self.worker = worker
        self.index = index

    def run(self) -> None:
        worker = self.worker
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        backoff = 0.1
        try:
            while not worker.stopping.is_set():
                try:
                    delivery = worker.broker.claim(
                        worker.worker_id, timeout=worker.settings.claim_timeout
                    )
                    backoff = 0.1
                except RedisUnavailableError as exc:
                    logger.warning("worker %s slot %d: %s", worker.worker_id, self.index, exc)
                    worker.stopping.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if delivery is None:
                    continue
                if worker.stopping.is_set():
                    worker.broker.release(
                        delivery.task_id, reason="worker stopping before it started"
                    )
                    continue
                try:
                    self.process(delivery, loop)
                except RedisUnavailableError as exc:
                    # The entry stays pending; it is reclaimed once Redis is back.
                    logger.error(
                        "worker %s: task %s not recorded, Redis unavailable: %s",
                        worker.worker_id,
                        delivery.task_id,
                        exc,
                    )
                except Exception:  # noqa: BLE001 - the slot outlives any one task
                    logger.exception(
                        "worker %s: unexpected error on task %s", worker.worker_id, delivery.task_id
                    )
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def process(self, delivery: Delivery, loop: asyncio.AbstractEventLoop) -> None:
        worker, broker, store = self.worker, self.worker.broker, self.worker.store
        task_id, payload = delivery.task_id, delivery.payload
        if not store.set_status(
            task_id, TaskStatus.RUNNING, worker_id=worker.worker_id, started_at=time.time()
        ):
            state = store.get_status(task_id)
            final = state.status if state is not None else TaskStatus.CANCELLED
            logger.info(
                "worker %s: task %s is already %s; not running it", worker.worker_id, task_id, final
            )
            broker.finish(task_id, final)
            return

        def publish(event: StreamEvent) -> None:
            worker.publisher.publish(task_id, event)

        control = RunControl(task_id)
        worker.track(control)
        logger.info(
            "worker %s: task %s started (delivery %d)",
            worker.worker_id,
            task_id,
            delivery.deliveries,
        )
        try:
            publish(StatusEvent(status="running", message=f"running on {worker.worker_id}"))
            result = worker.executor.execute(payload, RunContext(publish, control, loop))
        except RunInterrupted as stop:
            self._interrupted(task_id, stop.reason, payload.timeout_seconds)
        except AgentConfigError as exc:
            self._failed(task_id, exc, retry=False)
        except Exception as exc:  # noqa: BLE001 - any agent error is a failed attempt
            self._failed(task_id, exc, retry=True)
        else:
            ended = broker.finish(
                task_id, TaskStatus.COMPLETED, result=result, completed_at=time.time()
            )
            if ended == TaskStatus.COMPLETED:
                worker.count("processed")
            logger.info("worker %s: task %s %s", worker.worker_id, task_id, ended)
        finally:
            worker.untrack(control)

    def _interrupted(self, task_id: str, reason: str, timeout: float) -> None:
        worker = self.worker
        if reason == CANCELLED:
            worker.broker.finish(
                task_id, TaskStatus.CANCELLED, message="cancelled", completed_at=time.time()
            )
            logger.info("worker %s: task %s cancelled", worker.worker_id, task_id)
        elif reason == SHUTDOWN:
            worker.broker.release(task_id)
        elif reason == LOST:
            worker.broker.forget(task_id)
            logger.warning(
                "worker %s: task %s was taken over by another worker", worker.worker_id, task_id
            )
        else:
            self._failed(task_id, TimeoutError(f"timed out after {timeout:g}s"), retry=True)

    def _failed(self, task_id: str, exc: BaseException, *, retry: bool) -> None:
        worker = self.worker
        error = f"{type(exc).__name__}: {exc}"
        worker.count("failed")
        worker.store.set_status(task_id, TaskStatus.FAILED, error=error, completed_at=time.time())
        if retry:
            outcome = worker.broker.nack(task_id, error=error, error_type=type(exc).__name__)
            logger.warning(
                "worker %s: task %s failed (%s): %s", worker.worker_id, task_id, outcome, error
            )
        else:
            worker.broker.finish(task_id, TaskStatus.FAILED, message=error, error=error)
            logger.error("worker %s: task %s failed for good: %s", worker.worker_id, task_id, error)
