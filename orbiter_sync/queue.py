"""What the producer, consumer and admin sides of a queue share: its settings and a delivery.

A queue is a Redis stream read through one consumer group (wire keys), plus
two keys of our own named after it: ``{queue}:delayed`` (retries waiting out
their backoff, scored by due time) and ``{queue}:dead`` (dead letters). On a Redis
Cluster a queue is split into shards, each a stream with those keys of its own under
the shard's hash tag (layout.py); a :class:`QueueSettings` names one shard.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import redis
import tenacity

from orbiter_sync import keys
from orbiter_sync.connection import DEFAULT_RETRY, RedisUser, RetryPolicy
from orbiter_sync.env import EVENTS_TTL_ENV, RESULT_TTL_ENV
from orbiter_sync.errors import ConfigurationError
from orbiter_sync.layout import STANDALONE, KeyLayout
from orbiter_sync.models import TaskPayload

DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_VISIBILITY_TIMEOUT = 60.0
DEFAULT_TASK_TTL = 86400
DEFAULT_EVENT_TTL = 3600


def ttl_settings(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """``task_ttl`` and ``event_ttl`` from ``ORBITER_RESULT_TTL`` and ``ORBITER_EVENTS_TTL``
    (seconds; those not set keep their defaults), read by clients and workers alike."""
    env = os.environ if env is None else env
    found = {}
    for name, var in (("task_ttl", RESULT_TTL_ENV), ("event_ttl", EVENTS_TTL_ENV)):
        raw = env.get(var, "").strip()
        if raw:
            if not raw.isdigit() or int(raw) < 1:
                raise ConfigurationError(f"{var} must be a whole number of seconds, got {raw!r}")
            found[name] = int(raw)
    return found


MAX_BACKOFF = 60.0
MAX_TIMEOUT_SECONDS = 7 * 86400.0  # submit refuses more; a worker clamps what others queue


def exponential_backoff(base: float = 1.0) -> tenacity.wait.wait_base:
    """``base``, 2 x ``base``, 4 x ``base`` ... seconds (capped at 60 s), plus up to ``base``
    of jitter."""
    return tenacity.wait_exponential(multiplier=base, max=MAX_BACKOFF) + tenacity.wait_random(
        0, base
    )


@dataclass(frozen=True)
class QueueSettings:
    """How one queue behaves; the producer, consumer and admin of a queue share one.

    ``max_retries`` failed attempts are retried, each after ``retry_backoff`` (a
    tenacity wait strategy, given the retry number); an entry delivered more than
    ``max_deliveries`` times without being settled (its workers keep dying) goes
    to the dead letters. An entry idle longer than ``visibility_timeout`` seconds
    is taken over from its dead worker.
    """

    name: str = keys.DEFAULT_QUEUE
    max_retries: int = DEFAULT_MAX_RETRIES
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    retry_backoff: tenacity.wait.wait_base = field(
        default_factory=exponential_backoff, compare=False
    )
    task_ttl: int = DEFAULT_TASK_TTL
    """Seconds a task's status hash lives after its last write."""
    event_ttl: int = DEFAULT_EVENT_TTL
    """Seconds a task's event stream lives after its last event."""
    task_prefix: str = keys.TASK_PREFIX
    layout: KeyLayout = STANDALONE
    """Where the keys live (standalone names, or a cluster's hash-tagged shards)."""
    shard: int = 0
    """The shard of the queue these settings name (0 outside cluster mode)."""

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.max_deliveries < 1 or self.visibility_timeout <= 0:
            raise ConfigurationError(
                "queue settings need max_retries >= 0, max_deliveries >= 1 and "
                "visibility_timeout > 0"
            )
        if self.task_ttl < 1 or self.event_ttl < 1:
            raise ConfigurationError("task_ttl and event_ttl must be at least 1 second")
        if not 0 <= self.shard < self.layout.shards:
            raise ConfigurationError(f"shard {self.shard} is not one of {self.layout.shards}")

    def for_shard(self, shard: int) -> QueueSettings:
        """The same queue's shard ``shard``."""
        return self if shard == self.shard else replace(self, shard=shard)

    def for_task(self, task_id: str) -> QueueSettings:
        """The shard of this queue that task ``task_id`` goes to."""
        return self.for_shard(self.layout.shard_of(task_id))

    def all_shards(self) -> list[QueueSettings]:
        """Every shard of this queue (one, outside cluster mode)."""
        return [self.for_shard(shard) for shard in range(self.layout.shards)]

    def misplaced(self, task_id: str) -> str:
        """Why task ``task_id`` does not belong on this shard, or "" when it does."""
        shard = self.layout.shard_of(task_id)
        if shard == self.shard:
            return ""
        return f"task id {task_id!r} belongs to shard {shard}, not {self.label}"

    @property
    def label(self) -> str:
        """The queue's name, with its shard in cluster mode (for logs)."""
        return f"{self.name}#{self.shard}" if self.layout.shards > 1 else self.name

    @property
    def stream(self) -> str:
        """The stream key: the queue's name, under the shard's hash tag in cluster mode."""
        return self.layout.stream(self.name, self.shard)

    @property
    def group(self) -> str:
        return keys.consumer_group(self.name)

    @property
    def delayed_key(self) -> str:
        return self.layout.delayed(self.name, self.shard)

    @property
    def dead_letter_key(self) -> str:
        return self.layout.dead_letters(self.name, self.shard)

    @property
    def counts_key(self) -> str:
        return self.layout.counts(self.name, self.shard)

    def recent_counts_key(self, now: float) -> str:
        return self.layout.recent_counts(self.name, now, self.shard)

    def counts_keys(self, now: float) -> list[str]:
        """The fleet counters a script that ends a task increments: totals, this minute's."""
        return [self.counts_key, self.recent_counts_key(now)]

    def task_keys(self, task_id: str) -> list[str]:
        """The keys the begin and settle scripts start with: queue, hash, index, events."""
        return [self.stream, self.task_key(task_id), self.index_key, self.event_stream(task_id)]

    @property
    def index_key(self) -> str:
        return self.layout.task_index(self.shard, self.task_prefix)

    def task_key(self, task_id: str) -> str:
        """The task's hash, under this shard's tag (its own, for a task of this shard)."""
        return self.layout.task_hash(task_id, self.task_prefix, self.shard)

    def event_stream(self, task_id: str) -> str:
        return self.layout.event_stream(task_id, self.shard)

    def event_channel(self, task_id: str) -> str:
        return self.layout.event_channel(task_id, self.shard)

    def retries_of(self, asked: int | None) -> int:
        """The retries a task gets: what its payload asked for, else ``max_retries``."""
        return self.max_retries if asked is None else asked

    def backoffs(self, at_least: float = 0.0, retries: int | None = None) -> list[float]:
        """Seconds to wait before retry 1, 2, ... ``retries`` (default ``max_retries``);
        each at least ``at_least`` (what a provider's Retry-After asked for)."""
        delays = []
        for attempt in range(1, self.retries_of(retries) + 1):
            state = tenacity.RetryCallState(
                retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={}
            )
            state.attempt_number = attempt
            delays.append(max(float(self.retry_backoff(state)), at_least))
        return delays or [at_least]


