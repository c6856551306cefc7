"""Fleet health: ``get_worker_fleet_status``, ``WorkerHealthCheck``, the worker registry.

Read from the wire heartbeat ``orbiter:workers:{id}`` (TTL ``heartbeat_ttl``; our workers
and async ones write it) and from orbiter-sync's own registry, which our heartbeat writes
in the same transaction: ``orbiter:registry:workers`` (sorted set, id -> last beat) and
``orbiter:registry:worker:{id}`` (the last beat's fields; status ``stopped`` once the
worker stopped cleanly). A worker is alive while its heartbeat key exists and its last
beat is under 60 s old (the guide's rule); once its key is gone it shows its last fields
as ``stopped`` or ``dead`` until the entry is a day old. Readers and heartbeats prune
older entries (``prune_registry``). Async workers are not registered: they show while
their key lives. Every field is decoded totally (numbers finite or 0, dates showable or
0, text one printable bounded line, bytes that are not UTF-8 replaced): no heartbeat can
break a reader. ``WorkerHealthCheck(...).check()`` is sync: healthy, degraded (heartbeat
late, or the worker is stopping) or unhealthy (no heartbeat key, or too old).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
from redis.client import NEVER_DECODE

from orbiter_sync.connection import DEFAULT_RETRY, RetryPolicy, connect
from orbiter_sync.layout import WORKERS_TAG, KeyLayout
from orbiter_sync.shards import workers_layout

logger = logging.getLogger(__name__)

ALIVE_WITHIN = 60.0
DEGRADED_AFTER = 20.0  # two missed beats at the default heartbeat_ttl of 30 s
REGISTRY_RETENTION = 24 * 3600  # seconds a registry entry outlives its last beat
PRUNE_BATCH = 500

MAX_TEXT = 200  # characters of one text field
MAX_NUMBER_TEXT = 64  # no real number needs more
MAX_EXTRA = 32  # unknown fields kept in ``extra``
MAX_RUNNING = 1000  # ids kept from ``running_task_ids``
MAX_COUNT = 2**53
MAX_TIMESTAMP = 253402300799.0  # 9999-12-31 23:59:59 UTC, the last second a date can show

HealthStatus = Literal["healthy", "degraded", "unhealthy"]

_RAW: dict[str, Any] = {NEVER_DECODE: True}  # read bytes; we decode them leniently


def _raw(target: Any, *args: Any, **options: Any) -> Any:
    """A command on a client or pipeline whose reply stays bytes."""
    return target.execute_command(*args, **_RAW, **options)


def _prefixes(client: object) -> tuple[KeyLayout, bytes, bytes]:
    """The worker-keys layout of ``client``'s deployment, and its heartbeat and record
    key prefixes as bytes."""
    layout = workers_layout(client)  # type: ignore[arg-type]
    return layout, layout.worker_prefix.encode(), layout.worker_record("").encode()


# The heartbeat fields WorkerHealth reads; any other field goes to ``extra``.
_KNOWN = frozenset({"worker_id", "status", "hostname", "tasks_processed", "tasks_failed",
                    "current_task_id", "running_task_ids", "concurrency", "started_at",
                    "last_heartbeat"})  # fmt: skip


# -- total decoders ----------------------------------------------------------------------


def printable(value: object, limit: int = MAX_TEXT) -> str:
    """``value`` as one line of at most ``limit`` printable characters ("" for None)."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        text = bytes(value[: limit * 4 + 4]).decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value[: limit + 1]
    else:
        try:
            text = str(value)[: limit + 1]
        except ValueError:  # an int too long to print
            return "?"
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: object) -> float:
    """A finite float, or 0.0 for anything else: missing, garbage, nan, inf, 1e400."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value[: MAX_NUMBER_TEXT + 1]).decode("ascii", "replace")
    try:
        if isinstance(value, str):
            number = float(value) if len(value) <= MAX_NUMBER_TEXT else 0.0
        elif isinstance(value, int | float):
            number = float(value)
        else:
            return 0.0
    except (ValueError, OverflowError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _count(value: object) -> int:
    """A count: a whole number from 0 to 2**53."""
    return int(min(max(_number(value), 0.0), MAX_COUNT))


def _timestamp(value: object) -> float:
    """A unix time a date can show, or 0.0 (unknown)."""
    number = _number(value)
    return number if 0.0 < number <= MAX_TIMESTAMP else 0.0


def _items(reply: object) -> list[tuple[object, object]]:
    """A hash or score reply as pairs, whatever shape the protocol gave it (an error or
    anything else is empty)."""
    if isinstance(reply, Mapping):
        return list(reply.items())
    if not isinstance(reply, list | tuple):
        return []
    if all(isinstance(item, list | tuple) and len(item) == 2 for item in reply):
        return [(item[0], item[1]) for item in reply]
    return list(zip(reply[::2], reply[1::2], strict=False))


def _fields(data: object) -> tuple[dict[str, object], dict[str, str]]:
    """The known fields (raw values) and up to MAX_EXTRA others (as text)."""
    known: dict[str, object] = {}
    extra: dict[str, str] = {}
    for name, value in _items(data):
        key = printable(name, 64)
        if key in _KNOWN:
            known[key] = value
        elif len(extra) < MAX_EXTRA:
            extra[key] = printable(value)
    return known, extra


def _metadata(data: object) -> dict[str, Any]:
    """Every field as text (at most 64 of them), for a health check's metadata."""
    return {printable(name, 64): printable(value) for name, value in _items(data)[:64]}


