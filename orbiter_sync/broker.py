"""The task queue: a Redis stream read through one consumer group, plus our own side keys.

Wire keys: the queue stream (field ``payload``) and its group ``{queue}:group``.
Ours: ``{queue}:delayed`` (retries waiting out their backoff, scored by due time)
and ``{queue}:dead`` (dead letters, each with its reason).

Every write that must be all-or-nothing is one Lua script: submit (hash, index and
entry together, idempotent), finish (status, ack, delete and terminal event), nack,
cancel, dead-lettering, promotion of due retries and the keep-alive of running
entries. All are safe to retry after a lost reply, which the retry policy does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
import tenacity

from orbiter_sync import keys
from orbiter_sync.connection import DEFAULT_RETRY, RetryPolicy, connect
from orbiter_sync.errors import ValidationError
from orbiter_sync.events import EVENT_LUA, ErrorEvent, new_event_id
from orbiter_sync.models import TaskPayload, TaskStatus
from orbiter_sync.store import DEFAULT_TTL_SECONDS, TRANSITION_LUA, hash_fields

logger = logging.getLogger(__name__)

DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_VISIBILITY_TIMEOUT = 60.0
DEAD_LETTER_MAXLEN = 100_000


def default_retry_backoff() -> tenacity.wait.wait_base:
    """1 s, 2 s, 4 s ... capped at 60 s, with up to 1 s of jitter."""
    return tenacity.wait_exponential(multiplier=1.0, max=60.0) + tenacity.wait_random(0, 1.0)


# Ends a task's event stream with the terminal event matching its stored status,
# unless the stream already ends with one: exactly one terminal event per task.
_END_STREAM_LUA = (
    EVENT_LUA
    + """
local EVENT_STATUS = {completed = 'completed', failed = 'error', cancelled = 'cancelled'}
local function end_stream(stream, channel, ttl, task_status, message, agent_name, eid)
  local status = EVENT_STATUS[task_status]
  if not status or last_event_is_terminal(stream) then return false end
  local event = cjson.encode({type = 'status', status = status, message = message,
                              agent_name = agent_name})
  append_event(stream, channel, ttl, event, eid)
  return true
end
"""
)

# KEYS: task hash, index, queue. ARGV: task_id, payload, ttl, now.
_SUBMIT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'task_id', ARGV[1], 'status', 'pending', 'retries', '0',
           'created_at', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], '*', 'payload', ARGV[2])
return 1
"""

# KEYS: queue, task hash, index, event stream.
# ARGV: group, entry_id, task_id, status, ttl, event ttl, event channel, eid, message,
#       agent_name, then field/value pairs. Returns the status the task ends in.
_FINISH_LUA = (
    TRANSITION_LUA
    + _END_STREAM_LUA
    + """
local current = redis.call('HGET', KEYS[2], 'status')
if may_become(current, ARGV[4]) then
  redis.call('HSET', KEYS[2], 'task_id', ARGV[3], 'status', ARGV[4], unpack(ARGV, 11))
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('SADD', KEYS[3], ARGV[3])
  current = ARGV[4]
end
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
end_stream(KEYS[4], ARGV[7], ARGV[6], current, ARGV[9], ARGV[10], ARGV[8])
return current
"""
)

# KEYS: queue, task hash, delayed set, event stream.
# ARGV: group, entry_id, payload, now, ttl, max_retries, event ttl, event channel, eid,
#       retry event json, error, agent_name, then one backoff delay per retry number.
# Returns the status the task is left in.
_NACK_LUA = (
    _END_STREAM_LUA
    + """
local function ack()
  if ARGV[2] ~= '' then
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
    redis.call('XDEL', KEYS[1], ARGV[2])
  end
end
local current = redis.call('HGET', KEYS[2], 'status')
if ARGV[2] ~= '' and #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  return current or 'failed'  -- already settled: this is a retried call
end
if current == 'completed' or current == 'cancelled' then
  ack()
  end_stream(KEYS[4], ARGV[8], ARGV[7], current, '', ARGV[12], ARGV[9])
  return current
end
local retries = tonumber(redis.call('HGET', KEYS[2], 'retries') or '0') or 0
if retries >= tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[2], 'status', 'failed', 'error', ARGV[11], 'completed_at', ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  ack()
  end_stream(KEYS[4], ARGV[8], ARGV[7], 'failed', ARGV[11], ARGV[12], ARGV[9])
  return 'failed'
end
retries = retries + 1
redis.call('HSET', KEYS[2], 'status', 'retrying', 'retries', retries, 'error', ARGV[11])
redis.call('EXPIRE', KEYS[2], ARGV[5])
append_event(KEYS[4], ARGV[8], ARGV[7], ARGV[10], ARGV[9])
local delay = tonumber(ARGV[12 + retries] or ARGV[#ARGV]) or 0
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], tonumber(ARGV[4]) + delay, ARGV[3]) end
ack()
return 'retrying'
"""
)

