"""The producer side of a queue: what a web process needs to submit and cancel tasks.

Both are one Lua script each (``submit.lua``, ``cancel.lua``), safe to retry
after a lost reply, which the retry policy does.
"""

from __future__ import annotations

import logging
import time
from functools import cached_property

from redis.commands.core import Script

from orbiter_sync import keys, lua
from orbiter_sync.errors import ValidationError
from orbiter_sync.events import new_event_id
from orbiter_sync.models import TaskPayload
from orbiter_sync.queue import MAX_TIMEOUT_SECONDS, QueueUser

logger = logging.getLogger(__name__)


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

    def submit(self, payload: TaskPayload) -> str:
        """Queue ``payload``: pending hash, index entry and stream entry, all or nothing.

        Idempotent: submitting a task id that already has a hash queues nothing more.
        A ``timeout_seconds`` over 7 days is refused (``ValidationError``).
        """
        if payload.timeout_seconds > MAX_TIMEOUT_SECONDS:
            raise ValidationError(
                "timeout_seconds",
                f"must be at most {MAX_TIMEOUT_SECONDS:g} seconds (7 days), "
                f"got {payload.timeout_seconds:g}",
            )
        s = self.settings
        added = self._retry.call(
            self._submit,
            keys=[s.task_key(payload.task_id), s.index_key, s.name],
            args=[payload.task_id, payload.to_json(), s.task_ttl, repr(time.time())],
        )
        if added:
            logger.debug("task %s submitted to %s", payload.task_id, s.name)
        else:
            logger.info("task %s already submitted; not queued again", payload.task_id)
        return payload.task_id

    def cancel(self, task_id: str) -> bool:
        """Mark a pending, retrying or running task cancelled and tell its worker.

        A task that never started gets its terminal ``cancelled`` event right away;
        a running one gets it from its worker once the run has stopped. Returns
        False for unknown, completed or failed tasks.
        """
        s = self.settings
        done = self._retry.call(
            self._cancel,
            keys=[s.task_key(task_id), s.index_key, keys.event_stream(task_id)],
            args=[
                task_id,
                keys.cancel_channel(task_id),
                keys.event_channel(task_id),
                s.event_ttl,
                new_event_id(),
                repr(time.time()),
                s.task_ttl,
            ],
        )
        if done:
            logger.info("task %s cancelled", task_id)
        return bool(done)
