"""The scenarios, each one markdown table; contestants interleaved A B C D, A B C D ...

Every run: FLUSHALL, start the worker process(es), wait until each consumes (the
library's own sign, see ``Contestant.ready``), run 8 warm-up no-ops per process and
wait for their INCRs, then time from the first submit until the done counter says
every job ran. The workers are stopped (SIGTERM, then SIGKILL to what is left) and
Redis emptied again after each run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from tabulate import tabulate

from benchmarks.peers import jobs
from benchmarks.peers.contestants import Contestant, Job, Pool
from benchmarks.peers.measure import READY_TIMEOUT, Bench, BenchError, WorkerGroup, cpu_seconds
from benchmarks.peers.measure import peak_rss_mib as rss
from benchmarks.peers.report import Format, Metrics, Results, cell, fixed, percentile, rate, share

THREADS = Pool("thread", 8)
GEVENT = Pool("gevent", 500)
IO_SECONDS = 0.2
GEVENT_SECONDS = 1.0
LATENCY_GAP = 0.02
WARMUP = 8
BULK = "bulk submit: orbiter-sync submit_many, rq enqueue_many, the others one call each"


@dataclass
class Settings:
    rounds: int
    tasks: int
    latency_tasks: int
    io_rounds: int
    gevent_tasks: int
    scale: list[int]
    bulk: bool


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def counter_timeout(tasks: int, ideal_seconds: float = 0.0) -> float:
    """Generous: 50 ms a task, plus five times the ideal duration, plus a minute."""
    return 60.0 + tasks * 0.05 + 5 * ideal_seconds


@contextmanager
def running(
    bench: Bench, contestant: Contestant, pool: Pool, processes: int = 1, bulk: bool = False
) -> Iterator[WorkerGroup]:
    """The contestant's workers, ready and warmed up; stopped and Redis emptied after."""
    bench.client.flushall()
    commands = [contestant.command(pool, index) for index in range(processes)]
    tag = f"{contestant.name}-{pool.kind}-{processes}-{time.monotonic_ns()}"
    group = WorkerGroup.start(bench, contestant.label, [c for c in commands if c], tag)
    try:
        group.wait("its workers to be ready", lambda: contestant.ready(pool, processes),
                   READY_TIMEOUT)  # fmt: skip
        warmups = WARMUP * processes
        submit_all(contestant, "noop", [0.0] * warmups, bulk)  # the same way as the run
        group.wait_done(bench, warmups, counter_timeout(warmups))
        yield group
    finally:
        group.stop()
        bench.client.flushall()


def submit_all(contestant: Contestant, job: Job, args: Sequence[float], bulk: bool) -> None:
    if bulk:
        contestant.submit_many(job, args)
    else:
        for arg in args:
            contestant.submit(job, arg)


def timed(
    bench: Bench, contestant: Contestant, pool: Pool, job: Job, args: Sequence[float],
    bulk: bool, processes: int = 1, ideal_seconds: float = 0.0,
) -> Metrics:  # fmt: skip
    """Submit ``args`` as jobs, time until all ran; rates, CPU per task and peak RSS."""
    with running(bench, contestant, pool, processes, bulk) as group:
        target = bench.done() + len(args)
        worker_before = cpu_seconds(group.pids())
        redis_before = cpu_seconds([bench.redis_pid])
        client_before = time.process_time()
        started = time.perf_counter()
        submit_all(contestant, job, args, bulk)
        group.wait_done(bench, target, counter_timeout(len(args), ideal_seconds))
        elapsed = time.perf_counter() - started
        pids = group.pids()
        per_task = 1000 / len(args)
        return {
            "tasks/s": len(args) / elapsed,
            "worker_cpu_ms": (cpu_seconds(pids) - worker_before) * per_task,
            "redis_cpu_ms": (cpu_seconds([bench.redis_pid]) - redis_before) * per_task,
            "client_cpu_ms": (time.process_time() - client_before) * per_task,
            "rss_mib": rss(pids),
            "procs": len(pids),
        }


def latency_run(bench: Bench, contestant: Contestant, count: int) -> Metrics:
    with running(bench, contestant, THREADS) as group:
        target = bench.done() + count
        started = time.monotonic()
        for index in range(count):
            contestant.submit("latency", time.time())
            time.sleep(max(0.0, started + (index + 1) * LATENCY_GAP - time.monotonic()))
        group.wait_done(bench, target, counter_timeout(count))
        samples = [float(value) * 1000 for value in bench.client.lrange(jobs.LATENCY, 0, -1)]
    return {f"p{p}": percentile(samples, p / 100) for p in (50, 95, 99)}


