"""The temporal executor: a slot runs its task as a Temporal workflow and waits for it.

The slot claims from Redis as in local mode, then starts ``AgentExecutionWorkflow``
with id ``orbiter-task-{task_id}``: a reclaimed task whose workflow still runs is
attached to (id conflict policy ``USE_EXISTING``), and a new run is allowed only
after a failed one (id reuse policy ``ALLOW_DUPLICATE_FAILED_ONLY``), so a completed
workflow's result is fetched, never run again. The activity runs in any Temporal
worker of the task queue: this process's own (runtime.py) unless
``--no-temporal-worker``, or ``orbiter-sync start temporal-worker`` processes; it
publishes the events. The slot's stop switch maps onto the workflow: a cancel
cancels it; a timeout cancels it too; a worker stop leaves it running under Temporal
and hands the task back, so another worker attaches to it.

Temporal retries the activity (``max_retries + 1`` attempts), so a failed workflow
fails the task for good (``DurableRunFailed``); a config that can never run is an
``AgentConfigError``, as in local mode.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
from typing import Any

from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, CancelledError, WorkflowAlreadyStartedError

from orbiter_sync.agents import ImportPolicy
from orbiter_sync.errors import AgentConfigError, DurableRunFailed
from orbiter_sync.events import EventPublisher
from orbiter_sync.executors.base import Executor, RunContext
from orbiter_sync.executors.local import LocalExecutor
from orbiter_sync.models import TaskPayload
from orbiter_sync.outcome import RunInterrupted, StopReason
from orbiter_sync.temporal import NON_RETRYABLE, WORKFLOW, TemporalSettings, workflow_id
from orbiter_sync.temporal.activity import AgentActivity
from orbiter_sync.temporal.runtime import TemporalRuntime

POLL = 0.2  # seconds between two looks at the slot's stop switch while the workflow runs
CANCEL_WAIT = 5.0  # seconds a cancelled workflow gets to report that it stopped


class TemporalExecutor(Executor):
    name = "temporal"

    def __init__(
        self,
        policy: ImportPolicy,
        *,
        redis_url: str,
        worker_id: str,
        slots: int,
        max_retries: int,
        event_ttl: int,
        temporal: TemporalSettings | None = None,
        run_activities: bool = True,
    ) -> None:
        self.max_retries = max_retries
        self.temporal = temporal or TemporalSettings.from_env()
        self.publisher = EventPublisher(redis_url, stream_ttl_seconds=event_ttl)
        agent = AgentActivity(LocalExecutor(policy), self.publisher, worker_id)
        # without activities here, `orbiter-sync start temporal-worker` processes run them
        self.runtime = TemporalRuntime(self.temporal, agent if run_activities else None, slots)

    def start(self) -> None:
        self.runtime.start()

    def execute(self, payload: TaskPayload, context: RunContext) -> dict[str, Any]:
        if payload.max_retries is None:  # the workflow reads the task's retries from it
            payload = dataclasses.replace(payload, max_retries=self.max_retries)
        client = self.runtime.client
        assert client is not None, "TemporalExecutor.start() was not called"
        try:
            handle = self.runtime.submit(
                client.start_workflow(
                    WORKFLOW,
                    payload.to_json(),
                    id=workflow_id(payload.task_id),
                    task_queue=self.temporal.task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                )
            ).result(timeout=30)
        except WorkflowAlreadyStartedError:  # it completed (or was cancelled): its result
            handle = client.get_workflow_handle(workflow_id(payload.task_id))
        result = self.runtime.submit(handle.result())
        while True:
            try:
                return _output(result.result(timeout=POLL))
            except concurrent.futures.TimeoutError:
                pass
            except WorkflowFailureError as exc:
                raise _failure(exc) from None
            reason = context.control.reason
            if reason in (StopReason.CANCELLED, StopReason.TIMEOUT):
                # best effort: a workflow that ended meanwhile cannot be cancelled
                with contextlib.suppress(Exception):
                    self.runtime.submit(handle.cancel()).result(timeout=CANCEL_WAIT)
                concurrent.futures.wait([result], timeout=CANCEL_WAIT)
                raise RunInterrupted(reason)
            if reason is not None:  # a stop or a lost entry: the workflow goes on
                raise RunInterrupted(reason)

    def close(self) -> None:
        self.runtime.stop()
        self.publisher.close()


def _output(raw: str) -> dict[str, Any]:
    value = json.loads(raw)
    return value if isinstance(value, dict) else {"output": value}


def _failure(exc: WorkflowFailureError) -> Exception:
    """What the slot records for a failed workflow: the innermost application error."""
    cause: BaseException | None = exc.cause
    while cause is not None and not isinstance(cause, ApplicationError | CancelledError):
        cause = cause.__cause__ or getattr(cause, "cause", None)
    if isinstance(cause, ApplicationError):
        kind, message = cause.type or "Error", cause.message
        if kind in NON_RETRYABLE:
            return AgentConfigError(message)
        return DurableRunFailed(f"{kind}: {message}")
    return DurableRunFailed(str(exc))
