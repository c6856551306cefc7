"""Run events: their types, the publisher workers write them with, the subscriber readers use.

A task's events live in two places (wire contract): the stream
``orbiter:stream:{id}`` (field ``event``, TTL one hour) for replay, and the
pub/sub channel ``orbiter:events:{id}`` for live listeners. The publisher writes
both in one Lua script (``lua/publish.lua``). The subscriber reads the stream
only: replay and follow through one cursor, so it has no gap and no duplicate,
and it stops after the terminal ``status`` event (completed, error or
cancelled) that ends every task.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Literal

import redis

from orbiter_sync import lua
from orbiter_sync.connection import DEFAULT_RETRY, RedisUser, RetryPolicy
from orbiter_sync.errors import TaskTimeoutError, ValidationError
from orbiter_sync.event_fields import copied, field_names, tool_content
from orbiter_sync.models import loads_external
from orbiter_sync.queue import DEFAULT_EVENT_TTL
from orbiter_sync.shards import LayoutUser

logger = logging.getLogger(__name__)

MAX_TOKENS = 2**63  # token counts are stored as signed 64-bit integers by most readers
TERMINAL_EVENT_STATUSES = frozenset({"completed", "error", "cancelled"})
STATUS_VALUES = frozenset({"starting", "running", "waiting_for_tool", *TERMINAL_EVENT_STATUSES})


@dataclass(frozen=True)
class Usage:
    """Token counts of one model call or step."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_value(cls, value: Any) -> Usage | None:
        if value is None or isinstance(value, Usage):
            return value
        if not isinstance(value, dict):
            raise ValidationError("usage", f"must be an object, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        counts = {k: int(v or 0) for k, v in value.items() if k in known}
        for name, count in counts.items():
            if not 0 <= count < MAX_TOKENS:
                raise ValidationError("usage", f"{name} out of range")
        return cls(**counts)


@dataclass(frozen=True, kw_only=True)
class StreamEvent:
    """Base of all events; ``type`` is the JSON discriminator."""

    type: ClassVar[str] = ""
    agent_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type}
        for name in field_names(type(self)):
            data[name] = copied(getattr(self, name))
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str)

    @property
    def is_terminal(self) -> bool:
        return False


@dataclass(frozen=True, kw_only=True)
class TextEvent(StreamEvent):
    type: ClassVar[str] = "text"
    text: str


@dataclass(frozen=True, kw_only=True)
class ToolCallEvent(StreamEvent):
    type: ClassVar[str] = "tool_call"
    tool_name: str
    tool_call_id: str
    arguments: str = ""


@dataclass(frozen=True, kw_only=True)
class ToolResultEvent(StreamEvent):
    type: ClassVar[str] = "tool_result"
    tool_name: str
    tool_call_id: str
    arguments: dict[str, Any] = field(default_factory=dict)
    result: str | list[Any] = ""
    """A string, as the original makes it (``str(output)``), or a list of content blocks."""
    error: str | None = None
    success: bool = True
    duration_ms: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "result", tool_content(self.result))


@dataclass(frozen=True, kw_only=True)
class StepEvent(StreamEvent):
    type: ClassVar[str] = "step"
    step_number: int
    status: Literal["started", "completed"]
    started_at: float
    completed_at: float | None = None
    usage: Usage | None = None

    def __post_init__(self) -> None:
        if self.status not in ("started", "completed"):
            raise ValidationError(
                "status", f"step status must be started or completed, not {self.status!r}"
            )
        object.__setattr__(self, "usage", Usage.from_value(self.usage))


@dataclass(frozen=True, kw_only=True)
class ReasoningEvent(StreamEvent):
    type: ClassVar[str] = "reasoning"
    text: str


@dataclass(frozen=True, kw_only=True)
class ErrorEvent(StreamEvent):
    type: ClassVar[str] = "error"
    error: str
    error_type: str
    step_number: int | None = None
    recoverable: bool = False


