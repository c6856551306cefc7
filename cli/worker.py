"""``orbiter-sync start worker``: run a worker in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import click

from orbiter_sync.env import (
    ALLOW_IMPORTS_ENV,
    EVENTS_TTL_ENV,
    METRICS_PORT_ENV,
    POOL_ENV,
    QUEUE_SHARDS_ENV,
    RESULT_TTL_ENV,
    TEMPORAL_TASK_QUEUE_ENV,
    TEMPORAL_WORKER_ENV,
    URL_ENV,
)
from orbiter_sync.errors import OrbiterError, RedisUnavailableError
from orbiter_sync.executors import EXECUTORS, default_executor
from orbiter_sync.layout import MAX_SHARDS
from orbiter_sync.pools import POOLS
from orbiter_sync.queue import ttl_settings
from orbiter_sync.temporal import DEFAULT_TASK_QUEUE
from orbiter_sync.urls import mask_url, resolve_redis_url
from orbiter_sync.worker import Worker, WorkerSettings

from .common import ConfigError, ScrubbingFormatter, remember_url, urls_in_use

F = TypeVar("F", bound=Callable[..., Any])
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

logger = logging.getLogger("orbiter_sync.cli")


@click.group()
def start() -> None:
    """Start orbiter-sync processes."""


def setting(name: str, *decls: str, **kwargs: Any) -> Callable[[F], F]:
    """An option for the ``WorkerSettings`` field ``name``, its default taken from there."""
    kwargs.setdefault("default", WorkerSettings.default_of(name))
    kwargs.setdefault("show_default", True)
    flag = "--" + name.replace("_", "-")
    return click.option(*(decls or (flag,)), name, **kwargs)


def ttl_setting(name: str, key: str, env: str, help: str) -> Callable[[F], F]:
    """A lifetime option: its default from ``env`` (which clients read too), else here."""
    fallback = WorkerSettings.default_of(name)
    return setting(
        name,
        type=click.IntRange(min=1),
        default=lambda: ttl_settings().get(key, fallback),
        show_default=f"{fallback}, or ${env}",
        help=help,
    )


redis_url_option = click.option(
    "--redis-url",
    default=None,
    metavar="URL",
    help=f"Redis URL [default: ${URL_ENV}, then $REDIS_URL]",
)
worker_id_option = click.option(
    "--worker-id", default=None, help="Unique worker id [default: {hostname}-{pid}-{random}]."
)
temporal_task_queue_option = setting(
    "temporal_task_queue",
    show_default=f"{DEFAULT_TASK_QUEUE}, or ${TEMPORAL_TASK_QUEUE_ENV}",
    metavar="NAME",
    help="Temporal task queue of the temporal executor's workflows and activities; "
    "every process of one fleet must name the same one (and not the async library's "
    "orbiter-tasks). The server is $TEMPORAL_HOST in namespace $TEMPORAL_NAMESPACE.",
)
shutdown_timeout_option = setting(
    "shutdown_timeout",
    type=click.FloatRange(min=0),
    help="Seconds running tasks get to finish on SIGTERM before they are released.",
)
events_ttl_option = ttl_setting(
    "events_ttl", "event_ttl", EVENTS_TTL_ENV, "Seconds a task's event stream is kept."
)
allow_imports_option = setting(
    "allow_imports",
    "--allow-import",
    multiple=True,
    metavar="MODULE",
    show_default=False,
    help="Module prefix payload entrypoints may be imported from (repeatable; "
    f"also {ALLOW_IMPORTS_ENV}, comma-separated).",
)
path_option = click.option(
    "--path",
    "paths",
    multiple=True,
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Directory to import agents' modules from, before the current directory "
    "(repeatable; the current directory is always on the path, as with Celery and RQ).",
)
log_level_option = click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)


@start.command("worker")
@redis_url_option
@setting("concurrency", type=click.IntRange(min=1), help="Concurrent task slots in this process.")
@setting(
    "queue_name",
    "--queue",
    multiple=True,
    default=(WorkerSettings.default_of("queue_name"),),
    help="Queue to consume; repeat it to consume several, highest priority first "
    "(--queue urgent --queue default).",
)
@worker_id_option
@setting(
    "pool",
    type=click.Choice(POOLS),
    default=lambda: os.environ.get(POOL_ENV, WorkerSettings.default_of("pool")),
    show_default=f"{WorkerSettings.default_of('pool')}, or ${POOL_ENV}",
    help="What slots run on.",
)
@setting(
    "executor",
    type=click.Choice(EXECUTORS),
    default=lambda: default_executor(),
    show_default=f"{WorkerSettings.default_of('executor')}; temporal when $TEMPORAL_HOST is set",
    help="Execution backend.",
)
@temporal_task_queue_option
@setting(
    "temporal_worker",
    "--temporal-worker/--no-temporal-worker",
    envvar=TEMPORAL_WORKER_ENV,
    show_default=f"on, or ${TEMPORAL_WORKER_ENV}",
    help="With --executor temporal, also run Temporal's workflows and activities in this "
    "process; --no-temporal-worker only starts workflows and waits for them, for fleets "
    "where 'orbiter-sync start temporal-worker' processes run them.",
)
@setting(
    "heartbeat_ttl",
    type=click.IntRange(min=1),
    help="Heartbeat key TTL in seconds (beats every third of it).",
)
@shutdown_timeout_option
@setting(
    "visibility_timeout",
    type=click.FloatRange(min=0.1),
    help="Seconds after which a dead worker's tasks are reclaimed.",
)
@setting(
    "max_retries",
    type=click.IntRange(min=0),
    help="Failed attempts retried before a task fails for good.",
)
@setting(
    "max_deliveries",
    type=click.IntRange(min=1),
    help="Deliveries of a task whose workers keep dying before it goes to dead letters.",
)
@setting(
    "retry_backoff",
    type=click.FloatRange(min=0),
    help="Base of the exponential backoff between retries, in seconds.",
)
@setting(
    "claim_timeout",
    type=click.FloatRange(min=0.01),
    help="Seconds a slot waits for a task before checking whether to stop.",
)
@setting(
    "prefetch",
    type=click.IntRange(min=0),
    help="Most tasks claimed ahead of the free slots, fetched only while runs are short "
    "(as many as the worker finishes in 50 ms); 0 claims only for idle slots.",
)
@ttl_setting(
    "result_ttl",
    "task_ttl",
    RESULT_TTL_ENV,
    "Seconds a task's status and result are kept (clients read the same variable).",
)
@events_ttl_option
@setting(
    "metrics_port",
    type=click.IntRange(1, 65535),
    envvar=METRICS_PORT_ENV,
    metavar="PORT",
    show_default=f"off, or ${METRICS_PORT_ENV}",
    help="Serve this worker's Prometheus metrics on http://0.0.0.0:PORT/metrics.",
)
@setting(
    "queue_shards",
    type=click.IntRange(1, MAX_SHARDS),
    envvar=QUEUE_SHARDS_ENV,
    metavar="N",
    show_default=f"the number recorded in Redis, else 1; or ${QUEUE_SHARDS_ENV}",
    help="On a Redis Cluster (redis+cluster://), split every queue into N shards spread "
    "over the masters. The whole deployment shares one number: the first worker or "
    "producer records it in Redis, and a different one is refused.",
)
@allow_imports_option
@click.option(
    "--id-file",
    default=None,
    metavar="PATH",
    type=click.Path(dir_okay=False, writable=True),
    help="Write this worker's id to PATH while it runs (removed when it stops), so that "
    "'orbiter-sync health --id-file PATH' can check it from a container's health check.",
)
@path_option
@log_level_option
def worker_command(
    redis_url: str | None,
    worker_id: str | None,
    log_level: str,
    paths: tuple[str, ...],
    id_file: str | None,
    **settings: Any,
) -> None:
    """Run a worker until SIGINT or SIGTERM.

    The first signal stops claiming and lets running tasks finish within
    --shutdown-timeout; a second one releases them back to the queue at once.
    """  # noqa: D301
    set_up_process(log_level, redis_url, paths)
    # the first --queue is the worker's queue, the others are read after it, in order
    settings["queue_name"], *also = settings["queue_name"]
    settings["also_queues"] = tuple(also)
    try:
        url = resolve_redis_url(redis_url)
        worker = Worker(url, worker_id=worker_id, settings=WorkerSettings(**settings))
    except RedisUnavailableError:
        raise  # (a cluster's shard count is read here): one line and exit 1, not 2
    except OrbiterError as exc:
        raise ConfigError(str(exc)) from None
    s = worker.settings
    on_stop_signals(
        worker.stop,
        f"stopping; running tasks get {s.shutdown_timeout:g}s to finish",
        lambda: worker.stop(timeout=0),
        "releasing running tasks and stopping now",
    )
    click.echo(
        f"orbiter-sync worker {worker.worker_id}\n"
        f"  redis:       {mask_url(url)}\n"
        f"  queue:       {', '.join(s.queue_names)}{shards_note(worker.layout.shards)}\n"
        f"  concurrency: {s.concurrency}\n"
        f"  pool:        {s.pool}\n"
        f"  executor:    {s.executor}\n"
        f"{temporal_line(worker)}"
        f"{metrics_line(s.metrics_port)}"
        f"  imports:     {allowlist(worker.policy.prefixes)}",
        err=True,
    )
    # errors become one line through the command group; a stop that overruns its
    # deadline (a run that never yields, under gevent) ends the process on time
    if id_file:
        write_id_file(id_file, worker.worker_id)
    try:
        worker.start(exit_on_overrun=True)
    finally:
        if id_file:
            with contextlib.suppress(OSError):
                os.unlink(id_file)


def shards_note(shards: int) -> str:
    return f" ({shards} shards)" if shards > 1 else ""


def on_stop_signals(
    stop: Callable[[], None], saying: str, stop_now: Callable[[], None], now_saying: str
) -> None:
    """SIGTERM and SIGINT: the first prints ``{SIGNAL}: {saying}`` and calls ``stop``; any
    later one prints ``{SIGNAL} again: {now_saying}`` and calls ``stop_now``."""
    seen = 0

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal seen
        seen += 1
        name = signal.Signals(signum).name
        if seen == 1:
            click.echo(f"{name}: {saying}", err=True)
            stop()
        else:
            click.echo(f"{name} again: {now_saying}", err=True)
            stop_now()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def set_up_process(log_level: str, redis_url: str | None, paths: tuple[str, ...]) -> None:
    """Logging at ``log_level`` (no password in any line) and agents' modules on the path."""
    logging.basicConfig(
        level=log_level.upper(),
        format=LOG_FORMAT,
        stream=sys.stderr,
        force=True,  # replaces the quiet setup of the command group
    )
    remember_url(redis_url)
    # every log line, whoever writes it, goes out without a password in it
    for handler in logging.getLogger().handlers:
        handler.setFormatter(
            ScrubbingFormatter(LOG_FORMAT, urls_in_use(click.get_current_context()))
        )
    put_on_path(paths)


