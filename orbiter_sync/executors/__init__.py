"""Executors run one claimed task's agent: ``local`` (in the slot) or ``temporal`` (a
durable workflow the slot starts and waits for).

base.py holds the seam (``Executor``, ``RunContext``); one module per executor
implements it, and :func:`make_executor` picks one by name.
"""

from __future__ import annotations

from typing import Any

from orbiter_sync.agents import ImportPolicy
from orbiter_sync.errors import ConfigurationError
from orbiter_sync.executors.base import (
    EXECUTORS,
    Executor,
    RunContext,
    check_executor,
    default_executor,
)
from orbiter_sync.executors.local import LocalExecutor

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "RunContext",
    "check_executor",
    "default_executor",
    "make_executor",
]


def make_executor(name: str, *, policy: ImportPolicy, **worker: Any) -> Executor:
    """The executor called ``name``, resolving agents behind the import ``policy``; the
    temporal one also takes the worker's ``redis_url``, ``worker_id``, ``slots``,
    ``max_retries``, ``event_ttl``, ``temporal`` (TemporalSettings) and
    ``run_activities`` (imported only then: temporalio is an extra)."""
    check_executor(name)
    if name == "temporal":
        try:
            from orbiter_sync.executors.temporal import TemporalExecutor
        except ImportError as exc:
            raise ConfigurationError(
                f"the temporal executor needs temporalio ({exc}): "
                "pip install 'orbiter-sync[temporal]'"
            ) from None
        return TemporalExecutor(policy, **worker)
    return LocalExecutor(policy)
