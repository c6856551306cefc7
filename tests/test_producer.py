"""The producer side: submitting and cancelling, as a web process does."""

from __future__ import annotations

import json

import pytest
import redis
from helpers import ConnectionKiller, stream_entries, terminal_events, wait_for

from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.errors import ConfigurationError
from orbiter_sync.models import TaskPayload
from orbiter_sync.outcome import Outcome
from orbiter_sync.producer import TaskProducer
from orbiter_sync.queue import QueueSettings


def test_submit_writes_hash_index_and_entry(producer: TaskProducer, r: redis.Redis) -> None:
    payload = TaskPayload(input="hello", agent_config={"entrypoint": "m:f"})

    assert producer.submit(payload) == payload.task_id

    assert r.hgetall(f"orbiter:task:{payload.task_id}") | {"created_at": "x"} == {
        "task_id": payload.task_id,
        "status": "pending",
        "retries": "0",
        "created_at": "x",
    }
    assert 86000 < r.ttl(f"orbiter:task:{payload.task_id}") <= 86400
    assert r.sismember("orbiter:task:index", payload.task_id)
    [(_, fields)] = stream_entries(r, "orbiter:tasks")
    assert json.loads(fields["payload"]) == payload.to_dict()


def test_submit_is_idempotent(producer: TaskProducer, r: redis.Redis) -> None:
    payload = TaskPayload(input="once")
    producer.submit(payload)
    producer.submit(payload)
    assert r.xlen("orbiter:tasks") == 1


def test_submit_to_a_named_queue(redis_url: str, r: redis.Redis) -> None:
    producer = TaskProducer(redis_url, QueueSettings(name="orbiter:urgent"))
    producer.submit(TaskPayload(input="now"))
    assert r.xlen("orbiter:urgent") == 1 and r.xlen("orbiter:tasks") == 0


def test_cancel_pending_task(producer: TaskProducer, r: redis.Redis) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    listener = r.pubsub()  # type: ignore[no-untyped-call]
    listener.subscribe(f"orbiter:cancel:{payload.task_id}")
    wait_for(lambda: listener.get_message(timeout=0.1))  # the subscribe confirmation

    assert producer.cancel(payload.task_id) is True

    message = wait_for(lambda: listener.get_message(timeout=0.1))
    assert isinstance(message, dict) and message["data"] == "cancel"
    assert r.hget(f"orbiter:task:{payload.task_id}", "status") == "cancelled"
    assert terminal_events(r, payload.task_id) == ["cancelled"]
    listener.close()


def test_cancel_running_task_leaves_the_terminal_event_to_its_worker(
    producer: TaskProducer, consumer: TaskConsumer, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    delivery = consumer.claim(timeout=1)
    assert delivery is not None and consumer.begin(delivery)

    assert producer.cancel(payload.task_id)
    assert terminal_events(r, payload.task_id) == []

    # the worker's run ends anyway; a late "completed" cannot win over the cancel
    settled = consumer.settle(delivery, Outcome.completed({"output": "late"}))
    assert settled.status == "cancelled"
    assert terminal_events(r, payload.task_id) == ["cancelled"]
    assert r.xlen("orbiter:tasks") == 0
    assert not r.hexists(f"orbiter:task:{payload.task_id}", "result")


def test_cancel_of_finished_or_unknown_task_is_refused(
    producer: TaskProducer, consumer: TaskConsumer
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    delivery = consumer.claim(timeout=1)
    assert delivery is not None and consumer.begin(delivery)
    consumer.settle(delivery, Outcome.completed({"output": 1}))

    assert producer.cancel(payload.task_id) is False
    assert producer.cancel("unknown") is False


def test_exactly_200_tasks_queued_while_connections_are_killed(
    redis_url: str, r: redis.Redis
) -> None:
    producer = TaskProducer(redis_url)
    submitted: list[str] = []
    # When every client connection is killed over and over during the submissions
    with ConnectionKiller(redis_url) as killer:
        for n in range(200):
            submitted.append(producer.submit(TaskPayload(input=f"task {n}")))
    # Then the submissions survived, and none was queued twice
    assert killer.kills >= 5
    entries = stream_entries(r, "orbiter:tasks")
    queued = [json.loads(fields["payload"])["task_id"] for _, fields in entries]
    assert len(queued) == 200
    assert set(queued) == set(submitted) and len(set(queued)) == 200
    assert r.scard("orbiter:task:index") == 200


@pytest.mark.parametrize(
    "bad",
    [
        {"max_retries": -1},
        {"max_deliveries": 0},
        {"visibility_timeout": 0},
        {"task_ttl": 0},
        {"event_ttl": 0},
    ],
)
def test_bad_queue_settings_are_rejected(bad: dict[str, int]) -> None:
    with pytest.raises(ConfigurationError):
        QueueSettings(**bad)  # type: ignore[arg-type]
