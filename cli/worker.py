"""``orbiter-sync start worker``: run a worker in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

import click

from orbiter_sync import keys
from orbiter_sync.connection import URL_ENV, mask_url, resolve_redis_url
from orbiter_sync.errors import OrbiterError
from orbiter_sync.executors import EXECUTORS, default_executor
from orbiter_sync.pools import POOLS
from orbiter_sync.worker import Worker, WorkerSettings

from .common import ConfigError, remember_url

logger = logging.getLogger("orbiter_sync.cli")


@click.group()
def start() -> None:
    """Start orbiter-sync processes."""


@start.command("worker")
@click.option(
    "--redis-url",
    default=None,
    metavar="URL",
    help=f"Redis URL [default: ${URL_ENV}, then $REDIS_URL]",
)
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Concurrent task slots in this process.",
)
@click.option(
    "--queue",
    "queue_name",
    default=keys.DEFAULT_QUEUE,
    show_default=True,
    help="Redis Streams queue name.",
)
@click.option(
    "--worker-id", default=None, help="Unique worker id [default: {hostname}-{pid}-{random}]."
)
@click.option(
    "--pool",
    type=click.Choice(POOLS),
    default=lambda: os.environ.get("ORBITER_POOL", "thread"),
    show_default="thread",
    help="What slots run on.",
)
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default=lambda: default_executor(),
    show_default="local; temporal when $TEMPORAL_HOST is set",
    help="Execution backend.",
)
@click.option(
    "--heartbeat-ttl",
    default=30,
    show_default=True,
    type=click.IntRange(min=1),
    help="Heartbeat key TTL in seconds (beats every third of it).",
)
@click.option(
    "--shutdown-timeout",
    default=25.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds running tasks get to finish on SIGTERM before they are released.",
)
@click.option(
    "--visibility-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds after which a dead worker's tasks are reclaimed.",
)
@click.option(
    "--retry-backoff",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Base of the exponential backoff between retries, in seconds.",
)
@click.option(
    "--allow-import",
    "allow_imports",
    multiple=True,
    metavar="MODULE",
    help="Module prefix payload entrypoints may be imported from (repeatable; "
    "also ORBITER_ALLOW_IMPORTS, comma-separated).",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def worker_command(
    redis_url: str | None,
    concurrency: int,
    queue_name: str,
    worker_id: str | None,
    pool: str,
    executor: str,
    heartbeat_ttl: int,
    shutdown_timeout: float,
    visibility_timeout: float,
    retry_backoff: float,
    allow_imports: tuple[str, ...],
    log_level: str,
) -> None:
    """Run a worker until SIGINT or SIGTERM.

    The first signal stops claiming and lets running tasks finish within
    --shutdown-timeout; a second one releases them back to the queue at once.
    """  # noqa: D301
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # replaces the quiet setup of the command group
    )
    remember_url(redis_url)
    try:
        url = resolve_redis_url(redis_url)
        worker = Worker(
            url,
            worker_id=worker_id,
            settings=WorkerSettings(
                concurrency=concurrency,
                queue_name=queue_name,
                heartbeat_ttl=heartbeat_ttl,
                executor=executor,
                pool=pool,
                shutdown_timeout=shutdown_timeout,
                visibility_timeout=visibility_timeout,
                retry_backoff=retry_backoff,
                allow_imports=allow_imports,
            ),
        )
    except OrbiterError as exc:
        raise ConfigError(str(exc)) from None
    signals_seen = 0

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal signals_seen
        signals_seen += 1
        name = signal.Signals(signum).name
        if signals_seen == 1:
            click.echo(
                f"{name}: stopping; running tasks get {shutdown_timeout:g}s to finish", err=True
            )
            worker.stop()
        else:
            click.echo(f"{name} again: releasing running tasks and stopping now", err=True)
            worker.stop(timeout=0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    click.echo(
        f"orbiter-sync worker {worker.worker_id}\n"
        f"  redis:       {mask_url(url)}\n"
        f"  queue:       {queue_name}\n"
        f"  concurrency: {concurrency}\n"
        f"  pool:        {pool}\n"
        f"  executor:    {executor}",
        err=True,
    )
    worker.start()  # errors become one line through the command group
