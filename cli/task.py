"""``orbiter-sync task``: list, inspect, cancel, submit and watch tasks."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any

import click

from orbiter_sync.agents.imports import split_path
from orbiter_sync.client import TaskHandle
from orbiter_sync.errors import AgentConfigError, TaskNotFoundError
from orbiter_sync.events import (
    ErrorEvent,
    StatusEvent,
    StepEvent,
    StreamEvent,
    TextEvent,
    ToolCallEvent,
    ToolResultEvent,
    UsageEvent,
)
from orbiter_sync.models import TaskPayload, TaskResult, TaskStatus

from .common import (
    Target,
    colored_status,
    dumps,
    duration,
    echo_json,
    echo_table,
    json_option,
    queue_option,
    redis_option,
    short,
    when,
)

TASK_COLUMNS = ("Task ID", "Status", "Worker", "Retries", "Created", "Duration", "Error")


@click.group("task")
def task_group() -> None:
    """List, inspect, cancel, submit and watch tasks."""


@task_group.command("list")
@click.option(
    "--status",
    type=click.Choice([s.value for s in TaskStatus]),
    default=None,
    help="Only tasks in this status.",
)
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(min=1), help="At most N tasks."
)
@redis_option
@json_option
def list_tasks(status: str | None, limit: int, redis_url: str | None, as_json: bool) -> None:
    """List known tasks, newest first."""
    target = Target(redis_url)
    try:
        tasks = target.store.list_tasks(status, limit=limit)
    finally:
        target.close()
    if as_json:
        echo_json([task_dict(t) for t in tasks])
    elif not tasks:
        click.echo(f"No {status} tasks." if status else "No tasks.")
    else:
        echo_table((task_row(t) for t in tasks), TASK_COLUMNS)


def task_dict(task: TaskResult) -> dict[str, Any]:
    """A task as ``--json`` prints it: times as float unix seconds (None when unknown),
    counts as numbers; ``created_at`` is kept as text in the hash, so it is parsed here."""
    data = task.to_dict()
    data["created_at"] = task.created_at
    data["duration"] = task.duration
    return data


def task_row(task: TaskResult) -> list[object]:
    return [
        task.task_id,
        colored_status(task.status.value),
        task.worker_id or "-",
        task.retries,
        when(task.created_at),
        duration(task.duration),
        short(task.error_summary, 40),
    ]


@task_group.command("status")
@click.argument("task_id")
@redis_option
@json_option
def task_status(task_id: str, redis_url: str | None, as_json: bool) -> None:
    """Show every field of one task, with human times and its duration."""
    target = Target(redis_url)
    try:
        task = target.store.get_status(task_id)
    finally:
        target.close()
    if task is None:
        raise TaskNotFoundError(task_id)
    if as_json:
        echo_json(task_dict(task))
        return
    rows: list[tuple[str, object]] = [
        ("Task ID", task.task_id),
        ("Status", colored_status(task.status.value)),
        ("Worker", task.worker_id or "-"),
        ("Retries", task.retries),
        ("Created", when(task.created_at)),
        ("Started", when(task.started_at)),
        ("Completed", when(task.completed_at)),
        ("Duration", duration(task.duration)),
        ("Error", task.error_summary or "-"),
        ("Result", "-" if task.result is None else dumps(task.result)),
    ]
    rows += [(name, value) for name, value in sorted(task.extra.items()) if name != "created_at"]
    echo_table(rows, ("Field", "Value"))


@task_group.command("cancel")
@click.argument("task_id")
@redis_option
def cancel_task(task_id: str, redis_url: str | None) -> None:
    """Cancel a pending, retrying or running task.

    Exit 0 when the task is cancelled (now, or already before: cancelling is
    idempotent), 1 when it is unknown or already completed or failed.
    """
    target = Target(redis_url)
    try:
        before = target.store.get_status(task_id)
        if before is None:
            raise TaskNotFoundError(task_id)
        # One rule with TaskHandle.cancel(), which returns this same answer: True when
        # the task is cancelled afterwards, False when it ended otherwise.
        if not target.producer.cancel(task_id):
            after = target.store.get_status(task_id) or before
            raise click.ClickException(
                f"task {task_id} is already {after.status.value}; nothing to cancel"
            )
    finally:
        target.close()
    if before.status == TaskStatus.CANCELLED:
        click.echo(f"Task {task_id} is already cancelled; nothing more to do.")
    elif before.status == TaskStatus.RUNNING:
        click.echo(
            f"Cancelled task {task_id}; worker {before.worker_id or '?'} stops its run at once."
        )
    else:
        click.echo(f"Cancelled task {task_id} (it was {before.status.value}; it will not run).")


@task_group.command("submit")
@click.option("--entrypoint", metavar="PATH", help="Agent entrypoint, 'pkg.module:func'.")
@click.option(
    "--agent-json",
    type=click.File("r"),
    metavar="FILE",
    help="File holding an agent_config JSON object ('-' for stdin).",
)
@click.option("--input", "input_text", required=True, help="The run's input text.")
@click.option(
    "--timeout",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds the run may take (timeout_seconds).",
)
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--watch", is_flag=True, help="Print the run's events as they arrive.")
@queue_option
@redis_option
def submit_task(
    entrypoint: str | None,
    agent_json: IO[str] | None,
    input_text: str,
    timeout: float,
    wait: bool,
    watch: bool,
    queue_name: str,
    redis_url: str | None,
) -> None:
    """Queue an agent run and print its task id.

    With --wait or --watch, exit 0 when the run completed and 1 when it failed or
    was cancelled.
    """
    agent_config = _agent_config(entrypoint, agent_json)
    target = Target(redis_url, queue_name)
    payload = TaskPayload(agent_config=agent_config, input=input_text, timeout_seconds=timeout)
    try:
        target.producer.submit(payload)
    finally:
        target.close()
    click.echo(payload.task_id)
    if watch:
        _watch(TaskHandle(payload.task_id, redis_url=target.url, queue_name=queue_name), None)
    elif wait:
        _wait(TaskHandle(payload.task_id, redis_url=target.url, queue_name=queue_name))


def _agent_config(entrypoint: str | None, agent_json: IO[str] | None) -> dict[str, Any]:
    if (entrypoint is None) == (agent_json is None):
        raise click.UsageError("give exactly one of --entrypoint PATH and --agent-json FILE")
    if entrypoint is not None:
        try:
            split_path(entrypoint)
        except AgentConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--entrypoint") from None
        return {"entrypoint": entrypoint}
    assert agent_json is not None
    try:
        config = json.load(agent_json)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--agent-json") from None
    if not isinstance(config, dict):
        raise click.BadParameter("must hold a JSON object", param_hint="--agent-json")
    return config


def _wait(handle: TaskHandle) -> None:
    result = handle.result()  # a failed or cancelled task raises: one line, exit 1
    output = result.get("output", result) if isinstance(result, dict) else result
    click.echo(output if isinstance(output, str) else dumps(output))


@task_group.command("watch")
@click.argument("task_id")
@click.option(
    "--from",
    "last_event_id",
    default=None,
    metavar="EVENT_ID",
    help="Resume after this event id (the first column of an earlier watch).",
)
@redis_option
@json_option
def watch_task(
    task_id: str, last_event_id: str | None, redis_url: str | None, as_json: bool
) -> None:
    """Print a task's events as they arrive, until its terminal status event.

    Each line starts with the event id; pass the last one seen to --from to
    resume where you left off. Exit 0 when the task completed, 1 when it failed
    or was cancelled.
    """
    target = Target(redis_url)
    try:
        if target.store.get_status(task_id) is None:  # fails fast when Redis is down
            raise TaskNotFoundError(task_id)
    finally:
        target.close()
    _watch(TaskHandle(task_id, redis_url=target.url), last_event_id, as_json=as_json)


def _watch(handle: TaskHandle, last_event_id: str | None, *, as_json: bool = False) -> None:
    seen = last_event_id
    final: StreamEvent | None = None
    try:
        for item in handle.follow(last_event_id):
            if item is None:
                continue
            entry_id, event = item
            seen = entry_id or seen
            if as_json:
                click.echo(json.dumps({"id": entry_id, **event.to_dict()}, default=str))
            else:
                click.echo(f"{entry_id or '-':<15}  {event.type:<11}  {describe(event)}")
            if event.is_terminal:
                final = event
    except KeyboardInterrupt:
        hint = f" --from {seen}" if seen else ""
        click.echo(
            f"\nStopped watching; resume with: orbiter-sync task watch {handle.task_id}{hint}",
            err=True,
        )
        sys.exit(130)
    if not (isinstance(final, StatusEvent) and final.status == "completed"):
        sys.exit(1)


def describe(event: StreamEvent) -> str:
    """A one-line human summary of an event."""
    render = _DESCRIBE.get(type(event))
    if render is not None:
        return render(event)
    data = {k: v for k, v in event.to_dict().items() if k not in ("type", "agent_name")}
    return json.dumps(data, default=str)


def _tool_result(event: ToolResultEvent) -> str:
    result = event.result if isinstance(event.result, str) else json.dumps(event.result)
    outcome = f"error: {event.error}" if not event.success else result
    return f"{event.tool_name} -> {short(outcome, 80)} ({event.duration_ms:.0f} ms)"


def _error(event: ErrorEvent) -> str:
    retry = " (will be retried)" if event.recoverable else ""
    return f"{event.error_type}: {event.error}{retry}"


_DESCRIBE: dict[type, Callable[[Any], str]] = {
    TextEvent: lambda e: e.text,
    ToolCallEvent: lambda e: f"{e.tool_name}({e.arguments}) [{e.tool_call_id}]",
    ToolResultEvent: _tool_result,
    StepEvent: lambda e: f"step {e.step_number} {e.status}",
    ErrorEvent: _error,
    StatusEvent: lambda e: f"{e.status}: {e.message}" if e.message else e.status,
    UsageEvent: lambda e: f"{e.usage.input_tokens} in, {e.usage.output_tokens} out tokens",
}
