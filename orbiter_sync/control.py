"""Stopping runs from outside: each run's ``RunControl``, the worker's running set
(``RunTracker``) and its cancel listener.

A run is stopped for a :class:`StopReason`: cancelled (a client asked), timeout
(its ``timeout_seconds`` passed), shutdown (the worker is stopping; the task goes
back to the queue) or lost (another worker took its entry over). Async runs stop
at once (their asyncio task is cancelled on their own loop, thread-safely); sync
generators stop at their next yield; a plain sync function is judged when it
returns.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from orbiter_sync import keys, native
from orbiter_sync.layout import STANDALONE, KeyLayout
from orbiter_sync.outcome import RunInterrupted, StopReason

logger = logging.getLogger(__name__)

LISTEN_TICK = 0.2  # seconds between the cancel listener's checks for a stop


class RunControl:
    """The stop switch of one run, shared by its slot and whoever stops it."""

    def __init__(self, task_id: str, entry_id: str = "") -> None:
        self.task_id = task_id
        self.entry_id = entry_id
        """The stream entry the run came in (a task's retries come in different ones)."""
        self.reason: StopReason | None = None
        self.event = threading.Event()
        self._lock = native.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Future[object] | None = None

    def stop(self, reason: StopReason) -> None:
        """Ask the run to stop; the first reason given wins. Safe from any thread."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            self.event.set()
            loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    def check(self) -> None:
        """Raise ``RunInterrupted`` if the run was asked to stop."""
        if self.reason is not None:
            raise RunInterrupted(self.reason)

    def attach(self, loop: asyncio.AbstractEventLoop, task: asyncio.Future[object]) -> None:
        with self._lock:
            self._loop, self._task = loop, task
            stopped = self.reason is not None
        if stopped:
            task.cancel()

    def detach(self) -> None:
        with self._lock:
            self._loop = self._task = None


class RunTracker:
    """What one worker is running and has done: its running set and its counters.

    Slots track and untrack their runs; the heartbeat, the cancel listener and
    the worker's shutdown stop them by task id. Safe from any thread.
    """

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self._lock = native.Lock()  # the heartbeat's OS thread reads it too
        self._running: dict[str, RunControl] = {}
        self.processed = 0
        self.failed = 0
        self.slots_down = 0
        """Slots that died and wait to be restarted: the worker is degraded meanwhile."""
        self.slot_restarts = 0

    def track(self, control: RunControl) -> None:
        with self._lock:
            self._running[control.task_id] = control

    def untrack(self, control: RunControl) -> None:
        with self._lock:
            if self._running.get(control.task_id) is control:
                del self._running[control.task_id]

    def ids(self) -> list[str]:
        """Ids of the tasks running now."""
        with self._lock:
            return list(self._running)

    def stop(self, task_id: str, reason: StopReason, *, entry_id: str | None = None) -> bool:
        """Stop the run of ``task_id`` (only the one that came in ``entry_id``, when given)
        if it runs here; True if it did."""
        with self._lock:
            control = self._running.get(task_id)
        if control is None or (entry_id is not None and control.entry_id != entry_id):
            return False
        logger.info("worker %s: stopping task %s (%s)", self.worker_id, task_id, reason)
        control.stop(reason)
        return True

    def stop_all(self, reason: StopReason) -> None:
        for task_id in self.ids():
            self.stop(task_id, reason)

    def slot_restarted(self) -> None:
        with self._lock:
            self.slot_restarts += 1

    def count(self, *, processed: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.processed += processed
            self.failed += failed


class CancelListener:
    """One pub/sub connection per worker on ``orbiter:cancel:*``; on a Redis Cluster,
    sharded subscriptions to every shard's cancel channel, whose messages are task ids.

    ``on_cancel(task_id)`` is called for each cancel message. Pub/sub drops
    messages while reconnecting (or while a shard's master fails over), so the
    heartbeat also re-reads the status of running tasks; this is only the fast path.
    """

    def __init__(
        self,
        client: redis.Redis,
        on_cancel: Callable[[str], object],
        layout: KeyLayout = STANDALONE,
    ) -> None:
        self._client = client
        self._on_cancel = on_cancel
        self._layout = layout
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="orbiter-cancel-listener", daemon=True
        )
        self.subscribed = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.ident is not None:  # it may never have started
            self._thread.join(timeout=LISTEN_TICK * 2)  # a daemon: never held up past that

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                read = self._subscribe(pubsub)
                self.subscribed.set()
                backoff = 0.1
                while not self._stopping.is_set():
                    message = read(timeout=LISTEN_TICK)
                    if message and message.get("type") == "pmessage":
                        channel = str(message["channel"])
                        self._on_cancel(channel[len(keys.CANCEL_CHANNEL_PREFIX) :])
                    elif message and message.get("type") == "smessage":
                        self._on_cancel(str(message["data"]))
            except Exception as exc:  # noqa: BLE001 - the listener outlives any error
                logger.warning(
                    "cancel listener failed (%s: %s); reconnecting in %.1fs",
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    pubsub.close()
                except Exception as exc:  # noqa: BLE001 - a broken connection is dropped anyway
                    logger.debug("cancel listener: closing its connection failed: %s", exc)

    def _subscribe(self, pubsub: Any) -> Callable[..., Any]:
        """Subscribe ``pubsub`` to the cancels; the function reading its next message."""
        if not self._layout.cluster:
            pubsub.psubscribe(keys.CANCEL_PATTERN)
            return pubsub.get_message  # type: ignore[no-any-return]
        pubsub.ssubscribe(*self._layout.cancel_channels())
        return functools.partial(pubsub.get_sharded_message, ignore_subscribe_messages=True)
