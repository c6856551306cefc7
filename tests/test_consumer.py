"""The consumer side: claiming, beginning and settling, as one worker does it."""

from __future__ import annotations

import json
import threading
import time
from typing import cast

import pytest
import redis
import tenacity
from helpers import events_of, stream_entries, terminal_events, wait_for

from orbiter_sync.admin import QueueAdmin
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.errors import AgentConfigError
from orbiter_sync.events import EventSubscriber
from orbiter_sync.models import TaskPayload
from orbiter_sync.outcome import Outcome
from orbiter_sync.producer import TaskProducer
from orbiter_sync.queue import Delivery, QueueSettings


def pending_count(r: redis.Redis) -> int:
    return int(r.xpending("orbiter:tasks", "orbiter:tasks:group")["pending"])


def claim_and_begin(consumer: TaskConsumer) -> Delivery:
    delivery = consumer.claim(timeout=3)
    assert delivery is not None
    assert consumer.begin(delivery)
    return delivery


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
    assert consumer.promote_due() == 0
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

    assert consumer.begin(delivery) is False

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

    assert consumer.begin(delivery) is False

    assert r.hget(f"orbiter:task:{payload.task_id}", "status") == final
    assert r.xlen("orbiter:tasks") == 0


# -- settling -------------------------------------------------------------------------


