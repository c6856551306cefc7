"""Claims in batches: one bad entry never loses the rest of its batch, a busy worker does
not hoard dead workers' entries, and what waits for a slot goes back at a stop."""

from __future__ import annotations

import threading
import time

import redis
from helpers import stream_entries, wait_for

from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.maintenance import Maintenance, RetryPromoter
from orbiter_sync.models import TaskPayload
from orbiter_sync.queue import Delivery, QueueSettings

QUEUE, GROUP, DEAD = "orbiter:tasks", "orbiter:tasks:group", "orbiter:tasks:dead"


def queue_entries(r: redis.Redis, *payloads: str) -> list[str]:
    """Add raw entries to the queue (a good payload or junk); their entry ids."""
    return [str(r.xadd(QUEUE, {"payload": payload})) for payload in payloads]


def good() -> str:
    return TaskPayload(input="x").to_json()


def left_by_a_dead_worker(
    redis_url: str, r: redis.Redis, name: str, *payloads: str
) -> tuple[TaskConsumer, list[str]]:
    """A consumer ``name``, and entries claimed by a worker that died, idle past the
    visibility timeout."""
    consumer = TaskConsumer(redis_url, name, QueueSettings(visibility_timeout=0.2))
    consumer.ensure_group()
    entries = queue_entries(r, *payloads)
    r.xreadgroup(GROUP, "dead-worker", {QUEUE: ">"}, count=len(entries))
    time.sleep(0.3)  # idle past the visibility timeout
    return consumer, entries


def pending_of(r: redis.Redis) -> dict[str, str]:
    rows = r.xpending_range(QUEUE, GROUP, "-", "+", 100)
    return {str(row["message_id"]): str(row["consumer"]) for row in rows}


def test_a_batch_keeps_its_good_entries_when_a_dead_letter_cannot_be_written(
    redis_url: str, r: redis.Redis
) -> None:
    consumer = TaskConsumer(redis_url, "w1", QueueSettings(visibility_timeout=0.2))
    consumer.ensure_group()
    first, junk, last = queue_entries(r, good(), "not json", good())
    r.set(DEAD, "not a stream")  # the junk entry's dead letter is refused

    batch = consumer.read_new(3, time.monotonic() + 1)

    assert [d.entry_id for d in batch] == [first, last]  # both still ours to run
    assert {d.entry_id for d in consumer.in_flight()} == {first, last}
    assert pending_of(r)[junk] == "w1"  # not held: taken back once idle, then dead-lettered
    r.delete(DEAD)
    wait_for(lambda: consumer.reclaim() == [] and r.exists(DEAD), timeout=5)
    assert [f["reason"] for _, f in stream_entries(r, DEAD)][0].startswith("undecodable")


def test_a_reclaimed_batch_keeps_its_good_entries_when_one_fails(
    redis_url: str, r: redis.Redis
) -> None:
    alive, (first, junk, last) = left_by_a_dead_worker(
        redis_url, r, "alive", good(), "not json", good()
    )
    r.set(DEAD, "not a stream")  # the junk entry's dead letter is refused

    taken = alive.reclaim(count=3)

    assert [d.entry_id for d in taken] == [first, last]
    assert pending_of(r) == {first: "alive", junk: "alive", last: "alive"}
    assert {d.entry_id for d in alive.in_flight()} == {first, last}


def test_a_worker_whose_slots_are_all_busy_leaves_dead_workers_entries_alone(
    redis_url: str, r: redis.Redis
) -> None:
    busy, entries = left_by_a_dead_worker(redis_url, r, "busy", good(), good())
    maintenance = Maintenance(busy, RetryPromoter(redis_url, busy.settings), threading.Event())

    for _ in range(5):  # no slot is waiting: nothing is taken over, however often it looks
        maintenance.step()
        time.sleep(0.05)
    assert set(pending_of(r).values()) == {"dead-worker"}
    assert busy.in_flight() == []

    # a slot frees up and waits: one entry is taken over for it, and it runs it
    claimed: list[Delivery | None] = []
    slot = threading.Thread(target=lambda: claimed.append(busy.claim(timeout=5)))
    slot.start()
    wait_for(lambda: busy.room() > 0)

    def looked() -> list[Delivery | None]:
        maintenance.step()
        return claimed

    wait_for(looked, timeout=5)
    slot.join(5)
    assert claimed[0] is not None and claimed[0].entry_id in entries
    assert sorted(pending_of(r).values()) == ["busy", "dead-worker"]


def test_what_waits_for_a_slot_goes_back_to_the_queue_at_a_stop(
    redis_url: str, r: redis.Redis
) -> None:
    consumer = TaskConsumer(redis_url, "w1")
    consumer.ensure_group()
    payloads = [TaskPayload(input=str(n)) for n in range(3)]
    for payload in payloads:
        r.xadd(QUEUE, {"payload": payload.to_json()})
        r.hset(f"orbiter:task:{payload.task_id}", mapping={"status": "pending"})
    consumer.offer(consumer.read_new(3, time.monotonic() + 1))  # fetched, no slot took them

    consumer.release_waiting()

    assert consumer.in_flight() == [] and pending_of(r) == {}
    queued = [f["payload"] for _, f in stream_entries(r, QUEUE)]
    assert sorted(queued) == sorted(p.to_json() for p in payloads)
    assert {r.hget(f"orbiter:task:{p.task_id}", "status") for p in payloads} == {"pending"}
    assert consumer.claim(timeout=0) is not None  # and they are claimable again
