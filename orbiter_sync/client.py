"""The sync client API: ``distributed()`` submits an agent run and returns a ``TaskHandle``.

Handles are cheap: all handles for one Redis URL share one client (one pool), so a
Django or Flask view can create one per request.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import redis

from orbiter_sync import keys
from orbiter_sync.agents.imports import entrypoint_path
from orbiter_sync.connection import Budget, connect
from orbiter_sync.env import CLIENT_TIMEOUT_ENV
from orbiter_sync.errors import (
    ConfigurationError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    ValidationError,
)
from orbiter_sync.events import EventSubscriber, StreamEvent, terminal_event
from orbiter_sync.models import TaskPayload, TaskResult, TaskStatus
from orbiter_sync.producer import TaskProducer, check_submit
from orbiter_sync.queue import DEFAULT_EVENT_TTL, DEFAULT_TASK_TTL, QueueSettings, ttl_settings
from orbiter_sync.store import TaskStore
from orbiter_sync.urls import resolve_redis_url

logger = logging.getLogger(__name__)

ENDED_CHECK = 1.0  # seconds a stream waits for events before it re-reads the task's hash
DEFAULT_CLIENT_TIMEOUT = 5.0


@dataclass(frozen=True)
class _Backend:
    producer: TaskProducer
    store: TaskStore
    subscriber: EventSubscriber


_backends: dict[tuple[str, str, float], _Backend] = {}
_clients: dict[tuple[str, float], redis.Redis] = {}
_backends_lock = threading.Lock()


def resolve_client_timeout(
    seconds: float | None = None, env: Mapping[str, str] | None = None
) -> float:
    """The time budget of one client call, retries included: ``seconds``, else
    ``ORBITER_CLIENT_TIMEOUT``, else 5 s, so a view answers before a router gives up on it
    (Heroku's waits 30 s) while Redis is away."""
    env = os.environ if env is None else env
    if seconds is None:
        raw = env.get(CLIENT_TIMEOUT_ENV, "").strip()
        try:
            seconds = float(raw) if raw else DEFAULT_CLIENT_TIMEOUT
        except ValueError:
            raise ConfigurationError(f"{CLIENT_TIMEOUT_ENV} must be seconds, got {raw!r}") from None
    if not 0 < seconds <= 3600:
        raise ConfigurationError(f"client timeout must be from 0 to 3600 seconds, got {seconds}")
    return seconds


def _backend(redis_url: str, queue_name: str, seconds: float) -> _Backend:
    with _backends_lock:
        backend = _backends.get((redis_url, queue_name, seconds))
        if backend is None:
            budget = Budget(seconds)
            client = _clients.get((redis_url, seconds))
            if client is None:
                client = _clients[(redis_url, seconds)] = connect(redis_url, budget=budget)
            ttls = ttl_settings()  # the hash's lifetime while the task waits
            settings = QueueSettings(
                name=queue_name,
                task_ttl=ttls.get("task_ttl", DEFAULT_TASK_TTL),
                event_ttl=ttls.get("event_ttl", DEFAULT_EVENT_TTL),
            )
            backend = _backends[(redis_url, queue_name, seconds)] = _Backend(
                producer=TaskProducer(redis_url, settings, client=client, retry=budget.retry),
                store=TaskStore(redis_url, client=client, retry=budget.retry),
                # a blocking read must end well inside the budget's socket timeout
                subscriber=EventSubscriber(
                    redis_url,
                    client=client,
                    retry=budget.retry,
                    block_seconds=min(1.0, budget.attempt_timeout / 2),
                ),
            )
        return backend


class TaskHandle:
    """A submitted task: its status, result, events and cancellation."""

    def __init__(
        self,
        task_id: str,
        *,
        redis_url: str | None = None,
        queue_name: str = keys.DEFAULT_QUEUE,
        client_timeout: float | None = None,
    ) -> None:
        """``client_timeout``: seconds one call may take, retries included (see
        :func:`resolve_client_timeout`); waits for a result or events have their own ``timeout``."""
        self.task_id = task_id
        # rounded: a budget computed per request must not make a pool per request
        seconds = round(resolve_client_timeout(client_timeout), 1) or 0.1
        self._backend = _backend(resolve_redis_url(redis_url), queue_name, seconds)

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
        """Ask for the task to be cancelled: True once it is cancelled (asking again is
        fine), False if it already completed or failed, or is unknown. ``orbiter-sync task
        cancel`` answers the same (exit 0 or 1)."""
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


class RunOptions(TypedDict, total=False):
    """The options of one run, for :func:`distributed` and :func:`prepare_run`."""

    messages: list[dict[str, Any]] | None
    redis_url: str | None
    detailed: bool
    timeout: float | None
    metadata: dict[str, Any] | None
    queue: str | None
    queue_name: str | None
    model: str | None
    max_retries: int | None
    retry_timeouts: bool | None
    delay: float
    client_timeout: float | None


@dataclass(frozen=True)
class PreparedRun:
    """A run checked and given its task id, not queued yet: :meth:`submit` queues it
    (what ``submit_on_commit`` runs when a transaction commits)."""

    payload: TaskPayload
    handle: TaskHandle
    queue: str
    delay: float

    def submit(self) -> TaskHandle:
        self.handle._backend.producer.submit(self.payload, delay=self.delay)
        logger.info("task %s submitted to %s", self.payload.task_id, self.queue)
        return self.handle


def distributed(agent: Any, input: str, **options: Unpack[RunOptions]) -> TaskHandle:
    """Queue one agent run and return its handle.

    ``agent`` is an agent_config dict (``{"entrypoint": "pkg.module:func"}``, an
    orbiter Agent dict, a swarm dict), an ``@agent`` function or a module-level
    function, or any object with ``to_dict()`` (``Agent``, ``Swarm``). The Redis URL
    defaults to ``ORBITER_REDIS_URL``, then ``REDIS_URL``.

    Per run: ``timeout`` (seconds, default 300), ``max_retries`` (default: the
    worker's ``--max-retries``; 0 runs it once), ``retry_timeouts`` (a run past its
    timeout is not retried unless True), ``delay`` (seconds it waits before it may
    start), ``queue`` (``queue_name`` is its older name), ``detailed``, ``messages``,
    ``metadata``, ``model``. An ``@agent`` function's own defaults fill what is not
    given. ``client_timeout`` bounds this call while Redis is away (default 5 s,
    ``ORBITER_CLIENT_TIMEOUT``): then ``RedisUnavailableError``.
    """
    return prepare_run(agent, input, **options).submit()


def prepare_run(agent: Any, input: str, **options: Unpack[RunOptions]) -> PreparedRun:
    """Everything :func:`distributed` does but queueing: the payload is checked and its
    task id known; ``.submit()`` queues it."""
    unknown = set(options) - set(RunOptions.__annotations__)
    if unknown:  # a misspelt option would otherwise be dropped without a word
        raise TypeError(f"unknown run option(s): {', '.join(sorted(unknown))}")
    agent, defaults = _agent_of(agent)
    timeout, retries = options.get("timeout"), options.get("max_retries")
    retry_timeouts = options.get("retry_timeouts")
    payload = TaskPayload(
        agent_config=agent.to_dict() if not isinstance(agent, dict) else dict(agent),
        input=input,
        messages=list(options.get("messages") or []),
        model=options.get("model"),
        detailed=options.get("detailed", False),
        metadata=dict(options.get("metadata") or {}),
        timeout_seconds=timeout if timeout is not None else defaults.get("timeout", 300.0),
        max_retries=retries if retries is not None else defaults.get("max_retries"),
        retry_timeouts=bool(
            retry_timeouts if retry_timeouts is not None else defaults.get("retry_timeouts")
        ),
    )
    queue = (
        options.get("queue") or options.get("queue_name") or defaults.get("queue")
        or keys.DEFAULT_QUEUE
    )  # fmt: skip
    handle = TaskHandle(
        payload.task_id,
        redis_url=options.get("redis_url"),
        queue_name=queue,
        client_timeout=options.get("client_timeout"),
    )
    delay = options.get("delay", 0.0)
    check_submit(payload, delay)  # refused here, not when it is queued later
    return PreparedRun(payload, handle, queue, delay)


def _agent_of(agent: Any) -> tuple[Any, dict[str, Any]]:
    """(what gives the agent_config, the agent's own submit defaults)."""
    if isinstance(agent, dict):
        return agent, {}
    if callable(getattr(agent, "submit_defaults", None)):  # an @agent function
        return agent, agent.submit_defaults()
    if callable(getattr(agent, "to_dict", None)):
        return agent, {}
    if inspect.isfunction(agent):  # a plain module-level function: its entrypoint
        try:
            return {"entrypoint": entrypoint_path(agent)}, {}
        except ValueError as exc:
            raise ValidationError("agent", str(exc)) from None
    raise ValidationError(
        "agent",
        "must be an agent_config dict, a module-level or @agent function, or have to_dict(), "
        f"got {type(agent).__name__}",
    )
