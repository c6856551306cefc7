"""What every executor is: the :class:`Executor` seam, the :class:`RunContext` it gets,
and the executor names a worker accepts.

An executor runs one claimed task's agent and returns its result dict. It
raises ``RunInterrupted`` when the run was stopped, ``AgentConfigError`` for a
config that can never run, and anything else for a failed attempt; the slot
turns that into an ``Outcome``.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from orbiter_sync.control import RunControl
from orbiter_sync.env import TEMPORAL_HOST_ENV
from orbiter_sync.errors import ConfigurationError
from orbiter_sync.events import EVENT_TYPES, EventPublisher, StreamEvent, for_the_stream
from orbiter_sync.metrics.worker import recorder
from orbiter_sync.models import TaskPayload

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "temporal")
BUILT = ("local", "temporal")


@dataclass(frozen=True)
class RunContext:
    """What a run gets from its slot: where its events go, its stop switch, its deadline."""

    publish: Callable[[StreamEvent], object]
    control: RunControl
    deadline: float
    """``time.monotonic()`` value by which the run must have ended (its timeout_seconds).
    The slot stops ``control`` then (the worker's one deadline scheduler), whatever the
    executor; an executor that waits on something remote can bound its waits by it."""

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())


def stream_publisher(
    publisher: EventPublisher, task_id: str, worker_id: str
) -> Callable[[StreamEvent], bool]:
    """How one run's events reach its task's stream, whatever the executor runs it:
    through ``for_the_stream``; an event of a type the async readers do not know is
    logged (once a run: an agent may yield thousands) and not published. The function
    returns whether the event was published."""
    skipped: set[str] = set()

    def publish(event: StreamEvent) -> bool:
        sent = for_the_stream(event)
        if sent is not None:
            publisher.publish(task_id, sent)
            recorder().published()
            return True
        kind = str(event.to_dict().get("type"))
        if kind not in skipped:
            skipped.add(kind)
            logger.warning("worker %s: task %s: a %r event was not published: the async "
                           "library's readers know only %s", worker_id, task_id, kind,
                           ", ".join(EVENT_TYPES))  # fmt: skip
        return False

    return publish


class Executor(ABC):
    """Runs agents for a worker's slots."""

    name: str = ""

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Held by a slot for its whole life; per-slot resources (an event loop) live here."""
        yield

    @abstractmethod
    def execute(self, payload: TaskPayload, context: RunContext) -> dict[str, Any]:
        """Run the task's agent in the calling slot and return its result (``{"output": ...}``)."""

    def start(self) -> None:  # noqa: B027 - a hook; most executors need nothing started
        """Start what the executor needs before the slots run (a Temporal connection)."""

    def close(self) -> None:  # noqa: B027 - a hook; most executors hold nothing
        """Release what the executor holds once the worker has stopped."""


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
