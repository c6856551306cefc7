"""Taking over the entries of dead workers, and only of dead workers.

An entry idle past the visibility timeout is taken over only when its consumer
has no live heartbeat key (``orbiter:workers:{consumer}``): workers of the async
orbiter-distributed library never refresh their pending entries, so however idle
an entry of a live worker looks, it is left alone. An entry whose consumer has
no heartbeat key at all is taken over after the visibility timeout. A worker
also takes back its own idle entries that it no longer holds (ones it had to
abandon when Redis failed under it).

XAUTOCLAIM cannot skip live consumers, and a script must not read keys it was
not given (Redis Cluster refuses that), so this runs from the client: XPENDING
with IDLE, one EXISTS per distinct consumer, then XCLAIM with the same minimum
idle time, which makes a race with the owner's keep-alive harmless (a refreshed
entry is not idle enough to be claimed). What is taken over goes through the
consumer's own decoding, like a new entry: a bad one, or one delivered too
often, is dead-lettered there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis

from orbiter_sync.connection import RetryPolicy
from orbiter_sync.metrics.worker import recorder
from orbiter_sync.queue import QueueSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

# [(entry id, fields, deliveries)] -> what the consumer accepted of them
Accept = Callable[[list[tuple[str, dict[str, str], int]]], list[T]]

PAGE = 100  # pending entries looked at per XPENDING call


@dataclass
class _Page(Generic[T]):
    taken: list[T]
    last: bool  # the end of the pending list was reached


class Reclaimer:
    """Takes over idle entries of dead consumers for the consumer ``name``.

    ``held()`` gives the entry ids ``name`` holds now (its in-flight deliveries).
    """

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        settings: QueueSettings,
        retry: RetryPolicy,
        held: Callable[[], set[str]],
    ) -> None:
        self.name = name
        self.settings = settings
        self._client = client
        self._retry = retry
        self._held = held
        self._lock = threading.Lock()
        self._cursor = "-"
        self._next_check = 0.0

    def due(self) -> bool:
        """True when it is time to look for idle entries again."""
        return time.monotonic() >= self._next_check

    def checked(self) -> None:
        """Nothing was found: wait a while before looking again."""
        self._next_check = time.monotonic() + min(self.settings.visibility_timeout / 4, 5.0)

    def reclaim(self, accept: Accept[T], *, count: int = 10, max_scan: int = 10) -> list[T]:
        """Take over idle entries of dead consumers until ``accept`` has taken ``count``
        of them (it may refuse some), looking at most ``max_scan`` pages of the group's
        pending list, from where the last call stopped. A page that fails after others
        were taken ends the look: what was taken is returned, never lost."""
        taken: list[T] = []
        for _ in range(max_scan):
            try:
                page = self._take_page(accept, count - len(taken))
            except Exception:
                if not taken:
                    raise
                # what was taken is held now: hand it over rather than lose it
                logger.exception("worker %s: reclaim stopped early", self.name)
                break
            taken.extend(page.taken)
            if len(taken) >= count or page.last:
                break
        return taken

    def _take_page(self, accept: Accept[T], count: int) -> _Page[T]:
        """Look at one page of idle entries from the cursor; take over up to ``count``."""
        with self._lock:
            start = self._cursor
        rows = self._idle_entries(start)
        with self._lock:
            self._cursor = "-" if len(rows) < PAGE else "(" + str(rows[-1]["message_id"])
        claimed = self._claim(self._orphans(rows)[:count])
        if claimed:
            recorder().reclaimed(self.settings.name, len(claimed))
        for entry_id, _fields, deliveries in claimed:
            logger.warning("worker %s took over entry %s (delivery %d) of a dead worker",
                           self.name, entry_id, deliveries)  # fmt: skip
        return _Page(accept(claimed) if claimed else [], last=len(rows) < PAGE)

    def _idle_entries(self, start: str) -> list[dict[str, Any]]:
        s = self.settings
        try:
            rows: Any = self._retry.call(
                self._client.xpending_range,
                s.stream,
                s.group,
                min=start,
                max="+",
                count=PAGE,
                idle=int(s.visibility_timeout * 1000),
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return []  # no group (yet, or Redis lost it): nothing is pending
        return list(rows or [])

    def _orphans(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows whose consumer is dead, or which are ours but no longer held."""
        consumers = sorted({str(row["consumer"]) for row in rows} - {self.name})

        def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for consumer in consumers:
                pipe.exists(self.settings.layout.worker_heartbeat(consumer))
            return pipe.execute()

        alive = {c for c, exists in zip(consumers, self._retry.call(read), strict=True) if exists}
        held = self._held()
        return [
            row
            for row in rows
            if (row["consumer"] == self.name and row["message_id"] not in held)
            or (row["consumer"] != self.name and row["consumer"] not in alive)
        ]

    def _claim(self, rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, str], int]]:
        if not rows:
            return []
        s = self.settings
        deliveries = {str(row["message_id"]): int(row["times_delivered"]) + 1 for row in rows}
        claimed: Any = self._retry.call(
            self._client.xclaim,
            s.stream,
            s.group,
            self.name,
            int(s.visibility_timeout * 1000),
            list(deliveries),
        )
        taken = []
        for entry_id, fields in claimed or []:
            if fields is None:  # deleted from the stream while pending: nothing to run
                self._retry.call(self._client.xack, s.stream, s.group, entry_id)
                continue
            taken.append((str(entry_id), dict(fields), deliveries.get(str(entry_id), 1)))
        return taken
