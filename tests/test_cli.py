"""``orbiter-sync`` commands against real Redis and real workers.

Most tests go through click's CliRunner (in process, same code path as the
console script); the error-path tests run the installed script in a subprocess
to see exactly what an operator sees on stderr.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result
from helpers import CLI, Spawn, log_of, wait_for

from orbiter_sync import TaskPayload, TaskStatus, distributed
from orbiter_sync.cli.main import cli
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.embedded import EmbeddedRedis, free_port
from orbiter_sync.outcome import Outcome
from orbiter_sync.producer import TaskProducer

HUMAN_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


@pytest.fixture(autouse=True)
def no_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ORBITER_REDIS_URL", "REDIS_URL", "TEMPORAL_HOST", "ORBITER_POOL"):
        monkeypatch.delenv(name, raising=False)


def run(*args: str, color: bool = False, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), color=color, input=input, catch_exceptions=False)


def agent(name: str) -> dict[str, str]:
    return {"entrypoint": f"sample_agents:{name}"}


def stale_heartbeat(r: redis.Redis, worker_id: str, age: float, status: str = "running") -> None:
    """A heartbeat as a worker leaves it when it stops beating (killed, or frozen)."""
    now = time.time()
    r.hset(
        f"orbiter:workers:{worker_id}",
        mapping={"status": status, "hostname": "web09", "tasks_processed": "7",
                 "tasks_failed": "1", "current_task_id": "", "concurrency": "4",
                 "started_at": now - 3600, "last_heartbeat": now - age},
    )  # fmt: skip


# -- worker list -------------------------------------------------------------------------


def test_worker_list_shows_the_guides_columns(redis_url: str, spawn_worker: Spawn) -> None:
    # Given two running workers
    spawn_worker(redis_url, "--concurrency", "3", worker_id="alpha")
    spawn_worker(redis_url, worker_id="beta")

    # When
    result = run("worker", "list", "--redis-url", redis_url)

    # Then
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[1]
    columns = [c.strip() for c in header.strip("│").split("│")]
    assert columns == ["Worker ID", "Status", "Hostname", "Tasks", "Failed", "Current Task",
                       "Concurrency", "Last Heartbeat"]  # fmt: skip
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()[3:-1]}
    assert set(rows) == {"alpha", "beta"}
    assert "running" in rows["alpha"] and " 3 " in rows["alpha"]
    assert HUMAN_TIME.search(rows["beta"])


def test_worker_list_json(redis_url: str, spawn_worker: Spawn) -> None:
    spawn_worker(redis_url, "--concurrency", "2", worker_id="alpha")

    result = run("worker", "list", "--redis-url", redis_url, "--json")

    [worker] = json.loads(result.stdout)
    assert worker["worker_id"] == "alpha"
    assert worker["alive"] is True
    assert worker["concurrency"] == 2
    assert worker["status"] == "running"
    assert worker["heartbeat_age"] < 10


def test_dead_workers_show_in_red_on_a_terminal(redis_url: str, r: redis.Redis) -> None:
    # Given a worker whose last heartbeat is two minutes old
    stale_heartbeat(r, "gone-1", age=120)

    # When the output goes to a terminal, and when it does not
    colored = run("worker", "list", "--redis-url", redis_url, color=True)
    plain = run("worker", "list", "--redis-url", redis_url)

    # Then
    row = next(line for line in colored.stdout.splitlines() if "gone-1" in line)
    assert "\x1b[31m" in row and "dead" in row
    assert "\x1b[" not in plain.stdout
    assert "dead" in plain.stdout
    assert (
        json.loads(run("worker", "list", "--redis-url", redis_url, "--json").stdout)[0]["alive"]
        is False
    )


def test_worker_list_with_no_workers(redis_url: str) -> None:
    result = run("worker", "list", "--redis-url", redis_url)
    assert result.exit_code == 0
    assert "No workers" in result.stdout
    assert json.loads(run("worker", "list", "--redis-url", redis_url, "--json").stdout) == []


# -- health ------------------------------------------------------------------------------


def test_health_exit_codes(redis_url: str, r: redis.Redis, spawn_worker: Spawn) -> None:
    spawn_worker(redis_url, worker_id="live")
    stale_heartbeat(r, "late", age=30)
    stale_heartbeat(r, "leaving", age=1, status="stopping")
    stale_heartbeat(r, "dead", age=90)

    healthy = run("health", "live", "--redis-url", redis_url)
    late = run("health", "late", "--redis-url", redis_url)
    leaving = run("health", "leaving", "--redis-url", redis_url)
    dead = run("health", "dead", "--redis-url", redis_url)
    unknown = run("health", "nobody", "--redis-url", redis_url)

    assert (healthy.exit_code, late.exit_code, leaving.exit_code) == (0, 1, 1)
    assert (dead.exit_code, unknown.exit_code) == (2, 2)
    assert healthy.stdout.startswith("healthy: running 0/1 tasks")
    assert late.stdout.startswith("degraded: heartbeat late")
    assert leaving.stdout.startswith("degraded: worker is stopping")
    assert unknown.stdout.startswith("unhealthy: no heartbeat")
    report = json.loads(run("health", "live", "--redis-url", redis_url, "--json").stdout)
    assert report["status"] == "healthy"
    assert report["metadata"]["concurrency"] == "1"


def test_health_is_unhealthy_when_redis_is_unreachable() -> None:
    result = run("health", "w1", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert result.exit_code == 2
    assert result.stdout.startswith("unhealthy: cannot read the heartbeat")


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

    # Then the run stops and the second cancel says there is nothing to do
    assert first.exit_code == 0, first.output
    assert f"Cancelled task {handle.task_id}; worker w1 stops its run" in first.stdout
    wait_for(lambda: r.hget("orbiter:workers:w1", "current_task_id") == "", timeout=10)
    assert handle.status().status == TaskStatus.CANCELLED  # type: ignore[union-attr]
    assert second.exit_code == 1
    assert "is already cancelled; nothing to cancel" in second.stderr
    missing = run("task", "cancel", "nope", "--redis-url", redis_url)
    assert missing.exit_code == 1 and "not found" in missing.stderr


def test_cancel_a_pending_task(redis_url: str, r: redis.Redis) -> None:
    handle = distributed(agent("echo"), "x", redis_url=redis_url)

    result = run("task", "cancel", handle.task_id, "--redis-url", redis_url)

    assert result.exit_code == 0
    assert "it was pending; it will not run" in result.stdout
    assert r.hget(f"orbiter:task:{handle.task_id}", "status") == "cancelled"


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


# -- queue stats -------------------------------------------------------------------------


def test_queue_stats(redis_url: str, producer: TaskProducer) -> None:
    # Given three tasks, one claimed by a consumer, one retry waiting out its backoff
    # and one dead letter
    for n in range(3):
        producer.submit(TaskPayload(task_id=f"t{n}", agent_config=agent("echo"), input="x"))
    consumer = TaskConsumer(redis_url, "consumer-1")
    claimed = consumer.claim(timeout=1)
    assert claimed is not None and consumer.begin(claimed)
    consumer.settle(claimed, Outcome.failed(RuntimeError("boom")))
    claimed = consumer.claim(timeout=1)
    assert claimed is not None
    consumer.dead_letter("0-1", "unreadable", {"payload": "{"})
    time.sleep(0.01)  # so the oldest pending entry has an age

    # When
    result = run("queue", "stats", "--redis-url", redis_url)
    stats = json.loads(run("queue", "stats", "--redis-url", redis_url, "--json").stdout)

    # Then
    assert result.exit_code == 0
    assert stats["queue"] == "orbiter:tasks"
    assert stats["length"] == 2  # the nacked entry left the stream for the delayed set
    assert stats["pending"] == 1
    assert stats["lag"] == 1
    assert stats["oldest_pending_age"] > 0
    assert stats["dead_letters"] == 1
    assert stats["delayed_retries"] == 1
    assert stats["consumers"] == 1
    for label in ("Stream length", "Pending", "Lag", "Oldest pending entry", "Dead letters",
                  "Delayed retries"):  # fmt: skip
        assert label in result.stdout


def test_queue_stats_of_an_empty_queue(redis_url: str) -> None:
    stats = json.loads(
        run("queue", "stats", "--redis-url", redis_url, "--queue", "nothing", "--json").stdout
    )
    assert stats == {"queue": "nothing", "length": 0, "pending": 0, "lag": 0,
                     "oldest_pending_age": None, "dead_letters": 0, "delayed_retries": 0,
                     "consumers": 0}  # fmt: skip


# -- errors, as an operator sees them ----------------------------------------------------


def cli_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": str(Path(CLI).parent) + ":/usr/bin:/bin", "HOME": "/tmp"}
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=60, env={**base, **(env or {})}
    )


@pytest.mark.parametrize(
    "args",
    [["worker", "list"], ["task", "list"], ["task", "status", "x"], ["queue", "stats"],
     ["start", "worker"], ["task", "watch", "x"]],
)  # fmt: skip
def test_no_url_is_a_usage_error_on_one_line(args: list[str]) -> None:
    done = cli_process(*args)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "Error: no Redis URL: pass --redis-url / redis_url=, or set ORBITER_REDIS_URL "
        "(or REDIS_URL)"
    ]


@pytest.mark.parametrize(
    "args",
    [["worker", "list"], ["task", "list"], ["task", "cancel", "x"], ["queue", "stats"],
     ["task", "submit", "--entrypoint", "a:b", "--input", "x"]],
)  # fmt: skip
def test_unreachable_redis_is_one_line(args: list[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    done = cli_process(*args, "--redis-url", url)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("Error: Redis unreachable after retrying for 5s")
    assert time.monotonic() - started < 30


def test_bad_flags_and_urls() -> None:
    unknown = cli_process("worker", "list", "--colour")
    bad_number = cli_process("start", "worker", "--concurrency", "zero")
    bad_scheme = cli_process("task", "list", "--redis-url", "http://user:hunter22@h/0")

    assert unknown.returncode == 2 and "No such option '--colour'" in unknown.stderr
    assert bad_number.returncode == 2 and "'zero' is not a valid integer" in bad_number.stderr
    assert bad_scheme.returncode == 2
    assert bad_scheme.stderr.startswith("Error: unsupported Redis URL 'http://user:***@h/0'")
    for done in (unknown, bad_number, bad_scheme):
        assert "Traceback" not in done.stderr


def test_temporal_host_makes_temporal_the_default_executor(redis_url: str) -> None:
    done = cli_process("start", "worker", "--redis-url", redis_url,
                       env={"TEMPORAL_HOST": "localhost:7233"})  # fmt: skip
    assert done.returncode == 2
    assert "the temporal executor is not available in this version" in done.stderr
    help_text = cli_process("start", "worker", "--help").stdout
    assert "temporal when $TEMPORAL_HOST is set" in " ".join(help_text.split())


# -- secrets -----------------------------------------------------------------------------


@pytest.fixture
def locked_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(extra_args=("--requirepass", "s3cr3t-pw")) as server:
        yield server


def test_no_password_reaches_any_output(locked_redis: EmbeddedRedis, spawn_worker: Spawn) -> None:
    good = f"redis://:s3cr3t-pw@127.0.0.1:{locked_redis.port}/0"
    wrong = f"redis://:wr0ng-pw@127.0.0.1:{locked_redis.port}/0"
    down = f"redis://:d0wn-pw@127.0.0.1:{free_port()}/0"
    worker = spawn_worker(good, worker_id="w1")
    task = distributed(agent("echo"), "x", redis_url=good)
    task.result(timeout=20)

    commands = [["worker", "list"], ["task", "list"], ["task", "status", task.task_id],
                ["task", "watch", task.task_id], ["queue", "stats"], ["health", "w1"],
                ["task", "submit", "--entrypoint", "a:b", "--input", "x"],
                ["task", "cancel", task.task_id]]  # fmt: skip
    # An unreachable Redis takes the 5 s retry deadline per command: two suffice there.
    runs = [(url, args) for url in (good, wrong) for args in commands]
    runs += [(down, ["worker", "list"]), (down, ["health", "w1"])]
    outputs = []
    for url, args in runs:
        done = cli_process(*args, "--redis-url", url)
        via_env = cli_process(*args, env={"ORBITER_REDIS_URL": url})
        outputs += [done.stdout, done.stderr, via_env.stdout, via_env.stderr]
    worker.send_signal(signal.SIGINT)
    worker.wait(timeout=20)
    outputs.append(log_of(worker))

    everything = "\n".join(outputs)
    assert "WRONGPASS" in everything or "invalid username-password" in everything
    assert "redis://:***@127.0.0.1" in everything  # the banner shows the masked URL
    for secret in ("s3cr3t-pw", "wr0ng-pw", "d0wn-pw"):
        assert secret not in everything


def test_help_explains_each_command() -> None:
    for args in (["--help"], ["worker", "list", "--help"], ["task", "submit", "--help"],
                 ["task", "watch", "--help"], ["queue", "stats", "--help"], ["health", "--help"],
                 ["demo", "--help"]):  # fmt: skip
        done = cli_process(*args)
        assert done.returncode == 0, done.stderr
        assert "Usage: orbiter-sync" in done.stdout
