"""One worker consuming several queues, highest priority first, and each queue's own upkeep
(retries promoted, entries settled by the queue they came from), on real subprocesses."""

from __future__ import annotations

import time

import pytest
import redis
from helpers import Spawn, wait_for

from orbiter_sync.client import distributed
from orbiter_sync.errors import TaskFailedError
from orbiter_sync.settings import WorkerSettings


def entry(name: str) -> dict[str, str]:
    return {"entrypoint": f"sample_agents:{name}"}


def test_a_worker_runs_the_higher_queue_first(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given tasks waiting on both queues before the worker starts (one slot)
    low = [distributed(entry("echo"), f"low {n}", redis_url=redis_url, queue="bulk")
           for n in range(3)]  # fmt: skip
    high = [distributed(entry("echo"), f"high {n}", redis_url=redis_url, queue="urgent")
            for n in range(3)]  # fmt: skip
    # When a worker reads urgent before bulk
    spawn_worker(redis_url, "--queue", "urgent", "--queue", "bulk", "--concurrency", "1")
    for handle in [*high, *low]:
        handle.result(timeout=20)
    # Then every urgent task started before any bulk one
    started = {h.task_id: h.status().started_at or 0.0 for h in [*high, *low]}  # type: ignore[union-attr]
    assert max(started[h.task_id] for h in high) < min(started[h.task_id] for h in low)
    # and both queues' entries were acknowledged by their own groups
    assert r.xlen("urgent") == 0 and r.xlen("bulk") == 0


def test_each_queue_retries_and_fails_on_its_own(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url, "--queue", "urgent", "--queue", "bulk")
    handle = distributed(entry("broken"), "b", redis_url=redis_url, queue="bulk", max_retries=1)
    with pytest.raises(TaskFailedError):
        handle.result(timeout=20)
    assert handle.status().retries == 1  # type: ignore[union-attr]
    wait_for(lambda: r.xlen("bulk") == 0 and r.zcard("bulk:delayed") == 0)
    assert distributed(entry("echo"), "u", redis_url=redis_url, queue="urgent").result(timeout=10)


def test_queues_must_be_distinct() -> None:
    from orbiter_sync.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="distinct"):
        WorkerSettings(queue_name="a", also_queues=["b", "a"])
    assert WorkerSettings(queue_name="a", also_queues=["b"]).queue_names == ("a", "b")


def test_a_stopping_worker_releases_each_queues_runs_to_their_own_queue(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    worker = spawn_worker(redis_url, "--queue", "urgent", "--queue", "bulk",
                          "--concurrency", "2", "--shutdown-timeout", "0.5")  # fmt: skip
    handles = [distributed(entry("sleepy"), "30", redis_url=redis_url, queue=q)
               for q in ("urgent", "bulk")]  # fmt: skip
    wait_for(lambda: all(h.status().status == "running" for h in handles))  # type: ignore[union-attr]
    worker.terminate()
    worker.wait(timeout=15)
    # each run went back, pending, on the queue it came from
    assert [h.status().status for h in handles] == ["pending", "pending"]  # type: ignore[union-attr]
    assert (r.xlen("urgent"), r.xlen("bulk")) == (1, 1)


def test_one_broken_queue_never_stops_the_others(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url, "--queue", "urgent", "--queue", "bulk")
    # Given the higher queue's key turned into a string under the running worker
    r.delete("urgent")
    r.set("urgent", "not a stream")
    # Then the lower queue's tasks still run
    handle = distributed(entry("echo"), "still", redis_url=redis_url, queue="bulk")
    assert handle.result(timeout=15) == {"output": "echo: still"}


def test_an_idle_multi_queue_worker_reads_redis_at_a_modest_rate(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url, "--queue", "urgent", "--queue", "bulk", "--concurrency", "8")
    time.sleep(1.0)  # past start-up: what is measured is the idle loop
    before = r.info("commandstats").get("cmdstat_xreadgroup", {}).get("calls", 0)
    time.sleep(2.0)
    after = r.info("commandstats")["cmdstat_xreadgroup"]["calls"]
    # the slots share each queue's reads, and an empty higher queue is read by one of them
    assert (after - before) / 2.0 < 40  # measured: 13 to 18 a second, for 1 to 16 slots


def test_queue_names_are_a_list_without_commas() -> None:
    from orbiter_sync.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="not a string"):
        WorkerSettings(also_queues="bulk")  # a str is a Sequence[str]: refused at run time
    with pytest.raises(ConfigurationError, match="without ','"):
        WorkerSettings(queue_name="a,b")