class QueueUser(RedisUser):
    """A :class:`RedisUser` that works on one queue, described by its ``settings``."""

    def __init__(
        self,
        redis_url: str | None = None,
        settings: QueueSettings | None = None,
        *,
        client: redis.Redis | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.settings = settings or QueueSettings()
        super().__init__(redis_url, client=client, retry=retry)


@dataclass(frozen=True)
class Delivery:
    """A claimed task: its payload, the stream entry it came in, and how often that
    entry was delivered. Settling a delivery needs nothing else."""

    payload: TaskPayload
    entry_id: str
    raw: str
    """The payload as it was queued, re-queued unchanged on a retry or a release."""
    deliveries: int = 1
    queue: str = keys.DEFAULT_QUEUE
    """The queue it came from (a worker may consume several)."""
    shard: int = 0
    """The shard of that queue it came from (cluster mode)."""

    @property
    def task_id(self) -> str:
        return self.payload.task_id


def shared_keys_problem(
    client: redis.Redis, settings: QueueSettings, retry: RetryPolicy
) -> str | None:
    """What is wrong when a key every task of the queue shares (the queue, the task index,
    the delayed retries, the dead letters) holds the wrong type, or None."""
    s = settings
    expected = {s.stream: "stream", s.index_key: "set", s.delayed_key: "zset",
                s.dead_letter_key: "stream"}  # fmt: skip

    def read() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for key in expected:
            pipe.type(key)
        return pipe.execute()

    kinds = retry.call(read)
    wrong = [
        f"{key} is a {kind}, not a {want}"
        for (key, want), kind in zip(expected.items(), kinds, strict=True)
        if kind not in (want, "none")
    ]
    return "; ".join(wrong) or None
