"""Dead letters: entries that can never run, kept with their reason; written here, and
read back as :class:`DeadLetter`.

A dead letter (``{queue}:dead``, a stream capped near 100,000 entries) keeps the
entry id, the task id when one could be read, the reason, a bounded prefix of
the raw entry (64 KiB) with its full length, the worker and the time. Writing
one is a script (``lua/dead_letter.lua``) that also acknowledges the entry and
fails its task; it writes only for an entry the consumer still holds, so a call
repeated after a lost reply writes one dead letter.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from orbiter_sync import lua
from orbiter_sync.connection import RetryPolicy
from orbiter_sync.errors import DeadLetterError, ValidationError
from orbiter_sync.events import new_event_id
from orbiter_sync.metrics.worker import recorder
from orbiter_sync.models import TaskPayload, is_task_id
from orbiter_sync.queue import MAX_TIMEOUT_SECONDS, QueueSettings

logger = logging.getLogger(__name__)

STREAM_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")  # ASCII digits, as Redis reads them
DEAD_LETTER_MAXLEN = 100_000
DEAD_LETTER_ENTRY_MAX = 64 * 1024  # characters of the raw entry a dead letter keeps


class DeadLetterWriter:
    """Dead-letters entries the consumer ``name`` holds."""

    def __init__(
        self, client: redis.Redis, name: str, settings: QueueSettings, retry: RetryPolicy
    ) -> None:
        self.name = name
        self.settings = settings
        self._retry = retry
        self._script = lua.register(client, "dead_letter")

    def write(self, entry_id: str, reason: str, fields: dict[str, str], task_id: str) -> bool:
        """True when the entry was dead-lettered, False when ``name`` did not hold it."""
        logger.error(
            "worker %s dead-lettered entry %s (task %s): %s",
            self.name,
            entry_id,
            task_id or "-",
            reason,
        )
        s, now = self.settings, time.time()
        entry = json.dumps(fields)
        written = self._retry.call(
            self._script,
            keys=[
                s.stream,
                s.dead_letter_key,
                s.task_key(task_id),
                s.index_key,
                s.event_stream(task_id),
                *s.counts_keys(now),
            ],
            args=[
                s.group,
                entry_id,
                reason,
                entry[:DEAD_LETTER_ENTRY_MAX],
                len(entry),
                self.name,
                repr(now),
                task_id,
                s.task_ttl,
                s.event_ttl,
                s.event_channel(task_id),
                new_event_id(),
                DEAD_LETTER_MAXLEN,
            ],
        )
        if written:
            recorder().dead_lettered(s.name)
        return bool(written)


def task_id_of(raw: str | None) -> str:
    """The task id of a payload that failed validation, when a valid one can be read."""
    try:
        data = json.loads(raw or "")
    except (ValueError, RecursionError):
        return ""
    task_id = data.get("task_id") if isinstance(data, dict) else None
    return task_id if isinstance(task_id, str) and is_task_id(task_id) else ""


def _finite(value: object) -> float | None:
    try:
        number = float(str(value)[:64]) if value not in (None, "") else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter stream ``{queue}:dead``, as ``dead_letter.lua`` wrote it."""

    id: str
    """The dead letter's own stream id (what a requeue names)."""
    entry_id: str
    """The id the entry had on the queue."""
    task_id: str
    """"" when no valid task id could be read from the entry."""
    reason: str
    worker_id: str
    dead_at: float
    """Unix time it was dead-lettered (the stream id's time when the field is unreadable)."""
    entry_length: int
    """Characters of the whole entry (its fields as JSON); ``entry`` keeps at most 64 KiB."""
    entry: str = field(repr=False)

    @classmethod
    def from_fields(cls, letter_id: str, fields: dict[str, str]) -> DeadLetter:
        entry = fields.get("entry") or ""
        length = _finite(fields.get("entry_length"))
        dead_at = _finite(fields.get("dead_at"))
        if dead_at is None or dead_at <= 0:
            dead_at = int(letter_id.split("-")[0]) / 1000
        return cls(
            id=letter_id,
            entry_id=fields.get("entry_id") or "",
            task_id=fields.get("task_id") or "",
            reason=fields.get("reason") or "",
            worker_id=fields.get("worker_id") or "",
            dead_at=dead_at,
            entry_length=len(entry) if length is None or length < 0 else int(length),
            entry=entry,
        )

    @property
    def truncated(self) -> bool:
        """True when ``entry`` holds only a prefix of what was dead-lettered."""
        return len(self.entry) < self.entry_length

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "truncated": self.truncated}

    def payload(self) -> TaskPayload:
        """The task this dead letter held, decoded as a worker would; ``DeadLetterError``
        saying why when it cannot be."""
        problem = f"dead letter {self.id} cannot be requeued"
        if self.truncated:
            raise DeadLetterError(f"{problem}: it keeps only the first {len(self.entry)} of "
                                  f"the entry's {self.entry_length} characters")  # fmt: skip
        try:
            fields = json.loads(self.entry)
        except (ValueError, RecursionError):
            raise DeadLetterError(f"{problem}: its entry is not JSON") from None
        raw = fields.get("payload") if isinstance(fields, dict) else None
        if not isinstance(raw, str):
            raise DeadLetterError(f"{problem}: its entry has no payload field")
        try:
            payload = TaskPayload.from_json(raw)
        except ValidationError as exc:
            raise DeadLetterError(f"{problem}: its payload cannot be decoded ({exc})") from None
        if payload.timeout_seconds > MAX_TIMEOUT_SECONDS:
            raise DeadLetterError(f"{problem}: its timeout_seconds is over 7 days")
        return payload