def attempt(
    scenario: str, contestant: Contestant, prefix: str, results: Results,
    run: Callable[[Contestant], Metrics | None], show: Callable[[Metrics], str],
) -> Metrics | None:  # fmt: skip
    """One run; its metrics are added to ``results`` (None: failed, or not applicable)."""
    try:
        metrics = run(contestant)
    except (BenchError, redis.RedisError, OSError) as error:  # a submit may fail too
        progress(f"{prefix} FAILED: {type(error).__name__}: {error}")
        return None
    if metrics is not None:
        results.add(scenario, contestant.label, metrics)
        progress(f"{prefix} {show(metrics)}")
    return metrics


def interleave(
    scenario: str, contestants: Sequence[Contestant], rounds: int, results: Results,
    run: Callable[[Contestant], Metrics | None], show: Callable[[Metrics], str],
) -> None:  # fmt: skip
    """Run A B C D, A B C D ... ``rounds`` times; a run returning None is not applicable."""
    for number in range(1, rounds + 1):
        for contestant in contestants:
            prefix = f"[{scenario}] round {number}/{rounds} {contestant.label}:"
            attempt(scenario, contestant, prefix, results, run, show)


def table(
    results: Results, scenario: str, contestants: Sequence[Contestant],
    columns: Sequence[tuple[str, str, Format]], absent: Callable[[Contestant], bool],
) -> str:  # fmt: skip
    rows = []
    for contestant in contestants:
        if absent(contestant):
            rows.append([contestant.label, *("n/a" for _ in columns)])
            continue
        rows.append([contestant.label, *(
            cell(results.values(scenario, contestant.label, key), form)
            for _, key, form in columns
        )])  # fmt: skip
    return tabulate(rows, headers=["contestant", *(title for title, _, _ in columns)],
                    tablefmt="github", disable_numparse=True)  # fmt: skip


def never(contestant: Contestant) -> bool:
    return False


def scenario_a(bench: Bench, contestants: Sequence[Contestant], s: Settings, r: Results) -> str:
    def run(c: Contestant) -> Metrics:
        return timed(bench, c, THREADS, "noop", [0.0] * s.tasks, s.bulk)

    interleave(
        "a",
        contestants,
        s.rounds,
        r,
        run,
        lambda m: f"{m['tasks/s']:.0f} tasks/s, worker {m['worker_cpu_ms']:.3f} ms/task",
    )
    columns = [("tasks/s", "tasks/s", rate), ("worker CPU ms/task", "worker_cpu_ms", fixed(3)),
               ("Redis CPU ms/task", "redis_cpu_ms", fixed(3)),
               ("client CPU ms/task", "client_cpu_ms", fixed(3)),
               ("worker peak RSS MiB (sum over procs)", "rss_mib", fixed(1)),
               ("worker procs", "procs", fixed(0))]  # fmt: skip
    title = (f"(a) throughput: {s.tasks} no-op tasks, 1 worker process x 8 slots "
             f"({BULK if s.bulk else 'one submit call per task'})")  # fmt: skip
    return f"### {title}\n\n{table(r, 'a', contestants, columns, never)}"


def scenario_b(bench: Bench, contestants: Sequence[Contestant], s: Settings, r: Results) -> str:
    interleave("b", contestants, s.rounds, r, lambda c: latency_run(bench, c, s.latency_tasks),
               lambda m: f"p50 {m['p50']:.2f} ms, p99 {m['p99']:.2f} ms")  # fmt: skip
    columns = [(f"p{p} ms", f"p{p}", fixed(2)) for p in (50, 95, 99)]
    title = (f"(b) submit-to-start latency: {s.latency_tasks} tasks, one every "
             f"{LATENCY_GAP * 1000:.0f} ms, to an idle worker (1 process x 8 slots)")  # fmt: skip
    return f"### {title}\n\n{table(r, 'b', contestants, columns, never)}"


def shared(
    bench: Bench, pool: Pool, seconds: float, count: int, bulk: bool
) -> Callable[[Contestant], Metrics | None]:
    ideal = pool.slots / seconds

    def run(c: Contestant) -> Metrics | None:
        if c.command(pool, 0) is None:
            return None
        m = timed(bench, c, pool, "sleep", [seconds] * count, bulk, ideal_seconds=count / ideal)
        return {"tasks/s": m["tasks/s"], "share": m["tasks/s"] / ideal, "rss_mib": m["rss_mib"]}

    return run


def show_share(m: Metrics) -> str:
    return f"{m['tasks/s']:.1f} tasks/s, {m['share']:.0%} of ideal"


def scenario_c(bench: Bench, contestants: Sequence[Contestant], s: Settings, r: Results) -> str:
    count = THREADS.slots * s.io_rounds
    interleave("c", contestants, s.rounds, r,
               shared(bench, THREADS, IO_SECONDS, count, s.bulk), show_share)  # fmt: skip
    ideal = THREADS.slots / IO_SECONDS
    columns = [("tasks/s", "tasks/s", rate), (f"of ideal ({ideal:.0f}/s)", "share", share)]
    title = (f"(c) I/O-bound: {count} tasks of {IO_SECONDS * 1000:.0f} ms (time.sleep), "
             f"1 worker process x {THREADS.slots} threads")  # fmt: skip
    return f"### {title}\n\n{table(r, 'c', contestants, columns, never)}"


