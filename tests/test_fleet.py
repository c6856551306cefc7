"""The fleet as ``worker list``, ``get_worker_fleet_status`` and ``health`` see it.

A worker's wire heartbeat key expires ``heartbeat_ttl`` after its last beat; the
registry (``orbiter:registry:workers`` and ``orbiter:registry:worker:{id}``) keeps its
last fields for a day, so a killed worker shows as dead and a stopped one as stopped.
Real Redis, real worker subprocesses (``--heartbeat-ttl 3``), the CLI through CliRunner.
"""

from __future__ import annotations

import json
import math
import random
import signal
import socket
import time
from typing import Any

import click
import redis
from cli_support import agent, run
from helpers import Spawn, wait_for

from orbiter_sync import distributed
from orbiter_sync.cli.common import when
from orbiter_sync.cli.fleet import worker_dict, worker_row
from orbiter_sync.health import WorkerHealth, get_worker_fleet_status

REGISTRY = "orbiter:registry:workers"
DAY = 24 * 3600
RED = "\x1b[31m"


def record(worker_id: str) -> str:
    return f"orbiter:registry:worker:{worker_id}"


def listed(redis_url: str) -> dict[str, dict[str, Any]]:
    """``worker list --json``, by worker id."""
    result = run("worker", "list", "--redis-url", redis_url, "--json")
    assert result.exit_code == 0, result.output
    return {w["worker_id"]: w for w in json.loads(result.stdout)}


def row_of(output: str, worker_id: str) -> str:
    rows = [line for line in output.splitlines() if f" {worker_id} " in click.unstyle(line)]
    assert rows, f"{worker_id} is not listed:\n{output}"
    return rows[0]


def remember(r: redis.Redis, worker_id: str, age: float, status: str = "running") -> None:
    """A registry entry as a worker leaves it, last beat ``age`` seconds ago."""
    beat = time.time() - age
    r.hset(
        record(worker_id),
        mapping={
            "status": status,
            "hostname": "web09",
            "tasks_processed": "7",
            "last_heartbeat": repr(beat),
        },
    )
    r.zadd(REGISTRY, {worker_id: beat})


# -- dead, stopped, live ----------------------------------------------------------------


