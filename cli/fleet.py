"""``orbiter-sync worker list`` and ``orbiter-sync health``: the fleet from its heartbeats
and from orbiter-sync's worker registry (see ``orbiter_sync.health``)."""

from __future__ import annotations

import sys

import click

from orbiter_sync.errors import RedisUnavailableError
from orbiter_sync.health import (
    HealthCheckResult,
    WorkerHealth,
    WorkerHealthCheck,
    get_worker_fleet_status,
)

from .common import (
    CLI_BUDGET,
    CLI_RETRY,
    Target,
    colored_status,
    echo_json,
    echo_table,
    json_option,
    redis_option,
    when,
)

WORKER_COLUMNS = (
    "Worker ID",
    "Status",
    "Hostname",
    "Tasks",
    "Failed",
    "Current Task",
    "Concurrency",
    "Last Heartbeat",
)
HEALTH_EXIT_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}


@click.group("worker")
def worker_group() -> None:
    """Look at the worker fleet."""


def worker_row(worker: WorkerHealth) -> list[object]:
    """One ``worker list`` row; a dead worker (its heartbeat key expired, or no beat for
    60 s) is red on a terminal, a stopped one plain."""
    row: list[object] = [
        worker.worker_id,
        colored_status(worker.status) if worker.status != "running" else worker.status,
        worker.hostname or "-",
        worker.tasks_processed,
        worker.tasks_failed,
        worker.current_task_id or "-",
        worker.concurrency,
        when(worker.last_heartbeat),
    ]
    if worker.status == "dead":
        row = [click.style(str(cell), fg="red") for cell in row]
    return row


def worker_dict(worker: WorkerHealth) -> dict[str, object]:
    data = {name: getattr(worker, name) for name in worker.__dataclass_fields__}
    data["running_task_ids"] = list(worker.running_task_ids)
    age = worker.heartbeat_age
    data["heartbeat_age"] = None if age is None else round(age, 3)
    return data


def fleet(target: Target) -> list[WorkerHealth]:
    return get_worker_fleet_status(target.url, client=target.client, retry=CLI_RETRY)


@worker_group.command("list")
@redis_option
@json_option
def list_workers(redis_url: str | None, as_json: bool) -> None:
    """List every worker seen in the last day; dead ones show in red.

    Live: its heartbeat key exists (and beat within 60 s). Dead: its key expired, or
    it has not beaten for 60 s; it keeps its last fields. Stopped: it stopped cleanly.
    Async orbiter-distributed workers show while their heartbeat key lives.
    """
    target = Target(redis_url)
    try:
        workers = fleet(target)
    finally:
        target.close()
    if as_json:
        echo_json([worker_dict(w) for w in workers])
    elif not workers:
        click.echo("No workers: no heartbeat key and nobody in the registry for a day.")
    else:
        echo_table((worker_row(w) for w in workers), WORKER_COLUMNS)


@click.command("health")
@click.argument("worker_id")
@redis_option
@json_option
def health(worker_id: str, redis_url: str | None, as_json: bool) -> None:
    """Check one worker: exit 0 healthy, 1 degraded, 2 unhealthy.

    Degraded: the heartbeat is late (over 20 s) or the worker is stopping.
    Unhealthy: no heartbeat for 60 s, no heartbeat key (the worker stopped, died or is
    unknown; the message says which), or Redis unreachable.

    For container health checks, e.g. in docker-compose:
    test: ["CMD", "orbiter-sync", "health", "worker-1"]
    """
    target = Target(redis_url)
    try:
        with CLI_BUDGET.scope():  # the check connects by itself: give it the CLI's timeouts
            result = WorkerHealthCheck(target.url, worker_id, retry=CLI_RETRY).check()
    except RedisUnavailableError as exc:
        # Nothing can vouch for the worker: unhealthy, not an internal error.
        result = HealthCheckResult("unhealthy", f"cannot read the heartbeat: {exc}")
    if as_json:
        echo_json({"worker_id": worker_id, "status": result.status, "message": result.message,
                   "metadata": result.metadata})  # fmt: skip
    else:
        click.echo(f"{colored_status(result.status)}: {result.message}")
    sys.exit(HEALTH_EXIT_CODES[result.status])
