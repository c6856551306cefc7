"""What a killed master's asynchronous replication loses of acknowledged submits, with
and without ``WAIT`` (issue 16).

A cluster of three masters with a replica each, queues in three shards. Submitter
threads queue tasks one call each, as a web process does, while the master of shard
0 is killed (SIGKILL) and its replica takes over. A submit counts as acknowledged when
the call returned (each is made once: what fails is not acknowledged, and a caller would
retry it); once the cluster is ok again, every acknowledged task is looked up (its
hash, and the entries of the shards' streams). Each call is the submit script that
``TaskProducer.submit`` runs, sent to the master of the task's shard; with ``WAIT``,
it is followed on the same connection by ``WAIT 1 100`` (the acknowledgement then
means a replica has the write, unless WAIT timed out, which is counted). Run it from
the repository root:

    .venv/bin/python -m benchmarks.cluster_loss [--rounds 5] [--threads 4] [--seconds 3]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import threading
import time
from typing import Any

from tabulate import tabulate

from orbiter_sync import TaskPayload, TaskProducer
from orbiter_sync.connection import DEFAULT_RETRY, connect
from orbiter_sync.embedded_cluster import EmbeddedCluster
from orbiter_sync.layout import KeyLayout

LAYOUT = KeyLayout(cluster=True, shards=3)
NOOP = {"entrypoint": "benchmarks.agents:noop"}
WAIT_MS = 100


def submit_once(producer: TaskProducer, client: Any, payload: TaskPayload, wait: bool) -> int:
    """Submit ``payload`` with the submit script, once, over a connection of the master of
    its shard; with ``wait``, then ``WAIT 1`` on that connection. The replicas that have
    the write (-1 without ``wait``; 0: WAIT timed out)."""
    keys, args = producer._submit_call(payload)
    node = client.get_node_from_key(keys[0]).redis_connection  # that master's own client
    pipe = node.pipeline(transaction=False)
    pipe.evalsha(producer._submit.sha, len(keys), *keys, *args)
    if wait:
        pipe.execute_command("WAIT", 1, WAIT_MS)
    replies = pipe.execute()
    return int(replies[1]) if wait else -1


def one_round(threads: int, seconds: float, wait: bool, stall: float) -> dict[str, float]:
    """One kill of shard 0's master under ``threads`` submitters; with ``stall``, its
    replica is stopped (SIGSTOP) that long before the kill, so replication lags."""
    with EmbeddedCluster(masters=3, replicas_per_master=1) as cluster:
        url = cluster.startup_url
        client = connect(url)
        client.set("orbiter:queue-shards", 3)
        producer = TaskProducer(url)
        producer.submit(TaskPayload(agent_config=NOOP, input="warm-up"))  # loads the script
        acknowledged: list[tuple[str, int]] = []  # task id, replicas that had it (-1: not asked)
        stop = threading.Event()

        def submitter() -> None:
            while not stop.is_set():
                payload = TaskPayload(agent_config=NOOP, input="x")
                try:  # once, no retry: a failed call is not acknowledged (a caller retries it)
                    replicas = submit_once(producer, client, payload, wait)
                except Exception:  # noqa: BLE001 - not acknowledged
                    continue
                acknowledged.append((payload.task_id, replicas))

        workers = [threading.Thread(target=submitter) for _ in range(threads)]
        for worker in workers:
            worker.start()
        time.sleep(seconds / 2)
        master = cluster.master_of(LAYOUT.stream("orbiter:tasks", 0))
        (replica,) = cluster.replicas(of=master)
        assert replica.process is not None
        if stall:
            replica.process.send_signal(signal.SIGSTOP)
            time.sleep(stall)
        killed_at = len(acknowledged)
        cluster.kill(master)
        replica.process.send_signal(signal.SIGCONT)
        time.sleep(seconds / 2)
        stop.set()
        for worker in workers:
            worker.join()
        cluster.wait_ok(timeout=30)

        def read() -> tuple[list[Any], int]:
            pipe = client.pipeline(transaction=False)
            for task_id, _ in acknowledged:
                pipe.exists(LAYOUT.task_hash(task_id))
            entries = sum(int(client.xlen(LAYOUT.stream("orbiter:tasks", s))) for s in range(3))
            return pipe.execute(), entries

        exists, streams = DEFAULT_RETRY.call(read)  # the client learns the new topology
        client.close()
        producer.close()
    lost = [replicas for (_, replicas), found in zip(acknowledged, exists, strict=True)
            if not found]  # fmt: skip
    return {
        "acknowledged": len(acknowledged),
        "lost": len(lost),
        "lost that WAIT said a replica had": sum(1 for replicas in lost if replicas > 0),
        "WAIT timed out": sum(1 for _, replicas in acknowledged if replicas == 0),
        "stream entries minus acknowledged": streams - 1 - len(acknowledged),
        "submits/s": killed_at / (seconds / 2 + stall),  # before the kill
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--stall", type=float, default=0.0, help="seconds the replica is stopped before the kill"
    )
    options = parser.parse_args()
    rows = []
    for wait in (False, True):
        runs = []
        for number in range(1, options.rounds + 1):
            runs.append(one_round(options.threads, options.seconds, wait, options.stall))
            print(f"round {number}, wait={wait}: {runs[-1]}", file=sys.stderr, flush=True)
        row: dict[str, object] = {"submit": f"WAIT 1 {WAIT_MS}" if wait else "plain"}
        for name in runs[0]:
            values = [r[name] for r in runs]
            row[f"{name} (total)" if name != "submits/s" else "submits/s (median)"] = (
                round(statistics.median(values)) if name == "submits/s" else sum(values)
            )
        rows.append(row)
    stalled = f", its replica stopped {options.stall:g} s before" if options.stall else ""
    print(f"### A master killed under {options.threads} submitting threads{stalled}, "
          f"{options.rounds} rounds each")  # fmt: skip
    print()
    print(tabulate(rows, headers="keys", tablefmt="github"))


if __name__ == "__main__":
    main()
