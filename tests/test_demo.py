"""``orbiter-sync demo`` (what ``make demo`` runs): a fleet on a private Redis, cleaned up after."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from helpers import CLI, ROOT

from orbiter_sync.cli.demo import DEMO_TASKS


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_streams_runs_through_two_workers_and_cleans_up() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORBITER_", "TEMPORAL_"))}
    done = subprocess.run(
        [CLI, "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # the fleet it started
    [redis_pid] = map(int, re.findall(r"^redis-server pid (\d+)", out, re.M))
    workers = re.findall(r"^worker (demo-worker-\d) pid (\d+), 2 slots$", out, re.M)
    assert [w for w, _ in workers] == ["demo-worker-1", "demo-worker-2"]
    # every task's events, live: text, a tool call and its result, then completed
    task_lines = [line for line in out.splitlines() if re.match(r"^\w+ [0-9a-f]{8} ", line)]
    labels = {" ".join(line.split()[:2]) for line in task_lines}
    assert len(labels) == len(DEMO_TASKS)
    for label in labels:
        kinds = [line.split()[2] for line in task_lines if line.startswith(label + " ")]
        assert kinds[-1] == "status" and kinds[0] == "status"
        assert "text" in kinds
    assert sum("tool_call" in line for line in task_lines) == 4
    # the LLM agents ran on pydantic-ai against the offline model server: the tools the
    # model called, and the two-agent workflow swarm
    assert re.search(r"^offline model server on http://127\.0\.0\.1:\d+/v1$", out, re.M)
    assert "add -> 49.5" in out and "numbers add up to 49.5" in out
    assert "Workflow executing agent 'researcher'" in out
    assert "Workflow executing agent 'writer'" in out
    assert out.count(" status      completed") == len(DEMO_TASKS)
    # then both tables
    assert "│ Worker ID" in out and "│ Task ID" in out
    assert out.count("│ completed ") == len(DEMO_TASKS)
    assert re.search(r"│ demo-worker-1 \│ running", out)
    # and nothing left running
    assert "stopped 2 workers" in done.stderr and "stopped redis-server" in done.stderr
    for pid in [redis_pid, *(int(p) for _, p in workers)]:
        assert not pid_alive(pid), pid


def test_demo_on_a_real_model_needs_its_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    done = subprocess.run(
        [CLI, "demo", "--model", "openai:gpt-4o-mini"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--model openai:... needs OPENAI_API_KEY set" in done.stderr


def test_demo_without_redis_server_says_how_to_install_it(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # no redis-server on this PATH
    done = subprocess.run(
        [CLI, "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 1
    assert done.stderr.splitlines()[0].startswith("Error: redis-server was not found on PATH")
    assert "apt-get install redis-server" in done.stderr
    assert "Traceback" not in done.stderr
