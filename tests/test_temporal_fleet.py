"""Fleets that separate claiming from running (``start worker --no-temporal-worker`` and
``start temporal-worker``), LLM agents as durable runs, against a real Temporal dev
server and real subprocesses."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml
from helpers import CLI, ROOT, Spawn, events_of, log_of, wait_for
from temporal_support import TEMPORAL, activity_started, dev_server, workflow_status

from orbiter_sync.client import distributed
from orbiter_sync.embedded import free_port
from orbiter_sync.specs import Agent
from orbiter_sync.testing.fake_openai import FakeOpenAI, Reply

TESTS = Path(__file__).parent
SETTINGS_ENV = ("ORBITER_ALLOW_IMPORTS", "TEMPORAL_HOST", "ORBITER_REDIS_URL")


@pytest.fixture(scope="module")
def temporal_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with dev_server(tmp_path_factory.mktemp("temporal")) as host:
        yield host


@pytest.fixture
def fleet_env(temporal_host: str) -> dict[str, str]:
    """The server, and a Temporal task queue of this test's own."""
    return {"TEMPORAL_HOST": temporal_host, "ORBITER_TEMPORAL_TASK_QUEUE": uuid.uuid4().hex}


RunnerSpawn = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def spawn_runner(
    tmp_path: Path, redis_url: str, fleet_env: dict[str, str]
) -> Iterator[RunnerSpawn]:
    """Start ``orbiter-sync start temporal-worker`` subprocesses; kill what is left."""
    started: list[subprocess.Popen[str]] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        inherited = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
        log = open(tmp_path / f"runner-{len(started)}.log", "w")  # noqa: SIM115
        process = subprocess.Popen(
            [CLI, "start", "temporal-worker", "--redis-url", redis_url,
             "--allow-import", "sample_agents", *args],
            env={**inherited, "PYTHONPATH": str(TESTS), **fleet_env, **(env or {})},
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        process.log_path = log.name  # type: ignore[attr-defined]
        started.append(process)
        wait_for(lambda: "starting: temporal=" in log_of(process), timeout=20)
        return process

    yield spawn
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def claimer(
    spawn_worker: Spawn, redis_url: str, fleet_env: dict[str, str]
) -> subprocess.Popen[str]:
    """A worker that claims from Redis and starts workflows, but runs no activities."""
    return spawn_worker(redis_url, "--executor", "temporal", "--no-temporal-worker",
                        env=fleet_env, pool="thread")  # fmt: skip


def texts(r: redis.Redis, task_id: str) -> list[dict[str, object]]:
    return [e for e in events_of(r, task_id) if e["type"] == "text"]


def test_claiming_workers_start_workflows_and_temporal_workers_run_them(
    claimer: subprocess.Popen[str],
    spawn_runner: RunnerSpawn,
    fleet_env: dict[str, str],
    redis_url: str,
    r: redis.Redis,
    temporal_host: str,
) -> None:
    # Given a worker that claims from Redis but runs no activities (claimer)
    assert "(starts workflows only)" in log_of(claimer)
    handle = distributed({"entrypoint": "sample_agents:words"}, "one two", redis_url=redis_url)
    # Then its workflow starts, but nothing runs the agent
    wait_for(lambda: handle.status().status == "running", timeout=20)  # type: ignore[union-attr]
    # (the task turns running just before its slot starts the workflow)
    wait_for(lambda: workflow_status(temporal_host, handle.task_id) == "RUNNING", interval=0.2)
    time.sleep(2)  # a negative: two seconds in which an activity would have run
    assert texts(r, handle.task_id) == []
    # When a temporal worker starts on the same task queue
    runner = spawn_runner("--concurrency", "2")
    # Then it runs the agent, and the claiming worker settles the task
    assert handle.result(timeout=30)["output"]
    assert [e["text"] for e in texts(r, handle.task_id)] == ["one ", "two "]
    assert workflow_status(temporal_host, handle.task_id) == "COMPLETED"
    banner = log_of(runner)
    assert f"task_queue={fleet_env['ORBITER_TEMPORAL_TASK_QUEUE']}" in banner
    assert "concurrency: 2" in banner
    # and both stop cleanly
    for process in (runner, claimer):
        process.terminate()
        assert process.wait(30) == 0, log_of(process)


def test_a_stopping_temporal_worker_lets_its_runs_finish(
    claimer: subprocess.Popen[str],
    spawn_runner: RunnerSpawn,
    redis_url: str,
    r: redis.Redis,
) -> None:
    runner = spawn_runner("--shutdown-timeout", "30")
    handle = distributed({"entrypoint": "sample_agents:sleepy_sync"}, "2", redis_url=redis_url)
    wait_for(lambda: len(texts(r, handle.task_id)) > 3, timeout=20)
    # When the temporal worker is told to stop mid-run
    runner.terminate()
    # Then the run finishes there within the shutdown timeout, then it exits
    assert runner.wait(30) == 0, log_of(runner)
    ran = texts(r, handle.task_id)
    # and the next temporal worker completes the workflow with that run's result (its
    # output is the text that run published): the agent is not run again, no retry
    spawn_runner()
    assert handle.result(timeout=30)["output"] == "".join(str(e["text"]) for e in ran)
    assert texts(r, handle.task_id) == ran
    assert not [e for e in events_of(r, handle.task_id) if e["type"] == "error"]


def test_a_second_signal_stops_the_runs_and_temporal_retries_them_elsewhere(
    claimer: subprocess.Popen[str],
    spawn_runner: RunnerSpawn,
    redis_url: str,
    r: redis.Redis,
) -> None:
    runner = spawn_runner("--shutdown-timeout", "60")
    handle = distributed({"entrypoint": "sample_agents:sleepy_sync"}, "4", redis_url=redis_url)
    wait_for(lambda: len(texts(r, handle.task_id)) > 3, timeout=20)
    # When it gets a second signal
    runner.send_signal(signal.SIGTERM)
    wait_for(lambda: "running activities get 60s" in log_of(runner))
    stopped_at = time.monotonic()
    runner.send_signal(signal.SIGTERM)
    # Then it stops the run and exits at once, not after the 60 s
    assert runner.wait(30) == 0, log_of(runner)
    assert time.monotonic() - stopped_at < 10
    # and another temporal worker completes the task on Temporal's retry
    spawn_runner()
    assert handle.result(timeout=60)["output"].startswith("started")
    events = events_of(r, handle.task_id)
    assert [e["error_type"] for e in events if e["type"] == "error"] == ["Retry"]
    assert max(e.get("attempt") or 0 for e in events if e["type"] == "status") == 2


def test_a_second_signal_abandons_a_run_that_never_returns(
    claimer: subprocess.Popen[str],
    spawn_runner: RunnerSpawn,
    redis_url: str,
    temporal_host: str,
) -> None:
    runner = spawn_runner("--shutdown-timeout", "60")
    # a plain function sleeping 60 s: nothing can stop it but the end of the process
    handle = distributed({"entrypoint": "sample_agents:nap"}, "60", redis_url=redis_url)
    wait_for(lambda: handle.status().status == "running", timeout=20)  # type: ignore[union-attr]
    wait_for(lambda: activity_started(temporal_host, handle.task_id), timeout=20, interval=0.2)
    runner.send_signal(signal.SIGTERM)
    wait_for(lambda: "running activities get 60s" in log_of(runner))
    stopped_at = time.monotonic()
    runner.send_signal(signal.SIGTERM)
    # Then the process ends within seconds, the run abandoned (Temporal retries it)
    assert runner.wait(30) == 0, log_of(runner)
    assert time.monotonic() - stopped_at < 10
    assert "abandoning them" in log_of(runner)


@pytest.mark.parametrize("command", ["worker", "temporal-worker"])
def test_an_unknown_namespace_stops_the_process_at_start(
    command: str, redis_url: str, temporal_host: str
) -> None:
    env = {"TEMPORAL_HOST": temporal_host, "TEMPORAL_NAMESPACE": "no-such-namespace",
           "PATH": str(Path(CLI).parent)}  # fmt: skip
    done = subprocess.run(
        [CLI, "start", command, "--redis-url", redis_url, "--executor", "temporal"][
            : 5 if command == "temporal-worker" else 7
        ],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and "no-such-namespace" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_server_stops_the_temporal_worker_at_start(redis_url: str) -> None:
    env = {"TEMPORAL_HOST": f"127.0.0.1:{free_port()}", "PATH": str(Path(CLI).parent)}
    done = subprocess.run(
        [CLI, "start", "temporal-worker", "--redis-url", redis_url],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and "cannot reach the Temporal server at 127.0.0.1:" in errors[0]
    assert "Traceback" not in done.stderr


def test_an_llm_agent_runs_as_a_durable_run(
    spawn_worker: Spawn,
    fleet_env: dict[str, str],
    redis_url: str,
    r: redis.Redis,
    llm: FakeOpenAI,
    temporal_host: str,
) -> None:
    env = {**fleet_env, "OPENAI_BASE_URL": llm.url, "OPENAI_API_KEY": "test-key-123456"}
    spawn_worker(redis_url, "--executor", "temporal", env=env, pool="thread")
    llm.script(Reply.text("Paris.", chunks=2), Reply.text("Rome."))
    agent = Agent(name="geo", model="openai:gpt-4o-mini", instructions="Answer briefly.")
    first = distributed(agent, "Capital of France?", redis_url=redis_url)
    assert first.result(timeout=30) == {"output": "Paris."}
    kinds = [f"{e['type']}:{e.get('status', '')}" for e in events_of(r, first.task_id)]
    assert kinds == ["status:running", "text:", "text:", "status:completed"]
    assert workflow_status(temporal_host, first.task_id) == "COMPLETED"
    # a second run on the same worker gets a working model client too
    second = distributed(agent, "Capital of Italy?", redis_url=redis_url)
    assert second.result(timeout=30) == {"output": "Rome."}
    asked = [m["content"] for request in llm.requests for m in request["messages"]]
    assert "Capital of France?" in asked and "Capital of Italy?" in asked


def test_the_compose_temporal_profile_runs_as_written(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
    server, service = compose["services"]["temporal"], compose["services"]["temporal-worker"]
    # Given the temporal service's own command (its state file moved here)
    assert server["command"][:2] == ["server", "start-dev"]
    args = [str(tmp_path / "temporal.db") if a == "/home/temporal/temporal.db" else a
            for a in server["command"][2:]]  # fmt: skip
    with dev_server(tmp_path, *args) as host:
        # its health check passes
        check = [host if a == "localhost:7233" else a for a in server["healthcheck"]["test"][1:]]
        assert check[0] == "temporal"
        assert subprocess.run([str(TEMPORAL), *check[1:]], timeout=30).returncode == 0
        # When the temporal-worker service's command runs with its environment
        env = dict(item.split("=", 1) for item in service["environment"])
        assert env["TEMPORAL_HOST"] == "temporal:7233"
        env.update(ORBITER_REDIS_URL=redis_url, TEMPORAL_HOST=host, PATH=str(Path(CLI).parent))
        argv = shlex.split(service["command"])
        assert argv[:3] == ["orbiter-sync", "start", "worker"]
        log = open(tmp_path / "worker.log", "w")  # noqa: SIM115
        worker = subprocess.Popen([CLI, *argv[1:]], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, text=True)  # fmt: skip
        try:
            # Then a task submitted to its queue runs as a workflow and completes
            handle = distributed({"entrypoint": "examples.agents:stream_words"}, "a b c",
                                 queue="orbiter:durable", redis_url=redis_url)  # fmt: skip
            assert handle.result(timeout=60)["output"]
            assert workflow_status(host, handle.task_id) == "COMPLETED"
            worker.terminate()
            assert worker.wait(30) == 0
        finally:
            worker.kill()
            log.close()
    # and the local workers (the image's CMD) read another queue: they never take it
    assert "--queue" not in (ROOT / "docker" / "Dockerfile").read_text().split("CMD")[-1]
