"""Executors run one claimed task's agent: ``local`` (in the slot); ``temporal`` is not built yet.

base.py holds the seam (``Executor``, ``RunContext``); one module per executor
implements it, and :func:`make_executor` picks one by name.
"""

from __future__ import annotations

from collections.abc import Callable

from orbiter_sync.agents import ImportPolicy
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


_BUILT: dict[str, Callable[[ImportPolicy], Executor]] = {"local": LocalExecutor}


def make_executor(name: str, *, policy: ImportPolicy) -> Executor:
    """The executor called ``name``, resolving agents behind the import ``policy``."""
    check_executor(name)
    return _BUILT[name](policy)
