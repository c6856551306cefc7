"""The ``orbiter-sync`` command group."""

from __future__ import annotations

import click
from orbiter_sync.cli.worker import start

from orbiter_sync import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="orbiter-sync")
def cli() -> None:
    """orbiter-sync: run AI agent tasks on a fleet of sync workers over Redis Streams.

    Submit runs from any Python app (Django, Flask, scripts), run them on worker
    processes, stream their events back, cancel them, and watch the fleet.
    """


cli.add_command(start)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="orbiter-sync")


if __name__ == "__main__":
    main()
