"""What a task costs: Redis commands per task on the worker and on submit, bulk submits,
and no thread created per run. Counted in Redis (INFO commandstats), not timed."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest
import redis
from helpers import Spawn, stream_entries, wait_for

from orbiter_sync import TaskPayload, Worker, distributed
from orbiter_sync.connection import connect
from orbiter_sync.embedded import EmbeddedRedis
from orbiter_sync.errors import ValidationError
from orbiter_sync.lines import Line
from orbiter_sync.producer import SUBMIT_BATCH, TaskProducer

ECHO = {"entrypoint": "sample_agents:echo"}


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT (scripts' own calls included)."""
    stats: dict[str, Any] = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}
    calls.pop("info", None)
    return calls


class RoundTrips:
    """The commands clients send, as MONITOR sees them: what scripts call inside Redis
    is left out, and so is this watcher's own closing ECHO."""

    END = "round-trips-counted"

    def __init__(self, url: str) -> None:
        self.url = url
        self.commands: list[str] = []
        self._client = redis.Redis.from_url(url, decode_responses=True)
        self._closer = redis.Redis.from_url(url, decode_responses=True)
        self._closer.ping()  # connected before the watch starts: its handshake is not seen
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        with self._client.monitor() as monitor:  # type: ignore[no-untyped-call]
            self._ready.set()
            while True:
                seen = monitor.next_command()
                command = str(seen["command"])
                if command == f"ECHO {self.END}":
                    return
                if seen.get("client_type") != "lua":
                    self.commands.append(command.split(" ", 1)[0].lower())

    def __enter__(self) -> RoundTrips:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closer.echo(self.END)
        self._thread.join(10)
        self._client.close()
        self._closer.close()

    def count(self, command: str | None = None) -> int:
        return sum(1 for c in self.commands if command is None or c == command)


def test_a_worker_spends_two_round_trips_per_task(
    private_redis: EmbeddedRedis, spawn_worker: Spawn
) -> None:
    """Moving a task to running is one call, settling it another; the claim is shared by
    the slots (one XREADGROUP for many tasks); promotion and reclaim run on their own
    schedule. Before: claim, begin, settle and the promote check made four per task."""
    url, tasks = private_redis.url, 400
    client = redis.Redis.from_url(url, decode_responses=True)
    producer = TaskProducer(url)
    ids = producer.submit_many([TaskPayload(agent_config=ECHO, input="x") for _ in range(tasks)])

    with RoundTrips(url) as trips:
        worker = spawn_worker(url, "--concurrency", "8")
        wait_for(lambda: client.xlen("orbiter:tasks") == 0, timeout=60)  # every entry settled
    worker.terminate()
    worker.wait(30)

    statuses = [client.hget(f"orbiter:task:{task_id}", "status") for task_id in ids]
    assert statuses == ["completed"] * tasks
    worker_calls = trips.count() - trips.count("xlen") - trips.count("keys")  # the test's
    # two scripts per task, a share of the claims, and the start-up's and the
    # heartbeat's few commands (client handshakes, script loads, group creation ...)
    assert trips.count("evalsha") <= 2 * tasks + 20, trips.commands
    assert trips.count("xreadgroup") <= tasks / 4, trips.commands
    assert worker_calls <= 2.25 * tasks + 60, trips.commands


def test_distributed_costs_one_round_trip(redis_url: str, r: redis.Redis) -> None:
    distributed(ECHO, "warm-up", redis_url=redis_url)  # connects and loads the script

    with RoundTrips(redis_url) as trips:
        handle = distributed(ECHO, "hello", redis_url=redis_url)

    assert trips.commands == ["evalsha"]
    assert r.hget(f"orbiter:task:{handle.task_id}", "status") == "pending"


def test_submit_many_queues_every_task_once_in_few_round_trips(
    producer: TaskProducer, r: redis.Redis
) -> None:
    payloads = [TaskPayload(agent_config=ECHO, input=str(n)) for n in range(SUBMIT_BATCH + 50)]
    r.config_resetstat()

    ids = producer.submit_many(payloads)

    assert ids == [p.task_id for p in payloads]
    assert r.xlen("orbiter:tasks") == len(payloads)
    assert [fields["payload"] for _, fields in stream_entries(r, "orbiter:tasks")] == [
        p.to_json() for p in payloads
    ]
    assert r.hget(f"orbiter:task:{ids[-1]}", "status") == "pending"
    # submitted again (a retry after a lost reply, a double click): nothing more queued
    assert producer.submit_many(payloads) == ids
    assert r.xlen("orbiter:tasks") == len(payloads)
    assert r.scard("orbiter:task:index") == len(payloads)
    calls = command_calls(r)
    assert calls["evalsha"] == 2 * len(payloads)  # pipelined, 2 x 2 round trips in all


def test_submit_many_checks_every_payload_before_sending_any(
    producer: TaskProducer, r: redis.Redis
) -> None:
    payloads = [TaskPayload(agent_config=ECHO, input=str(n)) for n in range(3)]
    payloads.insert(1, TaskPayload(agent_config=ECHO, input="slow", timeout_seconds=8 * 86400))

    with pytest.raises(ValidationError, match="timeout_seconds"):
        producer.submit_many(payloads)

    assert r.xlen("orbiter:tasks") == 0


