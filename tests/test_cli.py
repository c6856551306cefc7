"""``orbiter-sync`` commands against real Redis and real workers.

Most tests go through click's CliRunner (in process, same code path as the
console script); the error-path tests run the installed script in a subprocess
to see exactly what an operator sees on stderr.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cli_support import HUMAN_TIME, agent, run
from helpers import CLI, Spawn, log_of, wait_for

from orbiter_sync import TaskPayload, distributed
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.embedded import EmbeddedRedis, free_port
from orbiter_sync.outcome import Outcome
from orbiter_sync.producer import TaskProducer

pytestmark = pytest.mark.usefixtures("no_redis_env")


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
    assert report["metadata"]["concurrency"] == 1  # a number, as in worker list --json


def test_health_is_unhealthy_when_redis_is_unreachable() -> None:
    result = run("health", "w1", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert result.exit_code == 2
    assert result.stdout.startswith("unhealthy: cannot read the heartbeat")


# -- queue stats -------------------------------------------------------------------------


def test_queue_stats(redis_url: str, producer: TaskProducer, r: redis.Redis) -> None:
    # Given three tasks, one claimed by a consumer, one retry waiting out its backoff
    # and one dead letter
    producer.submit(TaskPayload(task_id="t0", agent_config=agent("echo"), input="x"))
    r.xadd("orbiter:tasks", {"payload": "{unreadable"})
    for n in (1, 2):
        producer.submit(TaskPayload(task_id=f"t{n}", agent_config=agent("echo"), input="x"))
    consumer = TaskConsumer(redis_url, "consumer-1")
    claimed = consumer.claim(timeout=1)
    assert claimed is not None and consumer.begin(claimed)
    consumer.settle(claimed, Outcome.failed(RuntimeError("boom")))
    claimed = consumer.claim(timeout=1)  # dead-letters the unreadable entry on the way
    assert claimed is not None and claimed.task_id == "t1"
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
                  "Delayed (retries, delayed runs)"):  # fmt: skip
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
    done = cli_process(
        "start", "worker", "--redis-url", redis_url, env={"TEMPORAL_HOST": "127.0.0.1:9"}
    )  # fmt: skip (nothing listens)
    assert done.returncode == 2
    assert "executor:    temporal" in done.stderr  # chosen by TEMPORAL_HOST
    assert "Error: cannot reach the Temporal server at 127.0.0.1:9" in done.stderr
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


def test_worker_logs_carry_no_piece_of_a_misread_password(tmp_path: Path) -> None:
    # Given a URL whose password holds an unencoded @ and /: redis-py reads the part
    # after the @ as the host, and its connection errors name that "host"
    url = f"redis://:pw@x1y2z3/q@127.0.0.1:{free_port()}/0"
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = subprocess.Popen([CLI, "start", "worker", "--redis-url", url],
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: "Redis call failed" in log_path.read_text(), timeout=20)
    finally:
        worker.kill()
        worker.wait()

    # Then no log line holds any piece of it
    text = log_path.read_text()
    assert "x1y2z3" not in text and "pw@" not in text, text[-2000:]