# KEYS: task hash, event stream, index. ARGV: cancel channel, event channel, event ttl,
# eid, now, ttl, task_id. Returns 1 when the task is now cancelled.
_CANCEL_LUA = (
    _END_STREAM_LUA
    + """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return 0 end
if current == 'completed' or current == 'failed' then return 0 end
if current ~= 'cancelled' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'completed_at', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('SADD', KEYS[3], ARGV[7])
end
redis.call('PUBLISH', ARGV[1], 'cancel')
if current ~= 'running' then
  end_stream(KEYS[2], ARGV[2], ARGV[3], 'cancelled', 'cancelled before it ran', '', ARGV[4])
end
return 1
"""
)

# KEYS: queue, dead letters, task hash, index, event stream.
# ARGV: group, entry_id, reason, raw entry json, worker_id, now, task_id, ttl, event ttl,
#       event channel, eid, maxlen.
_DEAD_LETTER_LUA = (
    _END_STREAM_LUA
    + """
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[12], '*', 'entry_id', ARGV[2],
           'task_id', ARGV[7], 'reason', ARGV[3], 'entry', ARGV[4], 'worker_id', ARGV[5],
           'dead_at', ARGV[6])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[7] == '' then return 1 end
local current = redis.call('HGET', KEYS[3], 'status')
if current ~= 'completed' and current ~= 'cancelled' then
  redis.call('HSET', KEYS[3], 'task_id', ARGV[7], 'status', 'failed', 'error', ARGV[3],
             'completed_at', ARGV[6])
  redis.call('EXPIRE', KEYS[3], ARGV[8])
  redis.call('SADD', KEYS[4], ARGV[7])
  current = 'failed'
end
end_stream(KEYS[5], ARGV[10], ARGV[9], current, ARGV[3], '', ARGV[11])
return 1
"""
)

# KEYS: queue, task hash, event stream. ARGV: group, entry_id, payload, event channel,
# event ttl, eid, event json. Puts a stopped, unfinished run back on the queue (not a
# failed attempt); a task that ended meanwhile is only acknowledged.
_RELEASE_LUA = (
    _END_STREAM_LUA
    + """
local current = redis.call('HGET', KEYS[2], 'status')
if current == 'completed' or current == 'cancelled' or current == 'failed' then
  end_stream(KEYS[3], ARGV[4], ARGV[5], current, '', '', ARGV[6])
elseif #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) > 0 then
  if current == 'running' then redis.call('HSET', KEYS[2], 'status', 'pending') end
  redis.call('XADD', KEYS[1], '*', 'payload', ARGV[3])
  append_event(KEYS[3], ARGV[4], ARGV[5], ARGV[7], ARGV[6])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return current or ''
"""
)

# KEYS: delayed set, queue. ARGV: now, limit. Moves due retries back onto the queue.
_PROMOTE_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, payload in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'payload', payload)
  redis.call('ZREM', KEYS[1], payload)