def test_submit_many_loads_its_script_when_redis_lost_it(
    producer: TaskProducer, r: redis.Redis
) -> None:
    producer.submit(TaskPayload(agent_config=ECHO, input="first"))  # script loaded
    r.script_flush()

    ids = producer.submit_many([TaskPayload(agent_config=ECHO, input="after a flush")])

    assert r.hget(f"orbiter:task:{ids[0]}", "status") == "pending"
    assert producer.submit_many([]) == []


def test_runs_do_not_start_a_thread_each(redis_url: str, r: redis.Redis) -> None:
    """A run's timeout comes from the worker's one deadline scheduler, not a timer thread."""
    started: list[str] = []

    def note(*_args: object) -> None:  # called first thing in every new thread
        started.append(threading.current_thread().name)
        sys.setprofile(None)  # once is enough: this thread is counted

    tasks = 60
    producer = TaskProducer(redis_url)
    ids = producer.submit_many(
        [TaskPayload(agent_config=ECHO, input="x", timeout_seconds=30) for _ in range(tasks)]
    )
    worker = Worker(redis_url, concurrency=4, allow_imports=["sample_agents"])
    threading.setprofile(note)
    runner = threading.Thread(target=worker.start, name="runner")
    try:
        runner.start()
        wait_for(
            lambda: all(r.hget(f"orbiter:task:{i}", "status") == "completed" for i in ids),
            timeout=30,
        )
    finally:
        threading.setprofile(None)
        worker.stop()
        runner.join(30)

    assert len(started) < 15, started  # slots, heartbeat, listener, maintenance, deadlines
    assert not [name for name in started if name.startswith("Thread-")], started
    assert worker.deadlines.pending() == 0


def test_tasks_claimed_ahead_go_back_to_the_queue_at_a_stop(
    private_redis: EmbeddedRedis, spawn_worker: Spawn
) -> None:
    """Short tasks are fetched ahead of the slots; a stop puts back what no slot started,
    pending as it was, and the worker leaves nothing in the group's pending list."""
    url = private_redis.url
    client = redis.Redis.from_url(url, decode_responses=True)
    producer = TaskProducer(url)
    worker = spawn_worker(url, "--concurrency", "2", "--prefetch", "8")
    quick = producer.submit_many([TaskPayload(agent_config=ECHO, input="x") for _ in range(300)])
    slow = producer.submit_many(
        [
            TaskPayload(agent_config={"entrypoint": "sample_agents:nap"}, input="2")
            for _ in range(12)
        ]  # fmt: skip
    )
    wait_for(lambda: client.hget(f"orbiter:task:{slow[0]}", "status") == "running", timeout=30)
    # at the pace of the quick tasks, more were fetched than the two slots can run
    wait_for(lambda: client.xpending("orbiter:tasks", "orbiter:tasks:group")["pending"] > 2)

    worker.terminate()
    assert worker.wait(30) == 0

    assert client.xpending("orbiter:tasks", "orbiter:tasks:group")["pending"] == 0
    statuses = {client.hget(f"orbiter:task:{i}", "status") for i in quick}
    assert statuses == {"completed"}
    slow_statuses = [client.hget(f"orbiter:task:{i}", "status") for i in slow]
    assert set(slow_statuses) <= {"pending", "completed"}
    queued = {fields["payload"] for _, fields in stream_entries(client, "orbiter:tasks")}
    assert len(queued) == slow_statuses.count("pending")  # each one back on the queue


def test_a_worker_imports_no_extra_it_does_not_use(
    private_redis: EmbeddedRedis, spawn_worker: Spawn
) -> None:
    """gevent, prometheus-client, temporalio, pydantic-ai and tabulate cost memory and
    start-up time: a thread-pool worker running entrypoint agents loads none of them."""
    url = private_redis.url
    spawn_worker(url, "--concurrency", "2", pool="thread")
    handle = distributed({"entrypoint": "sample_agents:loaded_extras"}, "", redis_url=url)

    assert handle.result(timeout=20) == {"output": []}


def test_a_line_gives_up_on_a_hung_redis_within_its_socket_timeout() -> None:
    """A slot's line keeps its timeout in the kernel rather than in Python: a Redis that
    stops answering still fails the call in time, and the next call reconnects."""
    with EmbeddedRedis(debug=True) as server:
        client = connect(server.url, socket_timeout=0.5)
        script = client.register_script("return 1")
        line = Line(client)
        assert line.evalsha(script, [], []) == 1
        hanger = redis.Redis.from_url(server.url)
        hang = threading.Thread(target=hanger.execute_command, args=("DEBUG", "SLEEP", "2"))
        hang.start()
        time.sleep(0.2)  # Redis is asleep now

        started = time.monotonic()
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            line.evalsha(script, [], [])
        assert time.monotonic() - started < 1.5

        hang.join(10)
        assert line.evalsha(script, [], []) == 1
        line.close()
        client.close()
