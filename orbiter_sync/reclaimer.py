"""Taking over the entries of dead workers: those idle past the visibility timeout.

A worker's consumer asks its :class:`Reclaimer` on the claim path, at most once
every quarter of the visibility timeout (5 s at most); it follows XAUTOCLAIM's
cursor through the group's pending list (``lua/reclaim.lua``). What it takes
over goes through the consumer's own decoding, like a new entry: a bad one, or
one delivered too often, is dead-lettered there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from orbiter_sync import lua
from orbiter_sync.connection import RetryPolicy
from orbiter_sync.queue import QueueSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

# (entry id, fields, deliveries) -> what the consumer made of it, or None
Accept = Callable[[str, dict[str, str], int], T | None]


class Reclaimer:
    """Takes over idle entries for the consumer ``name``."""

    def __init__(
        self, client: redis.Redis, name: str, settings: QueueSettings, retry: RetryPolicy
    ) -> None:
        self.name = name
        self.settings = settings
        self._retry = retry
        self._script = lua.register(client, "reclaim")
        self._lock = threading.Lock()
        self._cursor = "0-0"
        self._next_check = 0.0

    def due(self) -> bool:
        """True when it is time to look for idle entries again."""
        return time.monotonic() >= self._next_check

    def checked(self) -> None:
        """Nothing was found: wait a while before looking again."""
        self._next_check = time.monotonic() + min(self.settings.visibility_timeout / 4, 5.0)

    def reclaim(self, accept: Accept[T], *, count: int = 10, max_scan: int = 100) -> list[T]:
        """Take over entries idle longer than the visibility timeout until ``accept`` has
        taken ``count`` of them (it may refuse some), following XAUTOCLAIM's cursor for
        at most ``max_scan`` steps."""
        s = self.settings
        min_idle_ms = int(s.visibility_timeout * 1000)
        taken: list[T] = []
        for _ in range(max_scan):
            with self._lock:
                cursor = self._cursor
            reply: Any = self._retry.call(
                self._script,
                keys=[s.name],
                args=[s.group, self.name, min_idle_ms, cursor, count - len(taken)],
            )
            next_cursor, entries = reply
            with self._lock:
                self._cursor = next_cursor
            for entry_id, flat_fields, deliveries in entries:
                fields = dict(zip(flat_fields[::2], flat_fields[1::2], strict=True))
                logger.warning(
                    "worker %s reclaimed entry %s (delivery %d) from a dead worker",
                    self.name,
                    entry_id,
                    deliveries,
                )
                accepted = accept(entry_id, fields, int(deliveries))
                if accepted is not None:
                    taken.append(accepted)
            if len(taken) >= count or next_cursor == "0-0":
                break
        return taken