def temporal_line(worker: Worker) -> str:
    """The banner's line for the Temporal server and task queue ('' in local mode)."""
    temporal = getattr(worker.executor, "temporal", None)
    if temporal is None:
        return ""
    where = "workflows and activities here" if worker.settings.temporal_worker else (
        "starts workflows only")  # fmt: skip
    return (
        f"  temporal:    {temporal.host} namespace={temporal.namespace} "
        f"task_queue={temporal.task_queue} ({where})\n"
    )


def metrics_line(port: int | None) -> str:
    """The banner's line for ``/metrics`` ('' when metrics are off)."""
    return "" if port is None else f"  metrics:     http://0.0.0.0:{port}/metrics\n"


def put_on_path(paths: tuple[str, ...]) -> None:
    """``--path`` directories, then the current directory, first on ``sys.path``: agents'
    modules import from where the worker is started, as Celery's and RQ's do."""
    for directory in reversed([*paths, os.getcwd()]):
        absolute = os.path.abspath(directory)
        if absolute in sys.path:
            sys.path.remove(absolute)
        sys.path.insert(0, absolute)


def allowlist(prefixes: tuple[str, ...]) -> str:
    """The banner's line for the import allowlist."""
    if prefixes:
        return ", ".join(prefixes)
    return (
        f"none (only LLM agent dicts can run; entrypoints need --allow-import MODULE "
        f"or {ALLOW_IMPORTS_ENV})"
    )


def write_id_file(path: str, worker_id: str) -> None:
    """Write the worker id to ``path`` whole (a reader never sees half of it)."""
    partial = f"{path}.{os.getpid()}.tmp"
    try:
        with open(partial, "w") as out:
            out.write(worker_id + "\n")
        os.replace(partial, path)
    except OSError as exc:
        raise ConfigError(f"cannot write the worker id file {path}: {exc.strerror}") from None