@dataclass(frozen=True, kw_only=True)
class StatusEvent(StreamEvent):
    type: ClassVar[str] = "status"
    status: str
    message: str = ""
    attempt: int | None = None
    """On the ``running`` event that opens each attempt: its number (1, 2 ...), so a UI
    can start its transcript again on a retry. orbiter-sync's own field, written only
    when set (the async library's readers ignore it)."""

    def __post_init__(self) -> None:
        if self.status not in STATUS_VALUES:
            raise ValidationError("status", f"unknown status {self.status!r}")
        attempt = self.attempt
        if attempt is not None and (type(attempt) is not int or not 0 < attempt < 2**31):
            object.__setattr__(self, "attempt", None)  # our own extra: dropped, never the event

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if self.attempt is None:
            del data["attempt"]
        return data

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_EVENT_STATUSES


@dataclass(frozen=True, kw_only=True)
class UsageEvent(StreamEvent):
    type: ClassVar[str] = "usage"
    usage: Usage
    step_number: int = 0
    model: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "usage", Usage.from_value(self.usage) or Usage())


@dataclass(frozen=True, kw_only=True)
class UnknownEvent(StreamEvent):
    """An event of a type this version does not know; ``data`` keeps it whole."""

    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


EVENT_TYPES: dict[str, type[StreamEvent]] = {
    cls.type: cls
    for cls in (
        TextEvent,
        ToolCallEvent,
        ToolResultEvent,
        StepEvent,
        ReasoningEvent,
        ErrorEvent,
        StatusEvent,
        UsageEvent,
    )
}


