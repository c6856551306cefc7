"""Wire models: task status, the queued payload and the stored result.

These mirror the async orbiter-distributed models field by field (see the wire
contract in DESIGN.md) without depending on pydantic: small frozen dataclasses
that validate on construction and raise one :class:`ValidationError` naming the
bad field. Fields a newer or older peer added are kept in ``extra`` and written
back unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import math
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import PurePath
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


# Task ids become Redis key names (orbiter:task:{id}, orbiter:stream:{id} ...): a safe
# character set (no `{` or `}`, which are Redis Cluster hash tags), a bounded length,
# and never a name our own keys use under the task prefix.
TASK_ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,199}")
RESERVED_TASK_IDS = frozenset({"index"})


def task_id_problem(task_id: Any) -> str | None:
    """Why ``task_id`` cannot be a task id, or None when it can."""
    if not isinstance(task_id, str):
        return f"must be a string, got {type(task_id).__name__}"
    if not TASK_ID_PATTERN.fullmatch(task_id):
        return (
            "must be 1-200 characters of A-Z, a-z, 0-9 and _ . : @ + = -, "
            "starting with a letter, a digit or _"
        )
    if task_id in RESERVED_TASK_IDS:
        return f"{task_id!r} is reserved"
    return None


def is_task_id(task_id: Any) -> bool:
    return task_id_problem(task_id) is None


def _check_number(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(name, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ValidationError(name, "must be a finite number") from None
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


MAX_TASK_RETRIES = 100
# orbiter-sync's own payload fields are written only when set: a payload without them
# reads the same in every version, and the async library's is unchanged
_OMITTED_WHEN: dict[str, Any] = {"max_retries": None, "retry_timeouts": False}


def _ours_fit(data: dict[str, Any]) -> bool:
    """Whether a payload's ``max_retries`` and ``retry_timeouts`` are ours (right types)."""
    retries, timeouts = data.get("max_retries"), data.get("retry_timeouts", False)
    fits = retries is None or (type(retries) is int and 0 <= retries <= MAX_TASK_RETRIES)
    return fits and isinstance(timeouts, bool)


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
    max_retries: int | None = None
    """Retries after a failed attempt (None: the worker's ``--max-retries``); our own field."""
    retry_timeouts: bool = False
    """Whether an attempt that ran past ``timeout_seconds`` is retried (orbiter-sync's own)."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Fields this version does not know, kept so they survive a round trip."""

    def __post_init__(self) -> None:
        problem = task_id_problem(self.task_id)
        if problem:
            raise ValidationError("task_id", problem)
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
        if not _ours_fit({"max_retries": self.max_retries, "retry_timeouts": self.retry_timeouts}):
            raise ValidationError(
                "max_retries", f"must be an integer from 0 to {MAX_TASK_RETRIES} or null, and "
                "retry_timeouts true or false"
            )  # fmt: skip
        _check_type("extra", self.extra, dict, "an object")
        for name in ("agent_config", "messages", "metadata", "extra"):
            try:
                json.dumps(getattr(self, name))
            except (TypeError, ValueError, RecursionError) as exc:
                raise ValidationError(name, f"must be JSON data: {_short(exc)}") from None

    def to_dict(self) -> dict[str, Any]:
        """The wire form: known fields plus the kept unknown ones."""
        data = dict(self.extra)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and not (
                f.name in _OMITTED_WHEN and value == _OMITTED_WHEN[f.name]
            ):
                data[f.name] = value
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> TaskPayload:
        """Build from decoded JSON; unknown fields go to ``extra``.

        A payload must carry its ``task_id``: one is never made up for it.
        """
        if not isinstance(data, dict):
            raise ValidationError("", f"payload must be a JSON object, got {type(data).__name__}")
        if "task_id" not in data:
            raise ValidationError("task_id", "the payload has no task_id")
        known = {f.name for f in fields(cls)} - {"extra"}
        if not _ours_fit(data):  # another client's field of the same name: kept, not read
            known -= set(_OMITTED_WHEN)
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json(cls, raw: str | bytes) -> TaskPayload:
        """Decode a queued payload. Whatever ``raw`` holds, the only error is ValidationError."""
        try:
            data = loads_external(raw)
        except (ValueError, RecursionError) as exc:  # UnicodeError is a ValueError
            raise ValidationError("", f"payload is not valid JSON: {_short(exc)}") from None
        try:
            return cls.from_dict(data)
        except ValidationError:
            raise
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise ValidationError("", f"payload does not fit: {_short(exc)}") from None


