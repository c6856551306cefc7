"""What the CLI tests share: running a command in process, naming a sample agent."""

from __future__ import annotations

import re

from click.testing import CliRunner, Result

from orbiter_sync.cli.main import cli

HUMAN_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


def run(*args: str, color: bool = False, input: str | None = None) -> Result:
    """``orbiter-sync *args`` through click's CliRunner (the console script's code path)."""
    return CliRunner().invoke(cli, list(args), color=color, input=input, catch_exceptions=False)


def agent(name: str) -> dict[str, str]:
    return {"entrypoint": f"sample_agents:{name}"}
