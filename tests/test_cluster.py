"""The worker's behaviour on a real Redis Cluster of three masters, with queues in three
shards (issue 16): what tests/test_worker.py shows on one server, through a
``redis+cluster://`` URL, asserted on the cluster's own keys (layout.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers import CLI, Spawn, log_of, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from orbiter_sync import TaskHandle, TaskPayload, distributed
from orbiter_sync.connection import DEFAULT_RETRY, connect
from orbiter_sync.embedded_cluster import EmbeddedCluster
from orbiter_sync.errors import ConfigurationError, TaskCancelledError
from orbiter_sync.health import get_worker_fleet_status
from orbiter_sync.layout import SHARDS_KEY, KeyLayout, key_slot
from orbiter_sync.producer import TaskProducer
from orbiter_sync.queue import QueueSettings
from orbiter_sync.shard_claim import ShardClaim, shard_consumers
from orbiter_sync.store import TaskStore

QUEUE = "orbiter:tasks"
LAYOUT = KeyLayout(cluster=True, shards=3)
SHARDED = {"ORBITER_QUEUE_SHARDS": "3"}


def agent(name: str) -> dict[str, str]:
    return {"entrypoint": f"sample_agents:{name}"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(masters=3) as started:
        yield started


@pytest.fixture
def url(cluster: EmbeddedCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """The cluster, emptied, with this process's clients on three shards."""
    client = connect(cluster.startup_url)
    client.flushall()
    client.close()
    monkeypatch.setenv("ORBITER_QUEUE_SHARDS", "3")
    return cluster.startup_url


@pytest.fixture
def rc(url: str) -> Iterator[redis.Redis]:
    client = connect(url)
    yield client
    client.close()


def status_of(rc: redis.Redis, task_id: str) -> str | None:
    return rc.hget(LAYOUT.task_hash(task_id), "status")  # type: ignore[return-value]


def stream_lengths(rc: redis.Redis) -> list[int]:
    return [int(rc.xlen(LAYOUT.stream(QUEUE, shard))) for shard in range(3)]