def scenario_d(bench: Bench, contestants: Sequence[Contestant], s: Settings, r: Results) -> str:
    interleave(
        "d",
        contestants,
        s.rounds,
        r,
        shared(bench, GEVENT, GEVENT_SECONDS, s.gevent_tasks, s.bulk),
        show_share,
    )
    ideal = GEVENT.slots / GEVENT_SECONDS
    columns = [("tasks/s", "tasks/s", rate), (f"of ideal ({ideal:.0f}/s)", "share", share),
               ("worker peak RSS MiB (sum)", "rss_mib", fixed(1))]  # fmt: skip
    title = (
        f"(d) gevent pool: {s.gevent_tasks} tasks of {GEVENT_SECONDS:g} s "
        f"(time.sleep, monkey-patched), 1 worker process x {GEVENT.slots} greenlets"
    )
    return f"### {title}\n\n" + table(
        r, "d", contestants, columns, lambda c: c.command(GEVENT, 0) is None
    )


def show_rate(m: Metrics) -> str:
    return " ".join(f"{value:.0f} tasks/s" for value in m.values())


def scenario_e(bench: Bench, contestants: Sequence[Contestant], s: Settings, r: Results) -> str:
    pairs = list(zip(s.scale, s.scale[1:], strict=False))
    for number in range(1, s.rounds + 1):
        rates: dict[tuple[str, int], float] = {}  # this round's
        for processes in s.scale:
            key = f"x{processes}"

            def run(c: Contestant, processes: int = processes, key: str = key) -> Metrics:
                tasks = [0.0] * s.tasks
                return {key: timed(bench, c, THREADS, "noop", tasks, s.bulk, processes)["tasks/s"]}

            for c in contestants:
                prefix = f"[e] round {number}/{s.rounds} {c.label} x{processes}:"
                m = attempt("e", c, prefix, r, run, show_rate)
                if m is not None:
                    rates[(c.label, processes)] = m[key]
        for c in contestants:
            for low, high in pairs:
                if (c.label, low) in rates and (c.label, high) in rates:
                    ratio = rates[(c.label, high)] / rates[(c.label, low)]
                    r.add("e", c.label, {f"x{high}/x{low}": ratio})
    columns: list[tuple[str, str, Format]] = [
        (f"{n} proc{'s' if n > 1 else ''} tasks/s", f"x{n}", rate) for n in s.scale
    ]
    columns += [(f"{high}/{low}", f"x{high}/x{low}", fixed(2)) for low, high in pairs]
    title = (
        f"(e) scaling: {s.tasks} no-op tasks on "
        f"{', '.join(map(str, s.scale))} worker processes x {THREADS.slots} slots each"
    )
    return f"### {title}\n\n{table(r, 'e', contestants, columns, never)}"


def submit_rates(bench: Bench, contestant: Contestant, count: int) -> Metrics:
    """Submit ``count`` no-ops with no worker running, one call each and then in bulk."""
    metrics: Metrics = {}
    for key, bulk in (("one", False), ("bulk", True)):
        bench.client.flushall()
        started = time.perf_counter()
        submit_all(contestant, "noop", [0.0] * count, bulk)
        metrics[key] = count / (time.perf_counter() - started)
    bench.client.flushall()
    return metrics


def scenario_f(bench: Bench, contestants: Sequence[Contestant], s: Settings, r: Results) -> str:
    interleave("f", contestants, s.rounds, r, lambda c: submit_rates(bench, c, s.tasks),
               lambda m: f"{m['one']:.0f}/s one call each, {m['bulk']:.0f}/s in bulk")  # fmt: skip
    columns = [("one call each, tasks/s", "one", rate), ("bulk, tasks/s", "bulk", rate)]
    title = (f"(f) submit rate: {s.tasks} no-op tasks from one client, no worker running "
             f"({BULK})")  # fmt: skip
    return f"### {title}\n\n{table(r, 'f', contestants, columns, never)}"


def scenario_g(bench: Bench, contestants: Sequence[Contestant], s: Settings, r: Results) -> str:
    """orbiter-sync alone (no peer runs on a Redis Cluster): benchmarks/cluster.py."""
    if not any(c.name == "orbiter-sync" for c in contestants):
        return "### (g) Redis Cluster: skipped (orbiter-sync is not among the contestants)"
    from benchmarks import cluster

    return cluster.run([1, 3], CLUSTER_PROCESSES, s.tasks, s.rounds)


CLUSTER_PROCESSES = 2  # the fleet of (g), the same on 1 and on 3 masters

SCENARIOS = {
    "a": scenario_a, "b": scenario_b, "c": scenario_c, "d": scenario_d, "e": scenario_e,
    "f": scenario_f, "g": scenario_g,
}  # fmt: skip
