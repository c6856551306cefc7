"""The fleet's numbers, read from Redis: :func:`read_fleet`, and :class:`FleetCollector`,
which serves them to Prometheus on each scrape.

Nothing here needs a worker to be reachable: queues, dead letters and delayed
retries are read from their keys, workers from their heartbeats, and the fleet
counters from the per-queue hashes the workers' scripts increment as they settle
(``{queue}:counts``, and one-minute buckets ``{queue}:counts:{minute}`` that
expire). This is how an app whose workers cannot be scraped (Heroku dynos) gets
its fleet's metrics: one exporter process, or the collector in its own registry.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import astuple, fields
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orbiter_sync import keys
from orbiter_sync.connection import DEFAULT_RETRY, RetryPolicy, connect
from orbiter_sync.health import get_worker_fleet_status
from orbiter_sync.metrics import names
from orbiter_sync.metrics.snapshot import (
    DUE_SOON,
    RECENT_WINDOW,
    FleetSnapshot,
    QueueSnapshot,
    RecentCounts,
    undelivered,
)
from orbiter_sync.queue import QueueSettings
from orbiter_sync.shards import layout_of, workers_layout
from orbiter_sync.urls import resolve_redis_url

logger = logging.getLogger(__name__)

MAX_QUEUES = 100  # queues read per scrape, named ones first, then the workers'
MAX_QUEUE_NAME = 200  # a longer "queue" in a heartbeat is not one
RECENT_BUCKETS = int(RECENT_WINDOW // keys.COUNTS_BUCKET)
COUNT_FIELDS = ("completed", "failed", "cancelled", "retried", "dead_lettered")


def read_fleet(
    redis_url: str | None = None,
    *,
    queues: Sequence[str] = (),
    client: redis.Redis | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> FleetSnapshot:
    """The fleet now: the ``queues`` named (default ``orbiter:tasks``) and every queue a
    live worker reads, and the workers. ``RedisUnavailableError`` when Redis cannot be
    read within ``retry``'s budget."""
    own = client is None
    client = client if client is not None else connect(resolve_redis_url(redis_url))
    try:
        workers = get_worker_fleet_status("", client=client, retry=retry)
        alive = [w for w in workers if w.alive]
        named = [*(queues or [keys.DEFAULT_QUEUE]), *_queues_read(client, retry, alive)]
        wanted = [q for q in dict.fromkeys(named) if _queue_name(q)]
        now, layout = time.time(), layout_of(client, retry=retry)
        return FleetSnapshot(
            queues=tuple(
                _read_queue(client, retry, QueueSettings(q, layout=layout), now)
                for q in wanted[:MAX_QUEUES]
            ),  # fmt: skip
            workers_alive=len(alive),
            workers_stopped=sum(1 for w in workers if not w.alive and w.status == "stopped"),
            workers_dead=sum(1 for w in workers if not w.alive and w.status != "stopped"),
            slots_total=sum(w.concurrency for w in alive),
            slots_busy=sum(len(w.running_task_ids) for w in alive),
            read_at=now,
        )
    finally:
        if own:
            client.close()


def _queues_read(client: redis.Redis, retry: RetryPolicy, alive: Sequence[Any]) -> list[str]:
    """The queues live workers read, from their heartbeats' ``queues`` field as written
    (WorkerHealth shortens text fields for display)."""

    def read() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for worker in alive[:MAX_QUEUES]:
            pipe.hget(workers_layout(client).worker_heartbeat(worker.worker_id), "queues")
        return pipe.execute(raise_on_error=False)

    found: list[str] = []
    for value in retry.call(read) if alive else []:
        if isinstance(value, str):
            found += value[: MAX_QUEUES * (MAX_QUEUE_NAME + 1)].split(",")[:MAX_QUEUES]
    return found


def _queue_name(name: str) -> bool:
    return 0 < len(name) <= MAX_QUEUE_NAME and name.isprintable()


def _read_queue(
    client: redis.Redis, retry: RetryPolicy, queue: QueueSettings, now: float
) -> QueueSnapshot:
    """One queue: its shards' snapshots added up (ages: the oldest)."""
    parts = [_read_shard(client, retry, shard, now) for shard in queue.all_shards()]
    if len(parts) == 1:
        return parts[0]
    summed: dict[str, Any] = {}
    for f in fields(QueueSnapshot):
        values = [getattr(part, f.name) for part in parts]
        if f.name == "queue":
            summed[f.name] = queue.name
        elif f.name == "recent":
            rows = [astuple(r) for r in values]
            summed[f.name] = RecentCounts(*(sum(v) for v in zip(*rows, strict=True)))
        elif f.name.endswith("_age"):
            summed[f.name] = max((v for v in values if v is not None), default=None)
        else:
            summed[f.name] = sum(values)
    return QueueSnapshot(**summed)