@dataclass(frozen=True)
class WorkerHealth:
    """One worker, from its heartbeat ``orbiter:workers:{id}`` or its registry entry.

    ``status`` is what to show: the worker's own status while it is alive, else
    ``stopped`` (it stopped cleanly) or ``dead``; ``reported_status`` is the status
    its last heartbeat wrote.
    """

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
    reported_status: str = ""

    @property
    def heartbeat_age(self) -> float | None:
        """Seconds since the last beat, or None when no readable beat time is known."""
        return max(0.0, time.time() - self.last_heartbeat) if self.last_heartbeat else None

    @classmethod
    def from_hash(
        cls,
        worker_id: str,
        data: Mapping[Any, Any],
        *,
        now: float | None = None,
        live: bool = True,
        last_seen: float = 0.0,
    ) -> WorkerHealth:
        """Decode heartbeat fields (str or bytes, any junk). ``live``: the heartbeat key
        exists (False for a registry record); ``last_seen``: the registry's beat time,
        used when the fields hold none."""
        known, extra = _fields(data)
        last = _timestamp(known.get("last_heartbeat")) or _timestamp(last_seen)
        now = time.time() if now is None else now
        reported = printable(known.get("status"), 32) or "unknown"
        # The key's existence vouches for a worker whose beat time cannot be read.
        alive = live and (not last or now - last < ALIVE_WITHIN)
        status = reported if alive else "stopped" if reported == "stopped" else "dead"
        ids = printable(known.get("running_task_ids"), MAX_RUNNING * 64).split(",")
        return cls(
            worker_id=printable(worker_id),
            status=status,
            hostname=printable(known.get("hostname")),
            tasks_processed=_count(known.get("tasks_processed")),
            tasks_failed=_count(known.get("tasks_failed")),
            current_task_id=printable(known.get("current_task_id")),
            concurrency=_count(known.get("concurrency")),
            started_at=_timestamp(known.get("started_at")),
            last_heartbeat=last,
            alive=alive,
            running_task_ids=tuple(printable(i, 64) for i in ids if i)[:MAX_RUNNING],
            extra=extra,
            reported_status=reported,
        )


# -- the registry ------------------------------------------------------------------------


def prune_registry(client: redis.Redis, *, now: float | None = None) -> int:
    """Forget up to PRUNE_BATCH workers whose last beat is over a day old; returns how many.

    Cheap when nothing is stale (one ZRANGEBYSCORE). A worker that beats meanwhile is
    left alone: its record is watched and its score read again before anything goes.
    """
    cutoff = (time.time() if now is None else now) - REGISTRY_RETENTION
    layout, _, record = _prefixes(client)
    registry = layout.worker_registry
    try:
        stale = _raw(client, "ZRANGEBYSCORE", registry, "-inf", repr(cutoff),
                     "LIMIT", 0, PRUNE_BATCH)  # fmt: skip
    except redis.ResponseError as exc:  # not a sorted set: nothing of ours to prune
        logger.warning("cannot prune %s: %s", registry, exc)
        return 0
    members = [m for m in stale if isinstance(m, bytes)] if isinstance(stale, list) else []
    if not members:
        return 0
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(*(record + m for m in members))  # type: ignore[no-untyped-call]
            scores: Any = pipe.zmscore(registry, members)  # type: ignore[arg-type]
            gone = [m for m, s in zip(members, scores, strict=True) if s is None or s <= cutoff]
            if not gone:
                return 0
            pipe.multi()
            pipe.zrem(registry, *gone)
            pipe.delete(*(record + m for m in gone))
            pipe.execute()
        except redis.WatchError:  # a worker beat meanwhile; the next reader prunes
            return 0
    return len(gone)


def _registered(client: redis.Redis) -> dict[bytes, float]:
    """Registry members (raw ids) and their last beat times."""
    registry = _prefixes(client)[0].worker_registry
    try:
        reply = _raw(client, "ZRANGE", registry, 0, -1, "WITHSCORES")
    except redis.ResponseError as exc:
        logger.warning("cannot read %s: %s", registry, exc)
        return {}
    return {m: _number(s) for m, s in _items(reply) if isinstance(m, bytes)}


def _heartbeat_ids(client: redis.Redis) -> list[bytes]:
    """The raw ids of every heartbeat key."""
    layout, heartbeat, _ = _prefixes(client)
    # on a cluster, every heartbeat lives on the node of the workers' hash tag
    at = {"target_nodes": client.get_node_from_key(WORKERS_TAG)} if layout.cluster else {}  # type: ignore[attr-defined]
    found: list[bytes] = []
    cursor: Any = 0
    while True:
        cursor, batch = _raw(client, "SCAN", cursor, "MATCH", heartbeat + b"*", "COUNT", 500, **at)
        cursor = next(iter(cursor.values())) if isinstance(cursor, dict) else cursor  # by node
        found += [k[len(heartbeat) :] for k in batch if isinstance(k, bytes)]
        if not int(cursor):
            return found


