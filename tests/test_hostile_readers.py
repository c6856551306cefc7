"""Readers survive bad data: one malformed event, task hash or channel name breaks no reader.

Every reader of a task's events (``stream()``, ``result()``, ``follow()``, the SSE
view, ``task watch``) skips an entry it cannot decode and goes on to the terminal
event; ``task list`` and ``task status`` survive bad task hashes; the worker's
cancel listener survives a channel name that is not UTF-8.
"""

from __future__ import annotations

import json
import random
import time
from functools import partial
from typing import Any

import pytest
import redis
from cli_support import agent, run
from helpers import Spawn, wait_for

from orbiter_sync import TaskHandle, distributed
from orbiter_sync.admin import QueueAdmin
from orbiter_sync.errors import TaskCancelledError
from orbiter_sync.events import EventPublisher, TextEvent, terminal_event
from orbiter_sync.sse import sse_stream

pytestmark = pytest.mark.usefixtures("no_redis_env")

BAD_EVENTS: list[bytes] = [
    b'{"type": "usage", "usage": {"input_tokens": 1e400}, "agent_name": "a"}',
    b'{"type": "text", "text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"type": "text", "text": "\xff\xfe not UTF-8"}',
    b'{"type": "step", "step_number": 1, "status": "halfway", "started_at": 1}',
    b"not json at all",
]


@pytest.fixture
def poisoned_task(redis_url: str) -> str:
    """A completed task whose event stream has a bad entry between each good one."""
    task_id = "poisoned"
    raw = redis.Redis.from_url(redis_url)
    raw.hset(f"orbiter:task:{task_id}", mapping={"task_id": task_id, "status": "running"})
    publisher = EventPublisher(redis_url)
    for n, bad in enumerate(BAD_EVENTS):
        publisher.publish(task_id, TextEvent(text=f"good {n}"))
        raw.xadd(f"orbiter:stream:{task_id}", {"event": bad, "eid": f"bad{n}"})
    publisher.publish(task_id, terminal_event("completed"))
    raw.hset(f"orbiter:task:{task_id}", mapping={"status": "completed", "result": '{"output": 1}'})
    raw.close()
    return task_id


def test_every_event_reader_skips_bad_entries_to_the_end(
    redis_url: str, poisoned_task: str
) -> None:
    handle = TaskHandle(poisoned_task, redis_url=redis_url)
    expected = [f"good {n}" for n in range(len(BAD_EVENTS))] + ["completed"]

    def texts(events: list[object]) -> list[str]:
        return [str(getattr(e, "text", None) or getattr(e, "status", None)) for e in events]

    assert texts(list(handle.stream(timeout=5))) == expected
    assert handle.result(timeout=5) == {"output": 1}
    followed = [item[1] for item in handle.follow(idle=1) if item is not None]
    assert texts(list(followed)) == expected
    sse = "".join(sse_stream(handle, keepalive=1))
    assert sse.count("event: text") == len(BAD_EVENTS) and "event: status" in sse
    watched = run("task", "watch", poisoned_task, "--redis-url", redis_url)
    assert watched.exit_code == 0, watched.stderr
    assert watched.stdout.count("good") == len(BAD_EVENTS) and "completed" in watched.stdout


def test_task_list_and_status_survive_bad_task_hashes(redis_url: str, r: redis.Redis) -> None:
    raw = redis.Redis.from_url(redis_url)
    deep = "[" * 900 + "]" * 900  # parses, but no indented dump survives it
    hashes: dict[str, dict[str, Any]] = {
        "good": {"status": "completed", "result": '{"output": "fine"}'},
        "weird-status": {"status": "exploded"},
        "numbers": {
            "status": "failed",
            "started_at": "1e400",
            "completed_at": "nan",
            "retries": "9" * 400,
            "created_at": "-inf",
        },  # fmt: skip
        "deep": {"status": "completed", "result": deep},
        "not-utf8": {"status": "completed", "error": b"\xff\xfe", "worker_id": b"\x80"},
    }
    for task_id, fields in hashes.items():
        mapping: dict[Any, Any] = {"task_id": task_id, **fields}
        raw.hset(f"orbiter:task:{task_id}", mapping=mapping)
        raw.sadd("orbiter:task:index", task_id)
    raw.set("orbiter:task:wrong-type", "a string, not a hash")
    raw.sadd("orbiter:task:index", "wrong-type")

    listed = run("task", "list", "--redis-url", redis_url)
    as_json = run("task", "list", "--redis-url", redis_url, "--json")
    status = run("task", "status", "deep", "--redis-url", redis_url)
    status_json = run("task", "status", "deep", "--redis-url", redis_url, "--json")

    assert listed.exit_code == 0, listed.stderr
    assert {t["task_id"] for t in json.loads(as_json.stdout)} == set(hashes) - {"weird-status"}
    assert status.exit_code == 0 and status_json.exit_code == 0, status.stderr
    assert "Result" in status.stdout and "[" in status.stdout
    raw.close()


