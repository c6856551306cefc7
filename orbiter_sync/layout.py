"""Where a deployment's keys live: one Redis server (today's names) or a Redis Cluster.

A Redis Cluster refuses a command or script whose keys hash to different slots, and
every script of ours touches several keys: a queue's stream, a task's hash, the task
index, its event stream. In cluster mode every key therefore starts with a hash tag,
``{s<shard>.<n>}``, and the tasks are split into ``shards`` by their id (CRC-16 of
the id, modulo ``shards``): a task's hash, event stream and channel, and its shard's
index, queue streams, delayed set, dead letters and counters all carry its shard's
tag, so any client finds a task from its id alone, and a script never spans slots.
The tags are chosen so that shard *i* of *N* hashes near the middle of the *i*-th
*N*-th of the slot space: on a cluster whose masters hold even slot ranges (what
``redis-cli --cluster create`` makes), N shards spread over N masters.

Worker keys (heartbeats, the registry, the records) share one tag of their own,
``{orbiter:workers}``: the heartbeat writes them in one transaction. Events and
cancels go over sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``) on channels carrying
the shard's tag, so that traffic stays on the shard's master instead of being
broadcast to every node; a cancel is one channel per shard whose message is the
task id. Outside cluster mode (:data:`STANDALONE`) every name is exactly the wire
contract's (keys.py).
"""

from __future__ import annotations

import binascii
import functools
from dataclasses import dataclass

from orbiter_sync import keys

CLUSTER_SLOTS = 16384
MAX_SHARDS = 1024
WORKERS_TAG = "{orbiter:workers}"
# The deployment's shard count, recorded by the first worker or producer (shards.py).
SHARDS_KEY = f"{keys.PREFIX}queue-shards"


def crc16(text: str) -> int:
    """Redis Cluster's CRC-16 (XMODEM) of ``text``'s UTF-8 bytes."""
    return binascii.crc_hqx(text.encode("utf-8", "surrogateescape"), 0)


def key_slot(key: str) -> int:
    """The cluster slot of ``key``, hash tags included (as Redis computes it)."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16(key) % CLUSTER_SLOTS


@functools.cache
def shard_tag(shard: int, shards: int) -> str:
    """The hash tag of shard ``shard`` of ``shards``: the first ``{s<shard>.<n>}`` whose
    slot lies within a quarter of a shard's width of the middle of its range."""
    width = CLUSTER_SLOTS / shards
    middle = (shard + 0.5) * width
    n = 0
    while abs(crc16(f"s{shard}.{n}") % CLUSTER_SLOTS - middle) > width / 4:
        n += 1
    return f"{{s{shard}.{n}}}"


@dataclass(frozen=True)
class KeyLayout:
    """The key names of one deployment: standalone (``cluster`` False, one shard) or
    cluster mode with ``shards`` shards. Safe to share; every method is pure."""

    cluster: bool = False
    shards: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ValueError(f"shards must be from 1 to {MAX_SHARDS}, got {self.shards}")
        if self.shards > 1 and not self.cluster:
            raise ValueError("queue shards need cluster mode")

    def shard_of(self, task_id: str) -> int:
        """The shard holding task ``task_id``."""
        return crc16(task_id) % self.shards if self.shards > 1 else 0

    def tag(self, shard: int) -> str:
        """The prefix of shard ``shard``'s keys: its hash tag, or nothing standalone."""
        return shard_tag(shard, self.shards) if self.cluster else ""

    def _of(self, task_id: str, shard: int | None) -> str:
        return self.tag(self.shard_of(task_id) if shard is None else shard)

    # -- per task: found from its id ----------------------------------------------------

    def task_hash(
        self, task_id: str, prefix: str = keys.TASK_PREFIX, shard: int | None = None
    ) -> str:
        """The task's status hash (``shard``: that shard's tag, not the id's)."""
        return self._of(task_id, shard) + keys.task_hash(task_id, prefix)

    def event_stream(self, task_id: str, shard: int | None = None) -> str:
        return self._of(task_id, shard) + keys.event_stream(task_id)

    def event_channel(self, task_id: str, shard: int | None = None) -> str:
        """The channel of the task's live events (a shard channel in cluster mode)."""
        return self._of(task_id, shard) + keys.event_channel(task_id)

    def cancel_channel(self, task_id: str) -> str:
        """Where a cancel of ``task_id`` is published: its own channel (message
        ``cancel``), or in cluster mode its shard's channel (message: the task id)."""
        if self.cluster:
            return self._shard_cancels(self.shard_of(task_id))
        return keys.cancel_channel(task_id)

    def cancel_channels(self) -> list[str]:
        """The cluster's per-shard cancel channels a worker subscribes to."""
        return [self._shard_cancels(shard) for shard in range(self.shards)]

    def _shard_cancels(self, shard: int) -> str:
        return self.tag(shard) + keys.CANCEL_CHANNEL_PREFIX.rstrip(":")

    # -- per shard -----------------------------------------------------------------------

    def task_index(self, shard: int = 0, prefix: str = keys.TASK_PREFIX) -> str:
        return self.tag(shard) + keys.task_index(prefix)

    def stream(self, queue: str, shard: int = 0) -> str:
        """The stream of shard ``shard`` of queue ``queue``."""
        return self.tag(shard) + queue

    def delayed(self, queue: str, shard: int = 0) -> str:
        return self.tag(shard) + keys.delayed_retries(queue)

    def dead_letters(self, queue: str, shard: int = 0) -> str:
        return self.tag(shard) + keys.dead_letters(queue)

    def counts(self, queue: str, shard: int = 0) -> str:
        return self.tag(shard) + keys.fleet_counts(queue)

    def recent_counts(self, queue: str, now: float, shard: int = 0) -> str:
        return self.tag(shard) + keys.recent_counts(queue, now)

    # -- workers -------------------------------------------------------------------------

    @property
    def workers_tag(self) -> str:
        return WORKERS_TAG if self.cluster else ""

    def worker_heartbeat(self, worker_id: str) -> str:
        return self.workers_tag + keys.worker_heartbeat(worker_id)

    @property
    def worker_prefix(self) -> str:
        """What every heartbeat key starts with (SCAN for ``worker_prefix + '*'``)."""
        return self.workers_tag + keys.WORKER_PREFIX

    @property
    def worker_registry(self) -> str:
        return self.workers_tag + keys.WORKER_REGISTRY

    def worker_record(self, worker_id: str) -> str:
        return self.workers_tag + keys.worker_record(worker_id)


STANDALONE = KeyLayout()