def test_a_killed_worker_shows_dead_with_its_last_fields(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a worker that ran one task, and a live one beside it
    doomed = spawn_worker(redis_url, "--concurrency", "2", worker_id="doomed")
    spawn_worker(redis_url, worker_id="survivor")
    assert distributed(agent("echo"), "x", redis_url=redis_url).result(timeout=20)
    wait_for(lambda: sum(w.tasks_processed for w in get_worker_fleet_status(redis_url)) == 1)
    processed = int(r.hget("orbiter:workers:doomed", "tasks_processed") or 0)

    # When it is killed and its heartbeat key expires
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    wait_for(lambda: not r.exists("orbiter:workers:doomed"), timeout=15)

    # Then it shows as dead, in red, with the fields of its last beat
    colored = run("worker", "list", "--redis-url", redis_url, color=True)
    assert colored.exit_code == 0, colored.output
    row = row_of(colored.stdout, "doomed")
    assert RED in row and "dead" in row and socket.gethostname()[:20] in row
    assert RED not in row_of(colored.stdout, "survivor")
    workers = listed(redis_url)
    assert workers["doomed"]["status"] == "dead" and workers["doomed"]["alive"] is False
    assert workers["doomed"]["concurrency"] == 2
    assert workers["doomed"]["tasks_processed"] == processed
    assert workers["doomed"]["hostname"] == socket.gethostname()
    assert workers["survivor"]["status"] == "running" and workers["survivor"]["alive"] is True
    [dead] = [w for w in get_worker_fleet_status(redis_url) if w.worker_id == "doomed"]
    assert not dead.alive and dead.status == "dead" and dead.reported_status == "running"
    health = run("health", "doomed", "--redis-url", redis_url)
    assert health.exit_code == 2 and "dead" in health.stdout, health.stdout


def test_a_stopped_worker_shows_stopped_not_dead(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a worker that stops cleanly
    worker = spawn_worker(redis_url, worker_id="leaver")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0

    # Then its heartbeat key is gone, and it shows as stopped, not in red
    assert not r.exists("orbiter:workers:leaver")
    assert r.hget(record("leaver"), "status") == "stopped"
    colored = run("worker", "list", "--redis-url", redis_url, color=True)
    row = row_of(colored.stdout, "leaver")
    assert "stopped" in row and RED not in row
    assert listed(redis_url)["leaver"]["status"] == "stopped"
    assert listed(redis_url)["leaver"]["alive"] is False
    health = run("health", "leaver", "--redis-url", redis_url)
    assert health.exit_code == 2 and "stopped" in health.stdout, health.stdout


def test_the_heartbeat_writes_the_wire_key_and_the_registry_together(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url, "--concurrency", "3", worker_id="w1")

    def both() -> list[Any]:
        pipe = r.pipeline(transaction=True)
        pipe.hgetall("orbiter:workers:w1")
        pipe.hgetall(record("w1"))
        pipe.zscore(REGISTRY, "w1")
        return pipe.execute()

    beat, kept, score = both()
    # the wire key keeps its fields and TTL; the registry holds the same fields
    assert beat == kept and beat["concurrency"] == "3"
    assert float(beat["last_heartbeat"]) == score
    assert 0 < r.ttl("orbiter:workers:w1") <= 3
    assert DAY - 60 < r.ttl(record("w1")) <= DAY
    # nothing of the registry sits where heartbeats are looked for
    assert r.keys("orbiter:workers:*") == ["orbiter:workers:w1"]


def test_a_worker_writing_only_the_wire_heartbeat_shows_live(
    redis_url: str, r: redis.Redis
) -> None:
    # Given an async orbiter-distributed worker: the wire key only, no registry entry
    now = time.time()
    r.hset("orbiter:workers:x", mapping={
        "status": "running", "tasks_processed": "4", "tasks_failed": "0", "current_task_id": "",
        "started_at": repr(now - 60), "last_heartbeat": repr(now), "concurrency": "8",
        "hostname": "async-host"})  # fmt: skip
    r.expire("orbiter:workers:x", 30)
    # and a dead worker of ours beside it
    remember(r, "ours", age=120)

    workers = listed(redis_url)

    assert workers["x"]["alive"] is True and workers["x"]["status"] == "running"
    assert workers["x"]["concurrency"] == 8 and workers["x"]["hostname"] == "async-host"
    assert workers["ours"]["status"] == "dead"
    row = row_of(run("worker", "list", "--redis-url", redis_url, color=True).stdout, "x")
    assert "running" in row and RED not in row
    assert run("health", "x", "--redis-url", redis_url).exit_code == 0
    assert not r.exists(record("x"))  # reading registers nobody


# -- pruning -----------------------------------------------------------------------------


def test_registry_entries_older_than_a_day_are_pruned_by_readers(
    redis_url: str, r: redis.Redis
) -> None:
    remember(r, "ancient", age=DAY + 60)
    remember(r, "recent", age=120)
    # health does not vouch for a day-old entry either
    ancient = run("health", "ancient", "--redis-url", redis_url)
    assert ancient.stdout.startswith("unhealthy: no heartbeat"), ancient.stdout
    assert "is dead" in run("health", "recent", "--redis-url", redis_url).stdout

    workers = listed(redis_url)

    assert set(workers) == {"recent"}
    assert workers["recent"]["status"] == "dead" and workers["recent"]["tasks_processed"] == 7
    assert r.zscore(REGISTRY, "ancient") is None and not r.exists(record("ancient"))
    assert r.zscore(REGISTRY, "recent") is not None and r.exists(record("recent"))


def test_a_starting_worker_prunes_the_registry(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    remember(r, "ancient", age=DAY + 60)
    spawn_worker(redis_url, worker_id="fresh")
    wait_for(lambda: not r.exists(record("ancient")) and r.zscore(REGISTRY, "ancient") is None)
    assert r.zscore(REGISTRY, "fresh") is not None


# -- junk never crashes ------------------------------------------------------------------


def junk(rng: random.Random) -> str | bytes:
    """One heartbeat field value of the kind that breaks naive decoders."""
    choice = rng.randrange(7)
    if choice == 0:
        return rng.choice(["", "1e400", "-1e400", "nan", "-nan", "inf", "-inf", "Infinity",
                           "1e300", "-1e300", "9" * 400, "0x10", "1_000", " 12 ", "-5", "3.7",
                           "12abc", "None", "[]", "\x00", "\x1b[2J\x1b[31m", "\u202e", ",,a,",
                           "💥", "١٢٣", str(2**80), "253402300800", "-62135596801"])  # fmt: skip
    if choice == 1:
        return repr(rng.uniform(-1e20, 1e20))
    if choice == 2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    if choice == 3:
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(20)))
    if choice == 4:
        return rng.choice("7,é\x07") * rng.choice([100, 5000])
    if choice == 5:
        return repr(time.time() + rng.uniform(-1e6, 1e6))
    return str(rng.randint(-(2**70), 2**70))


FIELDS = ["status", "hostname", "tasks_processed", "tasks_failed", "current_task_id",
          "running_task_ids", "concurrency", "started_at", "last_heartbeat", "worker_id",
          "queue", "pool"]  # fmt: skip


def junk_hash(rng: random.Random) -> dict[str | bytes, str | bytes]:
    data: dict[str | bytes, str | bytes] = {
        name: junk(rng) for name in rng.sample(FIELDS, rng.randrange(len(FIELDS) + 1))
    }
    for _ in range(rng.randrange(3)):
        data[junk(rng)] = junk(rng)
    return data


def test_random_heartbeat_hashes_never_break_decoding_or_rendering() -> None:
    rng = random.Random(20260217)
    for case in range(4000):
        data = junk_hash(rng)
        health = WorkerHealth.from_hash(f"w{case}", data, now=time.time())
        numbers = (health.started_at, health.last_heartbeat)
        assert all(math.isfinite(n) for n in numbers), data
        counts = (health.tasks_processed, health.tasks_failed, health.concurrency)
        assert all(isinstance(n, int) and n >= 0 for n in counts), data
        assert when(health.started_at) and when(health.last_heartbeat)  # dates they can show
        json.dumps(worker_dict(health), allow_nan=False).encode()
        for cell in worker_row(health):
            text = click.unstyle(str(cell))
            assert text.isprintable() and len(text) <= 200, (data, text)


def as_bytes(value: str | bytes) -> bytes:
    """Bytes for Redis; lone surrogates become bytes that are not UTF-8 (more junk)."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def write_junk(r: redis.Redis, rng: random.Random, count: int) -> list[str]:
    """``count`` workers with junk fields: wire keys (some without TTL), registry entries
    (some with junk scores), both, and keys of the wrong type; returns their ids."""
    ids: list[str] = []
    for n in range(count):
        worker_id = f"junk-{n}"
        raw: bytes = worker_id.encode() + (bytes([rng.randrange(128, 256)]) if n % 7 == 0 else b"")
        data = {as_bytes(k): as_bytes(v) for k, v in junk_hash(rng).items()} or {b"status": b"x"}
        where = rng.randrange(4)
        if where in (0, 2):
            r.hset(b"orbiter:workers:" + raw, mapping=data)  # type: ignore[arg-type]
            if rng.random() < 0.5:
                r.expire(b"orbiter:workers:" + raw, 60)
        if where in (1, 2):
            r.hset(b"orbiter:registry:worker:" + raw, mapping=data)  # type: ignore[arg-type]
            score = rng.choice([time.time() - rng.uniform(0, 2 * DAY), math.inf, -math.inf, 1e300])
            r.zadd(REGISTRY, {raw: score})
        if where == 3:
            r.set(b"orbiter:workers:" + raw, as_bytes(junk(rng)))
            r.zadd(REGISTRY, {raw: time.time()})
            r.set(b"orbiter:registry:worker:" + raw, as_bytes(junk(rng)))
        ids.append(worker_id)
    return ids


def test_random_junk_in_redis_never_crashes_worker_list_or_health(
    redis_url: str, r: redis.Redis
) -> None:
    rng = random.Random(7)
    for _ in range(4):
        r.flushall()
        ids = write_junk(r, rng, 60)
        colored = run("worker", "list", "--redis-url", redis_url, color=True)
        plain = run("worker", "list", "--redis-url", redis_url)
        as_json = run("worker", "list", "--redis-url", redis_url, "--json")
        assert (colored.exit_code, plain.exit_code, as_json.exit_code) == (0, 0, 0)
        assert all(w["alive"] in (True, False) for w in json.loads(as_json.stdout))
        assert len(get_worker_fleet_status(redis_url)) <= len(ids)
        for worker_id in rng.sample(ids, 15):
            for args in (["health", worker_id], ["health", worker_id, "--json"]):
                result = run(*args, "--redis-url", redis_url)
                assert result.exit_code in (0, 1, 2), result.output


def test_huge_and_infinite_fields_never_crash_the_cli(redis_url: str, r: redis.Redis) -> None:
    # Given heartbeats with fields a naive decoder chokes on, live and in the registry
    now = repr(time.time())
    r.hset(
        "orbiter:workers:inf",
        mapping={
            "status": "running",
            "tasks_processed": "1e400",
            "tasks_failed": "-inf",
            "concurrency": "nan",
            "started_at": "1e300",
            "last_heartbeat": now,
        },
    )
    r.hset("orbiter:workers:huge", mapping={"hostname": "h" * 10_000_000, "last_heartbeat": now,
                                           "running_task_ids": "t," * 100_000})  # fmt: skip
    r.hset("orbiter:workers:bytes", mapping={"hostname": b"\xff\xfe\x1b[2J", "status": b"\x80",
                                            "last_heartbeat": b"\xff"})  # fmt: skip
    r.hset(record("gone"), mapping={"tasks_processed": "1e400", "last_heartbeat": "inf",
                                    "hostname": "\x1b[31mred"})  # fmt: skip
    r.zadd(REGISTRY, {"gone": time.time() - 100})

    # Then every command answers, with no terminal escapes from the data and nothing huge
    table = run("worker", "list", "--redis-url", redis_url)
    assert table.exit_code == 0 and len(table.stdout) < 10_000
    assert "\x1b" not in table.stdout
    workers = listed(redis_url)
    assert set(workers) == {"inf", "huge", "bytes", "gone"}
    assert workers["inf"]["tasks_processed"] == 0 and workers["inf"]["started_at"] == 0
    assert workers["gone"]["status"] == "dead" and workers["gone"]["tasks_processed"] == 0
    assert len(workers["huge"]["hostname"]) <= 200
    for worker_id in workers:
        health = run("health", worker_id, "--redis-url", redis_url, "--json")
        assert health.exit_code in (0, 1, 2) and len(health.stdout) < 10_000
    assert run("health", "gone", "--redis-url", redis_url).exit_code == 2