def test_the_cancel_listener_survives_a_channel_name_that_is_not_utf8(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a worker whose heartbeat polls for lost cancels only every 10 s
    spawn_worker(redis_url, "--heartbeat-ttl", "30")
    raw = redis.Redis.from_url(redis_url)
    raw.publish(b"orbiter:cancel:\xff\xfe", b"cancel")  # what once killed the listener
    handle = distributed(agent("sleepy"), "30", redis_url=redis_url)
    wait_for(lambda: r.hget(f"orbiter:task:{handle.task_id}", "status") == "running")

    # When it is cancelled, then the pub/sub fast path still stops it at once
    cancelled_at = time.monotonic()
    assert handle.cancel()
    with pytest.raises(TaskCancelledError):
        handle.result(timeout=10)
    assert time.monotonic() - cancelled_at < 2
    raw.close()


def started(r: redis.Redis, task_id: str) -> bool:
    return r.hget(f"orbiter:task:{task_id}", "status") != "pending"


def test_a_cancel_as_the_run_begins_stops_it_at_once(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url, "--heartbeat-ttl", "30")
    for _ in range(5):
        handle = distributed(agent("sleepy"), "30", redis_url=redis_url)
        wait_for(partial(started, r, handle.task_id), interval=0.001)
        cancelled_at = time.monotonic()
        handle.cancel()
        with pytest.raises(TaskCancelledError):
            handle.result(timeout=10)
        assert time.monotonic() - cancelled_at < 1.5


def test_random_entries_never_stop_a_worker(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a worker and a queue of random bytes, random JSON and mangled payloads
    worker = spawn_worker(redis_url, "--concurrency", "2")
    rng = random.Random(20261129)
    raw = redis.Redis.from_url(redis_url)
    good: dict[str, object] = {"task_id": "x", "agent_config": agent("echo"), "input": "hi"}
    junk: list[bytes | str] = []
    for n in range(60):
        kind = n % 4
        if kind == 0:
            junk.append(rng.randbytes(rng.randint(0, 300)))
        elif kind == 1:
            junk.append(json.dumps(random_json(rng, 4)))
        elif kind == 2:  # a valid payload with one field replaced by anything
            mangled = dict(good, task_id=f"m{n}")
            mangled[rng.choice(list(mangled) + ["timeout_seconds", "messages"])] = random_json(
                rng, 3
            )
            junk.append(json.dumps(mangled))
        else:  # a valid payload cut short
            text = json.dumps(dict(good, task_id=f"c{n}"))
            junk.append(text[: rng.randint(0, len(text) - 1)])
    for payload in junk:
        raw.xadd("orbiter:tasks", {"payload": payload})

    # When a good task follows them, then it completes, and each junk entry was either
    # run (a mangled payload may still be valid) or dead-lettered
    handle = distributed(agent("echo"), "after the junk", redis_url=redis_url)
    assert handle.result(timeout=60) == {"output": "echo: after the junk"}
    wait_for(lambda: r.xlen("orbiter:tasks") == 0, timeout=30)
    assert r.xpending("orbiter:tasks", "orbiter:tasks:group")["pending"] == 0
    assert 0 < len(QueueAdmin(redis_url).dead_letters(count=100)) <= len(junk)
    assert worker.poll() is None
    assert r.hget([k for k in r.keys("orbiter:workers:*")][0], "status") == "running"
    raw.close()


def random_json(rng: random.Random, depth: int) -> object:
    choice = rng.randint(0, 7 if depth > 0 else 4)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 10**30, 2**63, 1e308, -1e-308, 0.5])
    if choice == 3:
        return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 12)))
    if choice == 4:
        return rng.choice(["index", "{tag}", "", "a" * 300, "\u0000"])
    if choice in (5, 6):
        return [random_json(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {str(random_json(rng, 0)): random_json(rng, depth - 1) for _ in range(3)}
