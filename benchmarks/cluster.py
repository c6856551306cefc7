"""Throughput of one worker fleet on a Redis Cluster of 1 and of 3 masters (issue 16).

The same fleet (``--processes`` worker processes of 8 thread slots) drains N no-op tasks
queued with ``submit_many`` on a private cluster of one master (one shard) and of three
masters (three shards, one per master), rounds interleaved. Reported per size: tasks/s
(first start to last settle, from the task hashes), the workers' CPU per task and their
share of the machine's cores, and each master's CPU share of the wall time (the busiest
one is what a single Redis saturates first). Run it from the repository root:

    .venv/bin/python -m benchmarks.cluster [--tasks 6000] [--processes 4] [--rounds 3]
        [--masters 1 3]

``python -m benchmarks.peers --scenarios g`` runs it as the peers benchmark's cluster
scenario (orbiter-sync only: no peer runs on a Redis Cluster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from tabulate import tabulate

from benchmarks.drain import start_workers, stop_workers
from benchmarks.peers.measure import cpu_seconds
from orbiter_sync import TaskPayload, TaskProducer
from orbiter_sync.connection import connect
from orbiter_sync.embedded_cluster import EmbeddedCluster
from orbiter_sync.layout import KeyLayout
from orbiter_sync.queue import QueueSettings

NOOP = {"entrypoint": "benchmarks.agents:noop"}
QUEUE = "orbiter:tasks"
CORES = os.cpu_count() or 1


def drain(masters: int, processes: int, tasks: int) -> dict[str, float]:
    """Time ``processes`` workers draining ``tasks`` no-ops on a cluster of ``masters``
    masters, its queue in as many shards."""
    layout = KeyLayout(cluster=True, shards=masters)
    with EmbeddedCluster(masters=masters) as cluster:
        url = cluster.startup_url
        client = connect(url)
        producer = TaskProducer(url, QueueSettings(layout=layout))  # records the shards
        workers = start_workers(url, processes, {"ORBITER_QUEUE_SHARDS": str(masters)})
        try:
            prefix = layout.worker_prefix
            while sum(1 for _ in client.scan_iter(match=f"{prefix}*")) < processes:
                if any(w.poll() is not None for w in workers):
                    raise RuntimeError("a worker exited")
                time.sleep(0.05)
            nodes = [node.process.pid for node in cluster.masters() if node.process]
            worker_before = cpu_seconds(w.pid for w in workers)
            node_before = [cpu_seconds([pid]) for pid in nodes]
            wall = time.monotonic()
            ids = producer.submit_many([TaskPayload(agent_config=NOOP, input="x")
                                        for _ in range(tasks)])  # fmt: skip
            streams = [layout.stream(QUEUE, shard) for shard in range(masters)]
            while any(client.xlen(stream) for stream in streams):
                time.sleep(0.01)
            wall = time.monotonic() - wall
            worker_cpu = cpu_seconds(w.pid for w in workers) - worker_before
            node_cpu = [cpu_seconds([pid]) - b for pid, b in zip(nodes, node_before, strict=True)]
            pipe = client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hmget(layout.task_hash(task_id), "started_at", "completed_at")
            times: Any = pipe.execute()
        finally:
            stop_workers(workers)
            client.close()
            producer.close()
    seconds = max(float(end) for _, end in times) - min(float(start) for start, _ in times)
    return {
        "tasks/s": tasks / seconds,
        "worker CPU ms/task": 1000 * worker_cpu / tasks,
        "workers' share of the cores": worker_cpu / wall / CORES,
        "Redis CPU ms/task (all masters)": 1000 * sum(node_cpu) / tasks,
        "busiest master's CPU share": max(node_cpu) / wall,
    }


def run(masters: list[int], processes: int, tasks: int, rounds: int) -> str:
    """The markdown table and ratio lines of ``rounds`` interleaved rounds."""
    runs: dict[int, list[dict[str, float]]] = {m: [] for m in masters}
    for number in range(1, rounds + 1):
        for size in masters:
            runs[size].append(drain(size, processes, tasks))
            shown = {k: round(v, 3) for k, v in runs[size][-1].items()}
            print(f"round {number}, {size} master(s): {shown}", file=sys.stderr, flush=True)
    rows = []
    for size, results in runs.items():
        row: dict[str, object] = {"masters (= shards)": size}
        for name in results[0]:
            values = [r[name] for r in results]
            row[name] = f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"
        rows.append(row)
    lines = [
        f"### (g) Redis Cluster: {tasks} no-op tasks, {processes} worker processes x 8 "
        f"threads, {CORES} cores; median (min-max) of {rounds} rounds",
        "",
        tabulate(rows, headers="keys", tablefmt="github"),
        "",
    ]
    base = statistics.median(r["tasks/s"] for r in runs[masters[0]])
    for size, results in runs.items():
        ratio = statistics.median(r["tasks/s"] for r in results) / base
        lines.append(f"{size} master(s): {ratio:.2f}x the throughput of {masters[0]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tasks", type=int, default=6000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--masters", type=int, nargs="+", default=[1, 3])
    options = parser.parse_args()
    print(run(options.masters, options.processes, options.tasks, options.rounds))


if __name__ == "__main__":
    main()
