"""The producer side of a queue: what a web process needs to submit and cancel tasks.

Both are one Lua script each (``submit.lua``, ``cancel.lua``), safe to retry
after a lost reply, which the retry policy does. The tasks queued are counted in
the process's default prometheus-client registry (metrics/producer.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from functools import cached_property

import redis
from redis.commands.core import Script

from orbiter_sync import lua
from orbiter_sync.errors import ValidationError
from orbiter_sync.events import new_event_id
from orbiter_sync.models import TaskPayload
from orbiter_sync.queue import MAX_TIMEOUT_SECONDS, QueueSettings, QueueUser
from orbiter_sync.shards import layout_of

logger = logging.getLogger(__name__)

SUBMIT_BATCH = 500  # submits sent in one pipeline by submit_many
MAX_DELAY = 30 * 24 * 3600.0  # a task delayed further is a schedule, which this is not


def check_submit(payload: TaskPayload, delay: float = 0.0) -> None:
    """``ValidationError`` for what a submit refuses beyond the payload's own checks."""
    if not 0 <= delay <= MAX_DELAY:
        raise ValidationError("delay", f"must be from 0 to {MAX_DELAY:g} seconds, got {delay!r}")
    if payload.timeout_seconds > MAX_TIMEOUT_SECONDS:
        raise ValidationError(
            "timeout_seconds",
            f"must be at most {MAX_TIMEOUT_SECONDS:g} seconds (7 days), "
            f"got {payload.timeout_seconds:g}",
        )


class TaskProducer(QueueUser):
    """Submits tasks to one queue and cancels them."""

    @cached_property
    def _submit(self) -> Script:
        return lua.register(self._client, "submit")

    @cached_property
    def _cancel(self) -> Script:
        return lua.register(self._client, "cancel")

    @property
    def queue_name(self) -> str:
        return self.settings.name

    @cached_property
    def sharded(self) -> QueueSettings:
        """The settings in the deployment's key layout, found (and on a cluster, its shard
        count recorded) on first use: :func:`~orbiter_sync.shards.layout_of`."""
        given = self.settings.layout
        layout = layout_of(self._client, given.shards if given.cluster else None, record=True,
                           retry=self._retry)  # fmt: skip
        return self.settings if layout == given else replace(self.settings, layout=layout)

    def submit(self, payload: TaskPayload, *, delay: float = 0.0) -> str:
        """Queue ``payload``: pending hash, index entry and stream entry, all or nothing,
        in one round trip; with ``delay`` (seconds), it waits pending in the delayed set
        until then, and the workers queue it when it is due.

        Idempotent: submitting a task id that already has a hash queues nothing more.
        A ``timeout_seconds`` over 7 days is refused (``ValidationError``).
        """
        check_submit(payload, delay)
        keys_, args = self._submit_call(payload, delay)
        added = self._retry.call(self._submit, keys=keys_, args=args)
        _count_submitted(self.settings.name, int(added))
        if added:
            logger.debug("task %s submitted to %s", payload.task_id, self.settings.name)
        else:
            logger.info("task %s already submitted; not queued again", payload.task_id)
        return payload.task_id

    def submit_many(self, payloads: Iterable[TaskPayload]) -> list[str]:
        """Queue many payloads, pipelined (:data:`SUBMIT_BATCH` per round trip); their
        task ids, in order.

        Every payload is checked before anything is sent: one bad payload queues
        none. Each task is queued all or nothing and idempotently, as by
        :meth:`submit`, so a batch retried after a dropped connection, or
        submitted twice, queues every task once. When Redis refuses one task (its
        hash key holds another type, say) that error is raised once the rest of its
        batch is queued; later batches are not sent. Submitting the same payloads
        again is safe.
        """
        batch = list(payloads)
        for payload in batch:
            check_submit(payload)
        queued = 0
        for start in range(0, len(batch), SUBMIT_BATCH):
            queued += self._retry.call(self._submit_batch, batch[start : start + SUBMIT_BATCH])
        logger.debug("%d of %d tasks queued on %s", queued, len(batch), self.settings.name)
        return [payload.task_id for payload in batch]

    def _submit_call(
        self, payload: TaskPayload, delay: float = 0.0
    ) -> tuple[list[str], list[str | int]]:
        s, now = self.sharded.for_task(payload.task_id), time.time()
        due = repr(now + delay) if delay > 0 else ""
        return (
            [s.task_key(payload.task_id), s.index_key, s.stream, s.delayed_key],
            [payload.task_id, payload.to_json(), s.task_ttl, repr(now), due],
        )

    def _submit_batch(self, batch: list[TaskPayload]) -> int:
        """One pipeline of EVALSHA calls; the script is loaded first if Redis lacks it."""
        script = self._submit
        calls = [self._submit_call(payload) for payload in batch]
        for _ in range(2):
            pipe = self._client.pipeline(transaction=False)
            for keys_, args in calls:
                # (a cluster pipeline refuses evalsha() by name, not the command)
                pipe.execute_command("EVALSHA", script.sha, len(keys_), *keys_, *args)  # type: ignore[no-untyped-call]
            replies = pipe.execute(raise_on_error=False)
            errors = [reply for reply in replies if isinstance(reply, Exception)]
            queued = sum(int(reply) for reply in replies if not isinstance(reply, Exception))
            _count_submitted(self.settings.name, queued)  # even when others of them failed
            if not errors:
                return queued
            others = [e for e in errors if not isinstance(e, redis.exceptions.NoScriptError)]
            if others:
                raise others[0]  # a transient one is retried (the batch is idempotent)
            script.sha = self._client.script_load(script.script)  # flushed or never loaded
        raise errors[0]

    def cancel(self, task_id: str) -> bool:
        """Mark a pending, retrying or running task cancelled and tell its worker.

        A task that never started gets its terminal ``cancelled`` event right away;
        a running one gets it from its worker once the run has stopped. Returns
        False for unknown, completed or failed tasks.
        """
        s = self.sharded.for_task(task_id)
        done = self._retry.call(
            self._cancel,
            keys=[s.task_key(task_id), s.index_key, s.event_stream(task_id)],
            args=[
                task_id,
                s.layout.cancel_channel(task_id),
                s.event_channel(task_id),
                s.event_ttl,
                new_event_id(),
                repr(time.time()),
                s.task_ttl,
            ],
        )
        if done:
            logger.info("task %s cancelled", task_id)
        return bool(done)


_uncounted = False  # the first failure to count is logged, not every one


def _count_submitted(queue: str, count: int) -> None:
    """Count tasks queued; counting never fails a submit whose tasks are queued (with
    ``PROMETHEUS_MULTIPROC_DIR`` naming a directory that is not there, say)."""
    global _uncounted
    if not count:
        return
    try:
        # prometheus-client is imported by the first submit, not by every importer
        from orbiter_sync.metrics.producer import count_submitted

        count_submitted(queue, count)
    except Exception as exc:  # noqa: BLE001 - a metric is not worth a failed submit
        if not _uncounted:
            _uncounted = True
            logger.warning("submitted tasks are not counted: %s: %s", type(exc).__name__, exc)
