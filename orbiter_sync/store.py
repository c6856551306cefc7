"""Reading task state: the ``orbiter:task:{id}`` hashes and the ``orbiter:task:index`` set
(one per shard on a Redis Cluster, each under its shard's hash tag: layout.py).

The store only reads (and prunes ids of expired hashes from the index). Every
status write is a Lua script of the producer or the consumer, and all of them
go through the one transition rule in ``lua/lib/status.lua``.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from orbiter_sync import keys
from orbiter_sync.connection import DEFAULT_RETRY, RedisUser, RetryPolicy
from orbiter_sync.errors import ValidationError
from orbiter_sync.models import TaskResult, TaskStatus
from orbiter_sync.shards import LayoutUser

logger = logging.getLogger(__name__)


class TaskStore(LayoutUser, RedisUser):
    """Reads task status hashes."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        prefix: str = keys.TASK_PREFIX,
        client: redis.Redis | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        super().__init__(redis_url, client=client, retry=retry)
        self.prefix = prefix

    @property
    def index_key(self) -> str:
        """The task index (of shard 0, on a cluster: see :meth:`index_keys`)."""
        return self.layout.task_index(0, self.prefix)

    def index_keys(self) -> list[str]:
        """The task index of every shard."""
        layout = self.layout
        return [layout.task_index(shard, self.prefix) for shard in range(layout.shards)]

    def key(self, task_id: str) -> str:
        return self.layout.task_hash(task_id, self.prefix)

    def _hash_keys(self, task_ids: list[str]) -> list[str]:
        """The hash of each task, the layout found once for them all."""
        layout = self.layout
        return [layout.task_hash(task_id, self.prefix) for task_id in task_ids]

    def get_status(self, task_id: str) -> TaskResult | None:
        """The task's state, or None when no hash exists (never submitted, or expired)."""
        data: dict[str, str] = self._retry.call(self._client.hgetall, self.key(task_id))  # type: ignore[arg-type]
        return TaskResult.from_hash(task_id, data) if data else None

    def statuses(self, task_ids: list[str]) -> dict[str, TaskStatus | None]:
        """The status of each task in one round trip (None for unknown or unreadable ones)."""

        def fetch() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for key in self._hash_keys(task_ids):
                pipe.hget(key, "status")
            return pipe.execute(raise_on_error=False)  # a key of the wrong type reads as None

        statuses = self._retry.call(fetch)
        return {
            t: TaskStatus.parse(raw) if isinstance(raw, str) else None
            for t, raw in zip(task_ids, statuses, strict=True)
        }

    def list_tasks(
        self, status: TaskStatus | str | None = None, limit: int = 100
    ) -> list[TaskResult]:
        """Known tasks, newest first, optionally only those in ``status``.

        Ids whose hash has expired are removed from the index on the way.
        """
        wanted = TaskStatus(status) if status is not None else None
        results = [r for r in self._scan() if wanted is None or r.status == wanted]
        results.sort(key=_newest_first_key, reverse=True)
        return results[: max(0, limit)]

    def prune_index(self) -> int:
        """Remove ids of expired hashes from the index; returns how many went."""
        before = sum(int(self._retry.call(self._client.scard, k)) for k in self.index_keys())
        remaining = sum(1 for _ in self._scan())
        return max(0, before - remaining)

    def _scan(self, batch: int = 200) -> list[TaskResult]:
        results: list[TaskResult] = []
        for index_key in self.index_keys():
            cursor = 0
            while True:
                response: Any = self._retry.call(
                    self._client.sscan, index_key, cursor=cursor, count=batch
                )
                cursor, members = response
                if members:
                    results += self._load(list(members), index_key)
                if cursor == 0:
                    break
        return results

    def _load(self, task_ids: list[str], index_key: str) -> list[TaskResult]:
        def fetch() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for key in self._hash_keys(task_ids):
                pipe.hgetall(key)
            return pipe.execute(raise_on_error=False)

        loaded: list[TaskResult] = []
        stale: list[str] = []
        for task_id, data in zip(task_ids, self._retry.call(fetch), strict=True):
            if isinstance(data, Exception):  # a key of the wrong type: not a task of ours
                logger.warning("task %s: unreadable status hash (%s)", task_id, data)
                continue
            if not data:
                stale.append(task_id)
                continue
            try:
                loaded.append(TaskResult.from_hash(task_id, data))
            except ValidationError as exc:
                logger.warning("task %s: unreadable status hash (%s)", task_id, exc)
        if stale:
            self._retry.call(self._client.srem, index_key, *stale)
            logger.debug("pruned %d expired task ids from %s", len(stale), index_key)
        return loaded


def _newest_first_key(result: TaskResult) -> float:
    return result.created_at or result.started_at or result.completed_at or 0.0