end
return #due
"""

# KEYS: queue. ARGV: group, consumer, min idle ms, cursor, count.
# Returns {next cursor, {{id, fields, deliveries}, ...}}.
_RECLAIM_LUA = """
local res = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                       'COUNT', ARGV[5])
local out = {}
for _, entry in ipairs(res[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
  local deliveries = 1
  if #p > 0 then deliveries = p[1][4] end
  table.insert(out, {entry[1], entry[2], deliveries})
end
return {res[1], out}
"""

# KEYS: queue. ARGV: group, consumer, entry ids... Resets the idle time of the entries
# this consumer still owns; returns the ids it no longer owns.
_TOUCH_LUA = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""


@dataclass(frozen=True)
class Delivery:
    """A claimed task: its payload, its stream entry, and how often that entry was delivered."""

    payload: TaskPayload
    entry_id: str
    deliveries: int = 1

    @property
    def task_id(self) -> str:
        return self.payload.task_id


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
        return dict(self.__dict__)


class NackOutcome(StrEnum):
    RETRYING = "retrying"  # re-enqueued after its backoff
    FAILED = "failed"  # retries exhausted; acknowledged, stays failed
    COMPLETED = "completed"  # already final: acknowledged, nothing else
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class _InFlight:
    entry_id: str
    raw_payload: str


class TaskBroker:
    """Submits, claims and settles tasks on one queue.

    ``max_retries`` failed attempts are retried (after ``retry_backoff``, a tenacity
    wait strategy); an entry delivered more than ``max_deliveries`` times without
    being settled (its workers keep dying) goes to the dead-letter stream.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        queue_name: str = keys.DEFAULT_QUEUE,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        retry_backoff: tenacity.wait.wait_base | None = None,
        task_prefix: str = keys.TASK_PREFIX,
        task_ttl_seconds: int = DEFAULT_TTL_SECONDS,
        stream_ttl_seconds: int = 3600,
        client: redis.Redis | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        if max_retries < 0 or max_deliveries < 1 or visibility_timeout <= 0:
            raise ValueError("max_retries >= 0, max_deliveries >= 1, visibility_timeout > 0")
        self._client = client if client is not None else connect(redis_url)
        self._owns_client = client is None
        self.queue_name = queue_name
        self.group = keys.consumer_group(queue_name)
        self.dead_letter_key = keys.dead_letters(queue_name)
        self.delayed_key = keys.delayed_retries(queue_name)
        self.max_retries = max_retries
        self.max_deliveries = max_deliveries
        self.visibility_timeout = visibility_timeout
        self.retry_backoff = retry_backoff or default_retry_backoff()
        self.task_prefix = task_prefix
        self.task_ttl_seconds = task_ttl_seconds
        self.stream_ttl_seconds = stream_ttl_seconds
        self._retry = retry
        self._inflight: dict[str, _InFlight] = {}
        self._group_ready = False
        self._lock = threading.Lock()
        self._next_promote = 0.0
        self._next_reclaim = 0.0
        self._reclaim_cursor = "0-0"
        script = self._client.register_script
        self._submit = script(_SUBMIT_LUA)
        self._finish = script(_FINISH_LUA)
        self._nack = script(_NACK_LUA)
        self._cancel = script(_CANCEL_LUA)
        self._dead_letter = script(_DEAD_LETTER_LUA)
        self._promote = script(_PROMOTE_LUA)
        self._reclaim = script(_RECLAIM_LUA)
        self._touch = script(_TOUCH_LUA)
        self._release = script(_RELEASE_LUA)

    # -- submitting ------------------------------------------------------------------

    def submit(self, payload: TaskPayload) -> str:
        """Queue ``payload``: pending hash, index entry and stream entry, all or nothing.

        Idempotent: submitting a task id that already has a hash queues nothing more.
        """
        added = self._retry.call(
            self._submit,
            keys=[
                self._task_key(payload.task_id),
                keys.task_index(self.task_prefix),
                self.queue_name,
            ],
            args=[payload.task_id, payload.to_json(), self.task_ttl_seconds, repr(time.time())],
        )
        if added:
            logger.debug("task %s submitted to %s", payload.task_id, self.queue_name)
        else:
            logger.info("task %s already submitted; not queued again", payload.task_id)
        return payload.task_id

    # -- claiming --------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the consumer group (from the start of the stream) if it does not exist."""
        try:
            self._retry.call(
                self._client.xgroup_create, self.queue_name, self.group, id="0", mkstream=True
            )
            logger.info("created consumer group %s on %s", self.group, self.queue_name)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def claim(self, worker_id: str, *, timeout: float = 5.0) -> Delivery | None:
        """The next task for ``worker_id``, waiting up to ``timeout`` seconds; None if none came.

        Entries of dead workers (idle past the visibility timeout) are taken over
        first. An entry that cannot be decoded, or was delivered more than
        ``max_deliveries`` times, is dead-lettered and the wait goes on: claim
        never raises on a bad entry.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            if not self._group_ready:
                self.ensure_group()
            self._promote_due()
            try:
                delivery = self._reclaim_one(worker_id) or self._read_new(worker_id, deadline)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                logger.warning(
                    "consumer group %s vanished (Redis restarted?); recreating", self.group
                )
                self._group_ready = False
                continue
            if delivery is not None or time.monotonic() >= deadline:
                return delivery

    def _read_new(self, worker_id: str, deadline: float) -> Delivery | None:
        block_ms = int(min(max(deadline - time.monotonic(), 0.0), 2.0) * 1000)
        response: Any = self._retry.call(
            self._client.xreadgroup,
            self.group,
            worker_id,
            {self.queue_name: ">"},
            count=1,
            block=block_ms or None,
        )
        for _stream, entries in response or ():
            for entry_id, fields in entries:
                return self._accept(worker_id, entry_id, fields, deliveries=1)
        return None

    def _reclaim_one(self, worker_id: str) -> Delivery | None:
        now = time.monotonic()
        if now < self._next_reclaim:
            return None
        for delivery in self.reclaim(worker_id, count=1):
            return delivery
        self._next_reclaim = now + min(self.visibility_timeout / 4, 5.0)
        return None

    def reclaim(self, worker_id: str, *, count: int = 10, max_scan: int = 100) -> list[Delivery]:
        """Take over up to ``count`` entries idle longer than the visibility timeout.

        Follows XAUTOCLAIM's cursor (at most ``max_scan`` steps per call). Entries
        delivered too often are dead-lettered instead of returned.
        """
        min_idle_ms = int(self.visibility_timeout * 1000)
        claimed: list[Delivery] = []
        for _ in range(max_scan):
            with self._lock:
                cursor = self._reclaim_cursor
            reply: Any = self._retry.call(
                self._reclaim,
                keys=[self.queue_name],
                args=[self.group, worker_id, min_idle_ms, cursor, count - len(claimed)],
            )
            next_cursor, entries = reply
            with self._lock:
                self._reclaim_cursor = next_cursor
            for entry_id, flat_fields, deliveries in entries:
                fields = dict(zip(flat_fields[::2], flat_fields[1::2], strict=True))
                logger.warning(
                    "worker %s reclaimed entry %s (delivery %d) from a dead worker",
                    worker_id,
                    entry_id,
                    deliveries,
                )
                delivery = self._accept(worker_id, entry_id, fields, deliveries=int(deliveries))
                if delivery is not None:
                    claimed.append(delivery)
            if len(claimed) >= count or next_cursor == "0-0":
                break
        return claimed

    def _accept(
        self, worker_id: str, entry_id: str, fields: dict[str, str], *, deliveries: int
    ) -> Delivery | None:
        raw = fields.get("payload")
        task_id = ""
        try:
            if raw is None:
                raise ValidationError("payload", "stream entry has no payload field")
            payload = TaskPayload.from_json(raw)
        except ValidationError as exc:
            task_id = _task_id_of(raw)
            self.dead_letter(entry_id, f"undecodable payload: {exc}", fields, worker_id, task_id)
            return None
        if deliveries > self.max_deliveries:
            reason = (
                f"delivered {deliveries} times without finishing (max_deliveries="
                f"{self.max_deliveries}); its worker probably dies running it"
            )
            self.dead_letter(entry_id, reason, fields, worker_id, payload.task_id)
            return None
        self._inflight[payload.task_id] = _InFlight(entry_id, raw or "")
        logger.debug("worker %s claimed task %s (entry %s)", worker_id, payload.task_id, entry_id)
        return Delivery(payload=payload, entry_id=entry_id, deliveries=deliveries)

    # -- settling --------------------------------------------------------------------

    def ack(self, task_id: str) -> bool:
        """Acknowledge the claimed entry of ``task_id`` and delete it from the stream."""
        inflight = self._inflight.pop(task_id, None)
        if inflight is None:
            logger.warning("ack of task %s, which this broker has not claimed", task_id)
            return False

        def ack_and_delete() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.xack(self.queue_name, self.group, inflight.entry_id)
            pipe.xdel(self.queue_name, inflight.entry_id)
            pipe.execute()

        self._retry.call(ack_and_delete)
        return True

    def finish(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        message: str = "",
        agent_name: str = "",
        **fields: Any,
    ) -> TaskStatus:
        """Record a final ``status`` (with ``fields``), acknowledge and delete the entry,
        and end the event stream, in one round trip.

        The status is conditional: if the task was cancelled meanwhile it stays
        cancelled. Returns the status the task ends in.
        """
        inflight = self._inflight.pop(task_id, None)
        current = self._retry.call(
            self._finish,
            keys=[
                self.queue_name,
                self._task_key(task_id),
                keys.task_index(self.task_prefix),
                keys.event_stream(task_id),
            ],
            args=[
                self.group,
                inflight.entry_id if inflight else "",
                task_id,
                TaskStatus(status).value,
                self.task_ttl_seconds,
                self.stream_ttl_seconds,
                keys.event_channel(task_id),
                new_event_id(),
                message,
                agent_name,
                *hash_fields(fields),
            ],
        )
        return TaskStatus(current)

    def nack(
        self, task_id: str, *, error: str = "", error_type: str = "Error", agent_name: str = ""
    ) -> NackOutcome:
        """Settle a failed attempt: re-enqueue after a backoff while retries remain.

        With retries left (``retries < max_retries`` in the task hash) the task
        becomes RETRYING with ``retries`` + 1, an ``error`` event with
        ``recoverable: true`` is published, and the payload waits in the delayed
        set until its backoff is over. Otherwise it stays FAILED, is acknowledged,
        and its stream ends with an ``error`` status event.
        """
        inflight = self._inflight.pop(task_id, None)
        retry_event = ErrorEvent(
            error=error, error_type=error_type, recoverable=True, agent_name=agent_name
        )
        backoffs = [self._backoff(attempt) for attempt in range(1, self.max_retries + 1)]
        outcome = self._retry.call(
            self._nack,
            keys=[
                self.queue_name,
                self._task_key(task_id),
                self.delayed_key,
                keys.event_stream(task_id),
            ],
            args=[
                self.group,
                inflight.entry_id if inflight else "",
                inflight.raw_payload if inflight else "",
                repr(time.time()),
                self.task_ttl_seconds,
                self.max_retries,
                self.stream_ttl_seconds,
                keys.event_channel(task_id),
                new_event_id(),
                retry_event.to_json(),
                error,
                agent_name,
                *(backoffs or [0.0]),
            ],
        )
        if outcome == NackOutcome.RETRYING and inflight is None:
            logger.error("task %s: nack without a claimed entry; it cannot be re-enqueued", task_id)
        return NackOutcome(outcome)

    def _backoff(self, attempt: int) -> float:
        state = tenacity.RetryCallState(
            retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={}
        )
        state.attempt_number = attempt
        return float(self.retry_backoff(state))

    def cancel(self, task_id: str) -> bool:
        """Mark a pending, retrying or running task cancelled and tell its worker.

        A task that never started gets its terminal ``cancelled`` event right away;
        a running one gets it from its worker once the run has stopped. Returns
        False for unknown, completed or failed tasks.
        """
        done = self._retry.call(
            self._cancel,
            keys=[
                self._task_key(task_id),
                keys.event_stream(task_id),
                keys.task_index(self.task_prefix),
            ],
            args=[
                keys.cancel_channel(task_id),
                keys.event_channel(task_id),
                self.stream_ttl_seconds,
                new_event_id(),
                repr(time.time()),
                self.task_ttl_seconds,
                task_id,
            ],
        )
        if done:
            logger.info("task %s cancelled", task_id)
        return bool(done)

    def release(self, task_id: str, *, reason: str = "worker stopping") -> bool:
        """Put a claimed task that did not finish back on the queue, as pending.

        Not a failed attempt: ``retries`` is unchanged. An ``error`` event with
        ``recoverable: true`` tells readers why the run restarts.
        """
        inflight = self._inflight.pop(task_id, None)
        if inflight is None:
            return False
        event = ErrorEvent(error=f"released: {reason}", error_type="Released", recoverable=True)
        self._retry.call(
            self._release,
            keys=[self.queue_name, self._task_key(task_id), keys.event_stream(task_id)],
            args=[
                self.group,
                inflight.entry_id,
                inflight.raw_payload,
                keys.event_channel(task_id),
                self.stream_ttl_seconds,
                new_event_id(),
                event.to_json(),
            ],
        )
        logger.info("task %s released back to %s (%s)", task_id, self.queue_name, reason)
        return True

    def forget(self, task_id: str) -> None:
        """Drop a claimed task without settling it (another worker took its entry over)."""
        self._inflight.pop(task_id, None)

    def dead_letter(
        self,
        entry_id: str,
        reason: str,
        fields: dict[str, str],
        worker_id: str = "",
        task_id: str = "",
    ) -> None:
        """Move an entry to the dead-letter stream with ``reason``; its task (if known) fails."""
        logger.error(
            "worker %s dead-lettered entry %s (task %s): %s",
            worker_id,
            entry_id,
            task_id or "-",
            reason,
        )
        self._retry.call(
            self._dead_letter,
            keys=[
                self.queue_name,
                self.dead_letter_key,
                self._task_key(task_id),
                keys.task_index(self.task_prefix),
                keys.event_stream(task_id),
            ],
            args=[
                self.group,
                entry_id,
                reason,
                json.dumps(fields),
                worker_id,
                repr(time.time()),
                task_id,
                self.task_ttl_seconds,
                self.stream_ttl_seconds,
                keys.event_channel(task_id),
                new_event_id(),
                DEAD_LETTER_MAXLEN,
            ],
        )

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The newest dead letters, newest first, each with its ``id``."""
        rows: Any = self._retry.call(self._client.xrevrange, self.dead_letter_key, count=count)
        return [{"id": entry_id, **fields} for entry_id, fields in rows]

    # -- keeping entries alive -------------------------------------------------------

    def touch(self, worker_id: str, task_ids: list[str]) -> list[str]:
        """Reset the idle time of the claimed entries of ``task_ids``, so they are not reclaimed.

        Returns the task ids whose entries this worker no longer owns.
        """
        by_entry = {f.entry_id: tid for tid in task_ids if (f := self._inflight.get(tid))}
        if not by_entry:
            return []
        lost = self._retry.call(
            self._touch, keys=[self.queue_name], args=[self.group, worker_id, *by_entry]
        )
        return [by_entry[entry_id] for entry_id in lost]

    def _promote_due(self) -> None:
        now = time.monotonic()
        if now < self._next_promote:
            return
        self._next_promote = now + 0.5
        self.promote_due()

    def promote_due(self, limit: int = 100) -> int:
        """Move retries whose backoff is over back onto the queue; returns how many."""
        moved = int(
            self._retry.call(
                self._promote,
                keys=[self.delayed_key, self.queue_name],
                args=[repr(time.time()), limit],
            )
        )
        if moved:
            logger.info("re-enqueued %d retries on %s", moved, self.queue_name)
        return moved

    def stats(self) -> QueueStats:
        """Length, pending entries, lag, oldest pending age, dead letters and delayed retries."""

        def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            pipe.xlen(self.queue_name)
            pipe.xlen(self.dead_letter_key)
            pipe.zcard(self.delayed_key)
            pipe.exists(self.queue_name)
            return pipe.execute()

        length, dead, delayed, exists = self._retry.call(read)
        group: dict[str, Any] = {}
        oldest: float | None = None
        if exists:
            groups: Any = self._retry.call(self._client.xinfo_groups, self.queue_name)
            group = next((g for g in groups if g.get("name") == self.group), {})
        if group.get("pending"):
            summary: Any = self._retry.call(self._client.xpending, self.queue_name, self.group)
            first = summary.get("min")
            if first:
                oldest = max(0.0, time.time() - int(str(first).split("-")[0]) / 1000)
        lag = group.get("lag") if group else length
        return QueueStats(
            queue=self.queue_name,
            length=int(length),
            pending=int(group.get("pending") or 0),
            lag=None if lag is None else int(lag),
            oldest_pending_age=oldest,
            dead_letters=int(dead),
            delayed_retries=int(delayed),
            consumers=int(group.get("consumers") or 0),
        )

    def in_flight(self) -> list[str]:
        """Ids of the tasks claimed through this broker and not yet settled."""
        return list(self._inflight)

    def _task_key(self, task_id: str) -> str:
        return keys.task_hash(task_id, self.task_prefix)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def _task_id_of(raw: str | None) -> str:
    """The task id of a payload that failed validation, when one can be read from it."""
    try:
        data = json.loads(raw or "")
    except ValueError:
        return ""
    task_id = data.get("task_id") if isinstance(data, dict) else None
    return task_id if isinstance(task_id, str) and 0 < len(task_id) <= 200 else ""
