"""Executors run one claimed task's agent: ``local`` (in the slot) now, ``temporal`` later.

An executor gets the payload and a :class:`RunContext` and returns the result
dict; it raises ``RunInterrupted`` when the run was stopped, ``AgentConfigError``
for configs that can never run, and anything else for a failed attempt.
"""

from __future__ import annotations

from typing import Any, Protocol

from orbiter_sync.executors.local import LocalExecutor, RunContext
from orbiter_sync.models import TaskPayload

__all__ = ["Executor", "LocalExecutor", "RunContext", "EXECUTORS"]


class Executor(Protocol):
    def execute(self, payload: TaskPayload, context: RunContext) -> dict[str, Any]: ...


EXECUTORS = ("local",)
