"""``orbiter-sync worker list`` and ``orbiter-sync health``: the fleet from its heartbeats."""

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
    """One ``worker list`` row; a dead worker (no heartbeat for 60 s) is red on a terminal."""
    status = worker.status if worker.alive else "dead"
    row: list[object] = [
        worker.worker_id,
        colored_status(status) if status != "running" else status,
        worker.hostname or "-",
        worker.tasks_processed,
        worker.tasks_failed,
        worker.current_task_id or "-",
        worker.concurrency,
        when(worker.last_heartbeat),
    ]
    if not worker.alive:
        row = [click.style(str(cell), fg="red") for cell in row]
    return row


def worker_dict(worker: WorkerHealth) -> dict[str, object]:
    data = {name: getattr(worker, name) for name in worker.__dataclass_fields__}
    data["running_task_ids"] = list(worker.running_task_ids)
    data["heartbeat_age"] = round(worker.heartbeat_age, 3)
    return data


def fleet(target: Target) -> list[WorkerHealth]:
    return get_worker_fleet_status(target.url, client=target.client, retry=CLI_RETRY)


@worker_group.command("list")
@redis_option
@json_option
def list_workers(redis_url: str | None, as_json: bool) -> None:
    """List every worker with a heartbeat; dead ones (no beat for 60 s) show in red."""
    target = Target(redis_url)
    try:
        workers = fleet(target)
    finally:
        target.close()
    if as_json:
        echo_json([worker_dict(w) for w in workers])
    elif not workers:
        click.echo("No workers: no heartbeat under orbiter:workers:*.")
    else:
        echo_table((worker_row(w) for w in workers), WORKER_COLUMNS)


@click.command("health")
@click.argument("worker_id")
@redis_option
@json_option
def health(worker_id: str, redis_url: str | None, as_json: bool) -> None:
    """Check one worker: exit 0 healthy, 1 degraded, 2 unhealthy.

    Degraded: the heartbeat is late (over 20 s) or the worker is stopping.
    Unhealthy: no heartbeat for 60 s, no heartbeat key, or Redis unreachable.

    For container health checks, e.g. in docker-compose:
    test: ["CMD", "orbiter-sync", "health", "worker-1"]
    """
    target = Target(redis_url)
    try:
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
