"""Durable runs on Temporal: the names both sides agree on, and where the server is.

The worker's slot starts the workflow ``AgentExecutionWorkflow`` (id
``orbiter-task-{task_id}``) with the TaskPayload JSON; its one activity,
``execute_agent_activity``, runs the agent in a worker process's thread pool and
publishes its events to Redis as a local run does (workflow.py, activity.py). The
client and the Temporal worker share one asyncio loop on a native thread of
their own (runtime.py); the slots wait on it (executors/temporal.py).

orbiter-sync's activities differ from the async library's (they publish events,
honour cancel and the import allowlist), so they use their own Temporal task
queue, ``orbiter-sync-tasks``, not the original's ``orbiter-tasks``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from orbiter_sync.env import TEMPORAL_HOST_ENV, TEMPORAL_NAMESPACE_ENV, TEMPORAL_TASK_QUEUE_ENV

WORKFLOW = "AgentExecutionWorkflow"
ACTIVITY = "execute_agent_activity"
DEFAULT_HOST = "localhost:7233"
DEFAULT_NAMESPACE = "default"
DEFAULT_TASK_QUEUE = "orbiter-sync-tasks"
HEARTBEAT_TIMEOUT = 10.0  # seconds without a heartbeat before Temporal retries elsewhere
HEARTBEAT_EVERY = 2.0  # seconds between an activity's heartbeats while a step is slow
# errors a retry cannot fix: the activity fails for good on them
NON_RETRYABLE = ("AgentConfigError", "ImportNotAllowedError", "ModelRefusedError")


def workflow_id(task_id: str) -> str:
    return f"orbiter-task-{task_id}"


@dataclass(frozen=True)
class TemporalSettings:
    """Where the Temporal server is, and the task queue this fleet's activities use."""

    host: str = DEFAULT_HOST
    namespace: str = DEFAULT_NAMESPACE
    task_queue: str = DEFAULT_TASK_QUEUE

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, task_queue: str | None = None
    ) -> TemporalSettings:
        """From ``TEMPORAL_HOST``, ``TEMPORAL_NAMESPACE`` and, unless ``task_queue`` is
        given (a flag), ``ORBITER_TEMPORAL_TASK_QUEUE``; the defaults for what is unset."""
        env = os.environ if env is None else env
        return cls(
            host=env.get(TEMPORAL_HOST_ENV) or DEFAULT_HOST,
            namespace=env.get(TEMPORAL_NAMESPACE_ENV) or DEFAULT_NAMESPACE,
            task_queue=task_queue or env.get(TEMPORAL_TASK_QUEUE_ENV) or DEFAULT_TASK_QUEUE,
        )
