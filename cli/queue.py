"""``orbiter-sync queue stats``: how deep the queue is and how far behind the workers are."""

from __future__ import annotations

import click

from .common import (
    Target,
    duration,
    echo_json,
    echo_table,
    json_option,
    queue_option,
    redis_option,
)


@click.group("queue")
def queue_group() -> None:
    """Look at a task queue."""


@queue_group.command("stats")
@queue_option
@redis_option
@json_option
def queue_stats(queue_name: str, redis_url: str | None, as_json: bool) -> None:
    """Stream length, pending entries, consumer-group lag, oldest pending age,
    dead letters and delayed runs (retries waiting out their backoff, runs submitted
    with a delay)."""
    target = Target(redis_url, queue_name)
    try:
        stats = target.admin.stats()
    finally:
        target.close()
    if as_json:
        echo_json(stats.to_dict())
        return
    echo_table(
        [
            ("Queue", stats.queue),
            ("Stream length", stats.length),
            ("Pending (claimed, not settled)", stats.pending),
            ("Lag (not yet claimed)", "-" if stats.lag is None else stats.lag),
            ("Oldest pending entry", duration(stats.oldest_pending_age)),
            ("Dead letters", stats.dead_letters),
            ("Delayed (retries, delayed runs)", stats.delayed_retries),
            ("Consumers", stats.consumers),
        ],
        ("Metric", "Value"),
    )
