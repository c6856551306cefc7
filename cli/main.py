"""The ``orbiter-sync`` command group."""

from __future__ import annotations

import logging
import sys

import click

from orbiter_sync import __version__

from .alerts import alerts_group
from .common import OrbiterGroup
from .dead_letters import dead_letters_group
from .demo import demo
from .fleet import health, worker_group
from .metrics import metrics_group
from .queue import queue_group
from .task import task_group
from .temporal_worker import temporal_worker_command
from .worker import start


@click.group(cls=OrbiterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="orbiter-sync")
@click.option("-v", "--verbose", is_flag=True, help="Log what the commands do (retries, ...).")
def cli(verbose: bool) -> None:
    """orbiter-sync: run AI agent tasks on a fleet of sync workers over Redis Streams.

    Submit runs from any Python app (Django, Flask, scripts), run them on worker
    processes, stream their events back, cancel them, and watch the fleet.
    """
    # Commands report failures as one line; their retry warnings are noise unless asked
    # for. `start worker` sets up its own logging (--log-level).
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.CRITICAL,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


assert temporal_worker_command.name in start.commands  # `start temporal-worker` registered

for command in (
    start,
    worker_group,
    task_group,
    queue_group,
    dead_letters_group,
    health,
    demo,
    metrics_group,
    alerts_group,
):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="orbiter-sync")


if __name__ == "__main__":
    main()
