"""Every metric name orbiter-sync exports, written once.

Two families, never summed together:

- ``orbiter_distributed_*``: one process's own counts (a worker's ``/metrics`` with
  ``--metrics-port``, and a producing app's default registry for submissions), the
  worker guide's ``orbiter.distributed.*`` names in Prometheus form.
- ``orbiter_fleet_*``: the whole fleet, read from Redis on each scrape by
  ``orbiter-sync metrics serve`` (or ``FleetCollector`` in an app's registry).

Counters are named here without the ``_total`` suffix prometheus-client adds; the
``*_SERIES`` tuples list what a scrape shows, which the alert rules and the
dashboard may name and nothing else.
"""

from __future__ import annotations

# -- per process ---------------------------------------------------------------------
TASKS_SUBMITTED = "orbiter_distributed_tasks_submitted"  # counter {queue}
TASKS_COMPLETED = "orbiter_distributed_tasks_completed"  # counter {queue, agent}
TASKS_FAILED = "orbiter_distributed_tasks_failed"  # counter {queue, agent}
TASKS_CANCELLED = "orbiter_distributed_tasks_cancelled"  # counter {queue, agent}
TASKS_RETRIED = "orbiter_distributed_tasks_retried"  # counter {queue, agent}
DEAD_LETTERS = "orbiter_distributed_dead_letters"  # counter {queue}
RECLAIMS = "orbiter_distributed_reclaims"  # counter {queue}: entries taken over
EVENTS_PUBLISHED = "orbiter_distributed_events_published"  # counter
REDIS_ERRORS = "orbiter_distributed_redis_errors"  # counter {operation}
QUEUE_DEPTH = "orbiter_distributed_queue_depth"  # gauge {queue}
TASKS_IN_PROGRESS = "orbiter_distributed_tasks_in_progress"  # gauge
SLOTS_BUSY = "orbiter_distributed_slots_busy"  # gauge
SLOTS_TOTAL = "orbiter_distributed_slots_total"  # gauge
TASK_DURATION = "orbiter_distributed_task_duration_seconds"  # histogram {queue, agent}
TASK_WAIT_TIME = "orbiter_distributed_task_wait_time_seconds"  # histogram {queue}

# -- the fleet, from Redis -----------------------------------------------------------
FLEET_UP = "orbiter_fleet_up"  # gauge: 1 when Redis could be read on this scrape
FLEET_QUEUE_DEPTH = "orbiter_fleet_queue_depth"  # gauge {queue}: waiting + delayed
FLEET_QUEUE_LENGTH = "orbiter_fleet_queue_length"  # gauge {queue}: stream entries
FLEET_QUEUE_PENDING = "orbiter_fleet_queue_pending"  # gauge {queue}: claimed, unsettled
FLEET_QUEUE_LAG = "orbiter_fleet_queue_lag"  # gauge {queue}: never delivered
FLEET_OLDEST_PENDING_AGE = "orbiter_fleet_oldest_pending_age_seconds"  # gauge {queue}
FLEET_OLDEST_WAITING_AGE = "orbiter_fleet_oldest_waiting_age_seconds"  # gauge {queue}
FLEET_DEAD_LETTERS = "orbiter_fleet_dead_letters"  # gauge {queue}: in the stream now
FLEET_DELAYED = "orbiter_fleet_delayed_retries"  # gauge {queue}
FLEET_WORKERS = "orbiter_fleet_workers"  # gauge {state: alive | stopped | dead}
FLEET_SLOTS = "orbiter_fleet_slots"  # gauge {state: busy | total}, live workers
FLEET_TASKS_COMPLETED = "orbiter_fleet_tasks_completed"  # counter {queue}
FLEET_TASKS_FAILED = "orbiter_fleet_tasks_failed"  # counter {queue}
FLEET_TASKS_CANCELLED = "orbiter_fleet_tasks_cancelled"  # counter {queue}
FLEET_TASKS_RETRIED = "orbiter_fleet_tasks_retried"  # counter {queue}
FLEET_TASKS_DEAD_LETTERED = "orbiter_fleet_tasks_dead_lettered"  # counter {queue}

COUNTERS = (
    TASKS_SUBMITTED, TASKS_COMPLETED, TASKS_FAILED, TASKS_CANCELLED, TASKS_RETRIED,
    DEAD_LETTERS, RECLAIMS, EVENTS_PUBLISHED, REDIS_ERRORS, FLEET_TASKS_COMPLETED,
    FLEET_TASKS_FAILED, FLEET_TASKS_CANCELLED, FLEET_TASKS_RETRIED, FLEET_TASKS_DEAD_LETTERED,
)  # fmt: skip
HISTOGRAMS = (TASK_DURATION, TASK_WAIT_TIME)
GAUGES = (
    QUEUE_DEPTH, TASKS_IN_PROGRESS, SLOTS_BUSY, SLOTS_TOTAL, FLEET_UP, FLEET_QUEUE_DEPTH,
    FLEET_QUEUE_LENGTH, FLEET_QUEUE_PENDING, FLEET_QUEUE_LAG, FLEET_OLDEST_PENDING_AGE,
    FLEET_OLDEST_WAITING_AGE, FLEET_DEAD_LETTERS, FLEET_DELAYED, FLEET_WORKERS, FLEET_SLOTS,
)  # fmt: skip


def series(name: str) -> tuple[str, ...]:
    """The series names a scrape shows for metric ``name``."""
    if name in COUNTERS:
        return (f"{name}_total",)
    if name in HISTOGRAMS:
        return (f"{name}_bucket", f"{name}_sum", f"{name}_count")
    return (name,)


WORKER_SERIES = tuple(
    s for n in (*COUNTERS, *HISTOGRAMS, *GAUGES) if n.startswith("orbiter_distributed_")
    for s in series(n)
)  # fmt: skip
FLEET_SERIES = tuple(
    s for n in (*COUNTERS, *GAUGES) if n.startswith("orbiter_fleet_") for s in series(n)
)  # fmt: skip
ALL_SERIES = (*WORKER_SERIES, *FLEET_SERIES)

# the agent label takes at most this many distinct values per process; the rest are
# counted under OTHER_AGENT (an agent's name comes from the payload)
MAX_AGENT_LABELS = 50
OTHER_AGENT = "other"
