"""Admin reads of a queue: its stats and its dead letters (the CLI and exporters use them).

Nothing here writes: reading a queue's state is safe from anywhere, at any time.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from orbiter_sync.queue import QueueUser


@dataclass(frozen=True)
class QueueStats:
    """A snapshot of one queue, as ``orbiter-sync queue stats`` shows it."""

    queue: str
    length: int
    """Entries in the stream: waiting ones plus those claimed and not yet settled."""
    pending: int
    """Entries claimed by a worker and not yet settled (the group's PEL)."""
    lag: int | None
    """Entries no worker has claimed yet (None when Redis cannot tell)."""
    oldest_pending_age: float | None
    """Seconds since the oldest claimed-but-unsettled entry was queued."""
    dead_letters: int
    delayed_retries: int
    consumers: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class QueueAdmin(QueueUser):
    """Reads the state of one queue."""

    def stats(self) -> QueueStats:
        """Length, pending entries, lag, oldest pending age, dead letters and delayed retries."""
        s = self.settings

        def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            pipe.xlen(s.name)
            pipe.xlen(s.dead_letter_key)
            pipe.zcard(s.delayed_key)
            pipe.exists(s.name)
            return pipe.execute()

        length, dead, delayed, exists = self._retry.call(read)
        group: dict[str, Any] = {}
        oldest: float | None = None
        if exists:
            groups: Any = self._retry.call(self._client.xinfo_groups, s.name)
            group = next((g for g in groups if g.get("name") == s.group), {})
        if group.get("pending"):
            summary: Any = self._retry.call(self._client.xpending, s.name, s.group)
            first = summary.get("min")
            if first:
                oldest = max(0.0, time.time() - int(str(first).split("-")[0]) / 1000)
        lag = group.get("lag") if group else length
        return QueueStats(
            queue=s.name,
            length=int(length),
            pending=int(group.get("pending") or 0),
            lag=None if lag is None else int(lag),
            oldest_pending_age=oldest,
            dead_letters=int(dead),
            delayed_retries=int(delayed),
            consumers=int(group.get("consumers") or 0),
        )

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The newest dead letters, newest first, each with its ``id``."""
        rows: Any = self._retry.call(
            self._client.xrevrange, self.settings.dead_letter_key, count=count
        )
        return [{"id": entry_id, **fields} for entry_id, fields in rows]
