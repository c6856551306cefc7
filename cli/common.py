"""What every command shares: the Redis options, error handling and output helpers.

Errors become one line on stderr: ``Error: ...`` with exit code 2 for bad
configuration (no URL, a bad URL) and 1 for everything else (Redis unreachable,
an unknown task). Passwords never reach that line.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TypeVar

import click
import redis

from orbiter_sync import keys
from orbiter_sync.admin import QueueAdmin
from orbiter_sync.cluster_client import REDIS_ERRORS
from orbiter_sync.connection import Budget, connect
from orbiter_sync.env import HEROKU_URL_ENV, URL_ENV
from orbiter_sync.errors import ConfigurationError, OrbiterError
from orbiter_sync.producer import TaskProducer
from orbiter_sync.queue import QueueSettings
from orbiter_sync.store import TaskStore
from orbiter_sync.urls import mask_url, resolve_redis_url, url_secrets

F = TypeVar("F", bound=Callable[..., Any])

# Commands fail fast: an operator (or a container health check) waits five seconds for
# Redis, not thirty, and a hung Redis too: socket timeouts and retries both fit in it.
CLI_BUDGET = Budget(5.0)
CLI_RETRY = CLI_BUDGET.retry
TABLE_FORMAT = "simple_outline"  # the guide's box tables


class ConfigError(click.ClickException):
    """Bad configuration: one line, exit code 2 like other usage errors."""

    exit_code = 2


class OrbiterGroup(click.Group):
    """A group that turns library and Redis errors into one clean line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigurationError as exc:
            raise ConfigError(_scrub(str(exc), ctx)) from None
        except OrbiterError as exc:
            raise click.ClickException(_scrub(str(exc), ctx)) from None
        except REDIS_ERRORS as exc:
            raise click.ClickException(
                _scrub(f"Redis error ({type(exc).__name__}): {exc}", ctx)
            ) from None


def _scrub(message: str, ctx: click.Context) -> str:
    """Remove any password the user gave us from ``message``."""
    return Scrubber(urls_in_use(ctx))(message)


class Scrubber:
    """Takes the passwords of ``urls`` out of text: each URL becomes its masked form, then
    every secret it holds ``***`` (one under 4 characters only where it stands alone, so
    that words survive). The secrets are worked out once, not per message."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = sorted({url for url in urls if url}, key=len, reverse=True)
        found = {secret for url in self.urls for secret in url_secrets(url)}
        self.secrets = sorted(found, key=len, reverse=True)

    def __call__(self, message: str) -> str:
        for url in self.urls:
            message = message.replace(url, mask_url(url))
        for secret in self.secrets:
            if len(secret) >= 4:
                message = message.replace(secret, "***")
            else:
                message = re.sub(rf"(?<!\w){re.escape(secret)}(?!\w)", "***", message)
        return message


class ScrubbingFormatter(logging.Formatter):
    """Log lines with the passwords of ``urls`` scrubbed out, whatever wrote them (redis-py's
    own errors may quote a piece of a URL it misread)."""

    def __init__(self, fmt: str, urls: list[str]) -> None:
        super().__init__(fmt)
        self.scrub = Scrubber(urls)

    def format(self, record: logging.LogRecord) -> str:
        return self.scrub(super().format(record))


def urls_in_use(ctx: click.Context) -> list[str]:
    """Every Redis URL a command may use (flags and environment)."""
    urls = [os.environ.get(URL_ENV, ""), os.environ.get(HEROKU_URL_ENV, "")]
    return [url for url in urls + ctx.meta.get(_URLS_SEEN, []) if url]


_URLS_SEEN = "orbiter_sync.redis_urls"  # ctx.meta is shared by a command and its parents


def remember_url(redis_url: str | None) -> None:
    """Note a URL given on the command line, so errors can hide its password."""
    if redis_url:
        click.get_current_context().meta.setdefault(_URLS_SEEN, []).append(redis_url)


def redis_option(fn: F) -> F:
    """``--redis-url``, falling back to ORBITER_REDIS_URL, then REDIS_URL."""
    return click.option(
        "--redis-url",
        default=None,
        metavar="URL",
        help=f"Redis URL [default: ${URL_ENV}, then $REDIS_URL].",
    )(fn)


def queue_option(fn: F) -> F:
    return click.option(
        "--queue",
        "queue_name",
        default=keys.DEFAULT_QUEUE,
        show_default=True,
        help="Redis Streams queue name.",
    )(fn)


def fleet_queues_option(verb: str, done: str) -> Callable[[F], F]:
    """``--queue``, repeatable, of the commands that read the whole fleet: the queues
    named (default ``orbiter:tasks``), and every queue a live worker reads."""
    return click.option(
        "--queue",
        "queues",
        multiple=True,
        metavar="QUEUE",
        help=f"A queue to {verb} (repeatable) [default: {keys.DEFAULT_QUEUE}]; the queues "
        f"live workers read are {done} too.",
    )


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        fn
    )


class Target:
    """The Redis a command talks to, connected on first use and closed by the command."""

    def __init__(self, redis_url: str | None, queue_name: str = keys.DEFAULT_QUEUE) -> None:
        remember_url(redis_url)
        self.url = resolve_redis_url(redis_url)
        self.queue_name = queue_name

    @cached_property
    def client(self) -> redis.Redis:
        return connect(self.url, budget=CLI_BUDGET)

    @cached_property
    def producer(self) -> TaskProducer:
        settings = QueueSettings(name=self.queue_name)
        return TaskProducer(self.url, settings, client=self.client, retry=CLI_RETRY)

    @cached_property
    def admin(self) -> QueueAdmin:
        settings = QueueSettings(name=self.queue_name)
        return QueueAdmin(self.url, settings, client=self.client, retry=CLI_RETRY)

    @cached_property
    def store(self) -> TaskStore:
        return TaskStore(self.url, client=self.client, retry=CLI_RETRY)

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()


# -- output ------------------------------------------------------------------------------


def dumps(value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """JSON text for output; a value nested too deep for an indented dump is printed
    compact, and one too deep even for that as its repr, cut short."""
    try:
        return json.dumps(value, indent=indent, sort_keys=sort_keys, default=str)
    except (RecursionError, ValueError):
        pass
    try:
        return json.dumps(value, default=str)
    except (RecursionError, ValueError):
        return short(repr(value), 2000)


def echo_json(value: Any) -> None:
    click.echo(dumps(value, sort_keys=True))


def echo_table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    from tabulate import tabulate  # only the commands that print tables pay for it

    click.echo(tabulate(list(rows), headers=list(headers), tablefmt=TABLE_FORMAT))


def when(timestamp: float | None) -> str:
    """``2026-02-17 10:30:15 UTC``, or ``-``."""
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """``0.42s``, ``12.3s``, ``4m 05s``, ``2h 03m``, or ``-``."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def short(text: str | None, width: int = 48) -> str:
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


STATUS_COLORS = {
    "completed": "green",
    "failed": "red",
    "dead": "red",
    "cancelled": "yellow",
    "retrying": "yellow",
    "running": "cyan",
    "healthy": "green",
    "degraded": "yellow",
    "unhealthy": "red",
}


def colored_status(status: str) -> str:
    """The status, coloured on a terminal (click strips colours when not a terminal)."""
    color = STATUS_COLORS.get(status)
    return click.style(status, fg=color) if color else status
