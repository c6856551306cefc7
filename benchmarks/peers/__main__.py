"""orbiter-sync side by side with Celery, RQ and Dramatiq on one private redis-server.

Run it from the repository root (``make bench`` installs the peers first):

    .venv/bin/python -m benchmarks.peers [--only orbiter-sync celery rq dramatiq]
        [--scenarios a b c d e f] [--rounds 3] [--tasks 2000] [--quick] [--bulk] [--metrics]

Scenarios: (a) no-op throughput with worker/Redis CPU per task and peak RSS,
(b) submit-to-start latency, (c) 200 ms I/O tasks on 8 threads, (d) gevent pool at
500 slots, (e) scaling over 1, 2 and 4 worker processes, (f) submit rate, one
call per task and in bulk, (g) orbiter-sync alone on a Redis Cluster of 1 and of 3
masters (benchmarks/cluster.py). Each prints a markdown
table of medians (min-max over the rounds); progress goes to stderr. ``--metrics``
runs orbiter-sync a second time with ``--metrics-port``, interleaved with the first,
and prints what metrics cost.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

from benchmarks.peers import contestants as peers
from benchmarks.peers import jobs
from benchmarks.peers.measure import Bench
from benchmarks.peers.report import Results, header, metrics_cost, setup, summary
from benchmarks.peers.scenarios import SCENARIOS, Settings
from orbiter_sync import TaskProducer
from orbiter_sync.embedded import EmbeddedRedis
from orbiter_sync.errors import EmbeddedRedisError

QUICK = {"rounds": 1, "tasks": 200, "latency_tasks": 20, "io_rounds": 1, "gevent_tasks": 500}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=peers.NAMES,
        default=list(peers.NAMES),
        metavar="NAME",
        help=f"contestants, of: {' '.join(peers.NAMES)}",
    )
    parser.add_argument(
        "--scenarios", nargs="+", choices=sorted(SCENARIOS), default=sorted(SCENARIOS)
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--tasks", type=int, help="no-op tasks in (a) and (e) (default 2000)")
    parser.add_argument("--latency-tasks", type=int, help="tasks in (b) (default 200)")
    parser.add_argument("--io-rounds", type=int, help="(c) runs 8 x this many (default 5)")
    parser.add_argument(
        "--gevent-tasks",
        type=int,
        help="tasks in (d) (default 3000: 6 s at the ideal rate, so the ramp-up is a small share)",
    )
    parser.add_argument(
        "--scale",
        type=int,
        nargs="+",
        default=[1, 2, 4],
        help="worker processes in (e) (default 1 2 4)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: small counts and 1 round (explicit counts win)",
    )
    parser.add_argument("--bulk", action="store_true",
                        help="submit in bulk where the client has a call for it (orbiter-sync "
                             "TaskProducer.submit_many, rq enqueue_many)")  # fmt: skip
    parser.add_argument("--metrics", action="store_true",
                        help="also run orbiter-sync with --metrics-port, to measure what "
                             "recording metrics costs")  # fmt: skip
    parser.add_argument(
        "--celery-prefetch",
        type=int,
        metavar="N",
        help="celery --prefetch-multiplier (default: Celery's own, 4; its "
        "optimizing guide suggests 64 or 128 for many short tasks)",
    )
    options = parser.parse_args(argv)
    defaults = {"rounds": 3, "tasks": 2000, "latency_tasks": 200, "io_rounds": 5,
                "gevent_tasks": 3000}  # fmt: skip
    for name, value in (QUICK if options.quick else defaults).items():
        if getattr(options, name) is None:
            setattr(options, name, value)
    return options


def available(
    bench: Bench, names: list[str], prefetch: int | None, metrics: bool = False
) -> list[peers.Contestant]:
    """The contestants that can run here, in the order asked; one line for each skipped.
    With ``metrics``, orbiter-sync with --metrics-port comes right after orbiter-sync."""
    chosen: list[peers.Contestant] = []
    for name in peers.NAMES:
        if name in names:
            contestant = peers.CLASSES[name](bench)
            reason = contestant.missing()
            if reason is None:
                chosen.append(contestant)
                if metrics and isinstance(contestant, peers.OrbiterSync):
                    chosen.append(peers.OrbiterSyncMetrics(bench))
                if isinstance(contestant, peers.Celery):
                    contestant.prefetch = prefetch
            else:
                print(f"skipped {name}: {reason}", flush=True)
    return chosen


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))  # clean up
    settings = Settings(
        rounds=options.rounds, tasks=options.tasks, latency_tasks=options.latency_tasks,
        io_rounds=options.io_rounds, gevent_tasks=options.gevent_tasks,
        scale=sorted(set(options.scale)), bulk=options.bulk,
    )  # fmt: skip
    try:
        server = EmbeddedRedis().start()
    except EmbeddedRedisError as error:
        print(f"cannot start a private redis-server: {error}", file=sys.stderr)
        return 1
    results = Results()
    try:
        with tempfile.TemporaryDirectory(prefix="peers-logs-") as logdir:
            bench = Bench(server, Path(logdir))
            os.environ[jobs.URL_ENV] = server.url  # the Celery and Dramatiq client modules
            os.environ["CELERY_BROKER_URL"] = server.url
            chosen = available(bench, options.only, options.celery_prefetch, options.metrics)
            print(header(bench.client), flush=True)
            print(setup(options.celery_prefetch), flush=True)
            print(f"contestants: {', '.join(c.label for c in chosen) or 'none'}; "
                  f"rounds {settings.rounds}", flush=True)  # fmt: skip
            if not chosen:
                return 0
            if settings.bulk and not hasattr(TaskProducer, "submit_many"):
                print("note: this orbiter-sync has no TaskProducer.submit_many: "
                      "--bulk submits its tasks one call each", flush=True)  # fmt: skip
            for name in options.scenarios:
                lineup = list(chosen)
                if name == "a" and any(c.name == "rq" for c in chosen):
                    index = next(i for i, c in enumerate(chosen) if c.name == "rq")
                    lineup.insert(index + 1, peers.RqSingle(bench))  # RQ's one-job-at-a-time worker
                print(f"\n{SCENARIOS[name](bench, lineup, settings, results)}", flush=True)
            print()
            labels = peers.OrbiterSync.label, peers.Dramatiq.label, peers.Celery.label
            lines = summary(results, *labels, settings.scale)
            if options.metrics:
                lines += metrics_cost(results, peers.OrbiterSync.label,
                                      peers.OrbiterSyncMetrics.label)  # fmt: skip
            print("\n".join(lines), flush=True)
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
