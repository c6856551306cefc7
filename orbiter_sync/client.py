"""The sync client API: ``distributed()`` submits an agent run and returns a ``TaskHandle``.

Handles are cheap: all handles for one Redis URL share one client (one pool), so a
Django or Flask view can create one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from orbiter_sync import keys
from orbiter_sync.connection import shared_client
from orbiter_sync.errors import (
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    ValidationError,
)
from orbiter_sync.events import EventSubscriber, StreamEvent, terminal_event
from orbiter_sync.models import TaskPayload, TaskResult, TaskStatus
from orbiter_sync.producer import TaskProducer
from orbiter_sync.queue import QueueSettings
from orbiter_sync.store import TaskStore
from orbiter_sync.urls import resolve_redis_url

logger = logging.getLogger(__name__)

ENDED_CHECK = 1.0  # seconds a stream waits for events before it re-reads the task's hash


@dataclass(frozen=True)
class _Backend:
    producer: TaskProducer
    store: TaskStore
    subscriber: EventSubscriber


_backends: dict[tuple[str, str], _Backend] = {}
_backends_lock = threading.Lock()


def _backend(redis_url: str, queue_name: str) -> _Backend:
    with _backends_lock:
        backend = _backends.get((redis_url, queue_name))
        if backend is None:
            client = shared_client(redis_url)
            backend = _backends[(redis_url, queue_name)] = _Backend(
                producer=TaskProducer(redis_url, QueueSettings(name=queue_name), client=client),
                store=TaskStore(redis_url, client=client),
                subscriber=EventSubscriber(redis_url, client=client),
            )
        return backend


class TaskHandle:
    """A submitted task: its status, result, events and cancellation."""

    def __init__(
        self, task_id: str, *, redis_url: str | None = None, queue_name: str = keys.DEFAULT_QUEUE
    ) -> None:
        self.task_id = task_id
        self._backend = _backend(resolve_redis_url(redis_url), queue_name)

    def __repr__(self) -> str:
        return f"TaskHandle(task_id={self.task_id!r})"

    def status(self) -> TaskResult | None:
        """The task's current state (None if it is unknown or expired)."""
        return self._backend.store.get_status(self.task_id)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task to end and return its result dict (``{"output": ...}``).

        Waits on the task's event stream, not by polling in a loop. Raises
        ``TaskFailedError``, ``TaskCancelledError``, ``TaskNotFoundError`` or, when
        ``timeout`` seconds pass first, ``TaskTimeoutError``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = "0"
        while True:
            state = self.status()
            if state is None:
                raise TaskNotFoundError(self.task_id)
            if state.status.is_terminal:
                return _result_of(state)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TaskTimeoutError(self.task_id, timeout or 0.0)
            # Block on the event stream for at most a second: a terminal event wakes
            # us at once; the hash is read again after each wait in case the stream
            # expired or the task ended without an event (an async peer's cancel).
            wait = 1.0 if remaining is None else min(1.0, remaining)
            try:
                for entry_id, event in self._backend.subscriber.entries(
                    self.task_id, cursor, timeout=wait
                ):
                    cursor = entry_id
                    if event.is_terminal:
                        break
            except TaskTimeoutError:
                pass

    def stream(
        self, last_event_id: str | None = None, *, timeout: float | None = None
    ) -> Iterator[StreamEvent]:
        """Yield the task's events (stored ones first) until its terminal status event.

        A task whose hash has ended without one (an async worker writes none when
        ``detailed`` is off; events expire) ends the stream within about a second,
        with a terminal event made from its hash. ``timeout`` bounds the whole wait
        (``TaskTimeoutError``).
        """
        for _entry_id, event in self.entries(last_event_id, timeout=timeout):
            yield event

    def entries(
        self, last_event_id: str | None = None, *, timeout: float | None = None
    ) -> Iterator[tuple[str, StreamEvent]]:
        """Like :meth:`stream`, with each event's stream id (for SSE ``id:`` lines; ``""``
        for a terminal event made from the hash)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for item in self._until_ended(last_event_id, ENDED_CHECK, deadline):
            if item is not None:
                yield item
            elif deadline is not None and time.monotonic() >= deadline:
                raise TaskTimeoutError(self.task_id, timeout or 0.0, "events")

    def follow(
        self, last_event_id: str | None = None, *, idle: float = 15.0
    ) -> Iterator[tuple[str, StreamEvent] | None]:
        """Like :meth:`entries`, for readers that may wait a long time (web views, the CLI).

        Yields ``(entry_id, event)`` until the terminal status event, and ``None``
        after each ``idle`` seconds without an event (time for an SSE keep-alive).
        A task that has ended without a terminal event in its stream (the events
        expired) gets one made from its hash (entry id ``""``), so a reader never
        waits forever.
        """
        yield from self._until_ended(last_event_id, idle, None)

    def _until_ended(
        self, cursor: str | None, wait: float, deadline: float | None
    ) -> Iterator[tuple[str, StreamEvent] | None]:
        """Events until the terminal one; None after each ``wait`` seconds without one,
        once the hash says the task has not ended either."""
        if self.status() is None:
            raise TaskNotFoundError(self.task_id)
        while True:
            left = wait if deadline is None else max(0.001, min(wait, deadline - time.monotonic()))
            try:
                for entry_id, event in self._backend.subscriber.entries(
                    self.task_id, cursor, timeout=left
                ):
                    cursor = entry_id
                    yield entry_id, event
                    if event.is_terminal:
                        return
            except TaskTimeoutError:
                state = self.status()
                if state is None:
                    raise TaskNotFoundError(self.task_id) from None
                if state.status.is_terminal:
                    # Our workers write the terminal status and its event in one script,
                    # so an ended task with no terminal event after a wait has lost its
                    # events (expired) or was ended by a peer that writes none.
                    yield "", _terminal_event_of(state)
                    return
                yield None

    def cancel(self) -> bool:
        """Ask for the task to be cancelled; False if it already ended or is unknown."""
        return self._backend.producer.cancel(self.task_id)


def _terminal_event_of(state: TaskResult) -> StreamEvent:
    if state.status == TaskStatus.COMPLETED:
        return terminal_event("completed", "task completed")
    if state.status == TaskStatus.CANCELLED:
        return terminal_event("cancelled", "task cancelled")
    return terminal_event("error", state.error or "failed")


def _result_of(state: TaskResult) -> Any:
    if state.status == TaskStatus.COMPLETED:
        return state.result if state.result is not None else {}
    if state.status == TaskStatus.CANCELLED:
        raise TaskCancelledError(state.task_id)
    raise TaskFailedError(state.task_id, state.error_summary)


def distributed(
    agent: Any,
    input: str,
    *,
    messages: list[dict[str, Any]] | None = None,
    redis_url: str | None = None,
    detailed: bool = False,
    timeout: float = 300.0,
    metadata: dict[str, Any] | None = None,
    queue_name: str = keys.DEFAULT_QUEUE,
    model: str | None = None,
) -> TaskHandle:
    """Queue one agent run and return its handle.

    ``agent`` is an agent_config dict (``{"entrypoint": "pkg.module:func"}``, an
    orbiter Agent dict, a swarm dict) or any object with ``to_dict()``. The Redis
    URL defaults to ``ORBITER_REDIS_URL``, then ``REDIS_URL``.
    """
    if isinstance(agent, dict):
        agent_config = dict(agent)
    elif callable(getattr(agent, "to_dict", None)):
        agent_config = agent.to_dict()
    else:
        raise ValidationError(
            "agent", f"must be an agent_config dict or have to_dict(), got {type(agent).__name__}"
        )
    payload = TaskPayload(
        agent_config=agent_config,
        input=input,
        messages=list(messages or []),
        model=model,
        detailed=detailed,
        metadata=dict(metadata or {}),
        timeout_seconds=timeout,
    )
    handle = TaskHandle(payload.task_id, redis_url=redis_url, queue_name=queue_name)
    handle._backend.producer.submit(payload)
    logger.info("task %s submitted to %s", payload.task_id, queue_name)
    return handle
