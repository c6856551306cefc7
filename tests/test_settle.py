"""Settling: how each outcome of an attempt is recorded, in one fenced script call."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import pytest
import redis
import tenacity
from helpers import (
    LostFirstReply,
    claim_and_begin,
    events_of,
    pending_count,
    stream_entries,
    terminal_events,
    wait_for,
)

from orbiter_sync import lua
from orbiter_sync.connection import RetryPolicy
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.errors import AgentConfigError
from orbiter_sync.events import EventSubscriber
from orbiter_sync.models import TaskPayload
from orbiter_sync.outcome import Outcome
from orbiter_sync.producer import TaskProducer
from orbiter_sync.queue import QueueSettings

# -- outcomes -------------------------------------------------------------------------


def test_settle_completed_records_acks_and_ends_the_stream_once(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    delivery = claim_and_begin(consumer)

    settled = consumer.settle(delivery, Outcome.completed({"output": "hi"}))
    again = consumer.settle(delivery, Outcome.completed({"output": "hi"}))  # a second call

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
        # str(exc), as the async worker writes it; the class beside it
        assert r.hmget(key, "error", "error_type") == ["boom", "RuntimeError"]
        assert r.xlen("orbiter:tasks") == 0 and r.zcard("orbiter:tasks:delayed") == 1

    delivery = claim_and_begin(first)
    settled = first.settle(delivery, Outcome.failed(RuntimeError("boom again")))

    assert settled.status == "failed"
    state = r.hgetall(key)
    assert state["status"] == "failed" and state["retries"] == "2"
    assert state["error"] == "boom again" and state["error_type"] == "RuntimeError"
    assert "completed_at" in state
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
    assert state["retries"] == "0" and state["error"] == "no such agent"
    assert state["error_type"] == "AgentConfigError"
    assert r.zcard("orbiter:tasks:delayed") == 0 and r.xlen("orbiter:tasks") == 0
    assert terminal_events(r, payload.task_id) == ["error"]


@pytest.mark.parametrize(("retryable", "status"), [(False, "failed"), (True, "retrying")])
def test_a_timeout_fails_for_good_unless_its_task_asked_for_retries(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis, retryable: bool, status: str
) -> None:
    payload = TaskPayload(input="x", retry_timeouts=retryable)
    producer.submit(payload)
    delivery = claim_and_begin(consumer)

    settled = consumer.settle(delivery, Outcome.timed_out(0.5, retryable=retryable))

    assert settled.status == status
    assert r.hmget(f"orbiter:task:{payload.task_id}", "error", "error_type") == [
        "timed out after 0.5s",
        "TimeoutError",
    ]


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

    assert settled.written and settled.status == "pending"
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


T = TypeVar("T")


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Outcome.completed({"output": 1}), "completed"),
        (Outcome.failed(ValueError("x")), "retrying"),
        (Outcome.failed(ValueError("x"), retryable=False), "failed"),
        (Outcome.released(), "pending"),
    ],
)
def test_a_settle_retried_after_a_lost_reply_reports_what_it_did(
    redis_url: str, producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis,
    outcome: Outcome, status: str,
) -> None:  # fmt: skip
    payload = TaskPayload(input="x")
    producer.submit(payload)
    delivery = claim_and_begin(consumer)
    unlucky = TaskConsumer(redis_url, "w1", retry=LostFirstReply())

    settled = unlucky.settle(delivery, outcome)

    assert settled.written and settled.status == status
    assert r.hget(f"orbiter:task:{payload.task_id}", "status") == status
    assert len(events_of(r, payload.task_id)) == 2  # running, then one event of the settle
    assert pending_count(r) == 0


def test_a_run_cancelled_while_it_failed_stays_cancelled_with_a_plain_event(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    delivery = claim_and_begin(consumer)
    producer.cancel(payload.task_id)

    settled = consumer.settle(delivery, Outcome.timed_out(1))

    assert settled.status == "cancelled"
    assert r.hget(f"orbiter:task:{payload.task_id}", "retries") == "0"
    last = events_of(r, payload.task_id)[-1]
    assert (last["type"], last["status"], last["message"]) == ("status", "cancelled", "")


def test_settle_refuses_an_outcome_it_does_not_know(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    producer.submit(TaskPayload(task_id="t", input="x"))
    delivery = claim_and_begin(consumer)
    settle = lua.register(r, "settle")
    keys = ["orbiter:tasks", "orbiter:task:t", "orbiter:task:index", "orbiter:stream:t",
            "orbiter:tasks:delayed"]  # fmt: skip
    args: list[str | int] = ["orbiter:tasks:group", "w1", delivery.entry_id, "t", "exploded",
                             "1", 60, "orbiter:events:t", 60, "e1", "{}", "", "", "", "{}", "",
                             3, "[1]"]  # fmt: skip

    with pytest.raises(redis.ResponseError, match="unknown outcome exploded"):
        settle(keys=keys, args=args)

    assert r.hget("orbiter:task:t", "status") == "running" and pending_count(r) == 1


def test_a_delivery_stays_held_while_its_settle_is_retried(
    redis_url: str, producer: TaskProducer, consumer: TaskConsumer
) -> None:
    # Given a retry policy that notes, at each call, whether the delivery is held
    producer.submit(TaskPayload(input="x"))
    delivery = claim_and_begin(consumer)
    held_during: list[bool] = []

    class Watching(RetryPolicy):
        def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
            held_during.append(delivery in consumer.in_flight())
            return fn(*args, **kwargs)

    # When it is settled, then the delivery is held (kept alive, never taken back by
    # this worker's reclaimer) until the script has answered, and let go after
    assert consumer.settle(delivery, Outcome.completed({}), retry=Watching()).written
    assert held_during == [True]
    assert consumer.in_flight() == []
