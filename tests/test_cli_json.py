"""Every ``--json`` output prints numbers as numbers and times as float unix seconds;
and ``health`` finds its worker by id, by ``--id-file`` or by ``--this-host``.

Real Redis, a real worker subprocess, the CLI through CliRunner (and as a subprocess
where the exact stderr line matters).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from cli_support import agent, run
from helpers import CLI, Spawn, wait_for

from orbiter_sync import distributed
from orbiter_sync.embedded import free_port

pytestmark = pytest.mark.usefixtures("no_redis_env")

HOST = socket.gethostname()


def json_of(*args: str, codes: tuple[int, ...] = (0,)) -> Any:
    result = run(*args)
    assert result.exit_code in codes, result.output
    return json.loads(result.stdout)


def is_time(value: object) -> bool:
    """A float of seconds since the epoch (not milliseconds, not text)."""
    return isinstance(value, float) and 1e9 < value < 1e10


def is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def heartbeat(r: redis.Redis, worker_id: str, age: float, hostname: str = HOST) -> None:
    """A heartbeat key as a worker of ``hostname`` writes it, its last beat ``age`` s ago."""
    now = time.time()
    r.hset(f"orbiter:workers:{worker_id}", mapping={
        "status": "running", "hostname": hostname, "tasks_processed": "3", "tasks_failed": "0",
        "current_task_id": "", "concurrency": "2", "started_at": repr(now - 600),
        "last_heartbeat": repr(now - age), "slots_down": "0", "slot_restarts": "1"})  # fmt: skip
    r.expire(f"orbiter:workers:{worker_id}", 60)


def gone(r: redis.Redis, worker_id: str, hostname: str = HOST) -> None:
    """A worker of ``hostname`` that died a minute ago: in the registry only."""
    beat = time.time() - 60
    key = f"orbiter:registry:worker:{worker_id}"
    r.hset(key, mapping={"status": "running", "hostname": hostname, "last_heartbeat": repr(beat)})
    r.zadd("orbiter:registry:workers", {worker_id: beat})


# -- JSON types, command by command ------------------------------------------------------


@pytest.fixture
def busy_redis(redis_url: str, r: redis.Redis, spawn_worker: Spawn) -> dict[str, str]:
    """A worker that has run one completed and one failed task, and one dead letter."""
    spawn_worker(redis_url, "--concurrency", "2", worker_id="w1")
    done = distributed(agent("words"), "one two", redis_url=redis_url)
    broken = distributed(agent("broken"), "x", redis_url=redis_url)
    done.result(timeout=20)
    wait_for(lambda: r.hget(f"orbiter:task:{broken.task_id}", "status") == "failed", timeout=20)
    r.xadd("orbiter:tasks", {"payload": "{not json"})
    wait_for(lambda: r.xlen("orbiter:tasks:dead") == 1)
    return {"done": done.task_id, "broken": broken.task_id}


def assert_worker_types(worker: dict[str, Any]) -> None:
    for name in ("tasks_processed", "tasks_failed", "concurrency"):
        assert is_count(worker[name]), (name, worker[name])
    assert is_time(worker["started_at"]) and is_time(worker["last_heartbeat"])


def test_worker_list_and_health_json_types(redis_url: str, busy_redis: dict[str, str]) -> None:
    [worker] = json_of("worker", "list", "--redis-url", redis_url, "--json")
    by_id = json_of("health", "w1", "--redis-url", redis_url, "--json")
    host = json_of("health", "--this-host", "--redis-url", redis_url, "--json")

    assert_worker_types(worker)
    assert worker["tasks_processed"] >= 1 and worker["concurrency"] == 2
    assert isinstance(worker["heartbeat_age"], float) and worker["alive"] is True
    assert worker["extra"]["slots_down"] == 0 and is_count(worker["extra"]["slot_restarts"])
    assert isinstance(worker["extra"]["queue"], str)
    for report in (by_id, *host["workers"]):
        assert report["worker_id"] == "w1" and report["status"] == "healthy"
        metadata = report["metadata"]
        assert_worker_types(metadata)
        assert metadata["tasks_processed"] >= 1 and metadata["concurrency"] == 2
        assert is_count(metadata["slots_down"]) and is_count(metadata["slot_restarts"])
        assert isinstance(metadata["heartbeat_age"], float) and metadata["alive"] is True
        assert metadata["worker_id"] == "w1" and metadata["hostname"] == HOST
        assert metadata["running_task_ids"] == worker["running_task_ids"] == []
    assert host["hostname"] == HOST and host["status"] == "healthy"


def assert_task_types(task: dict[str, Any]) -> None:
    for name in ("created_at", "started_at", "completed_at"):
        assert is_time(task[name]), (name, task[name])
    assert is_count(task["retries"])
    assert isinstance(task["duration"], float) and task["duration"] >= 0


def test_task_json_types(redis_url: str, busy_redis: dict[str, str]) -> None:
    listed = json_of("task", "list", "--redis-url", redis_url, "--json")
    shown = json_of("task", "status", busy_redis["done"], "--redis-url", redis_url, "--json")
    result = run("task", "watch", busy_redis["done"], "--redis-url", redis_url, "--json")

    assert {t["status"] for t in listed} == {"completed", "failed"}
    for task in (*listed, shown):
        assert_task_types(task)
    assert shown["retries"] == 0 and isinstance(shown["result"]["output"], str)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events] == ["status", "text", "text", "tool_call", "status"]
    assert all(isinstance(e["id"], str) for e in events)


def test_task_json_of_a_pending_task_has_nulls_not_zeros(redis_url: str) -> None:
    handle = distributed(agent("echo"), "x", redis_url=redis_url)

    task = json_of("task", "status", handle.task_id, "--redis-url", redis_url, "--json")

    assert is_time(task["created_at"])
    assert task["started_at"] is None and task["completed_at"] is None
    assert task["duration"] is None and task["retries"] == 0


def test_queue_and_dead_letter_json_types(redis_url: str, busy_redis: dict[str, str]) -> None:
    stats = json_of("queue", "stats", "--redis-url", redis_url, "--json")
    [letter] = json_of("dead-letters", "list", "--redis-url", redis_url, "--json")
    requeue = json_of("dead-letters", "requeue", "--all", "--redis-url", redis_url, "--json",
                      codes=(1,))  # fmt: skip
    purged = json_of("dead-letters", "purge", "--yes", "--redis-url", redis_url, "--json")

    for name in ("length", "pending", "lag", "dead_letters", "delayed_retries", "consumers"):
        assert is_count(stats[name]), (name, stats[name])
    assert stats["dead_letters"] == 1
    assert stats["oldest_pending_age"] is None or isinstance(stats["oldest_pending_age"], float)
    assert is_time(letter["dead_at"]) and is_count(letter["entry_length"])
    assert letter["truncated"] is False and letter["worker_id"] == "w1"
    assert requeue["requeued"] == [] and [k["id"] for k in requeue["kept"]] == [letter["id"]]
    assert purged == {"queue": "orbiter:tasks", "purged": 1}


# -- health: by id file, and every worker of this host ------------------------------------


def test_health_reads_the_worker_id_from_a_file(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    heartbeat(r, "from-file", age=1)
    heartbeat(r, "late", age=30)
    (tmp_path / "id").write_text("from-file\n")
    (tmp_path / "late").write_text("late")

    healthy = run("health", "--id-file", str(tmp_path / "id"), "--redis-url", redis_url)
    late = run("health", "--id-file", str(tmp_path / "late"), "--redis-url", redis_url)
    report = json_of("health", "--id-file", str(tmp_path / "id"), "--redis-url", redis_url,
                     "--json")  # fmt: skip

    assert healthy.exit_code == 0 and healthy.stdout.startswith("healthy: running 0/2 tasks")
    assert late.exit_code == 1 and late.stdout.startswith("degraded: heartbeat late")
    assert report["worker_id"] == "from-file" and report["status"] == "healthy"


def cli_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60)


def test_a_missing_or_empty_id_file_is_bad_configuration(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")

    missing = cli_process("health", "--id-file", str(tmp_path / "nope"), "--redis-url", redis_url)
    empty = cli_process("health", "--id-file", str(tmp_path / "empty"), "--redis-url", redis_url)

    assert (missing.returncode, empty.returncode) == (2, 2)
    assert missing.stderr.splitlines() == [
        f"Error: cannot read the worker id file {tmp_path / 'nope'}: No such file or directory"
    ]
    assert empty.stderr.splitlines() == [f"Error: the worker id file {tmp_path / 'empty'} is empty"]
    assert missing.stdout == empty.stdout == ""


@pytest.mark.parametrize("args", [[], ["w1", "--this-host"], ["w1", "--id-file", "x"]])
def test_health_takes_exactly_one_worker_selector(redis_url: str, args: list[str]) -> None:
    result = run("health", *args, "--redis-url", redis_url)
    assert result.exit_code == 2
    assert "give exactly one of WORKER_ID, --id-file PATH and --this-host" in result.stderr


def test_health_this_host_checks_every_live_worker_here(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given no worker at all
    nobody = run("health", "--this-host", "--redis-url", redis_url)
    assert nobody.exit_code == 2
    assert nobody.stdout == f"unhealthy: no worker with a live heartbeat on host {HOST}\n"

    # Given a live worker here, one that died here earlier, and a late one on another host
    spawn_worker(redis_url, worker_id="here")
    gone(r, "died-here")
    heartbeat(r, "elsewhere", age=30, hostname="another-host")

    # Then only the live worker of this host counts
    ok = run("health", "--this-host", "--redis-url", redis_url)
    assert ok.exit_code == 0, ok.output
    first, *rest = ok.stdout.splitlines()
    assert first == f"healthy: 1 of 1 workers healthy on host {HOST}"
    assert [line.split()[0] for line in rest] == ["here"]

    # and a late heartbeat here makes the host degraded
    heartbeat(r, "late-here", age=30)
    late = run("health", "--this-host", "--redis-url", redis_url)
    report = json_of("health", "--this-host", "--redis-url", redis_url, "--json", codes=(1,))
    assert late.exit_code == 1
    assert late.stdout.splitlines()[0] == f"degraded: 1 of 2 workers healthy on host {HOST}"
    assert {w["worker_id"]: w["status"] for w in report["workers"]} == {
        "here": "healthy", "late-here": "degraded"}  # fmt: skip
    assert report["status"] == "degraded"


def test_health_this_host_is_unhealthy_when_redis_is_unreachable() -> None:
    result = run("health", "--this-host", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert result.exit_code == 2
    assert result.stdout.startswith("unhealthy: cannot read the heartbeats")
