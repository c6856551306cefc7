"""Admin of a queue: its stats, and its dead letters (list, requeue, purge).

Reading a queue's state is safe from anywhere, at any time. The writes are an
operator's, on dead letters only: a requeue puts a dead letter's payload back on
the queue through :meth:`TaskProducer.submit` (the path every submit takes, so the
task gets a fresh ``pending`` hash, index entry and stream entry) and deletes the
dead letter only once that succeeded; a purge deletes dead letters.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

import redis

from orbiter_sync.dead_letters import STREAM_ID, DeadLetter
from orbiter_sync.errors import DeadLetterError, ValidationError
from orbiter_sync.models import TaskStatus
from orbiter_sync.producer import TaskProducer
from orbiter_sync.queue import QueueUser
from orbiter_sync.shards import layout_of

REQUEUE_BATCH = 100  # dead letters read per round trip by requeue_dead_letters
WATCH_ATTEMPTS = 5  # a task hash changing under a requeue this often is left alone


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


@dataclass(frozen=True)
class RequeueReport:
    """What :meth:`QueueAdmin.requeue_dead_letters` did."""

    requeued: list[DeadLetter] = field(default_factory=list)
    kept: list[tuple[DeadLetter, str]] = field(default_factory=list)
    """Dead letters left in place, each with why."""


class QueueAdmin(QueueUser):
    """Reads the state of one queue, and requeues or purges its dead letters; on a Redis
    Cluster, of every shard of it (its dead letters merged, newest first)."""

    @cached_property
    def shards(self) -> list[ShardAdmin]:
        """One admin per shard of the queue (one outside cluster mode)."""
        given = self.settings.layout
        layout = given if given.cluster else layout_of(self._client, retry=self._retry)
        settings = replace(self.settings, layout=layout)
        return [ShardAdmin(settings=shard, client=self._client, retry=self._retry)
                for shard in settings.all_shards()]  # fmt: skip

    def stats(self) -> QueueStats:
        """Length, pending entries, lag, oldest pending age, dead letters and delayed
        retries (summed over the shards)."""
        parts = [shard.stats() for shard in self.shards]
        if len(parts) == 1:
            return parts[0]
        lags, ages = [p.lag for p in parts], [p.oldest_pending_age for p in parts]
        return QueueStats(
            queue=self.settings.name,
            length=sum(p.length for p in parts),
            pending=sum(p.pending for p in parts),
            lag=None if None in lags else sum(lag or 0 for lag in lags),
            oldest_pending_age=max((a for a in ages if a is not None), default=None),
            dead_letters=sum(p.dead_letters for p in parts),
            delayed_retries=sum(p.delayed_retries for p in parts),
            consumers=max(p.consumers for p in parts),
        )

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The newest dead letters, newest first, each with its ``id`` (raw fields)."""
        rows = [row for shard in self.shards for row in shard.dead_letters(count)]
        return sorted(rows, key=lambda row: _id_order(row["id"]), reverse=True)[:count]

    def dead_letter_count(self) -> int:
        return sum(shard.dead_letter_count() for shard in self.shards)

    def dead_letter_entries(self, limit: int = 50) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, newest first."""
        letters = [letter for shard in self.shards for letter in shard.dead_letter_entries(limit)]
        return sorted(letters, key=lambda letter: _id_order(letter.id), reverse=True)[:limit]

    def dead_letter(self, letter_id: str) -> DeadLetter | None:
        """One dead letter by its id, or None."""
        return self._holder(letter_id).dead_letter(letter_id)

    def requeue_dead_letter(self, letter_id: str) -> DeadLetter:
        """Requeue dead letter ``letter_id`` (see :meth:`ShardAdmin.requeue_dead_letter`)."""
        return self._holder(letter_id).requeue_dead_letter(letter_id)

    def _holder(self, letter_id: str) -> ShardAdmin:
        """The shard holding dead letter ``letter_id`` (the first when none does). Each
        shard's stream makes its own ids, so two can hold the same one: refused."""
        if len(self.shards) == 1:
            return self.shards[0]
        holders = [shard for shard in self.shards if shard.dead_letter(letter_id)]
        if len(holders) > 1:
            raise DeadLetterError(
                f"dead letter id {letter_id} is in {len(holders)} shards of "
                f"{self.settings.name}: requeue them all (--all) or purge them"
            )
        return (holders or self.shards)[0]

    def requeue_dead_letters(self) -> RequeueReport:
        """Requeue every dead letter there is now, shard by shard, oldest first; those
        that cannot be requeued are kept and reported."""
        report = RequeueReport()
        for shard in self.shards:
            part = shard.requeue_dead_letters()
            report.requeued.extend(part.requeued)
            report.kept.extend(part.kept)
        return report

    def purge_dead_letters(self, older_than: float | None = None) -> int:
        """Delete every dead letter, or those dead-lettered over ``older_than`` seconds
        ago; returns how many went."""
        return sum(shard.purge_dead_letters(older_than) for shard in self.shards)


