"""The activity: the agent run itself, as sync code on the Temporal worker's thread pool.

It runs the same resolved agents as the local executor (entrypoints and LLM agents,
behind the same import allowlist) and publishes every event to the task's Redis
stream exactly as a local run does. A helper thread, started in a copy of the
activity's context, heartbeats every :data:`HEARTBEAT_EVERY` seconds and every 10
events, and polls for Temporal's cancel (``no_thread_cancel_exception``: sync code
is never interrupted by an injected exception), which stops the run as the slot's
controls stop a local one; the cancel's details say why: the workflow was
cancelled, the worker is shutting down (after its graceful timeout), or the attempt
is no longer Temporal's current one. A retried attempt first publishes a
recoverable ``error`` event and a ``running`` status with its attempt number, so a
watcher sees the retry.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from orbiter_sync.control import RunControl
from orbiter_sync.errors import AgentConfigError, RetryLaterError
from orbiter_sync.events import ErrorEvent, EventPublisher, StatusEvent, StreamEvent
from orbiter_sync.executors.base import RunContext, stream_publisher
from orbiter_sync.executors.local import LocalExecutor
from orbiter_sync.models import TaskPayload
from orbiter_sync.outcome import RunInterrupted, StopReason
from orbiter_sync.redaction import error_text
from orbiter_sync.temporal import ACTIVITY, HEARTBEAT_EVERY

logger = logging.getLogger(__name__)

BEAT_EVERY_EVENTS = 10


class AgentActivity:
    """``execute_agent_activity`` for one worker process: its agents and its publisher."""

    def __init__(self, local: LocalExecutor, publisher: EventPublisher, worker_id: str) -> None:
        self.local = local
        self.publisher = publisher
        self.worker_id = worker_id
        self._running: set[RunControl] = set()
        self._lock = threading.Lock()

    def stop_all(self, reason: StopReason) -> None:
        """Stop every run in progress (a worker told to stop now)."""
        with self._lock:
            running = list(self._running)
        for control in running:
            control.stop(reason)

    @activity.defn(name=ACTIVITY, no_thread_cancel_exception=True)
    def run(self, payload_json: str) -> str:
        payload = TaskPayload.from_json(payload_json)
        attempt = activity.info().attempt
        control = RunControl(payload.task_id, f"temporal-{attempt}")
        events = 0
        published = stream_publisher(self.publisher, payload.task_id, self.worker_id)

        def publish(event: StreamEvent) -> None:  # as a local run's, with a beat every 10
            nonlocal events
            if published(event):
                events += 1
                if events % BEAT_EVERY_EVENTS == 0:
                    activity.heartbeat(events)

        done = threading.Event()
        with self._lock:  # first: a stop_all() from now on reaches this run
            self._running.add(control)
        try:
            if attempt > 1:  # a watcher sees the retry, as it would a local one
                publish(ErrorEvent(error="the previous attempt did not finish",
                                   error_type="Retry", recoverable=True))  # fmt: skip
                publish(StatusEvent(status="running", message=f"running on {self.worker_id}",
                                    attempt=attempt))  # fmt: skip
            watcher = threading.Thread(
                target=contextvars.copy_context().run, args=(_watch, control, done),
                name=f"orbiter-activity-{payload.task_id[:8]}", daemon=True,
            )  # fmt: skip
            watcher.start()
            deadline = time.monotonic() + payload.timeout_seconds
            with self.local.slot():
                result = self.local.execute(payload, RunContext(publish, control, deadline))
        except RunInterrupted as stop:
            raise _interrupted(stop.reason, payload) from None
        except AgentConfigError as exc:
            raise ApplicationError(
                error_text(exc), type=type(exc).__name__, non_retryable=True
            ) from None
        except RetryLaterError as exc:
            wait = timedelta(seconds=exc.retry_after)
            kind = type(exc).__name__
            raise ApplicationError(error_text(exc), type=kind, next_retry_delay=wait) from None
        except Exception as exc:  # noqa: BLE001 - a failed attempt: Temporal's retry policy decides
            raise ApplicationError(error_text(exc), type=type(exc).__name__) from None
        finally:
            done.set()
            with self._lock:
                self._running.discard(control)
        return json.dumps(result, default=str)


def _watch(control: RunControl, done: threading.Event) -> None:
    """Heartbeat while the run goes on; stop it when Temporal cancels the activity.

    A worker that begins to shut down lets its activities run on for its graceful
    timeout (``is_worker_shutdown()`` alone); then Temporal cancels them, and the
    cancel's details tell a worker shutdown (the attempt ends, Temporal retries it
    elsewhere) from the workflow's cancel (the task's)."""
    while not done.wait(min(HEARTBEAT_EVERY, 0.2)):
        if activity.is_cancelled():
            control.stop(_why_cancelled(activity.cancellation_details()))
        try:
            activity.heartbeat()
        except Exception:  # noqa: BLE001 - a missed beat is retried on the next turn
            logger.debug("activity heartbeat failed", exc_info=True)


def _why_cancelled(details: activity.ActivityCancellationDetails | None) -> StopReason:
    if details is None:  # the SDK cancels without details only when a heartbeat failed
        return StopReason.LOST
    if details.cancel_requested:
        return StopReason.CANCELLED
    if details.worker_shutdown:
        return StopReason.SHUTDOWN
    # not found, timed out, paused, reset: this attempt is no longer Temporal's current one
    return StopReason.LOST


def _interrupted(reason: StopReason, payload: TaskPayload) -> BaseException:
    if reason is StopReason.CANCELLED:
        return CancelledError("the task was cancelled")
    if reason is StopReason.TIMEOUT:
        said = f"timed out after {payload.timeout_seconds:g}s"
        return ApplicationError(said, type="TimeoutError", non_retryable=not payload.retry_timeouts)
    if reason is StopReason.SHUTDOWN:
        return ApplicationError("the worker running it stopped", type="WorkerStopped")
    # a cancel, so the SDK applies its meaning (paused, reset, timed out, not found)
    return CancelledError("Temporal ended this attempt")
