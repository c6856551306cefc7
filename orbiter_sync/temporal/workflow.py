"""The workflow: one activity that runs the agent, with the task's retries and timeout.

Temporal replays this code in its sandbox, so it imports nothing but temporalio and
the standard library. ``maximum_attempts`` is the task's ``max_retries + 1``; errors
of a config that can never run are not retried; ``timeout_seconds`` is the
activity's ``start_to_close_timeout``; a heartbeat timeout of seconds notices a dead
worker quickly; a cancel waits for the activity to stop.
"""

from __future__ import annotations

import json
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from orbiter_sync.temporal import ACTIVITY, HEARTBEAT_TIMEOUT, NON_RETRYABLE, WORKFLOW


@workflow.defn(name=WORKFLOW)
class AgentExecutionWorkflow:
    """Runs ``execute_agent_activity`` on the TaskPayload JSON; returns its result JSON."""

    @workflow.run
    async def run(self, payload_json: str) -> str:
        payload = json.loads(payload_json)
        retries = payload.get("max_retries")
        result: str = await workflow.execute_activity(
            ACTIVITY,
            payload_json,
            start_to_close_timeout=timedelta(seconds=float(payload.get("timeout_seconds", 300))),
            heartbeat_timeout=timedelta(seconds=HEARTBEAT_TIMEOUT),
            retry_policy=RetryPolicy(
                maximum_attempts=(retries if isinstance(retries, int) else 3) + 1,
                non_retryable_error_types=list(NON_RETRYABLE),
            ),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        return result
