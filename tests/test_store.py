import json

import pytest
import redis

from orbiter_sync.models import TaskStatus
from orbiter_sync.store import TaskStore


def test_set_status_writes_the_wire_hash(store: TaskStore, r: redis.Redis) -> None:
    assert store.set_status("t1", TaskStatus.RUNNING, worker_id="w1", started_at=10.5)
    assert store.set_status("t1", "completed", result={"output": "ok"}, completed_at=11.0)

    data = r.hgetall("orbiter:task:t1")
    assert data["task_id"] == "t1"
    assert data["status"] == "completed"
    assert json.loads(data["result"]) == {"output": "ok"}
    assert data["worker_id"] == "w1"
    assert 86000 < r.ttl("orbiter:task:t1") <= 86400
    assert r.sismember("orbiter:task:index", "t1")
    status = store.get_status("t1")
    assert status is not None and status.result == {"output": "ok"} and status.duration == 0.5


@pytest.mark.parametrize("final", ["completed", "cancelled", "failed"])
def test_a_final_task_is_never_turned_back_into_running(
    store: TaskStore, r: redis.Redis, final: str
) -> None:
    store.set_status("t1", TaskStatus.RUNNING)
    store.set_status("t1", final, error="boom")

    assert store.set_status("t1", TaskStatus.RUNNING, worker_id="late") is False

    data = r.hgetall("orbiter:task:t1")
    assert data["status"] == final
    assert "worker_id" not in data


def test_failed_may_move_on_to_retrying_but_completed_may_not(store: TaskStore) -> None:
    store.set_status("a", TaskStatus.FAILED)
    assert store.set_status("a", TaskStatus.RETRYING)
    assert store.set_status("a", TaskStatus.RUNNING)

    store.set_status("b", TaskStatus.COMPLETED)
    assert not store.set_status("b", TaskStatus.RETRYING)
    assert not store.set_status("b", TaskStatus.CANCELLED)
    assert store.set_status("b", TaskStatus.COMPLETED)  # a repeated write is harmless


def test_get_status_of_unknown_task_is_none(store: TaskStore) -> None:
    assert store.get_status("nope") is None


def test_list_tasks_newest_first_with_filter_and_limit(store: TaskStore) -> None:
    for n in range(5):
        store.set_status(f"t{n}", TaskStatus.PENDING, created_at=1000 + n)
    store.set_status("t3", TaskStatus.RUNNING)

    assert [t.task_id for t in store.list_tasks()] == ["t4", "t3", "t2", "t1", "t0"]
    assert [t.task_id for t in store.list_tasks(limit=2)] == ["t4", "t3"]
    assert [t.task_id for t in store.list_tasks(status="running")] == ["t3"]
    assert [t.task_id for t in store.list_tasks(status=TaskStatus.PENDING)] == [
        "t4",
        "t2",
        "t1",
        "t0",
    ]


def test_expired_ids_are_pruned_from_the_index(store: TaskStore, r: redis.Redis) -> None:
    # Given two tasks of which one hash has expired
    store.set_status("old", TaskStatus.COMPLETED)
    store.set_status("new", TaskStatus.COMPLETED)
    r.delete("orbiter:task:old")
    # When the tasks are listed
    listed = store.list_tasks()
    # Then the stale id is gone from the index, not kept forever
    assert [t.task_id for t in listed] == ["new"]
    assert r.smembers("orbiter:task:index") == {"new"}

    r.delete("orbiter:task:new")
    assert store.prune_index() == 1
    assert r.scard("orbiter:task:index") == 0


def test_unreadable_hash_is_skipped_not_fatal(store: TaskStore, r: redis.Redis) -> None:
    store.set_status("good", TaskStatus.PENDING)
    r.hset("orbiter:task:bad", mapping={"status": "weird"})
    r.sadd("orbiter:task:index", "bad")

    assert [t.task_id for t in store.list_tasks()] == ["good"]
