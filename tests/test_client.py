import json
import threading
import time

import pytest
import redis
from helpers import stream_entries, wait_for

import orbiter_sync
from orbiter_sync import (
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    ValidationError,
    distributed,
)
from orbiter_sync.client import TaskHandle
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.events import EventPublisher, StatusEvent, StreamEvent, TextEvent
from orbiter_sync.models import TaskStatus
from orbiter_sync.outcome import Outcome

AGENT = {"entrypoint": "examples.agents:echo"}


def run_like_a_worker(redis_url: str, outcome: Outcome) -> threading.Thread:
    """Claim one task in a thread, publish an event and settle it with ``outcome``."""

    def work() -> None:
        consumer = TaskConsumer(redis_url, "test-worker")
        delivery = consumer.claim(timeout=10)
        assert delivery is not None and consumer.begin(delivery)
        EventPublisher(redis_url).publish(delivery.task_id, TextEvent(text="working"))
        consumer.settle(delivery, outcome)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_distributed_queues_a_task_and_result_waits_for_it(redis_url: str, r: redis.Redis) -> None:
    handle = distributed(AGENT, "hello", redis_url=redis_url, metadata={"user": 7}, timeout=30)

    state = handle.status()
    assert state is not None and state.status is TaskStatus.PENDING
    assert r.xlen("orbiter:tasks") == 1
    worker = run_like_a_worker(redis_url, Outcome.completed({"output": "hello back"}))

    assert handle.result(timeout=10) == {"output": "hello back"}
    worker.join()


def test_stream_yields_events_until_the_terminal_one(redis_url: str) -> None:
    handle = distributed(AGENT, "hi", redis_url=redis_url)
    run_like_a_worker(redis_url, Outcome.completed({}))

    events = list(handle.stream(timeout=10))

    assert [(e.type, getattr(e, "status", getattr(e, "text", None))) for e in events] == [
        ("status", "running"),
        ("text", "working"),
        ("status", "completed"),
    ]


def test_result_raises_when_the_task_failed(redis_url: str) -> None:
    handle = distributed(AGENT, "hi", redis_url=redis_url)

    run_like_a_worker(redis_url, Outcome.failed(ValueError("bad input"), retryable=False))
    with pytest.raises(TaskFailedError, match="bad input") as info:
        handle.result(timeout=10)
    assert info.value.task_id == handle.task_id


def test_cancel_makes_result_raise(redis_url: str) -> None:
    handle = distributed(AGENT, "hi", redis_url=redis_url)

    assert handle.cancel() is True

    with pytest.raises(TaskCancelledError):
        handle.result(timeout=5)
    assert [e.type for e in handle.stream(timeout=5)] == ["status"]
    assert handle.cancel() is True  # cancelling twice is harmless


def test_result_times_out(redis_url: str) -> None:
    handle = distributed(AGENT, "nobody works", redis_url=redis_url)
    with pytest.raises(TaskTimeoutError, match="timed out after 0.3s"):
        handle.result(timeout=0.3)


def test_unknown_task_is_reported(redis_url: str) -> None:
    handle = TaskHandle("does-not-exist", redis_url=redis_url)
    assert handle.status() is None
    with pytest.raises(TaskNotFoundError):
        handle.result(timeout=1)
    with pytest.raises(TaskNotFoundError):
        list(handle.stream())


def test_agent_object_with_to_dict_and_bad_agents(redis_url: str, r: redis.Redis) -> None:
    class Agent:
        def to_dict(self) -> dict[str, str]:
            return {"name": "helper", "model": "test"}

    handle = distributed(Agent(), "x", redis_url=redis_url)
    [(_, fields)] = stream_entries(r, "orbiter:tasks")
    assert handle.task_id in fields["payload"] and '"name":"helper"' in fields["payload"]
    with pytest.raises(ValidationError, match="agent"):
        distributed("not an agent", "x", redis_url=redis_url)
    with pytest.raises(ValidationError, match="timeout_seconds"):
        distributed(AGENT, "x", redis_url=redis_url, timeout=-1)


def test_url_comes_from_the_environment(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORBITER_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)  # Heroku's variable, as the fallback
    assert distributed(AGENT, "x").status() is not None

    monkeypatch.setenv("ORBITER_REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # wrong, but not used
    assert distributed(AGENT, "y").status() is not None

    monkeypatch.delenv("ORBITER_REDIS_URL")
    monkeypatch.delenv("REDIS_URL")
    with pytest.raises(orbiter_sync.ConfigurationError, match="ORBITER_REDIS_URL"):
        distributed(AGENT, "z")


def test_many_handles_share_one_pool(redis_url: str, r: redis.Redis) -> None:
    distributed(AGENT, "warm up", redis_url=redis_url).status()
    before = len(r.client_list())

    handles = [distributed(AGENT, f"task {n}", redis_url=redis_url) for n in range(300)]
    for handle in handles:
        handle.status()

    assert len(r.client_list()) - before <= 2
    wait_for(lambda: r.xlen("orbiter:tasks") == 301)


def test_a_stream_ends_when_the_task_ends_without_a_terminal_event(
    redis_url: str, r: redis.Redis
) -> None:
    """An async orbiter-distributed worker with ``detailed`` off writes the task's final
    status but no terminal event: the stream still ends, within about a second."""
    task_id = "ended-quietly"
    key = f"orbiter:task:{task_id}"
    r.hset(key, mapping={"task_id": task_id, "status": "running"})
    running = StatusEvent(status="running", message="on an async worker")
    r.xadd(f"orbiter:stream:{task_id}", {"event": running.to_json()})
    handle = TaskHandle(task_id, redis_url=redis_url)
    events: list[StreamEvent] = []
    reader = threading.Thread(target=lambda: events.extend(handle.stream(timeout=30)))
    reader.start()
    wait_for(lambda: events)  # the running event, then the stream waits

    r.hset(key, mapping={"status": "completed", "result": json.dumps({"output": "done"})})
    started = time.monotonic()
    reader.join(10)

    assert not reader.is_alive() and time.monotonic() - started < 3
    assert [(e.type, getattr(e, "status", None)) for e in events] == [
        ("status", "running"),
        ("status", "completed"),  # made from the hash
    ]
    assert handle.result(timeout=5) == {"output": "done"}
    r.hset(key, "status", "running")
    with pytest.raises(TaskTimeoutError):  # a task that never ends still times out
        list(handle.stream(timeout=0.5))
