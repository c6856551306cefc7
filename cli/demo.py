"""``orbiter-sync demo``: a small fleet on a private Redis, with agent runs streaming through it.

Everything it starts (one redis-server, the worker processes, the offline model
server) is stopped again on the way out, also on Ctrl+C, SIGTERM or an error.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

import click
import redis

from orbiter_sync import TaskHandle, distributed, keys
from orbiter_sync.embedded import EmbeddedRedis
from orbiter_sync.events import StepEvent, TextEvent
from orbiter_sync.health import get_worker_fleet_status
from orbiter_sync.store import TaskStore
from orbiter_sync.testing.fake_openai import FakeOpenAI

from . import demo_model
from .common import echo_table
from .fleet import WORKER_COLUMNS, worker_row
from .task import TASK_COLUMNS, describe, task_row

AGENTS_MODULE = "examples.agents"
# (agent: an entrypoint's name or an LLM agent's in examples/agents.py, input)
DEMO_TASKS = (
    ("summarize", "Redis Streams carry agent runs to a fleet of sync workers"),
    ("analyst", "Add 12, 30 and 7.5 for me"),
    ("haiku", "a task"),
    ("analyst", "How long is this: Django and Flask apps submit runs without asyncio"),
    ("brief", "sync workers for agent runs"),
)
LLM_AGENTS = ("analyst", "brief")
OFFLINE_KEY = "offline-demo"  # the local model server takes any key
STARTUP_TIMEOUT = 30.0
RUN_TIMEOUT = 120.0


def find_examples_root() -> Path:
    """The directory holding ``examples/agents.py``: the checkout we run from, or the cwd."""
    candidates = [Path(__file__).resolve().parents[1], Path.cwd()]
    for root in candidates:
        if (root / "examples" / "agents.py").is_file():
            return root
    raise click.ClickException(
        "the demo runs the agents in examples/agents.py; run it from a checkout of "
        "orbiter-sync (make demo)"
    )


@click.command("demo")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 8))
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(1, 16))
@click.option(
    "--model",
    default=None,
    metavar="PROVIDER:MODEL",
    help="Run the LLM agents on this model, e.g. openai:gpt-4o-mini (the workers need "
    "OPENAI_API_KEY). Default: an offline local model server.",
)
def demo(workers: int, concurrency: int, model: str | None) -> None:
    """Run a fleet on a private redis-server and watch agent runs stream through it.

    Starts redis-server (from PATH) on a free port, WORKERS worker processes with
    CONCURRENCY slots each, submits tasks from examples/agents.py (entrypoints, an
    LLM agent with two tools and a two-agent workflow swarm), prints their events
    as they arrive, then the worker and task tables, and stops every process it
    started. Without --model the LLM agents talk to a local stand-in model, so the
    demo runs offline.
    """
    root = find_examples_root()
    if model is not None and model.startswith("openai:") and not os.environ.get("OPENAI_API_KEY"):
        raise click.UsageError("--model openai:... needs OPENAI_API_KEY set")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with ExitStack() as cleanup, tempfile.TemporaryDirectory(prefix="orbiter-demo-") as logs:
            model_env: dict[str, str] = {}
            if model is None:
                offline = cleanup.enter_context(FakeOpenAI())
                offline.respond_with(demo_model.answer)
                model_env = {"OPENAI_BASE_URL": offline.url, "OPENAI_API_KEY": OFFLINE_KEY}
                click.echo(f"offline model server on {offline.url}")
            server = EmbeddedRedis()
            cleanup.callback(_stop_redis, server)
            server.start()
            assert server.process is not None
            click.echo(f"redis-server pid {server.process.pid} on {server.url}")
            fleet = [
                _spawn_worker(
                    server.url, f"demo-worker-{n}", concurrency, root, Path(logs), model_env
                )
                for n in range(1, workers + 1)
            ]
            cleanup.callback(_stop_workers, fleet)
            _wait_for_heartbeats(server.url, fleet)
            _run_tasks(server.url, root, model)
            _wait_for_counts(server.url, len(DEMO_TASKS))
            _print_tables(server.url)
    except KeyboardInterrupt:
        click.echo("interrupted; everything the demo started is stopped", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class _Worker:
    def __init__(self, worker_id: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.worker_id = worker_id
        self.process = process
        self.log = log

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _spawn_worker(
    url: str, worker_id: str, concurrency: int, root: Path, logs: Path, extra: dict[str, str]
) -> _Worker:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    for name in ("ORBITER_REDIS_URL", "TEMPORAL_HOST", "ORBITER_POOL"):
        env.pop(name, None)  # the demo's own fleet: local executor, thread pool
    command = [sys.executable, "-m", "orbiter_sync.cli", "start", "worker",
               "--redis-url", url, "--worker-id", worker_id, "--concurrency", str(concurrency),
               "--allow-import", AGENTS_MODULE, "--log-level", "WARNING",
               "--heartbeat-ttl", "6", "--shutdown-timeout", "5"]  # fmt: skip
    log = logs / f"{worker_id}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    click.echo(f"worker {worker_id} pid {process.pid}, {concurrency} slots")
    return _Worker(worker_id, process, log)


def _wait_for_heartbeats(url: str, fleet: list[_Worker]) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    try:
        while True:
            for worker in fleet:
                if worker.process.poll() is not None:
                    raise click.ClickException(
                        f"worker {worker.worker_id} exited with {worker.process.returncode}:\n"
                        f"{worker.log_tail()}"
                    )
            if all(client.exists(keys.worker_heartbeat(w.worker_id)) for w in fleet):
                return
            if time.monotonic() > deadline:
                raise click.ClickException(f"workers did not start within {STARTUP_TIMEOUT:g}s")
            time.sleep(0.05)
    finally:
        client.close()


def _wait_for_counts(url: str, expected: int, timeout: float = 10.0) -> None:
    """Wait for the heartbeats to count every task, so the worker table adds up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleet = get_worker_fleet_status(url)
        if sum(w.tasks_processed + w.tasks_failed for w in fleet) >= expected:
            return
        time.sleep(0.1)


