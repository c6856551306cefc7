"""A worker's inbox: claimed deliveries waiting for a free slot, fetched in batches.

Slots ask the inbox for their next task (:meth:`Inbox.take`). When it is empty,
one of the waiting slots becomes the fetcher: it reads as many entries as there
are free slots (not running a task), plus a small prefetch, in one ``XREADGROUP``,
while the others wait for it. So under load a claim costs a fraction of a round trip, and an
idle worker still starts a task the moment it is queued (the fetcher blocks in
``XREADGROUP``).

The prefetch follows the worker's pace: it is the number of runs the worker
finishes in :data:`PREFETCH_WINDOW` seconds, capped by ``prefetch``. Short tasks
are fetched ahead; minutes-long agent runs are not (a task held here waits for
this worker's slots while another worker may sit idle). What waits here is
claimed, so the heartbeat keeps its entry alive like any running task's; at a
stop, the worker releases it back to the queue.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from orbiter_sync.queue import Delivery

PREFETCH_WINDOW = 0.05  # seconds of work fetched ahead of the slots
PACE_WEIGHT = 0.2  # weight of the newest gap between two finished runs in the pace
MAX_GAP = 1.0  # seconds: an idle spell counts as no more than this

# (how many entries at most, monotonic deadline) -> the deliveries read
Fetch = Callable[[int, float], list[Delivery]]


class Inbox:
    """Claimed deliveries for the slots of one worker; safe from the slots' threads
    (or greenlets: under gevent ``threading`` is patched)."""

    def __init__(self, fetch: Fetch, prefetch: int = 0, slots: int | None = None) -> None:
        self._fetch = fetch
        self.prefetch = max(0, prefetch)
        self.slots = slots
        """How many slots take from here (None: unknown, then only waiting ones count)."""
        self._cond = threading.Condition(threading.Lock())
        self._buffer: deque[Delivery] = deque()
        self._waiting = 0  # slots inside take()
        self._busy = 0  # slots that took a delivery and have not come back for the next
        self._holding = threading.local()  # per slot: whether it counts as busy
        self._fetching = False
        self._gap = MAX_GAP  # moving average of the time between two finished runs
        self._last_done: float | None = None

    def take(self, timeout: float) -> Delivery | None:
        """The next delivery, waiting up to ``timeout`` seconds; None if none came.

        Raises what the fetch raised (Redis away, say) to the slot that fetched;
        the others go on waiting, and one of them fetches next.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            if getattr(self._holding, "busy", False):  # back for its next task
                self._holding.busy = False
                self._busy -= 1
            self._waiting += 1
            try:
                fetched_once = False
                while True:
                    if self._buffer:
                        self._holding.busy = True
                        self._busy += 1
                        return self._buffer.popleft()
                    left = deadline - time.monotonic()
                    if self._fetching:
                        if left <= 0:
                            return None
                        self._cond.wait(left)
                        continue
                    if fetched_once and left <= 0:
                        return None
                    fetched_once = True
                    self._fetch_for_all(deadline)
            finally:
                self._waiting -= 1

    def _fetch_for_all(self, deadline: float) -> None:
        """Fetch for every waiting slot, the lock released meanwhile (held on entry)."""
        want = self._free() + self.ahead() - len(self._buffer)
        self._fetching = True
        fetched: list[Delivery] = []
        self._cond.release()
        try:
            fetched = self._fetch(max(1, want), deadline)
        finally:
            self._cond.acquire()
            self._fetching = False
            self._buffer.extend(fetched)
            # The caller takes one; wake a waiter for each of the others and one more to
            # fetch next (or to fetch again when this fetch failed or found nothing).
            self._cond.notify(max(1, len(fetched)))

    def offer(self, deliveries: Iterable[Delivery]) -> None:
        """Hand deliveries claimed elsewhere (taken over from a dead worker) to the slots."""
        with self._cond:
            before = len(self._buffer)
            self._buffer.extend(deliveries)
            self._cond.notify(len(self._buffer) - before)

    def drain(self) -> list[Delivery]:
        """Take out everything waiting here (a stop: no slot will take it)."""
        with self._cond:
            drained = list(self._buffer)
            self._buffer.clear()
            return drained

    def room(self) -> int:
        """How many more deliveries the slots could use now (free slots plus the
        prefetch, less what is already here)."""
        with self._cond:
            return self._free() + self.ahead() - len(self._buffer)

    def _free(self) -> int:
        """Slots free for a task: all but the busy ones (at least those waiting now), so a
        worker starting up fetches for every slot at once, not for the first one in."""
        if self.slots is None:
            return self._waiting
        return max(self._waiting, self.slots - self._busy)

    def ahead(self) -> int:
        """The prefetch now: the runs finished in ``PREFETCH_WINDOW`` at the recent pace."""
        if not self.prefetch:
            return 0
        return min(self.prefetch, int(PREFETCH_WINDOW / max(self._gap, 1e-6)))

    def finished(self) -> None:
        """A run ended: update the pace. No lock (it may be called from the heartbeat's
        OS thread under gevent); a lost update only nudges an estimate."""
        now = time.monotonic()
        last, self._last_done = self._last_done, now
        if last is not None:
            gap = min(now - last, MAX_GAP)
            self._gap += PACE_WEIGHT * (gap - self._gap)

    def __len__(self) -> int:
        return len(self._buffer)