def _read_shard(
    client: redis.Redis, retry: RetryPolicy, s: QueueSettings, now: float
) -> QueueSnapshot:
    queue = s.stream
    recent_keys = [s.recent_counts_key(now - i * keys.COUNTS_BUCKET) for i in range(RECENT_BUCKETS)]

    def read() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        pipe.xlen(queue)
        pipe.xlen(s.dead_letter_key)
        pipe.zcard(s.delayed_key)
        pipe.zcount(s.delayed_key, "-inf", now + DUE_SOON)
        pipe.hgetall(s.counts_key)
        for key in recent_keys:
            pipe.hgetall(key)
        pipe.xinfo_groups(queue)
        pipe.xpending(queue, s.group)
        return pipe.execute(raise_on_error=False)

    length, dead, delayed, due_soon, totals, *rest = retry.call(read)
    recent, (groups, pending_summary) = rest[:-2], rest[-2:]
    group = _group(groups, s.group)
    pending = _count(group.get("pending"))
    lag = group.get("lag")
    waiting = undelivered(_count(length), pending, None if lag is None else _count(lag))
    oldest_pending = None
    if pending and isinstance(pending_summary, dict) and pending_summary.get("min"):
        oldest_pending = _age_of_entry(pending_summary["min"], now)
    oldest_waiting = None
    if waiting:
        last = group.get("last-delivered-id")
        oldest_waiting = _oldest_waiting_age(client, retry, s, last, now)
    totals = _counts(totals)
    window = [_counts(b) for b in recent]
    return QueueSnapshot(
        queue=s.name,
        length=_count(length),
        pending=pending,
        waiting=waiting,
        delayed=_count(delayed),
        delayed_due=_count(due_soon),
        dead_letters=_count(dead),
        oldest_pending_age=oldest_pending,
        oldest_waiting_age=oldest_waiting,
        completed_total=totals["completed"],
        failed_total=totals["failed"],
        cancelled_total=totals["cancelled"],
        retried_total=totals["retried"],
        dead_lettered_total=totals["dead_lettered"],
        recent=RecentCounts(**{f: sum(b[f] for b in window) for f in COUNT_FIELDS[:4]}),
    )


def _oldest_waiting_age(
    client: redis.Redis, retry: RetryPolicy, s: QueueSettings, last: object, now: float
) -> float | None:
    """Seconds the oldest undelivered task has waited: since its payload's
    ``created_at`` (or its hash's ``due_at``, when it was submitted with a delay); for a
    task that ran before (a retry, or one handed back by a stopping worker), since its
    entry was queued again; when nothing can be read, since its entry was queued."""
    start = f"({_text(last)}" if last and _text(last) != "0-0" else "-"
    entries: Any = retry.call(client.xrange, s.stream, start, "+", 1)
    if not entries:
        return None
    entry_id, fields = entries[0]
    since = _created_at(fields.get(b"payload") or fields.get("payload"))
    if since is None:
        return _age_of_entry(entry_id, now)
    task_id = _task_id(fields.get(b"payload") or fields.get("payload"))
    if task_id:
        try:
            due, started, retries = retry.call(
                client.hmget, s.task_key(task_id), "due_at", "started_at", "retries"
            )
        except redis.ResponseError:  # a task key someone broke: its payload's time
            due = started = retries = None
        if started or _count(retries):
            return _age_of_entry(entry_id, now)
        due_at = _number(due)
        if due_at is not None and due_at > since:
            since = due_at
    return max(0.0, now - since)


def _payload(raw: object) -> dict[str, Any]:
    try:
        data = json.loads(raw) if isinstance(raw, bytes | str) else None
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _created_at(raw: object) -> float | None:
    return _number(_payload(raw).get("created_at"))


def _task_id(raw: object) -> str:
    task_id = _payload(raw).get("task_id")
    return task_id if isinstance(task_id, str) and 0 < len(task_id) <= 200 else ""


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(_text(value)[:64]) if not isinstance(value, int | float) else value
    except (TypeError, ValueError):
        return None
    return float(number) if math.isfinite(number) else None


def _count(value: object) -> int:
    number = _number(value)
    return int(number) if number is not None and number >= 0 else 0


def _counts(data: object) -> dict[str, int]:
    """A counts hash as numbers: a missing, broken or negative field counts 0."""
    fields = data if isinstance(data, dict) else {}
    found = {_text(k): v for k, v in list(fields.items())[:64]}
    return {f: _count(found.get(f)) for f in COUNT_FIELDS}


def _group(groups: object, name: str) -> dict[str, Any]:
    if not isinstance(groups, list):
        return {}
    for group in groups:
        if isinstance(group, dict) and _text(group.get("name", "")) == name:
            return group
    return {}


def _age_of_entry(entry_id: object, now: float) -> float | None:
    millis = _number(_text(entry_id).split("-")[0])
    return None if millis is None else max(0.0, now - millis / 1000)


