"""``orbiter-sync start temporal-worker``: Temporal's workflows and activities alone."""

from __future__ import annotations

import logging
import os

import click

from orbiter_sync.errors import OrbiterError
from orbiter_sync.temporal import TemporalSettings
from orbiter_sync.urls import mask_url

from .common import ConfigError
from .worker import (
    allow_imports_option,
    allowlist,
    events_ttl_option,
    log_level_option,
    on_stop_signals,
    path_option,
    redis_url_option,
    set_up_process,
    setting,
    start,
    temporal_task_queue_option,
    worker_id_option,
)


@start.command("temporal-worker")
@redis_url_option
@setting(
    "concurrency",
    type=click.IntRange(min=1),
    help="Activities (agent runs) this process runs at once.",
)
@worker_id_option
@temporal_task_queue_option
@setting(
    "shutdown_timeout",
    type=click.FloatRange(min=0),
    help="Seconds running activities get to finish on SIGTERM; then they stop and "
    "Temporal retries them on another worker.",
)
@events_ttl_option
@allow_imports_option
@path_option
@log_level_option
def temporal_worker_command(
    redis_url: str | None,
    worker_id: str | None,
    log_level: str,
    paths: tuple[str, ...],
    concurrency: int,
    temporal_task_queue: str | None,
    shutdown_timeout: float,
    events_ttl: int,
    allow_imports: tuple[str, ...],
) -> None:
    """Run Temporal's workflows and activities until SIGINT or SIGTERM.

    For fleets that separate the two: 'start worker --executor temporal
    --no-temporal-worker' processes claim tasks from Redis and start their
    workflows; these processes run the agents (behind --allow-import) and
    publish their events to Redis. It claims nothing from Redis itself.

    The first signal lets running activities finish within --shutdown-timeout;
    a second one stops them at once. Temporal retries what did not finish on
    another worker of the same task queue.
    """  # noqa: D301
    set_up_process(log_level, redis_url, paths)
    try:
        from orbiter_sync.temporal.standalone import TemporalWorker, TemporalWorkerDied
    except ImportError as exc:
        raise ConfigError(
            f"temporal-worker needs temporalio ({exc}): pip install 'orbiter-sync[temporal]'"
        ) from None
    try:
        worker = TemporalWorker(
            redis_url,
            worker_id=worker_id,
            concurrency=concurrency,
            allow_imports=allow_imports,
            events_ttl=events_ttl,
            shutdown_timeout=shutdown_timeout,
            temporal=TemporalSettings.from_env(task_queue=temporal_task_queue),
        )
    except OrbiterError as exc:
        raise ConfigError(str(exc)) from None
    on_stop_signals(
        worker.stop,
        f"stopping; running activities get {shutdown_timeout:g}s to finish",
        lambda: worker.stop(now=True),
        "stopping running activities now",
    )
    t = worker.temporal
    click.echo(
        f"orbiter-sync temporal-worker {worker.worker_id}\n"
        f"  temporal:    {t.host} namespace={t.namespace} task_queue={t.task_queue}\n"
        f"  redis:       {mask_url(worker.redis_url)} (events)\n"
        f"  concurrency: {concurrency}\n"
        f"  imports:     {allowlist(worker.policy.prefixes)}",
        err=True,
    )
    try:
        ended = worker.start()
    except TemporalWorkerDied as exc:
        raise click.ClickException(str(exc)) from None  # exit 1: a supervisor restarts it
    except OrbiterError as exc:
        raise ConfigError(str(exc)) from None
    if not ended:  # runs that never returned to us: the interpreter would wait for them
        logging.shutdown()
        os._exit(0)
