"""Writing dead letters: entries that can never run, kept with their reason.

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
import time

import redis

from orbiter_sync import lua
from orbiter_sync.connection import RetryPolicy
from orbiter_sync.events import new_event_id
from orbiter_sync.metrics.worker import recorder
from orbiter_sync.models import is_task_id
from orbiter_sync.queue import QueueSettings

logger = logging.getLogger(__name__)

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
