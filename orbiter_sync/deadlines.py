"""One timer for every run of a worker: a heap of deadlines, served by one thread.

A run's timeout used to be a ``threading.Timer`` of its own: a thread created,
started and torn down per task, a quarter of a no-op task's cost. Here a slot
registers its run's deadline (:meth:`Deadlines.call_at`) and cancels it when the
run ends; one thread sleeps until the earliest deadline that is still wanted.
Registering a deadline later than the earliest one wakes nobody.

Under gevent (monkey-patched), ``threading`` is greenlet-based: the thread is a
greenlet, the callbacks run in the hub's thread, where the slots are.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

COMPACT_AFTER = 64  # cancelled entries tolerated in the heap before it is rebuilt


class Deadline:
    """One registered deadline; :meth:`cancel` it once it is no longer wanted."""

    __slots__ = ("when", "seq", "callback", "cancelled", "_owner")

    def __init__(
        self, when: float, seq: int, callback: Callable[[], object], owner: Deadlines
    ) -> None:
        self.when = when
        self.seq = seq
        self.callback = callback
        self.cancelled = False
        self._owner = owner

    def __lt__(self, other: Deadline) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        """Forget it; a no-op once it has fired or was cancelled."""
        self._owner._cancel(self)


class Deadlines:
    """Calls each callback at its (``time.monotonic()``) deadline, unless cancelled first."""

    def __init__(self, name: str = "orbiter-deadlines") -> None:
        self.name = name
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[Deadline] = []
        self._seq = itertools.count()
        self._cancelled = 0  # cancelled entries still in the heap
        self._thread: threading.Thread | None = None
        self._closed = False
        self._wake_at = math.inf  # when the thread wakes up next by itself

    def call_at(self, when: float, callback: Callable[[], object]) -> Deadline:
        """Call ``callback()`` (on the scheduler's thread) at monotonic time ``when``; once
        the scheduler is closed, never."""
        entry = Deadline(when, next(self._seq), callback, self)
        with self._cond:
            if self._closed:  # the worker has stopped: nothing will fire any more
                entry.cancelled = True
                return entry
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, entry)
            if when < self._wake_at:  # earlier than what the thread sleeps towards
                self._cond.notify()
        return entry

    def pending(self) -> int:
        """Deadlines registered and neither fired nor cancelled."""
        with self._cond:
            return len(self._heap) - self._cancelled

    def close(self) -> None:
        """Stop the thread; deadlines not yet reached never fire."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cancelled = 0
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def _cancel(self, entry: Deadline) -> None:
        with self._cond:
            if entry.cancelled or entry.callback is _FIRED or self._closed:
                return
            entry.cancelled = True
            self._cancelled += 1
            if self._cancelled > COMPACT_AFTER and self._cancelled * 2 > len(self._heap):
                self._heap = [e for e in self._heap if not e.cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _due(self) -> list[Callable[[], object]]:
        """Wait for the next deadline; the callbacks due now (empty once closed)."""
        with self._cond:
            while not self._closed:
                while self._heap and self._heap[0].cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled -= 1
                if not self._heap:
                    self._sleep(math.inf)
                    continue
                if self._heap[0].when > time.monotonic():
                    self._sleep(self._heap[0].when)
                    continue
                due = []
                while self._heap and self._heap[0].when <= time.monotonic():
                    entry = heapq.heappop(self._heap)
                    if entry.cancelled:
                        self._cancelled -= 1
                        continue
                    due.append(entry.callback)
                    entry.callback = _FIRED
                if due:
                    return due
            return []

    def _sleep(self, until: float) -> None:
        """Wait (the lock held on entry) until ``until``, or until woken."""
        self._wake_at = until
        try:
            self._cond.wait(None if until == math.inf else until - time.monotonic())
        finally:
            self._wake_at = -math.inf  # awake: whatever is added is looked at anyway

    def _run(self) -> None:
        while True:
            due = self._due()
            if not due:
                return
            for callback in due:
                try:
                    callback()
                except Exception:  # noqa: BLE001 - one bad callback must not end the others
                    logger.exception("%s: a deadline callback failed", self.name)


def _fired() -> None:
    """What a deadline's callback becomes once it has been called (so cancel is a no-op)."""


_FIRED: Callable[[], object] = _fired
