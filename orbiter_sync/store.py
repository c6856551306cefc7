"""Task state: the ``orbiter:task:{id}`` hashes and the ``orbiter:task:index`` set.

Status changes are conditional and atomic (a Lua script): a completed or
cancelled task never changes again, and a failed one only moves on to
``retrying`` (the retry flow). So a late writer, such as a worker that finishes
a run just after it was cancelled, cannot turn a final state back into running.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from orbiter_sync import keys
from orbiter_sync.connection import DEFAULT_RETRY, RetryPolicy, connect
from orbiter_sync.errors import ValidationError
from orbiter_sync.models import TaskResult, TaskStatus, encode_hash_value

logger = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 86400

# The transition rule, shared with the broker's scripts.
TRANSITION_LUA = """
local FINAL = {completed = true, cancelled = true}
local function may_become(current, new)
  if not current or current == new then return true end
  if FINAL[current] then return false end
  if current == 'failed' then return new == 'retrying' end
  return true
end
"""

# KEYS: task hash, index. ARGV: task_id, status, ttl, then field/value pairs.
# Returns {1} when applied, {0, current status} when refused.
_SET_STATUS_LUA = (
    TRANSITION_LUA
    + """
local current = redis.call('HGET', KEYS[1], 'status')
if not may_become(current, ARGV[2]) then return {0, current} end
redis.call('HSET', KEYS[1], 'task_id', ARGV[1], 'status', ARGV[2], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return {1}
"""
)


def may_become(current: TaskStatus | None, new: TaskStatus) -> bool:
    """The transition rule of ``TRANSITION_LUA``, for callers that check before writing."""
    if current is None or current == new:
        return True
    if current in (TaskStatus.COMPLETED, TaskStatus.CANCELLED):
        return False
    if current == TaskStatus.FAILED:
        return new == TaskStatus.RETRYING
    return True


def hash_fields(fields: dict[str, Any]) -> list[str]:
    """Flatten ``fields`` into the field/value list a Lua script's ARGV carries."""
    flat: list[str] = []
    for name, value in fields.items():
        flat += [name, encode_hash_value(value)]
    return flat


class TaskStore:
    """Reads and writes task status hashes."""

    def __init__(
        self,
        redis_url: str,
        *,
        prefix: str = keys.TASK_PREFIX,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        client: redis.Redis | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._client = client if client is not None else connect(redis_url)
        self._owns_client = client is None
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._retry = retry
        self._set_status = self._client.register_script(_SET_STATUS_LUA)

    @property
    def index_key(self) -> str:
        return keys.task_index(self.prefix)

    def key(self, task_id: str) -> str:
        return keys.task_hash(task_id, self.prefix)

    def set_status(self, task_id: str, status: TaskStatus | str, **fields: Any) -> bool:
        """Set ``status`` and extra ``fields`` (worker_id, error, result, ...), refreshing the TTL.

        Returns False, writing nothing, when the transition is not allowed (the
        task is completed or cancelled, or failed and ``status`` is not retrying).
        """
        status = TaskStatus(status)
        applied, *current = self._retry.call(
            self._set_status,
            keys=[self.key(task_id), self.index_key],
            args=[task_id, status.value, self.ttl_seconds, *hash_fields(fields)],
        )
        if not applied:
            logger.info("task %s: not moving from %s to %s", task_id, current[0], status.value)
        return bool(applied)

    def get_status(self, task_id: str) -> TaskResult | None:
        """The task's state, or None when no hash exists (never submitted, or expired)."""
        data: dict[str, str] = self._retry.call(self._client.hgetall, self.key(task_id))  # type: ignore[arg-type]
        return TaskResult.from_hash(task_id, data) if data else None

    def statuses(self, task_ids: list[str]) -> dict[str, TaskStatus | None]:
        """The status of each task in one round trip (None for unknown or unreadable ones)."""

        def fetch() -> list[str | None]:
            pipe = self._client.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.hget(self.key(task_id), "status")
            return pipe.execute()

        found: dict[str, TaskStatus | None] = {}
        for task_id, raw in zip(task_ids, self._retry.call(fetch), strict=True):
            try:
                found[task_id] = TaskStatus(raw) if raw else None
            except ValueError:
                found[task_id] = None
        return found

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
        before = self._retry.call(self._client.scard, self.index_key)
        remaining = sum(1 for _ in self._scan())
        return max(0, int(before) - remaining)

    def _scan(self, batch: int = 200) -> list[TaskResult]:
        results: list[TaskResult] = []
        cursor = 0
        while True:
            response: Any = self._retry.call(
                self._client.sscan, self.index_key, cursor=cursor, count=batch
            )
            cursor, members = response
            if members:
                results += self._load(list(members))
            if cursor == 0:
                return results

    def _load(self, task_ids: list[str]) -> list[TaskResult]:
        def fetch() -> list[dict[str, str]]:
            pipe = self._client.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.hgetall(self.key(task_id))
            return pipe.execute()

        loaded: list[TaskResult] = []
        stale: list[str] = []
        for task_id, data in zip(task_ids, self._retry.call(fetch), strict=True):
            if not data:
                stale.append(task_id)
                continue
            try:
                loaded.append(TaskResult.from_hash(task_id, data))
            except ValidationError as exc:
                logger.warning("task %s: unreadable status hash (%s)", task_id, exc)
        if stale:
            self._retry.call(self._client.srem, self.index_key, *stale)
            logger.debug("pruned %d expired task ids from %s", len(stale), self.index_key)
        return loaded

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def _newest_first_key(result: TaskResult) -> float:
    return result.created_at or result.started_at or result.completed_at or 0.0
