"""What the benchmark prints: the machine header, the tables' cells, the summary."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import redis

Metrics = dict[str, float]
Format = Callable[[float], str]
LIBRARIES = ("orbiter-sync", "celery", "kombu", "rq", "dramatiq", "redis", "hiredis", "gevent")


def setup(celery_prefetch: int | None) -> str:
    prefetch = "left at 4" if celery_prefetch is None else f"{celery_prefetch}"
    return (
        "setup: every worker is a subprocess started per run; 8 slots = orbiter-sync "
        "--pool thread --concurrency 8, celery --pool threads --concurrency 8 "
        f"(task_acks_late, no result backend, prefetch multiplier {prefetch}), "
        "rq worker-pool -n 8 of SimpleWorkers (8 processes: RQ runs one job per process), "
        "dramatiq --processes 1 --threads 8; gevent = --pool gevent --concurrency 500 "
        "(orbiter-sync, celery), dramatiq-gevent --threads 500, none for rq. "
        "Medians, (min-max) over the rounds."
    )


def version(distribution: str) -> str:
    if distribution == "orbiter-sync":  # this checkout's, not what pip last recorded
        import orbiter_sync

        return orbiter_sync.__version__
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header(client: redis.Redis) -> str:
    server = client.info("server")
    libraries = ", ".join(f"{name} {version(name)}" for name in LIBRARIES)
    return (
        f"machine: {os.cpu_count()} CPUs, {cpu_model()}; Python {platform.python_version()}; "
        f"redis-server {server.get('redis_version', '?')}; {libraries}; "
        f"date {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    )


def fixed(digits: int) -> Format:
    return lambda value: f"{value:.{digits}f}"


def rate(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def share(value: float) -> str:
    return f"{value:.0%}"


def cell(values: Sequence[float], form: Format) -> str:
    """The median, with min-max when there are several rounds."""
    if not values:
        return "failed"
    middle = form(statistics.median(values))
    if form(min(values)) == form(max(values)):
        return middle
    return f"{middle} ({form(min(values))}-{form(max(values))})"


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks."""
    ordered = sorted(samples)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class Results:
    """Each run's metrics, by scenario and contestant label (a failed run adds nothing)."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], list[Metrics]] = {}

    def add(self, scenario: str, label: str, metrics: Metrics) -> None:
        self.runs.setdefault((scenario, label), []).append(metrics)

    def values(self, scenario: str, label: str, key: str) -> list[float]:
        return [m[key] for m in self.runs.get((scenario, label), []) if key in m]

    def median(self, scenario: str, label: str, key: str) -> float | None:
        values = self.values(scenario, label, key)
        return statistics.median(values) if values else None


def ratio(top: float | None, bottom: float | None) -> str:
    if top is None or bottom is None or bottom == 0:
        return "n/a"
    return f"{top / bottom:.2f}x"


def summary(
    results: Results, ours: str, dramatiq: str, celery: str, scale: Sequence[int]
) -> list[str]:
    """orbiter-sync's medians against Dramatiq's (and its p99 latency against Celery's)."""

    def versus(scenario: str, key: str, other: str = dramatiq) -> str:
        return ratio(results.median(scenario, ours, key), results.median(scenario, other, key))

    def own(scenario: str, key: str, form: Format) -> str:
        value = results.median(scenario, ours, key)
        return "n/a" if value is None else form(value)

    def theirs(scenario: str, key: str, form: Format) -> str:
        value = results.median(scenario, dramatiq, key)
        return "n/a" if value is None else form(value)

    return [
        "Summary: orbiter-sync against Dramatiq (medians; n/a where either did not run)",
        f"- throughput (a): {versus('a', 'tasks/s')} Dramatiq's tasks/s",
        f"- worker CPU per task (a): {versus('a', 'worker_cpu_ms')} Dramatiq's; "
        f"Redis CPU per task: {versus('a', 'redis_cpu_ms')}",
        f"- latency p99 (b): {versus('b', 'p99')} Dramatiq's, "
        f"{versus('b', 'p99', celery)} Celery's",
        f"- 200 ms I/O tasks, 8 threads (c): {own('c', 'share', share)} of ideal, "
        f"Dramatiq {theirs('c', 'share', share)}",
        f"- gevent, 500 slots, 1 s tasks (d): {own('d', 'share', share)} of ideal, "
        f"Dramatiq {theirs('d', 'share', share)}",
        "- scaling (e): "
        + ", ".join(
            f"{high}/{low} procs {own('e', f'x{high}/x{low}', fixed(2))} "
            f"(Dramatiq {theirs('e', f'x{high}/x{low}', fixed(2))})"
            for low, high in zip(scale, scale[1:], strict=False)
        ),
        f"- submit rate (f): {versus('f', 'one')} Dramatiq's one call at a time; "
        f"submit_many {own('f', 'bulk', rate)} tasks/s",
    ]


def metrics_cost(results: Results, off: str, on: str) -> list[str]:
    """What --metrics-port costs orbiter-sync: metrics on against off (medians)."""

    def versus(scenario: str, key: str) -> str:
        return ratio(results.median(scenario, on, key), results.median(scenario, off, key))

    return [
        "Metrics: orbiter-sync with --metrics-port against without (medians)",
        f"- throughput (a): {versus('a', 'tasks/s')} the tasks/s; worker CPU per task: "
        f"{versus('a', 'worker_cpu_ms')}",
    ]
