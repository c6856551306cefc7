"""``orbiter-sync task ...`` commands against real Redis and real workers."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import redis
from cli_support import HUMAN_TIME, agent, run
from helpers import CLI, Spawn, wait_for

from orbiter_sync import TaskPayload, TaskStatus, distributed
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.outcome import Outcome

pytestmark = pytest.mark.usefixtures("no_redis_env")


# -- tasks -------------------------------------------------------------------------------


@pytest.fixture
def finished_tasks(redis_url: str, spawn_worker: Spawn) -> dict[str, str]:
    """One completed and one failed task, run by a real worker."""
    spawn_worker(redis_url, "--concurrency", "2", worker_id="w1")
    done = distributed(agent("words"), "one two", redis_url=redis_url)
    broken = distributed(agent("broken"), "x", redis_url=redis_url)
    done.result(timeout=20)
    wait_for(lambda: broken.status() and broken.status().status == "failed", timeout=20)  # type: ignore[union-attr]
    return {"done": done.task_id, "broken": broken.task_id}


def test_task_list_filters_and_limits(redis_url: str, finished_tasks: dict[str, str]) -> None:
    everything = run("task", "list", "--redis-url", redis_url)
    failed = run("task", "list", "--redis-url", redis_url, "--status", "failed")
    one = run("task", "list", "--redis-url", redis_url, "--limit", "1", "--json")
    none_running = run("task", "list", "--redis-url", redis_url, "--status", "running")

    assert everything.exit_code == 0
    assert finished_tasks["done"] in everything.stdout
    assert finished_tasks["broken"] in everything.stdout
    assert "completed" in everything.stdout and "w1" in everything.stdout
    assert finished_tasks["broken"] in failed.stdout and finished_tasks["done"] not in failed.stdout
    assert "RuntimeError" in failed.stdout
    assert len(json.loads(one.stdout)) == 1
    assert none_running.stdout.strip() == "No running tasks."


def test_task_list_rejects_an_unknown_status(redis_url: str) -> None:
    result = run("task", "list", "--redis-url", redis_url, "--status", "stuck")
    assert result.exit_code == 2
    assert "'stuck' is not one of" in result.stderr


def test_task_status_shows_every_field(redis_url: str, finished_tasks: dict[str, str]) -> None:
    result = run("task", "status", finished_tasks["done"], "--redis-url", redis_url)
    as_json = json.loads(
        run("task", "status", finished_tasks["done"], "--redis-url", redis_url, "--json").stdout
    )

    assert result.exit_code == 0
    for label in ("Task ID", "Status", "Worker", "Retries", "Created", "Started", "Completed",
                  "Duration", "Error", "Result"):  # fmt: skip
        assert f"│ {label}" in result.stdout
    assert len(HUMAN_TIME.findall(result.stdout)) == 3
    assert re.search(r"│ Duration\s+│ \d+\.\d\ds", result.stdout)
    assert "2 words for" in result.stdout
    assert as_json["status"] == "completed" and as_json["worker_id"] == "w1"
    assert as_json["result"] == {"output": f"2 words for {finished_tasks['done']}"}


def test_task_status_of_an_unknown_task(redis_url: str) -> None:
    result = run("task", "status", "nope", "--redis-url", redis_url)
    assert result.exit_code == 1
    assert result.stderr == "Error: task nope not found (never submitted, or its record expired)\n"


def test_cancel_a_running_then_an_ended_task(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a task running on a worker
    spawn_worker(redis_url, worker_id="w1")
    handle = distributed(agent("sleepy"), "30", redis_url=redis_url)
    wait_for(lambda: r.hget(f"orbiter:task:{handle.task_id}", "status") == "running")

    # When it is cancelled, twice
    first = run("task", "cancel", handle.task_id, "--redis-url", redis_url)
    second = run("task", "cancel", handle.task_id, "--redis-url", redis_url)

    # Then the run stops, and the second cancel says it already was (cancelling is
    # idempotent: exit 0, as TaskHandle.cancel() returns True)
    assert first.exit_code == 0, first.output
    assert f"Cancelled task {handle.task_id}; worker w1 stops its run" in first.stdout
    wait_for(lambda: r.hget("orbiter:workers:w1", "current_task_id") == "", timeout=10)
    assert handle.status().status == TaskStatus.CANCELLED  # type: ignore[union-attr]
    assert second.exit_code == 0, second.output
    assert second.stdout == f"Task {handle.task_id} is already cancelled; nothing more to do.\n"
    assert handle.cancel() is True
    missing = run("task", "cancel", "nope", "--redis-url", redis_url)
    assert missing.exit_code == 1 and "not found" in missing.stderr


def test_cancel_a_pending_task(redis_url: str, r: redis.Redis) -> None:
    handle = distributed(agent("echo"), "x", redis_url=redis_url)

    result = run("task", "cancel", handle.task_id, "--redis-url", redis_url)

    assert result.exit_code == 0
    assert "it was pending; it will not run" in result.stdout
    assert r.hget(f"orbiter:task:{handle.task_id}", "status") == "cancelled"


@pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled"])
def test_the_cli_and_the_library_agree_on_cancelling_an_ended_task(
    redis_url: str, r: redis.Redis, outcome: str
) -> None:
    # Given a task that has ended
    handle = distributed(agent("echo"), "x", redis_url=redis_url)
    if outcome == "cancelled":
        assert handle.cancel() is True
    else:
        consumer = TaskConsumer(redis_url, "w1")
        delivery = consumer.claim(timeout=1)
        assert delivery is not None and consumer.begin(delivery)
        error = Outcome.failed(RuntimeError("boom"), retryable=False)
        consumer.settle(delivery, Outcome.completed({"output": 1}) if outcome == "completed"
                        else error)  # fmt: skip
        consumer.close()
    key, events = f"orbiter:task:{handle.task_id}", f"orbiter:stream:{handle.task_id}"
    before, event_count = r.hgetall(key), r.xlen(events)

    # When it is cancelled through the CLI and through its handle
    result = run("task", "cancel", handle.task_id, "--redis-url", redis_url)
    answer = handle.cancel()

    # Then nothing changes, and both say so the same way: a cancelled task is cancelled
    # (exit 0, True); a completed or failed one cannot be (exit 1, False)
    assert r.hgetall(key) == before and r.xlen(events) == event_count
    if outcome == "cancelled":
        assert (result.exit_code, answer) == (0, True)
        assert result.stdout == f"Task {handle.task_id} is already cancelled; nothing more to do.\n"
    else:
        assert (result.exit_code, answer) == (1, False)
        assert (
            result.stderr
            == f"Error: task {handle.task_id} is already {outcome}; nothing to cancel\n"
        )


def test_submit_and_wait(redis_url: str, spawn_worker: Spawn) -> None:
    spawn_worker(redis_url)

    result = run("task", "submit", "--redis-url", redis_url, "--entrypoint",
                 "sample_agents:echo", "--input", "hello", "--wait")  # fmt: skip

    assert result.exit_code == 0, result.output
    task_id, output = result.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f]{32}", task_id)
    assert output == "echo: hello"


def test_submit_without_waiting_prints_only_the_id(redis_url: str, r: redis.Redis) -> None:
    result = run("task", "submit", "--redis-url", redis_url, "--queue", "q2", "--entrypoint",
                 "sample_agents:echo", "--input", "hi", "--timeout", "12")  # fmt: skip

    task_id = result.stdout.strip()
    reply = r.xread({"q2": "0"})
    assert isinstance(reply, list)
    [(_, [(_, fields)])] = reply
    payload = TaskPayload.from_json(fields["payload"])
    assert payload.task_id == task_id
    assert payload.agent_config == {"entrypoint": "sample_agents:echo"}
    assert (payload.input, payload.timeout_seconds) == ("hi", 12.0)


def test_submit_agent_json_and_watch(redis_url: str, spawn_worker: Spawn, tmp_path: Path) -> None:
    spawn_worker(redis_url)
    config = tmp_path / "agent.json"
    config.write_text(json.dumps({"entrypoint": "sample_agents:words", "name": "counter"}))

    result = run("task", "submit", "--redis-url", redis_url, "--agent-json", str(config),
                 "--input", "a b", "--watch")  # fmt: skip

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    kinds = [line.split()[1] for line in lines[1:]]
    assert kinds == ["status", "text", "text", "tool_call", "status"]
    assert lines[-1].split()[2] == "completed"


def test_a_failed_task_makes_wait_exit_1(redis_url: str, spawn_worker: Spawn) -> None:
    spawn_worker(redis_url)

    result = run("task", "submit", "--redis-url", redis_url, "--entrypoint",
                 "sample_agents:not_there", "--input", "x", "--wait")  # fmt: skip

    assert result.exit_code == 1
    assert "failed" in result.stderr and "has no 'not_there'" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "x"], "give exactly one of --entrypoint PATH and --agent-json FILE"),
        (["--input", "x", "--entrypoint", "a:b", "--agent-json", "-"], "give exactly one"),
        (["--input", "x", "--entrypoint", "not a path"], "bad entrypoint 'not a path'"),
        (["--input", "x", "--agent-json", "-"], "--agent-json: not valid JSON"),
        (["--entrypoint", "a:b"], "Missing option '--input'"),
    ],
)
def test_submit_rejects_bad_input(
    redis_url: str, r: redis.Redis, args: list[str], message: str
) -> None:
    result = run("task", "submit", "--redis-url", redis_url, *args, input="[not json")
    assert result.exit_code == 2
    assert message in result.stderr
    assert r.xlen("orbiter:tasks") == 0


def test_agent_json_must_be_an_object(redis_url: str) -> None:
    result = run("task", "submit", "--redis-url", redis_url, "--agent-json", "-",
                 "--input", "x", input="[1, 2]")  # fmt: skip
    assert result.exit_code == 2
    assert "must hold a JSON object" in result.stderr


def test_watch_prints_ids_and_resumes(redis_url: str, spawn_worker: Spawn) -> None:
    # Given a finished task
    spawn_worker(redis_url)
    handle = distributed(agent("words"), "one two three", redis_url=redis_url)
    handle.result(timeout=20)

    # When it is watched from the start, then from its third event
    whole = run("task", "watch", handle.task_id, "--redis-url", redis_url)
    ids = [line.split()[0] for line in whole.stdout.splitlines()]
    resumed = run("task", "watch", handle.task_id, "--redis-url", redis_url, "--from", ids[2])
    as_json = run("task", "watch", handle.task_id, "--redis-url", redis_url, "--json")

    # Then
    assert whole.exit_code == 0
    assert len(ids) == 6 and all(re.fullmatch(r"\d+-\d+", i) for i in ids)
    assert [line.split()[0] for line in resumed.stdout.splitlines()] == ids[3:]
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [e["id"] for e in events] == ids
    assert events[1] == {
        "id": ids[1],
        "type": "text",
        "text": "one ",
        "agent_name": "sample_agents:words",
    }


def test_watch_follows_a_live_task_and_exits_1_when_cancelled(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url)
    handle = distributed(agent("sleepy"), "30", redis_url=redis_url)
    wait_for(lambda: r.hget(f"orbiter:task:{handle.task_id}", "status") == "running")
    watcher = subprocess.Popen(
        [CLI, "task", "watch", handle.task_id, "--redis-url", redis_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    assert watcher.stdout is not None
    first, second = watcher.stdout.readline(), watcher.stdout.readline()
    assert second.split()[1:] == ["text", "started"], first + second

    handle.cancel()
    rest, _ = watcher.communicate(timeout=20)

    assert watcher.returncode == 1
    assert rest.splitlines()[-1].split()[1:3] == ["status", "cancelled:"]


def test_watch_an_unknown_task(redis_url: str) -> None:
    result = run("task", "watch", "nope", "--redis-url", redis_url)
    assert result.exit_code == 1
    assert "task nope not found" in result.stderr