def event_from_dict(data: Any) -> StreamEvent:
    """Build the event named by ``data["type"]``; unknown fields are ignored."""
    if not isinstance(data, dict):
        raise ValidationError("", f"event must be a JSON object, got {type(data).__name__}")
    event_type = data.get("type")
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        if not isinstance(event_type, str) or not event_type:
            raise ValidationError("type", "event has no type")
        return UnknownEvent(agent_name=str(data.get("agent_name") or ""), data=dict(data))
    known = {f.name: f for f in fields(cls)}
    missing = [
        name
        for name, f in known.items()
        if name not in data and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise ValidationError(missing[0], f"{event_type} event is missing {missing[0]!r}")
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except ValidationError:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise ValidationError("", f"bad {event_type} event: {str(exc)[:200]}") from None


def event_from_json(raw: str | bytes) -> StreamEvent:
    """Decode a stored event. Whatever ``raw`` holds, the only error is ValidationError."""
    try:
        data = loads_external(raw)
    except (ValueError, RecursionError) as exc:
        raise ValidationError("", f"event is not valid JSON: {str(exc)[:200]}") from None
    return event_from_dict(data)


def terminal_event(
    status: Literal["completed", "error", "cancelled"], message: str = "", agent_name: str = ""
) -> StatusEvent:
    """The status event that ends a task's stream."""
    return StatusEvent(status=status, message=message, agent_name=agent_name)


_IDS = random.Random()  # our own: agents that seed `random` neither shift nor repeat it
os.register_at_fork(after_in_child=_IDS.seed)


def new_event_id() -> str:
    """A unique id stored beside each event, so a retried publish is not written twice:
    64 random bits from a generator of orbiter-sync's own (no system call per id, unlike
    uuid4; reseeded from the OS in a forked child)."""
    return f"{_IDS.getrandbits(64):016x}"


def for_the_stream(event: StreamEvent) -> StreamEvent | None:
    """What a run's own event becomes in its task's stream, whatever the executor: None for
    a type the async library's readers do not know (they abort a whole stream at one);
    a terminal status as ``running`` naming it, since only settling ends a stream."""
    if event.type not in EVENT_TYPES:
        return None
    if isinstance(event, StatusEvent) and event.is_terminal:
        said = f"{event.status}: {event.message}" if event.message else event.status
        return StatusEvent(status="running", message=said, agent_name=event.agent_name)
    return event


def coerce_event(item: Any, agent_name: str = "") -> StreamEvent:
    """Turn what an agent yields into an event: events as they are, str as text, dicts by type."""
    if isinstance(item, StreamEvent):
        return item
    if isinstance(item, str):
        return TextEvent(text=item, agent_name=agent_name)
    if isinstance(item, dict):
        return event_from_dict({"agent_name": agent_name, **item})
    to_dict = getattr(item, "model_dump", None) or getattr(item, "to_dict", None)
    if callable(to_dict) and getattr(item, "type", None):
        return event_from_dict(to_dict())
    raise ValidationError("", f"cannot turn {type(item).__name__} into an event")


class EventPublisher(LayoutUser, RedisUser):
    """Writes a task's events to its stream (with TTL) and its pub/sub channel."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        stream_ttl_seconds: int = DEFAULT_EVENT_TTL,
        client: redis.Redis | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        super().__init__(redis_url, client=client, retry=retry)
        self.stream_ttl_seconds = stream_ttl_seconds
        self._publish = lua.register(self._client, "publish")

    def publish(self, task_id: str, event: StreamEvent) -> str:
        """Append ``event``; returns its stream entry id. Safe to retry.

        Only the async library's eight event types are written (``ValidationError``
        for any other): its readers abort a whole stream at a type they do not know.
        """
        if event.type not in EVENT_TYPES:
            raise ValidationError(
                "type",
                f"{event.type or 'an unknown type'!r} events are not published: "
                f"the async library's readers know only {', '.join(EVENT_TYPES)}",
            )
        payload, eid, layout = event.to_json(), new_event_id(), self.layout
        entry_id: str = self._retry.call(
            self._publish,
            keys=[layout.event_stream(task_id)],
            args=[payload, self.stream_ttl_seconds, eid, layout.event_channel(task_id)],
        )
        logger.debug("published %s event for task %s as %s", event.type, task_id, entry_id)
        return entry_id


class EventSubscriber(LayoutUser, RedisUser):
    """Reads a task's events: replay what is stored, then follow new ones."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        client: redis.Redis | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        block_seconds: float = 1.0,
    ) -> None:
        super().__init__(redis_url, client=client, retry=retry)
        self._block_ms = max(1, int(block_seconds * 1000))

    def entries(
        self, task_id: str, last_event_id: str | None = None, *, timeout: float | None = None
    ) -> Iterator[tuple[str, StreamEvent]]:
        """Yield ``(entry_id, event)`` after ``last_event_id`` until the terminal status event.

        ``timeout`` bounds the whole wait (``TaskTimeoutError``); ``None`` waits forever.
        Entry ids are what a browser sends back as ``Last-Event-ID`` to resume.
        """
        stream = self.layout.event_stream(task_id)
        cursor = last_event_id or "0"
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            block = self._block_ms
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TaskTimeoutError(task_id, timeout or 0.0, "events")
                block = max(1, min(block, int(remaining * 1000)))
            response: Any = self._retry.call(
                self._client.xread, {stream: cursor}, count=100, block=block
            )
            for _stream, batch in response or ():
                for entry_id, entry in batch:
                    cursor = entry_id
                    try:
                        event = event_from_json(entry.get("event", ""))
                    except ValidationError as exc:
                        logger.warning(
                            "skipping bad event %s of task %s: %s", entry_id, task_id, exc
                        )
                        continue
                    yield entry_id, event
                    if event.is_terminal:
                        return

    def subscribe(
        self, task_id: str, last_event_id: str | None = None, *, timeout: float | None = None
    ) -> Iterator[StreamEvent]:
        """Yield events after ``last_event_id`` (all when None) until the terminal one."""
        for _entry_id, event in self.entries(task_id, last_event_id, timeout=timeout):
            yield event

    def replay(self, task_id: str, from_id: str = "0") -> list[StreamEvent]:
        """The stored events from ``from_id`` (inclusive) on, without waiting."""
        stream = self.layout.event_stream(task_id)
        rows: Any = self._retry.call(self._client.xrange, stream, min=from_id)
        events = []
        for entry_id, entry in rows:
            try:
                events.append(event_from_json(entry.get("event", "")))
            except ValidationError as exc:
                logger.warning("skipping bad event %s of task %s: %s", entry_id, task_id, exc)
        return events