def test_settle_completed_records_acks_and_ends_the_stream_once(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    delivery = claim_and_begin(consumer)

    settled = consumer.settle(delivery, Outcome.completed({"output": "hi"}))
    again = consumer.settle(delivery, Outcome.completed({"output": "hi"}))  # a retried call

    assert settled.written and settled.status == "completed"
    assert not again.written and again.verdict == "gone" and again.status == "completed"
    state = r.hgetall(f"orbiter:task:{payload.task_id}")
    assert state["status"] == "completed" and json.loads(state["result"]) == {"output": "hi"}
    assert float(state["completed_at"]) >= float(state["started_at"])
    assert r.xlen("orbiter:tasks") == 0 and pending_count(r) == 0
    assert terminal_events(r, payload.task_id) == ["completed"]
    assert consumer.in_flight() == []


def test_a_failed_attempt_goes_straight_to_retrying_and_runs_again(
    redis_url: str, producer: TaskProducer, r: redis.Redis
) -> None:
    settings = QueueSettings(max_retries=2, retry_backoff=tenacity.wait_fixed(0.2))
    first, second = (TaskConsumer(redis_url, w, settings) for w in ("w1", "w2"))
    payload = TaskPayload(input="flaky")
    producer.submit(payload)
    key = f"orbiter:task:{payload.task_id}"

    for attempt, consumer in ((1, first), (2, second)):
        delivery = claim_and_begin(consumer)  # a retrying task may run again
        settled = consumer.settle(delivery, Outcome.failed(RuntimeError("boom")))
        # one script: the task is retrying at once, never failed in between
        assert settled.status == "retrying"
        assert r.hget(key, "status") == "retrying"
        assert r.hget(key, "retries") == str(attempt)
        assert r.hget(key, "error") == "RuntimeError: boom"
        assert r.xlen("orbiter:tasks") == 0 and r.zcard("orbiter:tasks:delayed") == 1

    delivery = claim_and_begin(first)
    settled = first.settle(delivery, Outcome.failed(RuntimeError("boom again")))

    assert settled.status == "failed"
    state = r.hgetall(key)
    assert state["status"] == "failed" and state["retries"] == "2"
    assert state["error"] == "RuntimeError: boom again" and "completed_at" in state
    assert r.xlen("orbiter:tasks") == 0 and r.zcard("orbiter:tasks:delayed") == 0
    errors = [e for e in events_of(r, payload.task_id) if e["type"] == "error"]
    assert [(e["recoverable"], e["error_type"]) for e in errors] == [(True, "RuntimeError")] * 2
    assert events_of(r, payload.task_id)[-1] == {
        "type": "status",
        "status": "error",
        "message": "RuntimeError: boom again",
        "agent_name": "",
    }


def test_a_config_that_can_never_run_fails_for_good(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    delivery = claim_and_begin(consumer)

    error = AgentConfigError("no such agent")
    settled = consumer.settle(delivery, Outcome.failed(error, retryable=False))

    assert settled.status == "failed"
    state = r.hgetall(f"orbiter:task:{payload.task_id}")
    assert state["retries"] == "0" and state["error"] == "AgentConfigError: no such agent"
    assert r.zcard("orbiter:tasks:delayed") == 0 and r.xlen("orbiter:tasks") == 0
    assert terminal_events(r, payload.task_id) == ["error"]


def test_a_timeout_is_a_failed_attempt(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    delivery = claim_and_begin(consumer)

    settled = consumer.settle(delivery, Outcome.timed_out(0.5))

    assert settled.status == "retrying"
    assert (
        r.hget(f"orbiter:task:{payload.task_id}", "error") == "TimeoutError: timed out after 0.5s"
    )


def test_backoff_comes_from_the_tenacity_strategy(redis_url: str, r: redis.Redis) -> None:
    settings = QueueSettings(retry_backoff=tenacity.wait_exponential(multiplier=10))
    TaskProducer(redis_url, settings).submit(TaskPayload(task_id="slow", input="x"))
    consumer = TaskConsumer(redis_url, "w1", settings)
    delivery = claim_and_begin(consumer)
    before = time.time()

    consumer.settle(delivery, Outcome.failed(ValueError("e")))

    scored = r.zrange("orbiter:tasks:delayed", 0, -1, withscores=True)
    [(_, due)] = cast("list[tuple[str, float]]", scored)  # r decodes; scores are floats
    assert before + 9 < due < time.time() + 11  # attempt 1 of 10 * 2**(n-1)


def test_settle_cancelled_ends_the_stream_as_cancelled(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    delivery = claim_and_begin(consumer)
    producer.cancel(payload.task_id)

    settled = consumer.settle(delivery, Outcome.cancelled())

    assert settled.status == "cancelled"
    assert terminal_events(r, payload.task_id) == ["cancelled"]
    assert events_of(r, payload.task_id)[-1]["message"] == "cancelled"
    assert r.xlen("orbiter:tasks") == 0 and pending_count(r) == 0


def test_a_released_task_goes_back_to_the_queue_and_a_late_settle_writes_nothing(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    delivery = claim_and_begin(consumer)

    settled = consumer.settle(delivery, Outcome.released("worker stopping"))

    assert settled.written
    state = r.hgetall(f"orbiter:task:{payload.task_id}")
    assert state["status"] == "pending" and state["retries"] == "0"
    [(_, fields)] = stream_entries(r, "orbiter:tasks")
    assert fields["payload"] == delivery.raw and pending_count(r) == 0
    last = events_of(r, payload.task_id)[-1]
    assert last["type"] == "error" and last["recoverable"] is True
    assert last["error"] == "released: worker stopping" and last["error_type"] == "Released"

    # the run it stopped ends after all: that settle comes too late to record anything
    late = consumer.settle(delivery, Outcome.completed({"output": "late"}))
    assert not late.written
    assert r.hget(f"orbiter:task:{payload.task_id}", "status") == "pending"
    assert r.xlen("orbiter:tasks") == 1


def test_settle_is_fenced_against_a_worker_that_lost_its_entry(
    redis_url: str, producer: TaskProducer, r: redis.Redis
) -> None:
    settings = QueueSettings(visibility_timeout=0.2)
    slow, taker = (
        TaskConsumer(redis_url, "slow", settings),
        TaskConsumer(redis_url, "taker", settings),
    )
    payload = TaskPayload(input="x")
    producer.submit(payload)
    mine = claim_and_begin(slow)
    # slow's heartbeat stalls past the visibility timeout; taker takes the entry over
    theirs = wait_for(lambda: taker.reclaim(count=1), timeout=5)
    assert isinstance(theirs, list) and taker.begin(theirs[0])

    late = slow.settle(mine, Outcome.failed(RuntimeError("slow's run failed")))

    assert late.verdict == "lost" and late.status == "running"
    state = r.hgetall(f"orbiter:task:{payload.task_id}")
    assert state["worker_id"] == "taker" and state["retries"] == "0" and "error" not in state
    assert pending_count(r) == 1 and r.zcard("orbiter:tasks:delayed") == 0
    assert taker.settle(theirs[0], Outcome.completed({"output": "taker"})).status == "completed"
    assert terminal_events(r, payload.task_id) == ["completed"]


def test_a_lost_outcome_writes_nothing(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    producer.submit(TaskPayload(task_id="gone-elsewhere", input="x"))
    delivery = claim_and_begin(consumer)

    settled = consumer.settle(delivery, Outcome.lost())

    assert settled.verdict == "lost" and consumer.in_flight() == []
    assert r.hget("orbiter:task:gone-elsewhere", "status") == "running"
    assert pending_count(r) == 1


def test_subscriber_sees_retry_and_terminal_events_in_order(
    redis_url: str, producer: TaskProducer
) -> None:
    settings = QueueSettings(max_retries=1, retry_backoff=tenacity.wait_fixed(0))
    consumer = TaskConsumer(redis_url, "w1", settings)
    payload = TaskPayload(input="x")
    producer.submit(payload)
    consumer.settle(claim_and_begin(consumer), Outcome.failed(ValueError("first")))
    consumer.settle(claim_and_begin(consumer), Outcome.failed(ValueError("second")))

    events = list(EventSubscriber(redis_url).subscribe(payload.task_id, timeout=5))

    assert [(e.type, getattr(e, "status", None)) for e in events] == [
        ("status", "running"),
        ("error", None),
        ("status", "running"),
        ("status", "error"),
    ]


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
    # the dead worker never touches its entry again
    assert alive.claim(timeout=0.1) is None

    delivery = wait_for(lambda: alive.claim(timeout=0.2), timeout=5)

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
    while TaskConsumer(redis_url, f"w{claims}", settings).claim(timeout=0.3) is not None:
        claims += 1
        time.sleep(0.1)

    assert claims == 3
    [dead] = admin.dead_letters()
    assert dead["task_id"] == payload.task_id and "delivered 4 times" in dead["reason"]
    assert r.hget(f"orbiter:task:{payload.task_id}", "status") == "failed"
    assert "delivered 4 times" in str(r.hget(f"orbiter:task:{payload.task_id}", "error"))
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