class FleetCollector(Collector):
    """A prometheus-client collector reading the fleet from Redis on each scrape.

    Register it in the exporter's registry (``orbiter-sync metrics serve``) or in an
    app's own (``REGISTRY.register(FleetCollector(url))``; with gunicorn's multiprocess
    mode, in the scrape registry beside ``MultiProcessCollector``: custom collectors
    are not aggregated). A scrape while Redis is away shows ``orbiter_fleet_up 0``.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        queues: Sequence[str] = (),
        client: redis.Redis | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._client = client if client is not None else connect(resolve_redis_url(redis_url))
        self._queues = tuple(queues)
        # a scrape answers within Prometheus's timeout: a short retry budget
        self._retry = retry or RetryPolicy(deadline=3.0, quiet=True)

    def describe(self) -> Iterator[Metric]:
        """Nothing: registering the collector must not read Redis."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(names.FLEET_UP, "1 when Redis could be read on this scrape")
        try:
            fleet = read_fleet(queues=self._queues, client=self._client, retry=self._retry)
        except Exception as exc:  # noqa: BLE001 - a scrape reports it, never raises
            logger.warning("fleet metrics: Redis could not be read: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from fleet_metrics(fleet)


def fleet_metrics(fleet: FleetSnapshot) -> Iterator[Metric]:
    """The metric families of one snapshot."""
    per_queue: list[tuple[str, str, str]] = [
        ("gauge", names.FLEET_QUEUE_DEPTH, "Entries not yet delivered, plus delayed ones due "
         "within a minute (retries)"),
        ("gauge", names.FLEET_QUEUE_LENGTH, "Entries in the queue's stream"),
        ("gauge", names.FLEET_QUEUE_PENDING, "Entries claimed by a worker, not yet settled"),
        ("gauge", names.FLEET_QUEUE_LAG, "Entries not yet delivered to any worker"),
        ("gauge", names.FLEET_OLDEST_PENDING_AGE, "Age of the oldest claimed entry"),
        ("gauge", names.FLEET_OLDEST_WAITING_AGE,
         "Seconds since the oldest undelivered task was created"),
        ("gauge", names.FLEET_DEAD_LETTERS, "Entries in the dead-letter stream"),
        ("gauge", names.FLEET_DELAYED, "Retries and delayed submits waiting for their time"),
        ("counter", names.FLEET_TASKS_COMPLETED, "Tasks completed, fleet-wide"),
        ("counter", names.FLEET_TASKS_FAILED, "Tasks failed for good, fleet-wide"),
        ("counter", names.FLEET_TASKS_CANCELLED, "Tasks cancelled, fleet-wide"),
        ("counter", names.FLEET_TASKS_RETRIED, "Failed attempts retried, fleet-wide"),
        ("counter", names.FLEET_TASKS_DEAD_LETTERED, "Entries dead-lettered, fleet-wide"),
    ]  # fmt: skip
    for kind, name, doc in per_queue:
        family = (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(
            name, doc, labels=["queue"]
        )
        for q in fleet.queues:
            value = _queue_value(name, q)
            if value is not None:
                family.add_metric([q.queue], value)
        yield family
    workers = GaugeMetricFamily(names.FLEET_WORKERS, "Workers by state", labels=["state"])
    workers.add_metric(["alive"], fleet.workers_alive)
    workers.add_metric(["stopped"], fleet.workers_stopped)
    workers.add_metric(["dead"], fleet.workers_dead)
    yield workers
    slots = GaugeMetricFamily(names.FLEET_SLOTS, "Slots of live workers", labels=["state"])
    slots.add_metric(["busy"], fleet.slots_busy)
    slots.add_metric(["total"], fleet.slots_total)
    yield slots


def _queue_value(name: str, q: QueueSnapshot) -> float | None:
    values: dict[str, float | None] = {
        names.FLEET_QUEUE_DEPTH: q.depth,
        names.FLEET_QUEUE_LENGTH: q.length,
        names.FLEET_QUEUE_PENDING: q.pending,
        names.FLEET_QUEUE_LAG: q.waiting,
        names.FLEET_OLDEST_PENDING_AGE: q.oldest_pending_age or 0.0,
        names.FLEET_OLDEST_WAITING_AGE: q.oldest_waiting_age or 0.0,
        names.FLEET_DEAD_LETTERS: q.dead_letters,
        names.FLEET_DELAYED: q.delayed,
        names.FLEET_TASKS_COMPLETED: q.completed_total,
        names.FLEET_TASKS_FAILED: q.failed_total,
        names.FLEET_TASKS_CANCELLED: q.cancelled_total,
        names.FLEET_TASKS_RETRIED: q.retried_total,
        names.FLEET_TASKS_DEAD_LETTERED: q.dead_lettered_total,
    }
    return values.get(name)
