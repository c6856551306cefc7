"""Fleet health from the heartbeat hashes: ``get_worker_fleet_status`` and ``WorkerHealthCheck``.

A worker is alive while its heartbeat is younger than 60 seconds (the guide's
rule). ``WorkerHealthCheck(...).check()`` is sync and returns healthy, degraded
(heartbeat late, or the worker is stopping) or unhealthy (no heartbeat, or too old).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import redis

from orbiter_sync import keys
from orbiter_sync.connection import DEFAULT_RETRY, RetryPolicy, connect

ALIVE_WITHIN = 60.0
DEGRADED_AFTER = 20.0  # two missed beats at the default heartbeat_ttl of 30 s

HealthStatus = Literal["healthy", "degraded", "unhealthy"]


def _number(data: dict[str, str], name: str) -> float:
    try:
        return float(data.get(name) or 0)
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class WorkerHealth:
    """One worker's heartbeat, as read from ``orbiter:workers:{id}``."""

    worker_id: str
    status: str
    hostname: str
    tasks_processed: int
    tasks_failed: int
    current_task_id: str
    concurrency: int
    started_at: float
    last_heartbeat: float
    alive: bool
    running_task_ids: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def heartbeat_age(self) -> float:
        return max(0.0, time.time() - self.last_heartbeat)

    @classmethod
    def from_hash(
        cls, worker_id: str, data: dict[str, str], *, now: float | None = None
    ) -> WorkerHealth:
        last = _number(data, "last_heartbeat")
        now = time.time() if now is None else now
        running = tuple(filter(None, (data.get("running_task_ids") or "").split(",")))
        return cls(
            worker_id=worker_id,
            status=data.get("status") or "unknown",
            hostname=data.get("hostname") or "",
            tasks_processed=int(_number(data, "tasks_processed")),
            tasks_failed=int(_number(data, "tasks_failed")),
            current_task_id=data.get("current_task_id") or "",
            concurrency=int(_number(data, "concurrency")),
            started_at=_number(data, "started_at"),
            last_heartbeat=last,
            alive=now - last < ALIVE_WITHIN,
            running_task_ids=running,
            extra={k: v for k, v in data.items() if k not in _KNOWN},
        )


_KNOWN = {f for f in WorkerHealth.__dataclass_fields__} - {"alive", "extra"}


def get_worker_fleet_status(
    redis_url: str, *, client: redis.Redis | None = None, retry: RetryPolicy = DEFAULT_RETRY
) -> list[WorkerHealth]:
    """Every worker with a heartbeat key, sorted by worker id."""
    own = client is None
    client = client if client is not None else connect(redis_url)
    try:
        ids = sorted(retry.call(lambda: list(client.scan_iter(keys.WORKER_PATTERN, count=500))))

        def fetch() -> list[dict[str, str]]:
            pipe = client.pipeline(transaction=False)
            for key in ids:
                pipe.hgetall(key)
            return pipe.execute()

        now = time.time()
        return [
            WorkerHealth.from_hash(key[len(keys.WORKER_PREFIX) :], data, now=now)
            for key, data in zip(ids, retry.call(fetch), strict=True)
            if data
        ]
    finally:
        if own:
            client.close()


@dataclass(frozen=True)
class HealthCheckResult:
    status: HealthStatus
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)


class WorkerHealthCheck:
    """Health of one worker, for container health checks and the HealthCheck protocol."""

    def __init__(
        self, redis_url: str, worker_id: str, *, retry: RetryPolicy = DEFAULT_RETRY
    ) -> None:
        self.redis_url = redis_url
        self.worker_id = worker_id
        self.name = f"worker:{worker_id}"
        self._retry = retry

    def check(self) -> HealthCheckResult:
        client = connect(self.redis_url)
        try:
            data: Any = self._retry.call(client.hgetall, keys.worker_heartbeat(self.worker_id))
        finally:
            client.close()
        if not data:
            return HealthCheckResult(
                "unhealthy", f"no heartbeat from worker {self.worker_id} (stopped, dead or unknown)"
            )
        health = WorkerHealth.from_hash(self.worker_id, data)
        age = health.heartbeat_age
        metadata: dict[str, Any] = {**data, "heartbeat_age": round(age, 3), "alive": health.alive}
        if not health.alive:
            return HealthCheckResult("unhealthy", f"last heartbeat {age:.0f}s ago", metadata)
        if age > DEGRADED_AFTER:
            return HealthCheckResult("degraded", f"heartbeat late: {age:.0f}s ago", metadata)
        if health.status != "running":
            return HealthCheckResult("degraded", f"worker is {health.status}", metadata)
        return HealthCheckResult(
            "healthy",
            f"running {len(health.running_task_ids)}/{health.concurrency} tasks, "
            f"{health.tasks_processed} done, {health.tasks_failed} failed",
            metadata,
        )
