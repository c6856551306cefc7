"""Wire models: task status, the queued payload and the stored result.

These mirror the async orbiter-distributed models field by field (see the wire
contract in DESIGN.md) without depending on pydantic: small frozen dataclasses
that validate on construction and raise one :class:`ValidationError` naming the
bad field. Fields a newer or older peer added are kept in ``extra`` and written
back unchanged.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from orbiter_sync.errors import ValidationError


class TaskStatus(StrEnum):
    """Lifecycle of a task, as stored in the ``status`` field of its hash."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRYING = "retrying"

    @property
    def is_terminal(self) -> bool:
        """True for the states a waiting client stops at."""
        return self in TERMINAL_STATUSES

    @classmethod
    def parse(cls, raw: str | None) -> TaskStatus | None:
        """The status named by ``raw``, or None when it names none."""
        try:
            return cls(raw) if raw else None
        except ValueError:
            return None


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


def _new_task_id() -> str:
    return uuid.uuid4().hex


def _check_number(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(name, f"must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValidationError(name, "must be a finite number")
    if positive and number <= 0:
        raise ValidationError(name, f"must be greater than 0, got {value!r}")
    if number < 0:
        raise ValidationError(name, f"must not be negative, got {value!r}")
    return number


def _check_type(name: str, value: Any, expected: type | tuple[type, ...], label: str) -> None:
    if not isinstance(value, expected):
        raise ValidationError(name, f"must be {label}, got {type(value).__name__}")


@dataclass(frozen=True, kw_only=True)
class TaskPayload:
    """One agent run, as queued on the ``payload`` field of a stream entry."""

    task_id: str = field(default_factory=_new_task_id)
    agent_config: dict[str, Any] = field(default_factory=dict)
    input: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    detailed: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    timeout_seconds: float = 300.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Fields this version does not know, kept so they survive a round trip."""

    def __post_init__(self) -> None:
        _check_type("task_id", self.task_id, str, "a string")
        if not self.task_id or len(self.task_id) > 200 or not self.task_id.isprintable():
            raise ValidationError("task_id", "must be 1-200 printable characters")
        _check_type("agent_config", self.agent_config, dict, "an object")
        _check_type("input", self.input, str, "a string")
        _check_type("messages", self.messages, list, "a list")
        for position, message in enumerate(self.messages):
            if not isinstance(message, dict):
                raise ValidationError(
                    "messages", f"item {position} must be an object, got {type(message).__name__}"
                )
        if self.model is not None:
            _check_type("model", self.model, str, "a string or null")
        _check_type("detailed", self.detailed, bool, "true or false")
        _check_type("metadata", self.metadata, dict, "an object")
        object.__setattr__(self, "created_at", _check_number("created_at", self.created_at))
        object.__setattr__(
            self,
            "timeout_seconds",
            _check_number("timeout_seconds", self.timeout_seconds, positive=True),
        )
        _check_type("extra", self.extra, dict, "an object")
        for name in ("agent_config", "messages", "metadata", "extra"):
            try:
                json.dumps(getattr(self, name))
            except (TypeError, ValueError) as exc:
                raise ValidationError(name, f"must be JSON data: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The wire form: known fields plus the kept unknown ones."""
        data = dict(self.extra)
        for f in fields(self):
            if f.name != "extra":
                data[f.name] = getattr(self, f.name)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> TaskPayload:
        """Build from decoded JSON; unknown fields go to ``extra``."""
        if not isinstance(data, dict):
            raise ValidationError("", f"payload must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json(cls, raw: str | bytes) -> TaskPayload:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValidationError("", f"payload is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _optional_float(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


_RESULT_FIELDS = (
    "task_id",
    "status",
    "result",
    "error",
    "started_at",
    "completed_at",
    "worker_id",
    "retries",
)


@dataclass(frozen=True, kw_only=True)
class TaskResult:
    """The state of one task, as kept in its ``orbiter:task:{id}`` hash."""

    task_id: str
    status: TaskStatus = TaskStatus.PENDING
    result: Any = None
    error: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    worker_id: str | None = None
    retries: int = 0
    extra: dict[str, str] = field(default_factory=dict, compare=False)
    """Other hash fields (orbiter-sync's own, such as ``created_at``)."""

    @property
    def duration(self) -> float | None:
        """Seconds from start to completion, when both are known."""
        if self.started_at is None or self.completed_at is None:
            return None
        return max(0.0, self.completed_at - self.started_at)

    @property
    def created_at(self) -> float | None:
        return _optional_float(self.extra.get("created_at"))

    @classmethod
    def from_hash(cls, task_id: str, data: Mapping[str, str]) -> TaskResult:
        """Parse a task hash; lenient on numbers, strict on ``status``."""
        raw_status = data.get("status") or TaskStatus.PENDING.value
        try:
            status = TaskStatus(raw_status)
        except ValueError:
            raise ValidationError("status", f"unknown task status {raw_status!r}") from None
        raw_result = data.get("result") or ""
        result: Any = None
        if raw_result:
            try:
                result = json.loads(raw_result)
            except ValueError:
                result = {"output": raw_result}
        try:
            retries = int(data.get("retries") or 0)
        except ValueError:
            retries = 0
        return cls(
            task_id=data.get("task_id") or task_id,
            status=status,
            result=result,
            error=data.get("error") or None,
            started_at=_optional_float(data.get("started_at")),
            completed_at=_optional_float(data.get("completed_at")),
            worker_id=data.get("worker_id") or None,
            retries=retries,
            extra={k: v for k, v in data.items() if k not in _RESULT_FIELDS},
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (used by ``--json`` output)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _RESULT_FIELDS}
        data["status"] = self.status.value
        data.update({k: v for k, v in self.extra.items() if k not in data})
        return data


def encode_hash_value(value: Any) -> str:
    """Encode one hash field the way the async store does (objects as JSON, None as "")."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float):
        return repr(value)
    return str(value)
