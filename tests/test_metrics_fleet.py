"""The fleet's numbers from Redis: the counters the workers' scripts keep, ``read_fleet``,
and the exporter (``orbiter-sync metrics serve``) scraped over HTTP, against real
worker subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import CLI, TESTS, Spawn, claim_as_worker, log_of, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from orbiter_sync.client import distributed
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.embedded import EmbeddedRedis, free_port
from orbiter_sync.errors import TaskCancelledError, TaskFailedError
from orbiter_sync.metrics.fleet import read_fleet
from orbiter_sync.models import TaskPayload
from orbiter_sync.producer import TaskProducer

QUEUE = "orbiter:tasks"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` on ``port``, by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Callable[..., tuple[int, subprocess.Popen[str]]]]:
    started: list[subprocess.Popen[str]] = []

    def start(url: str, *args: str) -> tuple[int, subprocess.Popen[str]]:
        port = free_port()
        log = open(tmp_path / f"exporter-{len(started)}.log", "w")  # noqa: SIM115
        process = subprocess.Popen(
            [CLI, "metrics", "serve", "--redis-url", url, "--port", str(port),
             "--bind", "127.0.0.1", *args],
            stdout=log, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(TESTS)},
        )  # fmt: skip
        process.log_path = log.name  # type: ignore[attr-defined]
        started.append(process)
        wait_for(lambda: "/metrics" in log_of(process), timeout=20)
        return port, process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_the_fleet_counts_what_its_workers_settled(
    spawn_worker: Spawn, exporter: Any, redis_url: str, r: redis.Redis
) -> None:
    # Given a fleet of two workers and a known mix of tasks
    for _ in range(2):
        spawn_worker(redis_url, "--concurrency", "2")
    done = [distributed({"entrypoint": "sample_agents:words"}, "a b", redis_url=redis_url)
            for _ in range(3)]  # fmt: skip
    broken = [distributed({"entrypoint": "sample_agents:broken"}, "x", redis_url=redis_url,
                          max_retries=retries) for retries in (0, 0, 1)]  # fmt: skip
    slow = distributed({"entrypoint": "sample_agents:sleepy_sync"}, "30", redis_url=redis_url)
    for handle in done:
        handle.result(timeout=20)
    for handle in broken:
        with pytest.raises(TaskFailedError):
            handle.result(timeout=20)
    wait_for(lambda: slow.status().status == "running")  # type: ignore[union-attr]
    slow.cancel()
    with pytest.raises(TaskCancelledError):
        slow.result(timeout=20)
    # When the exporter is scraped
    port, _ = exporter(redis_url)
    samples = scrape(port)
    queue = (("queue", QUEUE),)
    # Then the fleet counters say what happened, once each
    assert samples[("orbiter_fleet_up", ())] == 1
    assert samples[("orbiter_fleet_tasks_completed_total", queue)] == 3
    assert samples[("orbiter_fleet_tasks_failed_total", queue)] == 3
    assert samples[("orbiter_fleet_tasks_retried_total", queue)] == 1
    assert samples[("orbiter_fleet_tasks_cancelled_total", queue)] == 1
    assert samples[("orbiter_fleet_tasks_dead_lettered_total", queue)] == 0
    assert samples[("orbiter_fleet_workers", (("state", "alive"),))] == 2
    assert samples[("orbiter_fleet_slots", (("state", "total"),))] == 4
    assert samples[("orbiter_fleet_queue_depth", queue)] == 0
    # and the recent window holds the same finished tasks (for `alerts check`)
    recent = read_fleet(redis_url).queue(QUEUE).recent  # type: ignore[union-attr]
    assert (recent.completed, recent.failed, recent.cancelled, recent.retried) == (3, 3, 1, 1)
    assert recent.failure_rate == 0.5
    # and `metrics show --json` prints the same
    shown = subprocess.run([CLI, "metrics", "show", "--json", "--redis-url", redis_url],
                           capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    [row] = json.loads(shown.stdout)["queues"]
    assert (row["completed_total"], row["failed_total"], row["depth"]) == (3, 3, 0)


def test_a_task_cancelled_before_it_ran_is_counted_once_when_a_worker_meets_it(
    producer: TaskProducer, consumer: TaskConsumer, redis_url: str
) -> None:
    payload = TaskPayload(input="x")
    producer.submit(payload)
    assert producer.cancel(payload.task_id)
    delivery = claim_as_worker(consumer)
    assert delivery is not None and not consumer.begin(delivery)
    snapshot = read_fleet(redis_url).queue(QUEUE)
    assert snapshot is not None
    assert (snapshot.cancelled_total, snapshot.completed_total, snapshot.waiting) == (1, 0, 0)


def test_depth_and_wait_time_of_a_queue_no_worker_reads(
    producer: TaskProducer, redis_url: str
) -> None:
    producer.submit(TaskPayload(input="old", created_at=time.time() - 120))
    producer.submit(TaskPayload(input="new"))
    producer.submit(TaskPayload(input="soon"), delay=30)
    producer.submit(TaskPayload(input="tomorrow"), delay=86400)
    fleet = read_fleet(redis_url)
    queue = fleet.queue(QUEUE)
    assert queue is not None
    # a task due tomorrow is not depth; one due within the minute (as a retry is) is
    assert (queue.waiting, queue.delayed, queue.depth, queue.pending) == (2, 2, 3, 0)
    assert queue.oldest_waiting_age is not None and 119 < queue.oldest_waiting_age < 130
    assert fleet.workers_alive == 0


def test_a_scrape_while_redis_is_away_says_so(private_redis: EmbeddedRedis, exporter: Any) -> None:
    port, process = exporter(private_redis.url)
    assert scrape(port)[("orbiter_fleet_up", ())] == 1
    private_redis.kill()
    samples = scrape(port)
    assert samples[("orbiter_fleet_up", ())] == 0
    assert process.poll() is None


def test_a_broken_counter_key_never_fails_a_task(
    spawn_worker: Spawn, redis_url: str, r: redis.Redis
) -> None:
    # Given counter keys someone broke: the totals a string, the bucket's field a word
    r.set(f"{QUEUE}:counts", "not a hash")
    bucket = f"{QUEUE}:counts:{int(time.time() // 60)}"
    r.hset(bucket, "completed", "many")
    spawn_worker(redis_url)
    # Then tasks still complete, and the counts read as what can be read
    handle = distributed({"entrypoint": "sample_agents:words"}, "a", redis_url=redis_url)
    assert handle.result(timeout=20)["output"]
    queue = read_fleet(redis_url).queue(QUEUE)
    assert queue is not None and queue.completed_total == 0


junk = st.one_of(st.binary(max_size=40), st.text(max_size=40), st.integers().map(str))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(counts=st.dictionaries(junk, junk, max_size=6), payload=junk, queues=junk)
def test_read_fleet_survives_whatever_is_in_its_keys(
    redis_url: str, counts: dict[Any, Any], payload: Any, queues: Any
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushall()
        if counts:
            client.hset(f"{QUEUE}:counts", mapping=counts)
            client.hset(f"{QUEUE}:counts:{int(time.time() // 60)}", mapping=counts)
        client.xadd(QUEUE, {"payload": payload})
        client.hset("orbiter:workers:w1", mapping={"queues": queues, "concurrency": payload,
                                                   "last_heartbeat": time.time()})  # fmt: skip
        client.expire("orbiter:workers:w1", 30)
        fleet = read_fleet(redis_url)
        queue = fleet.queue(QUEUE)
        assert queue is not None and queue.waiting == 1
        assert min(queue.completed_total, queue.failed_total, queue.recent.completed) >= 0
    finally:
        client.close()


def test_the_collector_serves_an_apps_own_registry(producer: TaskProducer, redis_url: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from orbiter_sync.metrics.fleet import FleetCollector

    producer.submit(TaskPayload(input="x"))
    registry = CollectorRegistry()
    registry.register(FleetCollector(redis_url, queues=["orbiter:tasks", "other"]))
    text = generate_latest(registry).decode()
    assert 'orbiter_fleet_queue_depth{queue="orbiter:tasks"} 1.0' in text
    assert 'orbiter_fleet_queue_depth{queue="other"} 0.0' in text
    assert "orbiter_fleet_up 1.0" in text


def test_a_port_in_use_is_one_line_and_exit_2(redis_url: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [CLI, "metrics", "serve", "--redis-url", redis_url, "--bind", "127.0.0.1",
             "--port", str(port)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"Error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ]


def test_a_cancelled_task_handed_back_by_a_stopping_worker_is_counted(
    producer: TaskProducer, consumer: TaskConsumer, redis_url: str
) -> None:
    from orbiter_sync.outcome import Outcome

    payload = TaskPayload(input="x")
    producer.submit(payload)
    delivery = claim_as_worker(consumer)
    assert delivery is not None and consumer.begin(delivery) == 1
    assert producer.cancel(payload.task_id)  # while it runs; then its worker stops
    consumer.settle(delivery, Outcome.released("worker stopping"))
    queue = read_fleet(redis_url).queue(QUEUE)
    assert queue is not None and (queue.cancelled_total, queue.waiting) == (1, 0)


def test_wait_time_of_a_task_that_ran_before_counts_from_its_new_entry(
    producer: TaskProducer, redis_url: str, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x", created_at=time.time() - 120)
    producer.submit(payload)
    r.hset(f"orbiter:task:{payload.task_id}", "started_at", time.time() - 100)
    queue = read_fleet(redis_url).queue(QUEUE)
    assert queue is not None and queue.oldest_waiting_age is not None
    assert queue.oldest_waiting_age < 10  # not 120: it went back on the queue just now
    # and a task key someone broke reads as its payload's age, not as an unreadable fleet
    r.delete(f"orbiter:task:{payload.task_id}")
    r.set(f"orbiter:task:{payload.task_id}", "not a hash")
    queue = read_fleet(redis_url).queue(QUEUE)
    assert queue is not None and queue.oldest_waiting_age is not None
    assert queue.oldest_waiting_age > 119


def test_every_queue_a_live_worker_reads_is_read_however_long_their_names(
    redis_url: str, r: redis.Redis
) -> None:
    tenants = [f"orbiter:tasks:tenant-{i:06d}" for i in range(10)]
    r.hset("orbiter:workers:w1", mapping={"queues": ",".join(tenants), "concurrency": 2,
                                          "last_heartbeat": time.time()})  # fmt: skip
    r.expire("orbiter:workers:w1", 30)
    read = [q.queue for q in read_fleet(redis_url).queues]
    assert read == [QUEUE, *tenants]