def _is_hash(reply: object) -> bool:
    return bool(_items(reply))


def get_worker_fleet_status(
    redis_url: str, *, client: redis.Redis | None = None, retry: RetryPolicy = DEFAULT_RETRY
) -> list[WorkerHealth]:
    """Every worker seen in the last day, sorted by worker id: live ones from their
    heartbeat key, stopped and dead ones from their registry entry. Prunes the registry."""
    own = client is None
    client = client if client is not None else connect(redis_url)
    try:
        now = time.time()
        retry.call(prune_registry, client, now=now)
        since = now - REGISTRY_RETENTION  # older entries wait for the next prune unseen
        registered = {m: t for m, t in retry.call(_registered, client).items() if t > since}
        ids = list(dict.fromkeys([*registered, *retry.call(_heartbeat_ids, client)]))

        _, heartbeat, record = _prefixes(client)

        def fetch() -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for raw in ids:
                _raw(pipe, "HGETALL", heartbeat + raw)
                _raw(pipe, "HGETALL", record + raw)
            return pipe.execute(raise_on_error=False)

        replies = retry.call(fetch) if ids else []
        workers: list[WorkerHealth] = []
        for raw, beat, record in zip(ids, replies[::2], replies[1::2], strict=True):
            worker_id = raw.decode("utf-8", "replace")
            if _is_hash(beat):
                workers.append(WorkerHealth.from_hash(worker_id, beat, now=now))
            elif raw in registered:
                data = record if _is_hash(record) else {}
                last_seen = registered[raw]
                health = WorkerHealth.from_hash(worker_id, data, now=now, live=False,
                                                last_seen=last_seen)  # fmt: skip
                workers.append(health)
        return sorted(workers, key=lambda w: w.worker_id)
    finally:
        if own:
            client.close()


# -- one worker's health check -----------------------------------------------------------


@dataclass(frozen=True)
class HealthCheckResult:
    status: HealthStatus
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _ago(age: float | None) -> str:
    return "at an unknown time" if age is None else f"{age:.0f}s ago"


class WorkerHealthCheck:
    """Health of one worker, for container health checks and the HealthCheck protocol."""

    def __init__(
        self, redis_url: str, worker_id: str, *, retry: RetryPolicy = DEFAULT_RETRY
    ) -> None:
        self.redis_url = redis_url
        self.worker_id = worker_id
        self.name = f"worker:{worker_id}"
        self._retry = retry

    def _read(self, client: redis.Redis) -> list[Any]:
        layout = _prefixes(client)[0]
        pipe = client.pipeline(transaction=False)
        _raw(pipe, "HGETALL", layout.worker_heartbeat(self.worker_id))
        _raw(pipe, "HGETALL", layout.worker_record(self.worker_id))
        _raw(pipe, "ZSCORE", layout.worker_registry, self.worker_id)
        return pipe.execute(raise_on_error=False)

    def check(self) -> HealthCheckResult:
        client = connect(self.redis_url)
        try:
            beat, record, score = self._retry.call(self._read, client)
        finally:
            client.close()
        if _is_hash(beat):
            return self._judge(WorkerHealth.from_hash(self.worker_id, beat), beat)
        last_seen = _timestamp(score)  # the registry's entry counts for a day, as in the list
        if last_seen > time.time() - REGISTRY_RETENTION:
            data = record if _is_hash(record) else {}
            gone = WorkerHealth.from_hash(self.worker_id, data, live=False, last_seen=last_seen)
            age = _ago(gone.heartbeat_age)
            metadata = {**_metadata(data), "heartbeat_age": _rounded(gone.heartbeat_age),
                        "alive": False, "state": gone.status}  # fmt: skip
            if gone.status == "stopped":
                message = f"worker {gone.worker_id} stopped; last heartbeat {age}"
            else:
                message = f"worker {gone.worker_id} is dead: no heartbeat key; last heartbeat {age}"
            return HealthCheckResult("unhealthy", message, metadata)
        shown = printable(self.worker_id)
        return HealthCheckResult(
            "unhealthy", f"no heartbeat from worker {shown} (unknown, or gone for over a day)"
        )

    @staticmethod
    def _judge(health: WorkerHealth, data: object) -> HealthCheckResult:
        age = health.heartbeat_age
        metadata = {**_metadata(data), "heartbeat_age": _rounded(age), "alive": health.alive}
        if not health.alive:
            return HealthCheckResult("unhealthy", f"last heartbeat {_ago(age)}", metadata)
        if age is None:
            return HealthCheckResult("degraded", "heartbeat time unreadable", metadata)
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


def _rounded(age: float | None) -> float | None:
    return None if age is None else round(age, 3)