def _run_tasks(url: str, root: Path, model: str | None) -> None:
    sys.path.insert(0, str(root))  # the LLM agents are objects in examples/agents.py
    examples = importlib.import_module(AGENTS_MODULE)
    handles = [(name, _submit(url, examples, name, text, model)) for name, text in DEMO_TASKS]
    click.echo(f"\nsubmitted {len(handles)} tasks; their events as they arrive:\n")
    printer = _EventPrinter()
    threads = [
        threading.Thread(target=printer.follow, args=(name, handle), daemon=True)
        for name, handle in handles
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + RUN_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        raise click.ClickException(f"tasks did not finish within {RUN_TIMEOUT:g}s")


def _submit(url: str, examples: Any, name: str, text: str, model: str | None) -> TaskHandle:
    if name in LLM_AGENTS:  # detailed: the tool results and token usage are shown too
        agent = getattr(examples, name)
        return distributed(agent, text, redis_url=url, detailed=True, model=model)
    return distributed({"entrypoint": f"{AGENTS_MODULE}:{name}"}, text, redis_url=url)


class _EventPrinter:
    """Prints each task's events on lines of their own; text is gathered into lines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def follow(self, name: str, handle: TaskHandle) -> None:
        label = f"{name} {handle.task_id[:8]}"
        text = ""
        for item in handle.follow(idle=5.0):
            if item is None:
                continue
            event = item[1]
            if isinstance(event, TextEvent):
                text += event.text
                if "\n" not in text and len(text) < 60:
                    continue
            if text.strip():
                self._line(label, "text", " ".join(text.split()))
            text = ""
            if not isinstance(event, TextEvent | StepEvent):  # steps would crowd the screen
                self._line(label, event.type, describe(event))
            if event.is_terminal:
                return

    def _line(self, label: str, kind: str, summary: str) -> None:
        with self._lock:
            click.echo(f"{label:<20} {kind:<11} {summary}")


def _print_tables(url: str) -> None:
    click.echo("\norbiter-sync worker list")
    echo_table((worker_row(w) for w in get_worker_fleet_status(url)), WORKER_COLUMNS)
    click.echo("\norbiter-sync task list")
    store = TaskStore(url)
    try:
        echo_table((task_row(t) for t in store.list_tasks()), TASK_COLUMNS)
    finally:
        store.close()


def _stop_workers(fleet: list[_Worker]) -> None:
    for worker in fleet:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in fleet:
        try:
            worker.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
    click.echo(f"stopped {len(fleet)} workers", err=True)


def _stop_redis(server: EmbeddedRedis) -> None:
    was_running = server.running
    server.close()  # also removes its temporary directory
    if was_running:
        click.echo("stopped redis-server", err=True)
