"""Thread pool against gevent pool on I/O-bound tasks (200 ms each), side by side.

For each concurrency (8, 32, 128) and each pool, one worker process runs
ROUNDS x concurrency tasks that each sleep 200 ms. Printed per run: tasks/s,
the ideal (concurrency / 0.2 s), the ratio between them, and the worker's peak
RSS (VmHWM). Run it from the repository root:

    .venv/bin/python -m benchmarks.pools [--rounds 5] [--concurrency 8 32 128]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import redis
from tabulate import tabulate

from benchmarks.agents import IO_SECONDS
from benchmarks.peers.measure import peak_rss_mib
from orbiter_sync import TaskPayload, TaskProducer
from orbiter_sync.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("orbiter-sync"))


def run_once(pool: str, concurrency: int, rounds: int) -> dict[str, object]:
    with EmbeddedRedis() as server:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        worker = subprocess.Popen(
            [CLI, "start", "worker", "--redis-url", server.url, "--pool", pool,
             "--concurrency", str(concurrency), "--allow-import", "benchmarks.agents",
             "--worker-id", "bench", "--log-level", "WARNING"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            while not client.exists("orbiter:workers:bench"):
                if worker.poll() is not None:
                    raise RuntimeError(f"{pool} worker exited with {worker.returncode}")
                time.sleep(0.05)
            total = concurrency * rounds
            producer = TaskProducer(server.url)
            payloads = [
                TaskPayload(agent_config={"entrypoint": "benchmarks.agents:io_wait"}, input="x")
                for _ in range(total)
            ]
            started = time.perf_counter()
            for payload in payloads:
                producer.submit(payload)
            keys = [f"orbiter:task:{p.task_id}" for p in payloads]
            while True:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.hget(key, "status")
                if all(status == "completed" for status in pipe.execute()):
                    break
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
            rss = peak_rss_mib([worker.pid])
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            client.close()
    ideal = concurrency / IO_SECONDS
    rate = total / elapsed
    return {"pool": pool, "concurrency": concurrency, "tasks": total,
            "seconds": round(elapsed, 2), "tasks/s": round(rate, 1), "ideal/s": round(ideal, 1),
            "of ideal": f"{rate / ideal:.0%}", "peak RSS MiB": round(rss, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 128])
    options = parser.parse_args()
    rows = []
    for concurrency in options.concurrency:
        for pool in ("thread", "gevent"):
            rows.append(run_once(pool, concurrency, options.rounds))
            print(rows[-1], flush=True)
    print()
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print()
    for concurrency in options.concurrency:
        thread, gevent = (r for r in rows if r["concurrency"] == concurrency)
        speed = float(gevent["tasks/s"]) / float(thread["tasks/s"])  # type: ignore[arg-type]
        memory = float(gevent["peak RSS MiB"]) / float(thread["peak RSS MiB"])  # type: ignore[arg-type]
        print(f"concurrency {concurrency}: gevent/thread throughput {speed:.2f}x, "
              f"peak RSS {memory:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
