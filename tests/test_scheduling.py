"""The worker's shared machinery for many runs: one deadline scheduler (no thread per
run) and the inbox that claims for all waiting slots at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from helpers import wait_for

from orbiter_sync.deadlines import COMPACT_AFTER, Deadlines
from orbiter_sync.inbox import PREFETCH_WINDOW, Inbox
from orbiter_sync.models import TaskPayload
from orbiter_sync.queue import Delivery

# -- deadlines ------------------------------------------------------------------------


@pytest.fixture
def deadlines() -> Iterator[Deadlines]:
    scheduler = Deadlines()
    yield scheduler
    scheduler.close()


def test_deadlines_fire_in_order_at_their_time(deadlines: Deadlines) -> None:
    fired: list[tuple[str, float]] = []
    start = time.monotonic()

    def record(name: str) -> Callable[[], None]:
        return lambda: fired.append((name, time.monotonic()))

    for name, delay in (("late", 0.3), ("early", 0.1), ("middle", 0.2)):
        deadlines.call_at(start + delay, record(name))

    wait_for(lambda: len(fired) == 3, timeout=5)

    assert [name for name, _ in fired] == ["early", "middle", "late"]
    for (_, at), delay in zip(fired, (0.1, 0.2, 0.3), strict=True):
        assert at >= start + delay  # never before its time
    assert deadlines.pending() == 0


def test_an_earlier_deadline_wakes_the_sleeping_scheduler(deadlines: Deadlines) -> None:
    fired = threading.Event()
    deadlines.call_at(time.monotonic() + 3600, lambda: None)  # it sleeps towards this
    deadlines.call_at(time.monotonic() + 0.05, fired.set)

    assert fired.wait(5)


def test_a_cancelled_deadline_never_fires(deadlines: Deadlines) -> None:
    fired: list[str] = []
    cancelled = deadlines.call_at(time.monotonic() + 0.1, lambda: fired.append("cancelled"))
    deadlines.call_at(time.monotonic() + 0.2, lambda: fired.append("kept"))
    cancelled.cancel()
    cancelled.cancel()  # twice is harmless

    wait_for(lambda: fired, timeout=5)
    time.sleep(0.15)  # past the cancelled one's time too, with margin

    assert fired == ["kept"]


def test_many_cancelled_runs_leave_the_live_ones_due(deadlines: Deadlines) -> None:
    """A worker registers and cancels one deadline per task: the heap is compacted, and
    what is still wanted fires."""
    fired = threading.Event()
    deadlines.call_at(time.monotonic() + 0.3, fired.set)
    for _ in range(COMPACT_AFTER * 10):
        deadlines.call_at(time.monotonic() + 300, lambda: None).cancel()

    assert deadlines.pending() == 1
    assert len(deadlines._heap) <= 2 * COMPACT_AFTER + 2  # compacted, not grown per task
    assert fired.wait(5)


def test_a_failing_callback_does_not_stop_the_others(deadlines: Deadlines) -> None:
    fired = threading.Event()

    def broken() -> None:
        raise RuntimeError("boom")

    deadlines.call_at(time.monotonic() + 0.05, broken)
    deadlines.call_at(time.monotonic() + 0.1, fired.set)

    assert fired.wait(5)


def test_one_thread_serves_every_deadline() -> None:
    scheduler = Deadlines(name="orbiter-deadlines-test")
    try:
        for _ in range(200):
            scheduler.call_at(time.monotonic() + 60, lambda: None).cancel()
        assert [t.name for t in threading.enumerate()].count("orbiter-deadlines-test") == 1
    finally:
        scheduler.close()
    wait_for(lambda: "orbiter-deadlines-test" not in [t.name for t in threading.enumerate()])
    # a slot still running after the worker stopped registers and cancels harmlessly
    late = threading.Event()
    scheduler.call_at(time.monotonic(), late.set).cancel()
    assert not late.wait(0.2) and scheduler.pending() == 0


# -- the inbox ------------------------------------------------------------------------


def _delivery(n: int) -> Delivery:
    payload = TaskPayload(input=str(n))
    return Delivery(payload=payload, entry_id=f"{n}-0", raw=payload.to_json())


class Source:
    """A fetch for the inbox, handing out numbered deliveries and recording each call."""

    def __init__(self, available: int) -> None:
        self.available = available
        self.counts: list[int] = []
        self.next = 0
        self.release = threading.Event()

    def fetch(self, count: int, deadline: float) -> list[Delivery]:
        self.counts.append(count)
        self.release.wait(5)  # the slots pile up behind the first fetch
        taken = min(count, self.available)
        self.available -= taken
        batch = [_delivery(self.next + i) for i in range(taken)]
        self.next += taken
        return batch


def test_one_fetch_serves_every_waiting_slot() -> None:
    source = Source(available=100)
    inbox = Inbox(source.fetch, prefetch=0)
    got: list[Delivery | None] = []
    slots = [threading.Thread(target=lambda: got.append(inbox.take(5))) for _ in range(6)]
    for slot in slots:
        slot.start()
    wait_for(lambda: inbox.room() == 6)  # all six wait, one of them fetching
    source.release.set()
    for slot in slots:
        slot.join(5)

    assert len(got) == 6 and all(got)
    assert len({d.entry_id for d in got if d}) == 6
    # the first fetch asked for the one slot there was; the next served the five others
    assert source.counts[0] == 1 and sum(source.counts) == 6 and len(source.counts) <= 3
    assert len(inbox) == 0  # nothing fetched beyond the slots: no prefetch at this pace


def test_the_prefetch_follows_the_pace_of_the_runs() -> None:
    inbox = Inbox(Source(available=0).fetch, prefetch=8)
    assert inbox.ahead() == 0  # nothing known: nothing fetched ahead

    for _ in range(40):  # runs moments apart: many fit in the window
        inbox.finished()
    assert inbox.ahead() == 8  # capped by the prefetch

    for _ in range(10):  # runs a long while apart (an idle spell counts as MAX_GAP)
        inbox._last_done = time.monotonic() - 10 * PREFETCH_WINDOW
        inbox.finished()
    assert inbox.ahead() == 0  # long runs: nothing held back from other workers


def test_a_take_times_out_and_a_failed_fetch_reaches_its_caller() -> None:
    source = Source(available=0)
    source.release.set()
    inbox = Inbox(source.fetch)
    started = time.monotonic()
    assert inbox.take(0.2) is None
    assert time.monotonic() - started < 2

    def broken(count: int, deadline: float) -> list[Delivery]:
        raise ConnectionError("Redis is away")

    failing = Inbox(broken)
    with pytest.raises(ConnectionError):
        failing.take(1)
    assert failing.room() == 0  # nobody left waiting or fetching


def test_offered_deliveries_go_to_the_next_slots() -> None:
    source = Source(available=0)
    source.release.set()
    inbox = Inbox(source.fetch)
    inbox.offer([_delivery(1), _delivery(2)])

    first, second = inbox.take(1), inbox.take(1)

    assert first and second and {first.entry_id, second.entry_id} == {"1-0", "2-0"}
    assert source.counts == []  # served from what was offered, no fetch


def test_a_starting_worker_fetches_for_every_free_slot_at_once() -> None:
    source = Source(available=10)
    source.release.set()
    inbox = Inbox(source.fetch, slots=4)
    got: list[Delivery | None] = []

    def slot() -> None:  # takes one task and keeps running it
        got.append(inbox.take(5))

    first = threading.Thread(target=slot)
    first.start()
    first.join(5)
    assert source.counts == [4]  # one slot in so far, fetching for all four
    assert len(inbox) == 3
    others = [threading.Thread(target=slot) for _ in range(3)]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join(5)
    assert len(got) == 4 and all(got) and source.counts == [4]
    assert inbox.room() == 0  # every slot busy: no room, so no reclaim, no fetch ahead