def cli_json(*args: str, url: str) -> Any:
    done = subprocess.run([CLI, *args, "--redis-url", url, "--json"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def id_on_shard(shard: int) -> str:
    while True:
        task_id = uuid.uuid4().hex
        if LAYOUT.shard_of(task_id) == shard:
            return task_id


def test_a_sharded_queue_spreads_over_the_masters_and_runs_every_task(
    cluster: EmbeddedCluster, url: str, rc: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a worker on a three-master cluster with three shards
    spawn_worker(url, "--concurrency", "4", env=SHARDED)
    # When 60 tasks are submitted through the cluster URL
    handles = [distributed(agent("echo"), f"n{n}", redis_url=url) for n in range(60)]
    generator = distributed(agent("words"), "one two", redis_url=url)
    # Then every one completes, and its events replay from its shard's stream
    assert [h.result(timeout=30) for h in handles] == [{"output": f"echo: n{n}"} for n in range(60)]
    events = [e.to_dict() for e in generator.stream(timeout=10)]
    assert [e["type"] for e in events] == ["status", "text", "text", "tool_call", "status"]
    # and the shards live on three different masters, each one's keys under its tag
    masters = {cluster.master_of(LAYOUT.stream(QUEUE, shard)).port for shard in range(3)}
    assert len(masters) == 3
    assert rc.get(SHARDS_KEY) == "3"
    per_shard = [int(rc.scard(LAYOUT.task_index(shard))) for shard in range(3)]
    assert sum(per_shard) == 61 and min(per_shard) > 5
    # and the one-server names are not used at all
    assert rc.exists(QUEUE, "orbiter:task:index", f"orbiter:task:{generator.task_id}") == 0
    wait_for(lambda: stream_lengths(rc) == [0, 0, 0], timeout=10)
    # and the worker's own health check finds its heartbeat under the workers' tag
    health = subprocess.run([CLI, "health", "--this-host", "--redis-url", url],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert health.returncode == 0, health.stdout + health.stderr
    # and task list and queue stats read every shard
    listed = cli_json("task", "list", "--status", "completed", "--limit", "100", url=url)
    assert len(listed) == 61
    stats = cli_json("queue", "stats", url=url)
    assert (stats["length"], stats["pending"], stats["lag"], stats["consumers"]) == (0, 0, 0, 1)


def test_cancel_of_running_and_pending_tasks(
    url: str, rc: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a worker of one slot running a long task, and a task waiting behind it
    spawn_worker(url, env=SHARDED)
    running = distributed(agent("sleepy_sync"), "30", redis_url=url)
    wait_for(lambda: status_of(rc, running.task_id) == "running", timeout=10)
    pending = distributed(agent("counted"), "never", redis_url=url, metadata={"redis_url": url})
    # When both are cancelled (the running one over its shard's cancel channel)
    assert running.cancel() and pending.cancel()
    # Then both end cancelled, the running one stopped at its next yield
    for handle in (running, pending):
        with pytest.raises(TaskCancelledError):
            handle.result(timeout=10)
    assert rc.get(f"test:executions:{pending.task_id}") is None
    assert [e.to_dict() for e in running.stream(timeout=5)][-1]["status"] == "cancelled"


def test_retries_and_dead_letters_work_per_shard(
    url: str, rc: redis.Redis, spawn_worker: Spawn
) -> None:
    worker = spawn_worker(url, "--concurrency", "2", env=SHARDED)
    # A task failing twice is retried on its shard and then completes
    flaky = distributed(agent("flaky"), "2", redis_url=url, metadata={"redis_url": url})
    assert flaky.result(timeout=30) == {"output": "succeeded on attempt 3"}
    state = flaky.status()
    assert state is not None and state.retries == 2
    # An entry put by hand on a shard its task id does not belong to is dead-lettered
    stray = id_on_shard(1)
    payload = TaskPayload(task_id=stray, input="x", agent_config=agent("echo"))
    rc.xadd(LAYOUT.stream(QUEUE, 0), {"payload": payload.to_json()})
    rc.xadd(LAYOUT.stream(QUEUE, 2), {"payload": "not json"})
    # (an undecodable one naming another shard's task: no hash of it under this tag)
    elsewhere = id_on_shard(1)
    rc.xadd(LAYOUT.stream(QUEUE, 2), {"payload": json.dumps({"task_id": elsewhere, "input": []})})
    wait_for(lambda: rc.xlen(LAYOUT.dead_letters(QUEUE, 0)) == 1, timeout=10)
    wait_for(lambda: rc.xlen(LAYOUT.dead_letters(QUEUE, 2)) == 2, timeout=10)
    assert rc.exists(LAYOUT.task_hash(elsewhere, shard=2), LAYOUT.task_hash(elsewhere)) == 0
    letters: Any = rc.xrange(LAYOUT.dead_letters(QUEUE, 0))
    reason = letters[0][1]["reason"]
    assert f"belongs to shard 1, not {QUEUE}#0" in reason
    assert worker.poll() is None
    # and the CLI sees both dead letters and the counters across the shards
    assert len(cli_json("dead-letters", "list", url=url)) == 3
    (queue,) = cli_json("metrics", "show", url=url)["queues"]
    assert (queue["completed_total"], queue["retried_total"], queue["dead_letters"]) == (1, 2, 3)


def test_reclaim_after_sigkill_and_graceful_stop(
    url: str, rc: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a worker killed while it runs a task
    doomed = spawn_worker(url, "--visibility-timeout", "1", env=SHARDED)
    lost = distributed(agent("sleepy"), "0.5", redis_url=url)
    wait_for(lambda: status_of(rc, lost.task_id) == "running", timeout=10)
    doomed.kill()
    doomed.wait()
    # When another worker starts, Then it takes the task over and completes it
    survivor = spawn_worker(url, "--visibility-timeout", "1", env=SHARDED)
    assert lost.result(timeout=30) == {"output": "startedwoke up"}
    # When that worker gets SIGTERM while it runs a task, Then the task finishes first
    handle = distributed(agent("sleepy"), "1.5", redis_url=url)
    wait_for(lambda: status_of(rc, handle.task_id) == "running", timeout=10)
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(timeout=20) == 0
    assert handle.result(timeout=1) == {"output": "startedwoke up"}
    assert stream_lengths(rc) == [0, 0, 0]
    assert "stopping; running tasks get 25s" in log_of(survivor)


def test_500_tasks_on_two_workers_run_exactly_once(
    url: str, rc: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(url, "--concurrency", "4", env=SHARDED)
    spawn_worker(url, "--concurrency", "4", env=SHARDED)
    producer = TaskProducer(url)
    payloads = [
        TaskPayload(input=str(n), agent_config=agent("counted"), metadata={"redis_url": url})
        for n in range(500)
    ]
    ids = producer.submit_many(payloads)
    wait_for(
        lambda: all(
            TaskHandle(i, redis_url=url).status().status == "completed"  # type: ignore[union-attr]
            for i in ids[-20:]
        ),
        timeout=120,
    )
    wait_for(lambda: stream_lengths(rc) == [0, 0, 0], timeout=60)
    assert [rc.get(f"test:executions:{i}") for i in ids] == ["1"] * 500
    statuses = {TaskHandle(i, redis_url=url).status().status for i in ids}  # type: ignore[union-attr]
    assert statuses == {"completed"}
    for shard in range(3):
        assert rc.xpending(LAYOUT.stream(QUEUE, shard), f"{QUEUE}:group")["pending"] == 0
    wait_for(lambda: sum(w.tasks_processed for w in get_worker_fleet_status(url)) == 500, 15)
    producer.close()


def test_a_different_shard_count_is_refused(
    url: str, rc: redis.Redis, spawn_worker: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a cluster whose queues were recorded as three shards
    spawn_worker(url, env=SHARDED)
    # When a worker is started with two, Then it refuses with a clear error
    refused = spawn_worker(url, env={"ORBITER_QUEUE_SHARDS": "2"}, may_die=True)
    assert refused.wait(timeout=15) == 2
    assert "have 3 shard(s) (recorded in orbiter:queue-shards), but 2 were asked" in log_of(refused)
    # and so is a producer, before it queues anything
    monkeypatch.setenv("ORBITER_QUEUE_SHARDS", "2")
    producer = TaskProducer(url)
    with pytest.raises(ConfigurationError, match="recorded in orbiter:queue-shards"):
        producer.submit(TaskPayload(input="x", agent_config=agent("echo")))
    producer.close()
    assert stream_lengths(rc) == [0, 0, 0]
    assert rc.get(SHARDS_KEY) == "3"


@settings(max_examples=200, deadline=None)
@given(key=st.text(min_size=1, max_size=30))
def test_key_slot_is_the_clusters(cluster: EmbeddedCluster, key: str) -> None:
    node = redis.Redis(port=cluster.nodes[0].port, decode_responses=True)
    assert key_slot(key) == node.cluster("KEYSLOT", key.encode("utf-8", "surrogateescape"))
    node.close()


def test_a_broken_shard_record_is_refused_clearly(url: str, rc: redis.Redis) -> None:
    rc.set(SHARDS_KEY, "many")
    producer = TaskProducer(url)
    with pytest.raises(ConfigurationError, match="orbiter:queue-shards holds 'many', not a shard"):
        producer.submit(TaskPayload(input="x", agent_config=agent("echo")))
    producer.close()


def test_a_reader_made_before_the_first_worker_finds_tasks_by_the_recorded_count(
    url: str, rc: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a reader made while nothing is recorded (so: one shard, for now)
    monkeypatch.delenv("ORBITER_QUEUE_SHARDS")
    store = TaskStore(url)
    assert store.get_status("nothing-yet") is None and rc.get(SHARDS_KEY) is None
    # When a worker records three shards and a task is queued on them
    rc.set(SHARDS_KEY, 3)
    producer = TaskProducer(url)
    task_id = producer.submit(TaskPayload(input="x", agent_config=agent("echo")))
    assert rc.hget(LAYOUT.task_hash(task_id), "status") == "pending"
    # Then the same reader finds it
    state = store.get_status(task_id)
    assert state is not None and state.status == "pending"
    store.close()
    producer.close()


def test_a_dead_letter_id_in_two_shards_is_refused_by_id(url: str, rc: redis.Redis) -> None:
    # Given two shards whose dead-letter streams made the same id
    for shard in (0, 1):
        rc.xadd(LAYOUT.dead_letters(QUEUE, shard), {"reason": "r", "entry": "{}"},
                id="1700000000000-0")  # fmt: skip
    # When one is requeued by id, Then the CLI refuses, saying why and what to do
    done = subprocess.run([CLI, "dead-letters", "requeue", "1700000000000-0", "--redis-url", url],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 1
    assert "is in 2 shards of orbiter:tasks: requeue them all (--all) or purge them" in done.stderr
    assert [rc.xlen(LAYOUT.dead_letters(QUEUE, s)) for s in (0, 1)] == [1, 1]


def test_a_shard_claim_takes_no_more_than_asked_and_turns_over_the_shards(
    url: str, rc: redis.Redis
) -> None:
    # Given five tasks waiting on each of three shards, and a worker's shard consumers
    producer = TaskProducer(url)
    per_shard = {shard: [id_on_shard(shard) for _ in range(5)] for shard in range(3)}
    producer.submit_many(
        [
            TaskPayload(task_id=i, input="x", agent_config=agent("echo"))
            for ids in per_shard.values()
            for i in ids
        ]  # fmt: skip
    )
    client = connect(url)
    settings = QueueSettings(QUEUE, layout=LAYOUT)
    consumers = shard_consumers(url, "w", settings, client=client, retry=DEFAULT_RETRY)
    claim = ShardClaim(consumers, client)
    # When it is asked for one at a time, Then it takes one, from each shard in turn
    taken = [claim(1, time.monotonic() + 1) for _ in range(3)]
    assert [len(batch) for batch in taken] == [1, 1, 1]
    assert {batch[0].shard for batch in taken} == {0, 1, 2}
    # and for 4, no more than 4, spread over the shards
    batch = claim(4, time.monotonic() + 1)
    assert len(batch) == 4 and {d.shard for d in batch} == {0, 1, 2}
    assert all(d.task_id in per_shard[d.shard] for d in [*batch, *(b[0] for b in taken)])
    pending = [rc.xpending(LAYOUT.stream(QUEUE, s), f"{QUEUE}:group")["pending"] for s in range(3)]
    assert sum(pending) == 7
    producer.close()
    client.close()
