"""A worker's own ``/metrics`` (``--metrics-port``), scraped over HTTP from real
``orbiter-sync start worker`` subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from helpers import CLI, TESTS, Spawn, wait_for
from prometheus_client.parser import text_string_to_metric_families

from orbiter_sync import TaskPayload, distributed
from orbiter_sync.embedded import EmbeddedRedis, free_port
from orbiter_sync.errors import ConfigurationError
from orbiter_sync.metrics import names
from orbiter_sync.metrics.worker import WorkerState, recorder, redis_errors, serve
from orbiter_sync.producer import TaskProducer
from orbiter_sync.queue import QueueSettings

QUEUE = "orbiter:tasks"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def agent(name: str) -> dict[str, str]:
    return {"entrypoint": f"sample_agents:{name}"}


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_until(port: int, done: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``done`` holds (a slot counts just after its settle script answered)."""
    last: list[Samples] = [{}]

    def check() -> bool:
        last[0] = scrape(port)
        return done(last[0])

    wait_for(check)
    return last[0]


def total(samples: Samples, series: str, **labels: str) -> float:
    """The sum of ``series`` over the samples that carry ``labels``."""
    wanted = set(labels.items())
    return sum(v for (name, have), v in samples.items() if name == series and wanted <= have)


def series_of(samples: Samples, series: str) -> list[dict[str, str]]:
    return [dict(labels) for name, labels in samples if name == series]


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its sockets, in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_a_scrape_counts_a_known_mix_of_tasks(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a worker with metrics, 4 slots, one retry
    port = free_port()
    spawn_worker(redis_url, "--metrics-port", str(port), "--concurrency", "4",
                 "--max-retries", "1")  # fmt: skip
    counts = {"redis_url": redis_url}

    # When a run is cancelled once it has published its first event
    sleepy = distributed(agent("sleepy"), "30", redis_url=redis_url)
    wait_for(lambda: r.xlen(f"orbiter:stream:{sleepy.task_id}") >= 2)  # running + "started"
    running = scrape(port)
    assert sleepy.cancel()
    # and three complete, one fails twice (for good), one fails once and then completes
    handles = [distributed(agent("words"), "a b c", redis_url=redis_url) for _ in range(3)]
    broken = distributed(agent("broken"), "x", redis_url=redis_url)
    flaky = distributed(agent("flaky"), "1", redis_url=redis_url, metadata=counts)
    for handle in [*handles, flaky]:
        assert handle.result(timeout=10)["output"]
    ends = [f"orbiter:task:{h.task_id}" for h in (sleepy, broken)]
    wait_for(lambda: [r.hget(key, "status") for key in ends] == ["cancelled", "failed"])
    attempts = 3 + 2 + 2 + 1
    metrics = scrape_until(port, lambda m: total(m, f"{names.TASK_DURATION}_count") == attempts)

    # Then the run was seen busy, and every end is counted once, by agent
    assert total(running, names.SLOTS_BUSY) == 1
    assert total(running, names.TASKS_IN_PROGRESS) == 1
    by_end = {
        names.TASKS_COMPLETED: {"words": 3, "flaky": 1},
        names.TASKS_FAILED: {"broken": 1},
        names.TASKS_CANCELLED: {"sleepy": 1},
        names.TASKS_RETRIED: {"broken": 1, "flaky": 1},
    }
    for name, by_agent in by_end.items():
        assert total(metrics, f"{name}_total") == sum(by_agent.values()), name
        for short, count in by_agent.items():
            full = f"sample_agents:{short}"
            assert total(metrics, f"{name}_total", queue=QUEUE, agent=full) == count
    runs = {"words": 3, "broken": 2, "flaky": 2, "sleepy": 1}
    for short, count in runs.items():
        assert total(metrics, f"{names.TASK_DURATION}_count", agent=f"sample_agents:{short}") == (
            count
        )
    assert total(metrics, f"{names.TASK_DURATION}_bucket", le="+Inf") == attempts
    assert total(metrics, f"{names.TASK_DURATION}_bucket", le="3600.0") == attempts
    # each of the 6 tasks waited once: submit to first start, not again for a retry
    assert total(metrics, f"{names.TASK_WAIT_TIME}_count", queue=QUEUE) == 6
    assert total(metrics, f"{names.EVENTS_PUBLISHED}_total") == 3 * 4 + 1  # words: 3 + tool_call
    assert total(metrics, names.SLOTS_TOTAL) == 4
    assert total(metrics, names.SLOTS_BUSY) == 0
    assert total(metrics, names.TASKS_IN_PROGRESS) == 0
    assert total(metrics, names.QUEUE_DEPTH, queue=QUEUE) == 0
    assert total(metrics, f"{names.DEAD_LETTERS}_total") == 0
    assert total(metrics, f"{names.RECLAIMS}_total") == 0
    assert {name for name, _ in metrics if name.startswith("orbiter_")} <= set(names.WORKER_SERIES)


def test_metrics_are_off_by_default(redis_url: str, r: redis.Redis, spawn_worker: Spawn) -> None:
    port = free_port()
    on = spawn_worker(redis_url, "--metrics-port", str(port), worker_id="on")
    off = spawn_worker(redis_url, worker_id="off")

    assert listening_ports(on.pid) == {port}
    assert listening_ports(off.pid) == set()
    assert r.hget("orbiter:workers:off", "status")  # it runs


def test_agent_names_past_the_cap_are_counted_as_other(redis_url: str, spawn_worker: Spawn) -> None:
    port = free_port()
    spawn_worker(redis_url, "--metrics-port", str(port), "--concurrency", "4")
    more = names.MAX_AGENT_LABELS + 3
    TaskProducer(redis_url).submit_many(
        TaskPayload(agent_config={**agent("echo"), "name": f"agent-{n}"}, input="hi")
        for n in range(more)
    )

    completed = f"{names.TASKS_COMPLETED}_total"
    metrics = scrape_until(port, lambda m: total(m, completed) == more)

    agents = {labels["agent"] for labels in series_of(metrics, completed)}
    assert len(agents) == names.MAX_AGENT_LABELS + 1
    assert total(metrics, completed, agent=names.OTHER_AGENT) == 3
    assert all(a == names.OTHER_AGENT or a.startswith("agent-") for a in agents)


def test_a_task_taken_over_from_a_dead_worker_is_a_reclaim_and_waits_once(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a task claimed by a worker that died (no heartbeat key) before it ran it
    task_id = TaskProducer(redis_url).submit(TaskPayload(agent_config=agent("echo"), input="x"))
    r.xgroup_create(QUEUE, "orbiter:tasks:group", id="0")
    r.xreadgroup("orbiter:tasks:group", "ghost", {QUEUE: ">"}, count=1)

    # When a worker with a short visibility timeout takes it over
    port = free_port()
    spawn_worker(redis_url, "--metrics-port", str(port), "--visibility-timeout", "0.3")
    wait_for(lambda: r.hget(f"orbiter:task:{task_id}", "status") == "completed")
    completed = f"{names.TASKS_COMPLETED}_total"
    metrics = scrape_until(port, lambda m: total(m, completed) == 1)

    # Then it counts as a reclaim; its wait was the dead worker's to count
    assert total(metrics, f"{names.RECLAIMS}_total", queue=QUEUE) == 1
    assert total(metrics, f"{names.TASK_WAIT_TIME}_count") == 0


def test_an_entry_that_cannot_run_is_a_dead_letter(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    port = free_port()
    spawn_worker(redis_url, "--metrics-port", str(port))
    r.xadd(QUEUE, {"payload": "not json"})

    wait_for(lambda: r.xlen(f"{QUEUE}:dead") == 1)
    dead = f"{names.DEAD_LETTERS}_total"
    wait_for(lambda: total(scrape(port), dead, queue=QUEUE) == 1, timeout=3)


def test_a_scrape_while_redis_is_down_still_answers(
    private_redis: EmbeddedRedis, spawn_worker: Spawn
) -> None:
    url = private_redis.url
    port = free_port()
    spawn_worker(url, "--metrics-port", str(port), "--concurrency", "2")
    assert distributed(agent("echo"), "hi", redis_url=url).result(timeout=10)
    completed = f"{names.TASKS_COMPLETED}_total"
    wait_for(lambda: total(scrape(port), completed) == 1)
    assert series_of(scrape(port), names.QUEUE_DEPTH) == [{"queue": QUEUE}]

    private_redis.stop()
    started = time.monotonic()
    metrics = scrape(port)

    assert time.monotonic() - started < 3
    assert total(metrics, completed) == 1  # what the worker knows by itself
    assert total(metrics, names.SLOTS_TOTAL) == 2
    assert series_of(metrics, names.QUEUE_DEPTH) == []  # what only Redis knows
    private_redis.start()
    wait_for(lambda: series_of(scrape(port), names.QUEUE_DEPTH) == [{"queue": QUEUE}])


def test_a_metrics_port_in_use_stops_the_worker_with_one_line(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(TESTS), "ORBITER_METRICS_PORT": str(port)}
        result = subprocess.run(
            [CLI, "start", "worker", "--redis-url", redis_url, "--worker-id", "busy-port"],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"Error: cannot serve metrics on port {port}: Address already in use"
    assert f"metrics:     http://0.0.0.0:{port}/metrics" in result.stderr  # the banner


def test_serving_is_once_per_process_and_closing_undoes_it(redis_url: str) -> None:
    state = WorkerState(slots=1, busy=lambda: 0, in_progress=lambda: 0,
                        queues=[QueueSettings()], redis_url=redis_url)  # fmt: skip
    port = free_port()
    server = serve(port, state)
    try:
        assert recorder().enabled
        with pytest.raises(ConfigurationError, match="already serves"):
            serve(free_port(), state)
        with pytest.raises(redis.ConnectionError), redis_errors("claim"):
            raise redis.ConnectionError("gone")
        with pytest.raises(ValueError), redis_errors("claim"):
            raise ValueError("not Redis's")
        errors = f"{names.REDIS_ERRORS}_total"
        assert total(scrape(port), errors, operation="claim") == 1
    finally:
        server.close()

    assert not recorder().enabled
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        again.bind(("0.0.0.0", port))  # nothing listens on the port any more
    server = serve(port, state)  # and a worker in this process may serve again
    server.close()
