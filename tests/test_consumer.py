"""The consumer side: claiming, beginning and settling, as one worker does it."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from helpers import (
    LostFirstReply,
    claim_and_begin,
    claim_as_worker,
    events_of,
    pending_count,
    stream_entries,
    terminal_events,
    wait_for,
)

from orbiter_sync.admin import QueueAdmin
from orbiter_sync.connection import RetryPolicy
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.embedded import EmbeddedRedis
from orbiter_sync.errors import RedisUnavailableError
from orbiter_sync.maintenance import RetryPromoter
from orbiter_sync.models import TaskPayload
from orbiter_sync.outcome import Outcome
from orbiter_sync.producer import TaskProducer
from orbiter_sync.queue import Delivery, QueueSettings

# -- claiming -------------------------------------------------------------------------


def test_claim_returns_the_payload_and_holds_the_entry(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)

    delivery = consumer.claim(timeout=1)

    assert delivery is not None and delivery.payload == payload and delivery.deliveries == 1
    assert json.loads(delivery.raw) == payload.to_dict()
    assert pending_count(r) == 1
    assert consumer.in_flight() == [delivery]


def test_claim_returns_none_when_the_queue_stays_empty(consumer: TaskConsumer) -> None:
    started = time.monotonic()
    assert consumer.claim(timeout=0.3) is None
    assert time.monotonic() - started >= 0.29


def test_entries_queued_before_any_worker_are_not_skipped(redis_url: str, r: redis.Redis) -> None:
    # Given an entry added by a client before the consumer group exists
    r.xadd("orbiter:tasks", {"payload": TaskPayload(task_id="early", input="x").to_json()})
    # When a worker's consumer creates the group and claims
    delivery = TaskConsumer(redis_url, "w1").claim(timeout=1)
    # Then it gets that entry
    assert delivery is not None and delivery.task_id == "early"


def test_bad_entries_are_dead_lettered_and_claim_goes_on(
    producer: TaskProducer, consumer: TaskConsumer, admin: QueueAdmin, r: redis.Redis
) -> None:
    # Given malformed entries ahead of a good one
    r.xadd("orbiter:tasks", {"payload": "{not json"})
    r.xadd("orbiter:tasks", {"something": "else"})
    r.xadd("orbiter:tasks", {"payload": json.dumps({"task_id": "typed", "input": 5})})
    good = TaskPayload(input="fine")
    producer.submit(good)
    # When a worker claims
    delivery = consumer.claim(timeout=2)
    # Then the good task comes out, and the bad entries are dead letters with reasons
    assert delivery is not None and delivery.task_id == good.task_id
    dead = list(reversed(admin.dead_letters()))
    assert [d["reason"].split(":")[0] for d in dead] == ["undecodable payload"] * 3
    assert "not valid JSON" in dead[0]["reason"]
    assert "no payload field" in dead[1]["reason"]
    assert "input: must be a string" in dead[2]["reason"]
    assert json.loads(dead[1]["entry"]) == {"something": "else"}
    assert dead[2]["task_id"] == "typed" and dead[2]["worker_id"] == "w1"
    # and they left the queue; the task whose id was readable failed with a reason
    assert r.xlen("orbiter:tasks") == 1
    assert r.hget("orbiter:task:typed", "status") == "failed"
    assert "input: must be a string" in str(r.hget("orbiter:task:typed", "error"))
    assert terminal_events(r, "typed") == ["error"]


def test_claim_recreates_a_vanished_group(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    producer.submit(TaskPayload(input="first"))
    assert consumer.claim(timeout=1)
    # Redis lost everything (a restart without persistence)
    r.flushall()
    payload = TaskPayload(input="second")
    producer.submit(payload)

    delivery = consumer.claim(timeout=2)

    assert delivery is not None and delivery.task_id == payload.task_id


def test_blocking_claim_does_not_starve_other_callers(redis_url: str) -> None:
    consumer = TaskConsumer(redis_url, "w1", QueueSettings(name="orbiter:quiet"))
    claimer = threading.Thread(target=consumer.claim, kwargs={"timeout": 3})
    claimer.start()
    time.sleep(0.2)  # let the claim block (there is nothing to wake it)

    # the same consumer (same pool) still serves other calls at once
    promoter = RetryPromoter(settings=consumer.settings, client=consumer._client)
    assert promoter.promote_due() == 0
    assert consumer.keep_alive() == []
    assert claimer.is_alive()
    claimer.join()


# -- beginning ------------------------------------------------------------------------


def test_begin_moves_the_task_to_running_with_its_event(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    before = time.time()

    claim_and_begin(consumer)

    state = r.hgetall(f"orbiter:task:{payload.task_id}")
    assert state["status"] == "running" and state["worker_id"] == "w1"
    assert before <= float(state["started_at"]) <= time.time()
    [event] = events_of(r, payload.task_id)
    assert event == {
        "type": "status",
        "status": "running",
        "message": "running on w1",
        "attempt": 1,
        "agent_name": "",
    }


def test_a_task_cancelled_while_it_waited_is_acknowledged_without_running(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    delivery = consumer.claim(timeout=1)
    assert delivery is not None
    producer.cancel(payload.task_id)

    assert consumer.begin(delivery) == 0

    assert r.hget(f"orbiter:task:{payload.task_id}", "status") == "cancelled"
    assert r.xlen("orbiter:tasks") == 0 and pending_count(r) == 0
    assert terminal_events(r, payload.task_id) == ["cancelled"]
    assert consumer.in_flight() == []


@pytest.mark.parametrize("final", ["completed", "failed", "cancelled"])
def test_an_ended_task_never_becomes_running_again(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis, final: str
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    r.hset(f"orbiter:task:{payload.task_id}", "status", final)
    delivery = consumer.claim(timeout=1)
    assert delivery is not None

    assert consumer.begin(delivery) == 0

    assert r.hget(f"orbiter:task:{payload.task_id}", "status") == final
    assert r.xlen("orbiter:tasks") == 0


# -- keeping entries, reclaiming them from the dead -----------------------------------


def test_idle_entries_of_a_dead_worker_are_reclaimed(
    redis_url: str, producer: TaskProducer, r: redis.Redis
) -> None:
    settings = QueueSettings(visibility_timeout=0.3)
    dead = TaskConsumer(redis_url, "dead-worker", settings)
    alive = TaskConsumer(redis_url, "alive", settings)
    payload = TaskPayload(input="x")
    producer.submit(payload)
    assert dead.claim(timeout=1)
    # the dead worker never touches its entry again; the live one's maintenance loop
    # (never its claims) takes it over once idle past the visibility timeout
    assert alive.claim(timeout=0.1) is None

    delivery = claim_as_worker(alive, timeout=5)

    assert isinstance(delivery, Delivery)
    assert delivery.task_id == payload.task_id and delivery.deliveries == 2
    [pending] = r.xpending_range("orbiter:tasks", "orbiter:tasks:group", "-", "+", 10)
    assert pending["consumer"] == "alive"


def test_kept_alive_entries_of_a_live_worker_are_not_stolen(
    redis_url: str, producer: TaskProducer
) -> None:
    settings = QueueSettings(visibility_timeout=0.3)
    owner = TaskConsumer(redis_url, "owner", settings)
    other = TaskConsumer(redis_url, "other", settings)
    payload = TaskPayload(input="long run")
    producer.submit(payload)
    delivery = owner.claim(timeout=1)
    assert delivery is not None

    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert owner.keep_alive() == []
        assert other.reclaim() == []
        time.sleep(0.1)

    # once the owner stops keeping it, it is reclaimed, and the owner learns it lost it
    wait_for(lambda: other.reclaim(), timeout=5)
    assert owner.keep_alive() == [delivery]
    assert owner.in_flight() == []


def test_entry_delivered_too_often_goes_to_dead_letters(
    redis_url: str, producer: TaskProducer, admin: QueueAdmin, r: redis.Redis
) -> None:
    settings = QueueSettings(visibility_timeout=0.05, max_deliveries=3)
    payload = TaskPayload(input="kills its worker")
    producer.submit(payload)
    claims = 0
    # every worker that takes it "dies" (never settles it)
    while claim_as_worker(TaskConsumer(redis_url, f"w{claims}", settings), 0.3) is not None:
        claims += 1
        time.sleep(0.1)

    assert claims == 3
    [dead] = admin.dead_letters()
    assert dead["task_id"] == payload.task_id and "delivered 4 times" in dead["reason"]
    assert r.hget(f"orbiter:task:{payload.task_id}", "status") == "failed"
    assert "delivered 4 times" in str(r.hget(f"orbiter:task:{payload.task_id}", "error"))
    assert r.hget(f"orbiter:task:{payload.task_id}", "error_type") == "DeadLettered"
    assert r.xlen("orbiter:tasks") == 0
    assert terminal_events(r, payload.task_id) == ["error"]


def test_leave_removes_an_idle_consumer_from_the_group(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    producer.submit(TaskPayload(input="x"))
    delivery = claim_and_begin(consumer)

    consumer.leave()  # it holds an entry: it stays
    assert [c["name"] for c in r.xinfo_consumers("orbiter:tasks", "orbiter:tasks:group")] == ["w1"]
    consumer.settle(delivery, Outcome.completed({}))
    consumer.leave()
    assert r.xinfo_consumers("orbiter:tasks", "orbiter:tasks:group") == []


def test_entries_settled_meanwhile_are_not_reported_as_taken_over(
    redis_url: str, producer: TaskProducer, consumer: TaskConsumer
) -> None:
    # Given an entry settled by another handle of the same consumer (a slot) after the
    # heartbeat took its snapshot of what is held
    producer.submit(TaskPayload(input="x"))
    delivery = claim_and_begin(consumer)
    same_worker = TaskConsumer(redis_url, "w1")
    same_worker.settle(delivery, Outcome.completed({}))
    # When the heartbeat keeps what it holds alive
    taken = consumer.keep_alive()
    # Then nothing was taken over, and the settled entry is no longer held
    assert taken == [] and consumer.in_flight() == []


def test_a_retried_begin_writes_one_running_event(
    redis_url: str, producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    delivery = consumer.claim(timeout=1)
    assert delivery is not None
    unlucky = TaskConsumer(redis_url, "w1", retry=LostFirstReply())

    assert unlucky.begin(delivery)

    assert [e["status"] for e in events_of(r, payload.task_id)] == ["running"]


def test_a_retried_dead_letter_writes_one_dead_letter(
    redis_url: str, consumer: TaskConsumer, admin: QueueAdmin, r: redis.Redis
) -> None:
    r.xadd("orbiter:tasks", {"payload": "{"})
    consumer.ensure_group()
    [(entry_id, fields)] = stream_entries(r, "orbiter:tasks")
    r.xreadgroup("orbiter:tasks:group", "w1", {"orbiter:tasks": ">"})  # w1 holds it now
    unlucky = TaskConsumer(redis_url, "w1", retry=LostFirstReply())

    unlucky.dead_letter(entry_id, "unreadable", fields)

    assert len(admin.dead_letters()) == 1
    assert r.xlen("orbiter:tasks") == 0 and pending_count(r) == 0


def test_a_begin_that_fails_abandons_the_delivery() -> None:
    with EmbeddedRedis() as server:
        consumer = TaskConsumer(server.url, "w1", retry=RetryPolicy(deadline=0.3))
        TaskProducer(server.url).submit(TaskPayload(input="x"))
        delivery = consumer.claim(timeout=1)
        assert delivery is not None and consumer.in_flight() == [delivery]
        server.kill()  # Redis is gone past the retry budget

        with pytest.raises(RedisUnavailableError):
            consumer.begin(delivery)

        # no longer held, so no longer kept alive: it is reclaimed once Redis is back
        assert consumer.in_flight() == []