def _id_order(entry_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in entry_id.split("-") if part.isdigit())


class ShardAdmin(QueueUser):
    """The admin of one shard of a queue (the whole queue outside cluster mode)."""

    @cached_property
    def _producer(self) -> TaskProducer:
        return TaskProducer(settings=self.settings, client=self._client, retry=self._retry)

    def stats(self) -> QueueStats:
        """Length, pending entries, lag, oldest pending age, dead letters and delayed retries."""
        s = self.settings

        def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            pipe.xlen(s.stream)
            pipe.xlen(s.dead_letter_key)
            pipe.zcard(s.delayed_key)
            pipe.exists(s.stream)
            return pipe.execute()

        length, dead, delayed, exists = self._retry.call(read)
        group: dict[str, Any] = {}
        oldest: float | None = None
        if exists:
            groups: Any = self._retry.call(self._client.xinfo_groups, s.stream)
            group = next((g for g in groups if g.get("name") == s.group), {})
        if group.get("pending"):
            summary: Any = self._retry.call(self._client.xpending, s.stream, s.group)
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
        """The newest dead letters, newest first, each with its ``id`` (raw fields)."""
        rows: Any = self._retry.call(
            self._client.xrevrange, self.settings.dead_letter_key, count=count
        )
        return [{"id": entry_id, **fields} for entry_id, fields in rows]

    # -- dead letters, decoded -----------------------------------------------------------

    def dead_letter_count(self) -> int:
        return int(self._retry.call(self._client.xlen, self.settings.dead_letter_key))

    def dead_letter_entries(self, limit: int = 50) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, newest first."""
        rows: Any = self._retry.call(
            self._client.xrevrange, self.settings.dead_letter_key, count=limit
        )
        return [DeadLetter.from_fields(letter_id, fields) for letter_id, fields in rows]

    def dead_letter(self, letter_id: str) -> DeadLetter | None:
        """One dead letter by its id, or None."""
        _check_id(letter_id)
        rows: Any = self._retry.call(
            self._client.xrange, self.settings.dead_letter_key, letter_id, letter_id
        )
        return DeadLetter.from_fields(*rows[0]) if rows else None

    def requeue_dead_letter(self, letter_id: str) -> DeadLetter:
        """Put dead letter ``letter_id``'s payload back on the queue as a new entry, under
        the same task id, then delete the dead letter; returns it.

        The task's old hash and event stream go first (only when the task has ended: a
        live task is refused), so the submit writes a fresh ``pending`` status, as a
        first submit does. ``DeadLetterError`` (the dead letter kept) when it is unknown,
        cannot be decoded, or its task is pending, retrying or running.
        """
        letter = self.dead_letter(letter_id)
        if letter is None:
            raise DeadLetterError(f"no dead letter {letter_id} in {self.settings.dead_letter_key}")
        self._requeue(letter)
        return letter

    def requeue_dead_letters(self) -> RequeueReport:
        """Requeue every dead letter there is now, oldest first; those that cannot be
        requeued are kept and reported. A Redis error stops it (what was done stays)."""
        key = self.settings.dead_letter_key
        last: Any = self._retry.call(self._client.xrevrange, key, count=1)
        report = RequeueReport()
        if not last:
            return report
        cursor = "-"
        while True:
            rows: Any = self._retry.call(
                self._client.xrange, key, cursor, last[0][0], count=REQUEUE_BATCH
            )
            for letter_id, fields in rows:
                letter = DeadLetter.from_fields(letter_id, fields)
                try:
                    self._requeue(letter)
                except DeadLetterError as exc:
                    report.kept.append((letter, str(exc)))
                else:
                    report.requeued.append(letter)
            if len(rows) < REQUEUE_BATCH:
                return report
            cursor = f"({rows[-1][0]}"

    def purge_dead_letters(self, older_than: float | None = None) -> int:
        """Delete every dead letter, or those dead-lettered over ``older_than`` seconds ago
        (by Redis's clock, which stamped them); returns how many went."""
        key = self.settings.dead_letter_key
        if older_than is None:
            return int(self._retry.call(self._client.xtrim, key, maxlen=0, approximate=False))
        seconds, micros = self._retry.call(self._client.time)
        cutoff_ms = max(0, int((seconds + micros / 1e6 - older_than) * 1000))
        return int(
            self._retry.call(self._client.xtrim, key, minid=f"{cutoff_ms}-0", approximate=False)
        )

    def _requeue(self, letter: DeadLetter) -> None:
        payload = letter.payload()
        runner = self._retry.call(self._live_runner, payload.task_id)
        if runner:  # a worker judged dead that still runs it: a requeue would run it twice
            raise DeadLetterError(
                f"dead letter {letter.id} cannot be requeued: worker {runner} still runs task "
                f"{payload.task_id}; requeue it once that run has ended"
            )
        self._retry.call(self._forget_ended_task, letter, payload.task_id)
        self._producer.submit(payload)
        # Only now: a failure above leaves the dead letter to requeue again.
        self._retry.call(self._client.xdel, self.settings.dead_letter_key, letter.id)

    def _live_runner(self, task_id: str) -> str:
        """The id of a worker whose live heartbeat lists ``task_id`` as running, or ""."""
        prefix = self.settings.layout.worker_prefix
        for key in self._client.scan_iter(match=f"{prefix}*", count=200):
            try:
                running = self._client.hget(key, "running_task_ids") or ""
            except redis.ResponseError:  # not one of our heartbeats: it says nothing
                continue
            if isinstance(running, str) and task_id in running.split(","):
                return str(key)[len(prefix) :]
        return ""

    def _forget_ended_task(self, letter: DeadLetter, task_id: str) -> None:
        """Delete the task's hash and event stream when it has ended (or has none), so
        that the submit starts it afresh; refuse when it is live (already requeued, say)."""
        s = self.settings.for_task(task_id)
        task_key = s.task_key(task_id)
        for _ in range(WATCH_ATTEMPTS):
            with self._client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(task_key)  # type: ignore[no-untyped-call]
                    kind: Any = pipe.type(task_key)
                    if kind not in ("none", "hash"):
                        raise DeadLetterError(
                            f"dead letter {letter.id} cannot be requeued: "
                            f"{task_key} is a {kind}, not a task hash"
                        )
                    raw: Any = pipe.hget(task_key, "status")
                    status = TaskStatus.parse(raw) if isinstance(raw, str) else None
                    if kind == "hash" and not (status and status.is_terminal):
                        raise DeadLetterError(
                            f"dead letter {letter.id} cannot be requeued: task {task_id} is "
                            f"{raw or 'without a status'}, not ended (requeued already?)"
                        )
                    pipe.multi()
                    pipe.delete(task_key, s.event_stream(task_id))
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
        raise DeadLetterError(
            f"dead letter {letter.id} not requeued: task {task_id} kept changing meanwhile"
        )


def _check_id(letter_id: str) -> None:
    if not STREAM_ID.fullmatch(letter_id):
        raise ValidationError("id", f"not a stream entry id: {letter_id!r} (like 1700000000000-0)")
