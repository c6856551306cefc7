"""Executors run one claimed task's agent: ``local`` (in the slot); ``temporal`` is not built yet.

An executor gets the payload and a :class:`RunContext` and returns the result
dict; it raises ``RunInterrupted`` when the run was stopped, ``AgentConfigError``
for configs that can never run, and anything else for a failed attempt.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

from orbiter_sync.errors import ConfigurationError
from orbiter_sync.executors.local import LocalExecutor, RunContext
from orbiter_sync.models import TaskPayload

__all__ = ["Executor", "LocalExecutor", "RunContext", "EXECUTORS", "default_executor"]


class Executor(Protocol):
    def execute(self, payload: TaskPayload, context: RunContext) -> dict[str, Any]: ...


EXECUTORS = ("local", "temporal")
BUILT = ("local",)  # the temporal executor is named by the guide but not built yet

TEMPORAL_HOST_ENV = "TEMPORAL_HOST"


def default_executor(env: Mapping[str, str] | None = None) -> str:
    """``temporal`` when ``TEMPORAL_HOST`` is set (as the guide runs Temporal), else ``local``."""
    env = os.environ if env is None else env
    return "temporal" if env.get(TEMPORAL_HOST_ENV) else "local"


def check_executor(name: str) -> None:
    """Raise ``ConfigurationError`` unless ``name`` is an executor this version can run."""
    if name not in EXECUTORS:
        raise ConfigurationError(f"unknown executor {name!r}: choose one of {', '.join(EXECUTORS)}")
    if name not in BUILT:
        raise ConfigurationError(
            f"the {name} executor is not available in this version of orbiter-sync; "
            f"use --executor local (executor defaults to temporal when {TEMPORAL_HOST_ENV} is set)"
        )
