"""The consumer side of a queue: one per worker, holding what that worker has claimed.

It claims entries (new ones, or dead workers' ones past the visibility timeout),
dead-letters those that can never run, moves a claimed task to running
(:meth:`TaskConsumer.begin`), keeps the entries it holds fresh, and settles
each delivery exactly once (:meth:`TaskConsumer.settle`). Every write is one Lua
script; ``begin`` and ``settle`` are fenced: they write nothing for an entry this
consumer no longer holds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import redis

from orbiter_sync import lua, native
from orbiter_sync.cluster_client import REDIS_ERRORS
from orbiter_sync.connection import DEFAULT_RETRY, RetryPolicy
from orbiter_sync.dead_letters import DeadLetterWriter, task_id_of
from orbiter_sync.errors import ValidationError
from orbiter_sync.events import ErrorEvent, StatusEvent, new_event_id
from orbiter_sync.inbox import Inbox
from orbiter_sync.lines import LineUser
from orbiter_sync.models import TaskPayload, TaskStatus
from orbiter_sync.outcome import Outcome, OutcomeKind, Settled
from orbiter_sync.queue import Delivery, QueueSettings, shared_keys_problem
from orbiter_sync.reclaimer import Reclaimer

logger = logging.getLogger(__name__)

# What settle.lua is asked to do for each outcome (LOST never reaches Redis).
_SETTLE_OP = {
    OutcomeKind.COMPLETED: "completed",
    OutcomeKind.FAILED: "retry",
    OutcomeKind.TIMED_OUT: "retry",
    OutcomeKind.FAILED_FOR_GOOD: "failed",
    OutcomeKind.CANCELLED: "cancelled",
    OutcomeKind.RELEASED: "released",
}


class TaskConsumer(LineUser):
    """Claims and settles tasks of one queue for one worker (the consumer ``name``)."""

    def __init__(
        self,
        redis_url: str | None,
        name: str,
        settings: QueueSettings | None = None,
        *,
        client: redis.Redis | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        prefetch: int = 0,
        slots: int | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        self.name = name
        self.settings = settings or QueueSettings()
        super().__init__(redis_url, client=client, retry=retry)
        self._lock = native.Lock()  # the heartbeat's OS thread reads what is in flight
        self._in_flight: dict[str, Delivery] = {}  # by entry id: claimed, not yet settled
        self._started: set[str] = set()  # entry ids of those begun
        self.group_ready = False
        # a queue's shards share one inbox, which reads them all (shard_claim.py)
        self.inbox = inbox if inbox is not None else Inbox(self.read_new, prefetch, slots)
        running = StatusEvent(status="running", message=f"running on {name}")
        # the same for every task it begins, but the attempt number begin.lua appends
        self._running_event = running.to_json()[:-1] + ',"attempt":'
        self._dead_letters = DeadLetterWriter(self._client, name, self.settings, retry)
        self.reclaimer = Reclaimer(self._client, name, self.settings, retry, self._held)
        self._scripts = {
            script: lua.register(self._client, script)
            for script in ("begin", "settle", "keep_alive")
        }

    # -- claiming --------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the consumer group (from the start of the stream) if it does not exist."""
        s = self.settings
        try:
            self._retry.call(self._client.xgroup_create, s.stream, s.group, id="0", mkstream=True)
            logger.info("created consumer group %s on %s", s.group, s.stream)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.group_ready = True

    def claim(self, *, timeout: float = 5.0) -> Delivery | None:
        """The next task, waiting up to ``timeout`` seconds; None if none came.

        Slots claiming at the same time share one ``XREADGROUP`` (inbox.py). An
        entry that cannot be decoded, or was delivered more than ``max_deliveries``
        times, is dead-lettered and the wait goes on: claim never raises on a bad
        entry. Retries coming due and dead workers' entries are not looked for
        here: the worker's maintenance loop does that on its own schedule
        (maintenance.py), handing what it takes over to :meth:`offer`.
        """
        return self.inbox.take(timeout)

    def read_new(self, count: int, deadline: float) -> list[Delivery]:
        """Read up to ``count`` new entries in one call, blocking until ``deadline`` at most."""
        if not self.group_ready:
            self.ensure_group()
        block_ms = math.ceil(min(max(deadline - time.monotonic(), 0.0), 2.0) * 1000)
        try:
            response: Any = self._retry.call(self._client.xreadgroup, self.settings.group,
                                             self.name, {self.settings.stream: ">"}, count=count,
                                             block=block_ms or None)  # fmt: skip
        except redis.ResponseError as exc:
            response = exc
        return self.accept_reply(response)

    def accept_reply(self, reply: Any) -> list[Delivery]:
        """The deliveries of an ``XREADGROUP`` reply; after NOGROUP (Redis restarted?) none,
        and the group is made again at the next read. Any other error reply is raised."""
        if isinstance(reply, redis.ResponseError) and "NOGROUP" in str(reply):
            logger.warning("consumer group %s vanished; recreating", self.settings.group)
            self.group_ready = False
            return []
        if isinstance(reply, Exception):
            raise reply
        entries = [entry for _stream, batch in reply or () for entry in batch]
        return self._accept_all([(entry_id, fields, 1) for entry_id, fields in entries])

    def _accept_all(self, entries: list[tuple[str, dict[str, str], int]]) -> list[Delivery]:
        """Accept a batch of claimed entries; what one of them raises (its dead letter could
        not be written) does not lose the others. That entry stays unheld, so it is
        taken back once idle; the error is raised only when nothing was accepted."""
        accepted, failure = [], None
        for entry_id, fields, deliveries in entries:
            try:
                delivery = self._accept(entry_id, fields, deliveries)
            except Exception as exc:  # noqa: BLE001 - the rest of the batch is ours to run
                failure = failure or exc
                logger.error("worker %s: entry %s not accepted: %s", self.name, entry_id, exc)
                continue
            if delivery is not None:
                accepted.append(delivery)
        if failure is not None and not accepted:
            raise failure
        return accepted

    def offer(self, deliveries: list[Delivery]) -> None:
        """Queue deliveries claimed outside :meth:`claim` (taken over from dead workers)
        for the next slots that claim."""
        self.inbox.offer(deliveries)

    def release_waiting(self) -> None:
        """Put back on the queue what was claimed for slots that stop without taking it."""
        for delivery in self.inbox.drain():
            self.release(delivery)

    def release(self, delivery: Delivery) -> None:
        """Put back on the queue a delivery of this consumer that never started."""
        try:
            self.settle(delivery, Outcome.released("worker stopped before it started"))
        except Exception as exc:  # noqa: BLE001 - reclaimed once this worker is gone
            self.abandon(delivery)
            logger.error("worker %s: task %s not released: %s", self.name, delivery.task_id, exc)

    def room(self) -> int:
        """How many more deliveries this worker's slots could take now (at least 0)."""
        return max(0, self.inbox.room())

    def reclaim(self, *, count: int = 10, max_scan: int = 10) -> list[Delivery]:
        """Take over up to ``count`` entries of dead workers, idle past the visibility
        timeout (reclaimer.py); those delivered too often, or undecodable, are dead-lettered."""
        return self.reclaimer.reclaim(self._accept_all, count=count, max_scan=max_scan)

    def _accept(self, entry_id: str, fields: dict[str, str], deliveries: int) -> Delivery | None:
        raw = fields.get("payload")
        try:
            if raw is None:
                raise ValidationError("payload", "stream entry has no payload field")
            payload = TaskPayload.from_json(raw)
        except Exception as exc:  # noqa: BLE001 - whatever an entry holds, it never kills a slot
            reason = f"undecodable payload: {exc}"
            if not isinstance(exc, ValidationError):
                reason = f"undecodable payload: {type(exc).__name__}: {exc}"
            task_id = task_id_of(raw)
            task_id = "" if self.settings.misplaced(task_id) else task_id  # another shard's
            self.dead_letter(entry_id, reason, fields, task_id)
            return None
        misplaced = self.settings.misplaced(payload.task_id)  # put on this shard by hand
        if misplaced:
            self.dead_letter(entry_id, misplaced, fields)
            return None
        if deliveries > self.settings.max_deliveries:
            reason = (
                f"delivered {deliveries} times without finishing (max_deliveries="
                f"{self.settings.max_deliveries}); its worker probably dies running it"
            )
            self.dead_letter(entry_id, reason, fields, payload.task_id)
            return None
        delivery = Delivery(
            payload, entry_id, raw, deliveries, self.settings.name, self.settings.shard
        )
        with self._lock:
            self._in_flight[entry_id] = delivery
        logger.debug("worker %s claimed task %s (entry %s)", self.name, payload.task_id, entry_id)
        return delivery

    def dead_letter(
        self, entry_id: str, reason: str, fields: dict[str, str], task_id: str = ""
    ) -> bool:
        """Move an entry this consumer holds to the dead-letter stream with ``reason``; its
        task (if known) fails. False, writing nothing, when it does not hold the entry."""
        written = self._dead_letters.write(entry_id, reason, fields, task_id)
        self._forget(entry_id)
        return written

    # -- running and settling --------------------------------------------------------

    def begin(self, delivery: Delivery) -> int:
        """Move the task to running and publish its ``running`` event; the attempt it
        begins (1 for the first run, retries + 1 after) if it may run.

        0 when it must not run: it ended meanwhile (cancelled while it waited,
        say: its entry is acknowledged here), or this consumer no longer holds
        its entry (another worker does).
        """
        task_id = delivery.task_id
        try:
            verdict, status, attempt = self._call_begin(delivery)
        except BaseException:
            self.abandon(delivery)
            raise
        if verdict == "started":
            with self._lock:
                if delivery.entry_id in self._in_flight:
                    self._started.add(delivery.entry_id)
            return max(1, attempt)
        self._forget(delivery.entry_id)
        logger.info(
            "worker %s: task %s not run: %s",
            self.name,
            task_id,
            "its entry is another worker's" if verdict == "lost" else f"it is already {status}",
        )
        return 0

    def _call_begin(self, delivery: Delivery) -> tuple[str, str, int]:
        s, task_id, now = self.settings, delivery.task_id, time.time()
        verdict, status, attempt = self._run_script(
            self._scripts["begin"],
            [*s.task_keys(task_id), *s.counts_keys(now)],
            [s.group, self.name, delivery.entry_id, task_id, repr(now), s.task_ttl,
             s.event_channel(task_id), s.event_ttl, new_event_id(), self._running_event],
        )  # fmt: skip
        return str(verdict), str(status), int(attempt or 0)

    def settle(
        self,
        delivery: Delivery,
        outcome: Outcome,
        *,
        agent_name: str = "",
        client: redis.Redis | None = None,
        retry: RetryPolicy | None = None,
    ) -> Settled:
        """Record how an attempt ended, in one script call (see ``settle.lua``), over
        ``client`` and ``retry`` when given (a stop, the heartbeat's OS thread).

        A failed attempt with retries left goes straight to ``retrying``; no
        reader ever sees ``failed`` for a task that will run again. Writes
        nothing when this consumer no longer holds the entry. The delivery stays
        held (kept alive, never taken back by this worker's own reclaimer) until
        the script has answered: a settle retried through an outage cannot race a
        second run of the same task.
        """
        if outcome.kind is OutcomeKind.LOST:
            self._forget(delivery.entry_id)
            return Settled("lost", None)
        s, task_id, now = self.settings, delivery.task_id, time.time()
        op, most = _SETTLE_OP[outcome.kind], s.retries_of(delivery.payload.max_retries)
        # the payload (re-queued as it came) and the recoverable event are needed for a
        # retry or a release only: a completed run does not send its payload back
        payload, event = "", ""
        if op in ("retry", "released"):
            payload = delivery.raw
            event = ErrorEvent(
                error=outcome.error if outcome.kind.is_failure else f"released: {outcome.reason}",
                error_type=outcome.error_type if outcome.kind.is_failure else "Released",
                recoverable=True,
                agent_name=agent_name,
            ).to_json()
        verdict, status = self._run_script(
            self._scripts["settle"],
            [*s.task_keys(task_id), s.delayed_key, *s.counts_keys(now)],
            [
                s.group,
                self.name,
                delivery.entry_id,
                task_id,
                op,
                repr(now),
                s.task_ttl,
                s.event_channel(task_id),
                s.event_ttl,
                new_event_id(),
                payload,
                outcome.result_json,
                outcome.error,
                "cancelled" if outcome.kind is OutcomeKind.CANCELLED else "",
                event,
                agent_name,
                most,
                json.dumps(s.backoffs(outcome.retry_after, most)) if op == "retry" else "[]",
                outcome.error_type,
                outcome.traceback,
            ],
            client,
            retry,
        )
        self._forget(delivery.entry_id)
        self.inbox.finished()
        return Settled(verdict, TaskStatus.parse(status))

    def abandon(self, delivery: Delivery) -> None:
        """Stop holding a delivery that cannot be settled now (Redis is away, say): it is
        no longer kept alive, so it is taken over once past the visibility timeout."""
        if self._forget(delivery.entry_id):
            logger.warning(
                "worker %s: task %s abandoned unsettled (entry %s); it will be reclaimed",
                self.name,
                delivery.task_id,
                delivery.entry_id,
            )

    def shared_keys_problem(self) -> str | None:
        """What is wrong when a key every task shares holds the wrong type, or None. A
        refusal then is not this task's fault: its entry must not be dead-lettered for it."""
        return shared_keys_problem(self._client, self.settings, self._retry)

    def _forget(self, entry_id: str) -> bool:
        """Stop holding the entry; True if it was held."""
        with self._lock:
            self._started.discard(entry_id)
            return self._in_flight.pop(entry_id, None) is not None

    def started(self, delivery: Delivery) -> bool:
        """True once :meth:`begin` has moved the delivery's task to running (until it is
        settled); False for one claimed and waiting for a slot."""
        with self._lock:
            return delivery.entry_id in self._started

    def _held(self) -> set[str]:
        with self._lock:
            return set(self._in_flight)

    def in_flight(self) -> list[Delivery]:
        """The deliveries claimed and not yet settled."""
        with self._lock:
            return list(self._in_flight.values())

    def keep_alive(
        self, *, client: redis.Redis | None = None, retry: RetryPolicy | None = None
    ) -> list[Delivery]:
        """Reset the idle time of every entry held, so none is reclaimed while it runs
        (over ``client`` when given).

        Returns (and stops holding) the deliveries whose entries another worker
        has taken over. Entries nobody holds any more were settled or released
        meanwhile: they are let go without a word.
        """
        held = {d.entry_id: d for d in self.in_flight()}
        if not held:
            return []
        s = self.settings
        taken_ids, gone_ids = (retry or self._retry).call(
            self._scripts["keep_alive"],
            keys=[s.stream],
            args=[s.group, self.name, *held],
            client=client,
        )
        for entry_id in gone_ids:
            self._forget(entry_id)
        taken = [held[entry_id] for entry_id in taken_ids]
        for delivery in taken:
            self._forget(delivery.entry_id)
        return taken

    def leave(self, *, client: redis.Redis | None = None) -> None:
        """Remove this consumer from the group if it holds no entry (best effort, at exit,
        over ``client`` when given: a stop's own, with short timeouts)."""
        s, client = self.settings, client or self._client
        try:
            pending = client.xpending_range(s.stream, s.group, "-", "+", 1, consumername=self.name)
            if not pending:
                client.xgroup_delconsumer(s.stream, s.group, self.name)
        except REDIS_ERRORS as exc:
            logger.debug("worker %s: consumer not removed: %s", self.name, exc)
