import json

import redis
from redis.typing import EncodableT

from orbiter_sync.models import TaskStatus
from orbiter_sync.store import TaskStore


def seed(r: redis.Redis, task_id: str, status: str, **fields: EncodableT) -> None:
    """A task hash as a worker leaves it, with its id in the index."""
    # redis-py's mapping wants EncodableT keys, which a str-keyed **fields is not (invariance)
    mapping: dict[EncodableT, EncodableT] = {"task_id": task_id, "status": status}
    mapping.update(fields.items())
    r.hset(f"orbiter:task:{task_id}", mapping=mapping)
    r.sadd("orbiter:task:index", task_id)


def test_get_status_reads_the_wire_hash(store: TaskStore, r: redis.Redis) -> None:
    seed(r, "t1", "completed", worker_id="w1", started_at=10.5, completed_at=11.0,
         result=json.dumps({"output": "ok"}), retries=1)  # fmt: skip

    status = store.get_status("t1")

    assert status is not None and status.status is TaskStatus.COMPLETED
    assert status.result == {"output": "ok"} and status.duration == 0.5
    assert status.worker_id == "w1" and status.retries == 1


def test_statuses_reads_many_in_one_go(store: TaskStore, r: redis.Redis) -> None:
    seed(r, "a", "running")
    seed(r, "b", "cancelled")
    seed(r, "c", "weird")

    assert store.statuses(["a", "b", "c", "nope"]) == {
        "a": TaskStatus.RUNNING,
        "b": TaskStatus.CANCELLED,
        "c": None,
        "nope": None,
    }


def test_get_status_of_unknown_task_is_none(store: TaskStore) -> None:
    assert store.get_status("nope") is None


def test_list_tasks_newest_first_with_filter_and_limit(store: TaskStore, r: redis.Redis) -> None:
    for n in range(5):
        seed(r, f"t{n}", "running" if n == 3 else "pending", created_at=1000 + n)

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
    seed(r, "old", "completed")
    seed(r, "new", "completed")
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
    seed(r, "good", "pending")
    r.hset("orbiter:task:bad", mapping={"status": "weird"})
    r.sadd("orbiter:task:index", "bad")

    assert [t.task_id for t in store.list_tasks()] == ["good"]
