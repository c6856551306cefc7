"""``orbiter-sync metrics``: the fleet's numbers from Redis, served to Prometheus."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from .common import (
    CLI_RETRY,
    ConfigError,
    Target,
    echo_json,
    echo_table,
    fleet_queues_option,
    json_option,
    redis_option,
)

METRICS_PORT_DEFAULT = 9100


@click.group("metrics")
def metrics_group() -> None:
    """The fleet's metrics, read from Redis (no worker needs to be reachable)."""


@metrics_group.command("serve")
@redis_option
@fleet_queues_option("report", "reported")
@click.option("--port", type=click.IntRange(0, 65535), default=METRICS_PORT_DEFAULT,
              show_default=True, help="Port of the /metrics endpoint.")  # fmt: skip
@click.option("--bind", default="0.0.0.0", show_default=True, help="Address to listen on.")
def serve(redis_url: str | None, queues: tuple[str, ...], port: int, bind: str) -> None:
    """Serve the fleet's metrics on /metrics until SIGINT or SIGTERM.

    One process for the whole fleet: each scrape reads Redis (queue depth, pending,
    lag, oldest entries, dead letters, delayed retries, workers, slots, and the
    orbiter_fleet_tasks_*_total counters the workers keep). This is how a fleet
    whose workers cannot be scraped (Heroku dynos) is watched. A scrape while Redis
    is away answers orbiter_fleet_up 0.
    """
    # prometheus-client only for these commands: a worker's CLI process never loads it
    from prometheus_client import CollectorRegistry, start_http_server

    from orbiter_sync.metrics.fleet import FleetCollector

    target = Target(redis_url)
    registry = CollectorRegistry()
    registry.register(FleetCollector(queues=queues, client=target.client))
    try:
        server, thread = start_http_server(port, addr=bind, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {bind}:{port}: {exc.strerror}") from None
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    click.echo(f"orbiter-sync metrics: http://{bind}:{server.server_port}/metrics", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        thread.join(5)
        target.close()


@metrics_group.command("show")
@redis_option
@fleet_queues_option("report", "reported")
@json_option
def show(redis_url: str | None, queues: tuple[str, ...], as_json: bool) -> None:
    """Print the fleet's numbers once: what the exporter would serve now."""
    from orbiter_sync.metrics.fleet import read_fleet

    target = Target(redis_url)
    try:
        fleet = read_fleet(queues=queues, client=target.client, retry=CLI_RETRY)
    finally:
        target.close()
    if as_json:
        echo_json(fleet.to_dict())
        return
    rows = [
        (q.queue, q.depth, q.waiting, q.pending, q.delayed, q.dead_letters,
         q.completed_total, q.failed_total, q.cancelled_total, q.retried_total)
        for q in fleet.queues
    ]  # fmt: skip
    echo_table(rows, ("Queue", "Depth", "Waiting", "Pending", "Delayed", "Dead",
                      "Completed", "Failed", "Cancelled", "Retried"))  # fmt: skip
    click.echo(
        f"workers: {fleet.workers_alive} alive, {fleet.workers_stopped} stopped, "
        f"{fleet.workers_dead} dead; slots: {fleet.slots_busy}/{fleet.slots_total} busy"
    )
