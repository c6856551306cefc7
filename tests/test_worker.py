"""The worker as operators run it: real ``orbiter-sync start worker`` subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
from helpers import TEST_POOL, Spawn, log_of, pending_count, wait_for

from orbiter_sync import TaskHandle, TaskPayload, distributed
from orbiter_sync.admin import QueueAdmin
from orbiter_sync.embedded import EmbeddedRedis
from orbiter_sync.errors import TaskCancelledError, TaskFailedError
from orbiter_sync.health import WorkerHealthCheck, get_worker_fleet_status
from orbiter_sync.producer import TaskProducer


def agent(name: str) -> dict[str, str]:
    return {"entrypoint": f"sample_agents:{name}"}


def test_workers_run_on_the_pool_under_test(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url, worker_id="w1")
    assert r.hget("orbiter:workers:w1", "pool") == TEST_POOL


def test_each_kind_of_entrypoint_runs(redis_url: str, spawn_worker: Spawn) -> None:
    spawn_worker(redis_url, "--concurrency", "2")

    plain = distributed(agent("echo"), "hi", redis_url=redis_url)
    generator = distributed(agent("words"), "one two three", redis_url=redis_url)
    async_gen = distributed(agent("async_words"), "a b", redis_url=redis_url)
    coroutine = distributed(agent("coroutine"), "up", redis_url=redis_url, metadata={"k": 1})

    assert plain.result(timeout=20) == {"output": "echo: hi"}
    assert generator.result(timeout=20) == {"output": f"3 words for {generator.task_id}"}
    assert async_gen.result(timeout=20) == {"output": "ab"}
    assert coroutine.result(timeout=20) == {"output": {"upper": "UP", "metadata": {"k": 1}}}
    events = [e.to_dict() for e in generator.stream(timeout=5)]
    assert [e["type"] for e in events] == ["status", "text", "text", "text", "tool_call", "status"]
    assert events[0]["status"] == "running" and events[-1]["status"] == "completed"
    state = plain.status()
    assert state is not None and state.worker_id and state.duration is not None


def test_cancel_of_running_and_pending_tasks(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url)
    running = distributed(agent("sleepy"), "30", redis_url=redis_url)
    pending = distributed(
        agent("counted"), "never", redis_url=redis_url, metadata={"redis_url": redis_url}
    )
    wait_for(lambda: r.hget(f"orbiter:task:{running.task_id}", "status") == "running")
    pending.cancel()  # the only slot is busy: this one has not started

    cancelled_at = time.monotonic()
    assert running.cancel()
    with pytest.raises(TaskCancelledError):
        running.result(timeout=10)

    assert time.monotonic() - cancelled_at < 2
    terminal = [e for e in running.stream(timeout=5) if e.is_terminal]
    assert [e.status for e in terminal] == ["cancelled"]  # type: ignore[attr-defined]
    # the slot went on; the cancelled pending task was acknowledged without running
    wait_for(lambda: r.xlen("orbiter:tasks") == 0)
    assert r.get(f"test:executions:{pending.task_id}") is None
    assert distributed(agent("echo"), "next", redis_url=redis_url).result(timeout=10)


def test_timeout_fails_for_good_unless_the_task_asks_for_retries(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url)
    once = distributed(agent("sleepy"), "30", redis_url=redis_url, timeout=0.3)
    again = distributed(
        agent("sleepy"), "30", redis_url=redis_url, timeout=0.3, retry_timeouts=True
    )

    for handle in (once, again):
        with pytest.raises(TaskFailedError, match="timed out after 0.3s"):
            handle.result(timeout=30)

    # a timed-out run is not paid for again unless asked
    assert [h.status().retries for h in (once, again)] == [0, 3]  # type: ignore[union-attr]
    events = [e.to_dict() for e in again.stream(timeout=5)]
    assert sum(1 for e in events if e["type"] == "error" and e["recoverable"]) == 3
    assert events[-1]["status"] == "error"
    # each attempt opens with its number, so a UI can start its transcript again
    running = [e["attempt"] for e in events if e.get("status") == "running"]
    assert running == [1, 2, 3, 4]


def test_no_reader_sees_failed_for_a_task_that_will_run_again(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url)
    handle = distributed(
        agent("flaky"), "2", redis_url=redis_url, metadata={"redis_url": redis_url}
    )
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:  # as a client polling the task's status would
        watcher = redis.Redis.from_url(redis_url, decode_responses=True)
        while not done.is_set():
            seen.append(str(watcher.hget(f"orbiter:task:{handle.task_id}", "status")))
        watcher.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # two failed attempts, each retried: result() waits through them
        assert handle.result(timeout=30) == {"output": "succeeded on attempt 3"}
    finally:
        done.set()
        watcher.join()

    assert "failed" not in seen and "retrying" in seen
    state = handle.status()
    assert state is not None and state.retries == 2 and state.error == "attempt 2 fails"
    events = [e.to_dict() for e in handle.stream(timeout=5)]
    assert [e["type"] for e in events].count("error") == 2
    assert all(e["recoverable"] for e in events if e["type"] == "error")


def test_retry_limits_come_from_the_command_line(redis_url: str, spawn_worker: Spawn) -> None:
    spawn_worker(redis_url, "--max-retries", "1")
    handle = distributed(agent("broken"), "x", redis_url=redis_url)

    with pytest.raises(TaskFailedError, match="broken by design"):
        handle.result(timeout=20)

    state = handle.status()
    assert state is not None and state.retries == 1


def test_denied_import_fails_at_once_and_imports_nothing(
    redis_url: str, spawn_worker: Spawn, tmp_path: Path
) -> None:
    worker = spawn_worker(redis_url)
    marker = tmp_path / "imported"
    handle = distributed({"entrypoint": "os:system"}, f"touch {marker}", redis_url=redis_url)

    with pytest.raises(TaskFailedError, match="--allow-import os") as info:
        handle.result(timeout=10)

    assert "ORBITER_ALLOW_IMPORTS" in str(info.value)
    state = handle.status()
    assert state is not None and state.retries == 0
    assert not marker.exists()
    assert worker.poll() is None


def test_malformed_entries_are_dead_lettered_and_the_worker_goes_on(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    worker = spawn_worker(redis_url)
    r.xadd("orbiter:tasks", {"payload": "not json"})
    r.xadd("orbiter:tasks", {"no": "payload"})
    r.xadd("orbiter:tasks", {"payload": json.dumps({"task_id": "wrong-types", "input": ["x"]})})

    assert distributed(agent("echo"), "still here", redis_url=redis_url).result(timeout=10)

    assert r.xlen("orbiter:tasks:dead") == 3
    assert r.hget("orbiter:task:wrong-types", "status") == "failed"
    assert worker.poll() is None


def test_sigterm_lets_the_running_task_finish(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    worker = spawn_worker(redis_url)
    handle = distributed(agent("sleepy"), "1.5", redis_url=redis_url)
    wait_for(lambda: r.hget(f"orbiter:task:{handle.task_id}", "status") == "running")

    worker.send_signal(signal.SIGTERM)

    assert worker.wait(timeout=20) == 0
    assert handle.result(timeout=1) == {"output": "startedwoke up"}
    assert r.keys("orbiter:workers:*") == []
    assert "stopping; running tasks get 25s" in log_of(worker)


def test_shutdown_timeout_releases_the_task_to_another_worker(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    first = spawn_worker(redis_url, "--shutdown-timeout", "0.5")
    handle = distributed(agent("sleepy"), "2", redis_url=redis_url)
    wait_for(lambda: r.hget(f"orbiter:task:{handle.task_id}", "status") == "running")

    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=20) == 0
    state = handle.status()
    assert state is not None and state.status == "pending" and state.retries == 0
    spawn_worker(redis_url)

    assert handle.result(timeout=20) == {"output": "startedwoke up"}


def test_second_signal_releases_at_once(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    worker = spawn_worker(redis_url)
    handle = distributed(agent("sleepy_sync"), "30", redis_url=redis_url)
    wait_for(lambda: r.hget(f"orbiter:task:{handle.task_id}", "status") == "running")

    worker.send_signal(signal.SIGINT)
    time.sleep(0.3)
    worker.send_signal(signal.SIGINT)

    assert worker.wait(timeout=10) == 0
    state = handle.status()
    assert state is not None and state.status == "pending"
    assert r.xlen("orbiter:tasks") == 1


def test_a_run_that_cannot_be_stopped_is_released_by_the_worker(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    worker = spawn_worker(redis_url, "--shutdown-timeout", "0.3")
    handle = distributed(agent("nap"), "30", redis_url=redis_url)  # a plain sync function
    wait_for(lambda: r.hget(f"orbiter:task:{handle.task_id}", "status") == "running")

    worker.send_signal(signal.SIGTERM)

    assert worker.wait(timeout=20) == 0
    state = handle.status()
    assert state is not None and state.status == "pending" and state.retries == 0
    assert r.xlen("orbiter:tasks") == 1 and pending_count(r) == 0
    assert "did not stop in time; the worker releases it" in log_of(worker)


def test_sigkill_during_a_task_and_another_worker_completes_it(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    doomed = spawn_worker(redis_url, "--visibility-timeout", "1")
    handle = distributed(agent("sleepy"), "0.5", redis_url=redis_url)
    wait_for(lambda: r.hget(f"orbiter:task:{handle.task_id}", "status") == "running")

    doomed.kill()
    doomed.wait()
    spawn_worker(redis_url, "--visibility-timeout", "1")

    assert handle.result(timeout=30) == {"output": "startedwoke up"}
    assert r.xlen("orbiter:tasks") == 0


def test_a_task_that_kills_every_worker_ends_in_dead_letters(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    handle = distributed(agent("suicide"), "x", redis_url=redis_url)

    def failed() -> bool:
        return handle.status().status == "failed"  # type: ignore[union-attr]

    # each worker that takes the task dies of it, until the consumer gives up on it
    for _ in range(8):
        if failed():
            break
        worker = spawn_worker(redis_url, "--visibility-timeout", "0.5", may_die=True)

        def gone(w: subprocess.Popen[str] = worker) -> bool:
            return w.poll() is not None or failed()

        wait_for(gone, timeout=20)

    with pytest.raises(TaskFailedError, match="delivered 6 times"):
        handle.result(timeout=1)
    [dead] = QueueAdmin(redis_url).dead_letters()
    assert dead["task_id"] == handle.task_id


def test_a_long_run_is_not_stolen_from_a_live_worker(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url, "--visibility-timeout", "0.6", worker_id="owner")
    handle = distributed(agent("sleepy"), "3", redis_url=redis_url)
    wait_for(lambda: r.hget(f"orbiter:task:{handle.task_id}", "status") == "running")
    spawn_worker(redis_url, "--visibility-timeout", "0.6", worker_id="thief")

    assert handle.result(timeout=20) == {"output": "startedwoke up"}
    state = handle.status()
    assert state is not None and state.worker_id == "owner"
    assert [e.type for e in handle.stream(timeout=5)].count("status") == 2  # running, completed


def test_redis_restart_under_a_running_worker(
    private_redis: EmbeddedRedis, spawn_worker: Spawn
) -> None:
    url = private_redis.url
    worker = spawn_worker(url)
    assert distributed(agent("echo"), "before", redis_url=url).result(timeout=10)

    private_redis.kill()
    time.sleep(1.0)  # the worker's calls fail while Redis is down
    private_redis.start()

    assert distributed(agent("echo"), "after", redis_url=url).result(timeout=30) == {
        "output": "echo: after"
    }
    assert worker.poll() is None


def test_500_tasks_on_two_workers_run_exactly_once(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url, "--concurrency", "4")
    spawn_worker(redis_url, "--concurrency", "4")
    producer = TaskProducer(redis_url)
    ids = [
        producer.submit(
            TaskPayload(
                input=str(n), agent_config=agent("counted"), metadata={"redis_url": redis_url}
            )
        )
        for n in range(500)
    ]

    wait_for(
        lambda: all(
            TaskHandle(i, redis_url=redis_url).status().status == "completed"  # type: ignore[union-attr]
            for i in ids[-20:]
        ),
        timeout=120,
    )
    wait_for(lambda: r.xlen("orbiter:tasks") == 0, timeout=60)
    counts = r.mget([f"test:executions:{i}" for i in ids])
    assert counts == ["1"] * 500
    statuses = {TaskHandle(i, redis_url=redis_url).status().status for i in ids}  # type: ignore[union-attr]
    assert statuses == {"completed"}
    assert r.xpending("orbiter:tasks", "orbiter:tasks:group")["pending"] == 0
    processed = sum(w.tasks_processed for w in get_worker_fleet_status(redis_url))
    wait_for(
        lambda: sum(w.tasks_processed for w in get_worker_fleet_status(redis_url)) == 500,
        timeout=10,
    )
    assert processed <= 500


def test_heartbeat_fields_and_health(redis_url: str, r: redis.Redis, spawn_worker: Spawn) -> None:
    worker = spawn_worker(redis_url, "--concurrency", "2", worker_id="hb-worker")
    handle = distributed(agent("sleepy"), "2", redis_url=redis_url)
    wait_for(lambda: r.hget("orbiter:workers:hb-worker", "current_task_id") == handle.task_id)

    data = r.hgetall("orbiter:workers:hb-worker")
    assert {"status", "tasks_processed", "tasks_failed", "current_task_id", "started_at",
            "last_heartbeat", "concurrency", "hostname"} <= set(data)  # fmt: skip
    assert data["status"] == "running" and data["concurrency"] == "2"
    assert data["running_task_ids"] == handle.task_id
    assert 0 < r.ttl("orbiter:workers:hb-worker") <= 3
    [fleet] = get_worker_fleet_status(redis_url)
    assert fleet.worker_id == "hb-worker" and fleet.alive
    result = WorkerHealthCheck(redis_url, "hb-worker").check()
    assert result.status == "healthy", result.message

    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=20)
    assert WorkerHealthCheck(redis_url, "hb-worker").check().status == "unhealthy"
