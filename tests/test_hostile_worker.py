"""Hostile input and faults, against real worker subprocesses: no entry kills a slot, a
result JSON cannot hold ends the task at once, a live worker's entries are never taken
over, stops keep their promises."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import redis
from helpers import Spawn, log_of, pending_count, wait_for

from orbiter_sync import TaskHandle, TaskPayload, distributed
from orbiter_sync.admin import QueueAdmin
from orbiter_sync.embedded import EmbeddedRedis
from orbiter_sync.errors import TaskFailedError, ValidationError

DEEP = "[" * 100_000 + "]" * 100_000


def agent(name: str) -> dict[str, str]:
    return {"entrypoint": f"sample_agents:{name}"}


def status_of(r: redis.Redis, task_id: str) -> str | None:
    value = r.hget(f"orbiter:task:{task_id}", "status")
    return None if value is None else str(value)


def test_no_entry_kills_a_slot(redis_url: str, r: redis.Redis, spawn_worker: Spawn) -> None:
    # Given a worker with one slot, and a queue of entries built to break it
    worker = spawn_worker(redis_url, worker_id="w1")
    raw = redis.Redis.from_url(redis_url)  # writes bytes as they are
    hostile: list[bytes | str] = [
        json.dumps({"task_id": "huge-int", "created_at": int("9" * 400)}),
        '{"task_id": "deep", "metadata": ' + DEEP + "}",
        b'{"task_id": "not-utf8", "input": "\xff\xfe"}',
        json.dumps({"task_id": "index", "input": "the task index's own key"}),
        json.dumps({"input": "no task id"}),
        json.dumps({"task_id": "bad{tag}", "input": "x"}),
        "x" * 200_000,  # big, and not JSON
    ]
    for payload in hostile:
        raw.xadd("orbiter:tasks", {"payload": payload})
    # a valid task whose hash key holds the wrong type: Redis refuses every write of it
    r.set("orbiter:task:wrongtype", "not a hash")
    r.xadd("orbiter:tasks", {"payload": TaskPayload(task_id="wrongtype", input="x").to_json()})

    # When a good task comes after them
    handle = distributed(agent("echo"), "still here", redis_url=redis_url)

    # Then it completes on the same slot, every hostile entry is a dead letter, and none
    # is left pending to kill the next worker that reclaims it
    assert handle.result(timeout=30) == {"output": "echo: still here"}
    dead = QueueAdmin(redis_url).dead_letters(count=20)
    assert len(dead) == len(hostile) + 1
    assert r.xlen("orbiter:tasks") == 0 and pending_count(r) == 0
    assert worker.poll() is None
    assert r.hget("orbiter:workers:w1", "status") == "running"
    reasons = " | ".join(d["reason"] for d in dead)
    for expected in ("finite", "not valid JSON", "reserved", "no task_id", "WRONGTYPE"):
        assert expected in reasons
    # a dead letter keeps a bounded prefix of its entry, and says how long it was
    big = next(d for d in dead if int(d["entry_length"]) > 200_000)
    assert len(big["entry"]) == 64 * 1024
    assert r.type("orbiter:task:index") == "set"  # still the index, never written as a hash
    raw.close()


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("unstorable", "Unstorable is not JSON data"),
        ("bad_model", "this model cannot be dumped"),
    ],
)
def test_a_result_json_cannot_hold_ends_the_task_after_one_run(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn, name: str, error: str
) -> None:
    spawn_worker(redis_url)
    handle = distributed(agent(name), "x", redis_url=redis_url, metadata={"redis_url": redis_url})

    with pytest.raises(TaskFailedError, match=error):
        handle.result(timeout=20)

    state = handle.status()
    assert state is not None and state.retries == 0
    assert r.get(f"test:executions:{handle.task_id}") == "1"
    assert r.xlen("orbiter:tasks") == 0 and pending_count(r) == 0


def test_an_error_whose_message_cannot_be_read_is_a_plain_failed_attempt(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url, "--max-retries", "1")
    handle = distributed(agent("unprintable"), "x", redis_url=redis_url,
                         metadata={"redis_url": redis_url})  # fmt: skip

    with pytest.raises(TaskFailedError, match="Unprintable whose message cannot be read"):
        handle.result(timeout=20)

    assert r.get(f"test:executions:{handle.task_id}") == "2"  # one retry, as configured


def test_a_huge_timeout_is_refused_at_submit_and_clamped_on_the_worker(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    with pytest.raises(ValidationError, match="timeout_seconds: must be at most"):
        distributed(agent("echo"), "x", redis_url=redis_url, timeout=1e12)
    assert r.xlen("orbiter:tasks") == 0

    # a peer that does not check queues one anyway: the worker runs it
    spawn_worker(redis_url)
    foreign = TaskPayload(task_id="foreign", agent_config=agent("echo"), input="hi",
                          timeout_seconds=1e12)  # fmt: skip
    r.xadd("orbiter:tasks", {"payload": foreign.to_json()})
    r.hset("orbiter:task:foreign", mapping={"task_id": "foreign", "status": "pending"})
    assert TaskHandle("foreign", redis_url=redis_url).result(timeout=20) == {"output": "echo: hi"}


def test_a_live_workers_entries_are_never_taken_over(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a task held by a live worker of the async library: its heartbeat key is
    # there, and it never refreshes its pending entries
    payload = TaskPayload(task_id="async-held", agent_config=agent("echo"), input="x")
    r.hset("orbiter:task:async-held", mapping={"task_id": "async-held", "status": "running"})
    r.xgroup_create("orbiter:tasks", "orbiter:tasks:group", id="0", mkstream=True)
    r.xadd("orbiter:tasks", {"payload": payload.to_json()})
    r.xreadgroup("orbiter:tasks:group", "async-worker", {"orbiter:tasks": ">"})
    r.hset("orbiter:workers:async-worker", mapping={"status": "running"})
    r.expire("orbiter:workers:async-worker", 30)
    # When an orbiter-sync worker with a short visibility timeout runs beside it
    spawn_worker(redis_url, "--visibility-timeout", "0.3")
    marker = distributed(agent("echo"), "later", redis_url=redis_url)
    assert marker.result(timeout=20)
    time.sleep(1.5)  # five visibility timeouts: its reclaimer has looked several times
    # Then the entry stays with the live worker
    [pending] = r.xpending_range("orbiter:tasks", "orbiter:tasks:group", "-", "+", 10)
    assert pending["consumer"] == "async-worker"
    assert status_of(r, "async-held") == "running"

    # and once that worker is dead (its heartbeat key gone), the task is taken over
    r.delete("orbiter:workers:async-worker")
    handle = TaskHandle("async-held", redis_url=redis_url)
    assert handle.result(timeout=20) == {"output": "echo: x"}


def test_a_slot_that_dies_is_restarted(redis_url: str, r: redis.Redis, spawn_worker: Spawn) -> None:
    # Given a task whose agent raises what no `except Exception` catches, on every run
    worker = spawn_worker(redis_url, "--visibility-timeout", "0.5", "--max-deliveries", "2",
                          worker_id="w1")  # fmt: skip
    doomed = distributed(agent("doom"), "x", redis_url=redis_url,
                         metadata={"redis_url": redis_url})  # fmt: skip

    # When it has killed its slot, and again when it is taken back and run again
    # (the second time, the slot stays down for 2 s: the pause doubles)
    wait_for(lambda: r.hget("orbiter:workers:w1", "status") == "degraded", timeout=30)
    wait_for(lambda: status_of(r, doomed.task_id) == "failed", timeout=30)

    # Then the worker restarted the slot each time, and still runs tasks
    assert "slot 0 died (1 in a row); restarting it in 1s" in log_of(worker)
    assert "slot 0 died (2 in a row); restarting it in 2s" in log_of(worker)
    wait_for(lambda: r.hget("orbiter:workers:w1", "status") == "running", timeout=10)
    assert r.hget("orbiter:workers:w1", "slot_restarts") == "2"
    assert distributed(agent("echo"), "alive", redis_url=redis_url).result(timeout=20)
    assert int(r.get(f"test:executions:{doomed.task_id}") or 0) == 2
    [dead] = QueueAdmin(redis_url).dead_letters()
    assert dead["task_id"] == doomed.task_id and "delivered 3 times" in dead["reason"]
    assert worker.poll() is None


@pytest.mark.parametrize("signals", [1, 2])
def test_a_stop_keeps_its_promise_with_a_run_that_cannot_be_stopped(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn, signals: int
) -> None:
    # Given a worker running a plain sync function that never returns in time
    worker = spawn_worker(redis_url, "--shutdown-timeout", "2")
    handle = distributed(agent("nap"), "60", redis_url=redis_url)
    wait_for(lambda: status_of(r, handle.task_id) == "running")

    # When it is told to stop, once (graceful) or twice (at once)
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    if signals == 2:
        time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    took = time.monotonic() - started

    # Then it exits within --shutdown-timeout + 1 s (within 1 s of a second signal), and
    # the task is back in the queue before it does
    assert took < (2 + 1 if signals == 1 else 0.2 + 1), f"stopping took {took:.2f}s"
    assert status_of(r, handle.task_id) == "pending"
    assert r.xlen("orbiter:tasks") == 1 and pending_count(r) == 0


def test_a_task_that_never_yields_is_not_taken_over_from_its_live_worker(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a worker busy with a task that never yields for five visibility timeouts
    # (on the gevent pool it holds up every greenlet of that worker)
    spawn_worker(redis_url, "--visibility-timeout", "1", worker_id="busy")
    handle = distributed(agent("spin"), "5", redis_url=redis_url,
                         metadata={"redis_url": redis_url})  # fmt: skip
    wait_for(lambda: status_of(r, handle.task_id) == "running")
    # When a second, idle worker looks for entries to take over
    spawn_worker(redis_url, "--visibility-timeout", "1", worker_id="idle")

    # Then the task completes on its own worker, having run once
    assert handle.result(timeout=30) == {"output": "spun"}
    assert r.get(f"test:executions:{handle.task_id}") == "1"
    state = handle.status()
    assert state is not None and state.worker_id == "busy"


def test_a_stop_keeps_its_promise_with_a_task_that_never_yields(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    worker = spawn_worker(redis_url, "--shutdown-timeout", "1")
    handle = distributed(agent("spin"), "60", redis_url=redis_url,
                         metadata={"redis_url": redis_url})  # fmt: skip
    wait_for(lambda: status_of(r, handle.task_id) == "running")

    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    took = time.monotonic() - started

    assert took < 1 + 1, f"stopping took {took:.2f}s"
    assert status_of(r, handle.task_id) == "pending"
    assert r.xlen("orbiter:tasks") == 1 and pending_count(r) == 0


def test_redis_refusing_writes_is_waited_out(
    private_redis: EmbeddedRedis, spawn_worker: Spawn
) -> None:
    # Given a worker, and a task whose retry is due while Redis is out of memory
    url = private_redis.url
    r = redis.Redis.from_url(url, decode_responses=True)
    worker = spawn_worker(url, "--retry-backoff", "1")
    handle = distributed(agent("flaky"), "1", redis_url=url, metadata={"redis_url": url})
    wait_for(lambda: status_of(r, handle.task_id) == "retrying", timeout=20)
    r.config_set("maxmemory", "1")  # every write now answers OOM
    try:
        time.sleep(4)  # the retry falls due meanwhile; the slots hit OOM over and over
        assert worker.poll() is None
        assert status_of(r, handle.task_id) == "retrying"
    finally:
        r.config_set("maxmemory", "0")

    # When memory is back, then everything runs again
    assert handle.result(timeout=30) == {"output": "succeeded on attempt 2"}
    assert distributed(agent("echo"), "after", redis_url=url).result(timeout=20)
    assert "used memory > 'maxmemory'" in log_of(worker)  # what the slots waited out
    r.close()


def test_a_broken_key_every_task_shares_dead_letters_nothing(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a task index that is not a set (an operator's mistake, say)
    r.set("orbiter:task:index", "not a set")
    worker = spawn_worker(redis_url, "--visibility-timeout", "1")
    payload = TaskPayload(task_id="waits", agent_config=agent("echo"), input="x")
    r.xadd("orbiter:tasks", {"payload": payload.to_json()})
    wait_for(lambda: "fix or delete that key" in log_of(worker), timeout=20)

    # Then its task is not thrown away, and once the key is fixed it runs (the worker
    # takes its own entry back)
    assert QueueAdmin(redis_url).dead_letters() == []
    r.delete("orbiter:task:index")
    assert TaskHandle("waits", redis_url=redis_url).result(timeout=30) == {"output": "echo: x"}


def test_a_junk_registry_key_stops_no_worker(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    r.set("orbiter:registry:workers", "junk")
    worker = spawn_worker(redis_url, worker_id="w1")

    assert distributed(agent("echo"), "x", redis_url=redis_url).result(timeout=20)
    assert r.exists("orbiter:workers:w1") and worker.poll() is None
    assert "worker registry not written" in log_of(worker)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_stop_keeps_its_promise_when_redis_hangs_or_cpus_are_busy(
    private_redis: EmbeddedRedis, spawn_worker: Spawn, concurrency: int
) -> None:
    # Given busy runs that never return in time (CPU-bound: they compete for the GIL)
    url = private_redis.url
    r = redis.Redis.from_url(url, decode_responses=True)
    handles = [
        distributed(agent("spin"), "60", redis_url=url, metadata={"redis_url": url})
        for _ in range(concurrency)
    ]
    # queued first, so under gevent every slot has begun before one spins and holds the rest
    worker = spawn_worker(url, "--shutdown-timeout", "1", "--concurrency", str(concurrency))
    wait_for(lambda: all(status_of(r, h.task_id) == "running" for h in handles), timeout=20)
    hang = concurrency == 1  # with one run, Redis hangs as well: it cannot take a release
    if hang:
        os.kill(server_pid(private_redis), signal.SIGSTOP)
    try:
        # When the worker is told to stop, twice
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        took = time.monotonic() - started
    finally:
        if hang:
            os.kill(server_pid(private_redis), signal.SIGCONT)
    # Then it is gone within 1 s of the second signal
    assert took < 0.2 + 1, f"stopping took {took:.2f}s"
    if not hang:  # and its tasks are back in the queue
        assert {status_of(r, h.task_id) for h in handles} == {"pending"}
    r.close()


def server_pid(server: EmbeddedRedis) -> int:
    assert server.process is not None
    return server.process.pid
