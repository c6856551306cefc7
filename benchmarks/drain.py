"""How fast orbiter-sync workers drain a queue that is already full: no client competes
for the CPU while they run, so this measures the workers alone (``benchmarks.peers``
measures each library with its client submitting at the same time).

For 1, 2 and 4 worker processes (8 thread slots each) on one private redis-server:
the workers start and wait, N no-op tasks are queued with ``submit_many`` (far
faster than they run), and the time from the first task started to the last one
settled is measured, with the workers' and Redis's CPU per task. Run it from the repository root:

    .venv/bin/python -m benchmarks.drain [--tasks 6000] [--processes 1 2 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from tabulate import tabulate

from benchmarks.peers.measure import cpu_seconds
from orbiter_sync import TaskPayload, TaskProducer, keys
from orbiter_sync.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("orbiter-sync"))
NOOP = {"entrypoint": "benchmarks.agents:noop"}


def start_workers(
    url: str, processes: int, env: dict[str, str] | None = None
) -> list[subprocess.Popen[bytes]]:
    """``processes`` workers of 8 thread slots on ``url``, quiet, running the benchmark
    agents; ``env`` is added to their environment."""
    command = [CLI, "start", "worker", "--redis-url", url, "--concurrency", "8",
               "--allow-import", "benchmarks.agents", "--log-level", "WARNING"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(processes)
    ]


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(30)


def drain(
    processes: int,
    tasks: int,
    agent: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    """Time ``processes`` workers draining ``tasks`` runs of ``agent`` (default: the no-op
    entrypoint); ``env`` is added to the workers' environment."""
    with EmbeddedRedis() as server:
        assert server.process is not None
        client = redis.Redis.from_url(server.url, decode_responses=True)
        producer = TaskProducer(server.url)
        workers = start_workers(server.url, processes, env)
        try:
            # started and idle first: their start-up is not what is measured
            while len(client.keys("orbiter:workers:*")) < processes:
                if any(w.poll() is not None for w in workers):
                    raise RuntimeError("a worker exited")
                time.sleep(0.05)
            worker_before = cpu_seconds(w.pid for w in workers)
            redis_before = cpu_seconds([server.process.pid])
            ids = producer.submit_many(
                [TaskPayload(agent_config=agent or NOOP, input="x") for _ in range(tasks)]
            )  # far faster than they are run: the queue fills at once
            while client.xlen(keys.DEFAULT_QUEUE) > 0:
                time.sleep(0.01)
            worker_cpu = cpu_seconds(w.pid for w in workers) - worker_before
            redis_cpu = cpu_seconds([server.process.pid]) - redis_before
            pipe = client.pipeline(transaction=False)
            for task_id in (ids[0], ids[-1]):
                pipe.hmget(f"orbiter:task:{task_id}", "started_at", "completed_at")
            (first_start, _), (_, last_end) = pipe.execute()
        finally:
            stop_workers(workers)
            client.close()
            producer.close()
    seconds = float(last_end) - float(first_start)
    return {
        "tasks/s": tasks / seconds,
        "worker CPU ms/task": 1000 * worker_cpu / tasks,
        "Redis CPU ms/task": 1000 * redis_cpu / tasks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=6000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in options.processes}
    for number in range(1, options.rounds + 1):
        for processes in options.processes:  # interleaved, round by round
            runs[processes].append(drain(processes, options.tasks))
            print(f"round {number} x{processes}: {runs[processes][-1]}", file=sys.stderr)
    rows = []
    for processes, results in runs.items():
        row: dict[str, object] = {"worker processes": processes}
        for name in results[0]:
            row[name] = round(statistics.median(r[name] for r in results), 3)
        rows.append(row)
    print(tabulate(rows, headers="keys", tablefmt="github"))
    base = statistics.median(r["tasks/s"] for r in runs[options.processes[0]])
    for processes, results in runs.items():
        ratio = statistics.median(r["tasks/s"] for r in results) / base
        print(f"x{processes}: {ratio:.2f}x the throughput of x{options.processes[0]}")


if __name__ == "__main__":
    main()