def loads_external(raw: str | bytes) -> Any:
    """``json.loads`` for data from outside, UTF-8 only: bytes that were not UTF-8 arrive
    as lone surrogates and are refused. NaN and Infinity are read, as Python (and so
    the async library) writes them. Raises ValueError (UnicodeError included) or
    RecursionError (nesting too deep)."""
    if isinstance(raw, str):
        raw.encode("utf-8")
    return json.loads(raw)


def readable(text: str) -> str:
    """``text`` with any bytes that were not UTF-8 (read as lone surrogates) shown as
    U+FFFD, so it can be printed, logged and sent to a browser."""
    if not isinstance(text, str):
        return str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def describe(exc: BaseException) -> str:
    """``str(exc)``, or a stand-in when even that raises (an exception's own ``__str__``)."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - user code: anything goes
        return f"<{type(exc).__name__} whose message cannot be read>"


def _short(exc: BaseException, limit: int = 200) -> str:
    text = describe(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _optional_float(value: str | None) -> float | None:
    """A finite number from a hash field, or None (missing, garbage, inf, nan)."""
    if not value:
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


MAX_RETRIES_SHOWN = 1_000_000  # a retry count beyond this is garbage, shown as 0

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

    @property
    def traceback(self) -> str:
        """The last failed attempt's traceback, as the worker kept it (bounded)."""
        return self.extra.get("traceback", "")

    @property
    def error_summary(self) -> str:
        """``Class: message`` for readers: the hash's ``error`` is ``str(exc)``, as the async
        worker writes it, and our workers keep the class in ``error_type`` beside it."""
        error, kind = self.error or "", self.extra.get("error_type", "")
        return f"{kind}: {error}" if kind and error else error

    @classmethod
    def from_hash(cls, task_id: str, data: Mapping[str, str]) -> TaskResult:
        """Parse a task hash; lenient on numbers, strict on ``status``."""
        data = {readable(k): readable(v) for k, v in data.items()}
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
            except (ValueError, RecursionError):
                result = {"output": raw_result}  # kept as the text it is
        try:
            retries = int(data.get("retries") or 0)
        except (ValueError, OverflowError):
            retries = 0
        if not 0 <= retries <= MAX_RETRIES_SHOWN:
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


def json_default(value: Any) -> Any:
    """How values JSON has no type for are stored in a result: datetimes, dates and times
    as ISO 8601 text, bytes as UTF-8 text (undecodable bytes as ``\\ufffd``), sets and
    tuples as lists, Decimal, UUID and paths as text, dataclasses and pydantic models as
    their fields. Anything else is refused (TypeError naming its type)."""
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, decimal.Decimal | uuid.UUID | PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump) and not isinstance(value, type):
        return model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON data")


def encode_result(result: Any) -> str:
    """``result`` as stored JSON, by :func:`json_default`'s rules.

    Raises ``ValidationError`` naming what cannot be stored (a custom object, NaN,
    a cycle, nesting too deep).
    """
    try:
        return json.dumps(result, separators=(",", ":"), default=json_default, allow_nan=False)
    except Exception as exc:  # noqa: BLE001 - a model_dump or a deep copy may raise anything
        raise ValidationError("result", f"cannot be stored as JSON: {_short(exc)}") from None


def encode_hash_value(value: Any) -> str:
    """Encode one hash field the way the async store does (objects as JSON, None as "")."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return encode_result(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)
