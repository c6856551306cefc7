"""``orbiter-sync worker list`` and ``orbiter-sync health``: the fleet from its heartbeats
and from orbiter-sync's worker registry (see ``orbiter_sync.health``).

``health`` checks one worker named on the command line or in a file (``--id-file``,
which ``start worker --id-file`` writes), or every live worker of this host
(``--this-host``): exit 0 healthy, 1 degraded, 2 unhealthy. JSON output carries
heartbeat numbers as numbers and times as float unix seconds, as ``worker list`` does.
"""

from __future__ import annotations

import math
import socket
import sys
from pathlib import Path
from typing import Any

import click

from orbiter_sync.errors import RedisUnavailableError
from orbiter_sync.health import (
    HealthCheckResult,
    WorkerHealth,
    WorkerHealthCheck,
    get_worker_fleet_status,
)
from orbiter_sync.shards import workers_layout

from .common import (
    CLI_BUDGET,
    CLI_RETRY,
    ConfigError,
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


# Heartbeat fields of ours that WorkerHealth keeps in ``extra`` (as text) but are counts.
EXTRA_COUNTS = ("slots_down", "slot_restarts")
MAX_COUNT = 2**53


def count_of(text: object) -> int:
    """A count from heartbeat text, as ``WorkerHealth`` decodes its own: junk is 0."""
    try:
        number = float(str(text)[:64])
    except ValueError:
        return 0
    return int(min(max(number, 0.0), MAX_COUNT)) if math.isfinite(number) else 0


def worker_dict(worker: WorkerHealth) -> dict[str, object]:
    data = {name: getattr(worker, name) for name in worker.__dataclass_fields__}
    data["running_task_ids"] = list(worker.running_task_ids)
    data["extra"] = {
        name: count_of(value) if name in EXTRA_COUNTS else value
        for name, value in worker.extra.items()
    }
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


def typed_metadata(worker_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """A health check's metadata (the heartbeat's fields as text) with its counts as
    ints and its times as floats, decoded as ``worker list`` decodes them."""
    decoded = WorkerHealth.from_hash(
        worker_id, {k: v for k, v in metadata.items() if isinstance(v, str)}
    )
    typed = dict(metadata)
    for name in ("tasks_processed", "tasks_failed", "concurrency", "started_at",
                 "last_heartbeat"):  # fmt: skip
        if name in typed:
            typed[name] = getattr(decoded, name)
    for name in EXTRA_COUNTS:
        if name in typed:
            typed[name] = count_of(typed[name])
    if "running_task_ids" in typed:  # a list, as worker list --json prints it
        typed["running_task_ids"] = list(decoded.running_task_ids)
    return typed


def check_worker(target: Target, worker_id: str) -> HealthCheckResult:
    try:
        with CLI_BUDGET.scope():  # the check connects by itself: give it the CLI's timeouts
            return WorkerHealthCheck(target.url, worker_id, retry=CLI_RETRY).check()
    except RedisUnavailableError as exc:
        # Nothing can vouch for the worker: unhealthy, not an internal error.
        return HealthCheckResult("unhealthy", f"cannot read the heartbeat: {exc}")


def health_dict(worker_id: str, result: HealthCheckResult) -> dict[str, Any]:
    return {"worker_id": worker_id, "status": result.status, "message": result.message,
            "metadata": typed_metadata(worker_id, result.metadata)}  # fmt: skip


def read_id_file(path: Path) -> str:
    """The worker id in ``path`` (its first line); bad configuration when there is none."""
    try:
        with path.open("rb") as file:
            head = file.read(4096)
    except OSError as exc:
        raise ConfigError(f"cannot read the worker id file {path}: {exc.strerror or exc}") from None
    lines = head.decode("utf-8", "replace").splitlines()
    worker_id = lines[0].strip() if lines else ""
    if not worker_id:
        raise ConfigError(f"the worker id file {path} is empty")
    return worker_id


def live_workers_of_host(target: Target, hostname: str) -> list[str]:
    """Ids of the workers whose heartbeat says ``hostname`` and whose heartbeat key exists.
    Workers that stopped or died before (the registry keeps them a day) are not counted: a
    restarted worker has a new id, and the old one must not keep the host unhealthy."""
    mine = [w.worker_id for w in fleet(target) if w.hostname == hostname]

    layout = workers_layout(target.client)

    def exist() -> list[Any]:
        pipe = target.client.pipeline(transaction=False)
        for worker_id in mine:
            pipe.exists(layout.worker_heartbeat(worker_id))
        return pipe.execute()

    found = CLI_RETRY.call(exist) if mine else []
    return [worker_id for worker_id, n in zip(mine, found, strict=True) if n]


def worst(results: list[HealthCheckResult]) -> str:
    return max((r.status for r in results), key=HEALTH_EXIT_CODES.__getitem__)


@click.command("health")
@click.argument("worker_id", required=False)
@click.option(
    "--id-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="Read the worker id from this file (written by start worker --id-file).",
)
@click.option("--this-host", is_flag=True, help="Check every live worker of this host.")
@redis_option
@json_option
def health(
    worker_id: str | None,
    id_file: Path | None,
    this_host: bool,
    redis_url: str | None,
    as_json: bool,
) -> None:
    """Check a worker: exit 0 healthy, 1 degraded, 2 unhealthy.

    Degraded: the heartbeat is late (over 20 s) or the worker is stopping.
    Unhealthy: no heartbeat for 60 s, no heartbeat key (the worker stopped, died or is
    unknown; the message says which), or Redis unreachable.

    Name the worker (WORKER_ID), or read its id from a file (--id-file PATH), or
    check every worker of this host with a live heartbeat (--this-host: exit 0 only
    when there is at least one and all are healthy).

    For container health checks, e.g. in docker-compose:
    test: ["CMD", "orbiter-sync", "health", "--id-file", "/tmp/orbiter-worker-id"]
    """
    if sum((worker_id is not None, id_file is not None, this_host)) != 1:
        raise click.UsageError("give exactly one of WORKER_ID, --id-file PATH and --this-host")
    if id_file is not None:
        worker_id = read_id_file(id_file)
    target = Target(redis_url)
    try:
        if this_host:
            _host_health(target, as_json)
        assert worker_id is not None
        result = check_worker(target, worker_id)
    finally:
        target.close()
    if as_json:
        echo_json(health_dict(worker_id, result))
    else:
        click.echo(f"{colored_status(result.status)}: {result.message}")
    sys.exit(HEALTH_EXIT_CODES[result.status])


def _host_health(target: Target, as_json: bool) -> None:
    """``health --this-host``: one line for the host, then one per worker; exits."""
    hostname = socket.gethostname()
    try:
        worker_ids = live_workers_of_host(target, hostname)
    except RedisUnavailableError as exc:
        worker_ids, problem = [], f"cannot read the heartbeats: {exc}"
    else:
        problem = f"no worker with a live heartbeat on host {hostname}"
    results = [check_worker(target, worker_id) for worker_id in worker_ids]
    status = worst(results) if results else "unhealthy"
    healthy = sum(r.status == "healthy" for r in results)
    summary = (
        f"{healthy} of {len(results)} workers healthy on host {hostname}" if results else problem
    )
    checked = list(zip(worker_ids, results, strict=True))
    if as_json:
        workers = [health_dict(worker_id, result) for worker_id, result in checked]
        echo_json({"hostname": hostname, "status": status, "message": summary, "workers": workers})
    else:
        click.echo(f"{colored_status(status)}: {summary}")
        for worker_id, result in checked:
            click.echo(f"  {worker_id} {colored_status(result.status)}: {result.message}")
    sys.exit(HEALTH_EXIT_CODES[status])
