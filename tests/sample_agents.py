"""Entrypoint agents the worker tests run (allowed with --allow-import sample_agents)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import orbiter_sync
from orbiter_sync.connection import connect


def echo(input: str) -> str:
    return f"echo: {input}"


def words(input: str, **context: Any) -> Generator[Any, None, str]:
    for word in input.split():
        yield word + " "
    yield {"type": "tool_call", "tool_name": "count", "tool_call_id": "c1"}
    return f"{len(input.split())} words for {context['task_id']}"


async def async_words(input: str) -> AsyncIterator[str]:
    for word in input.split():
        await asyncio.sleep(0)
        yield word


async def coroutine(input: str, metadata: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    return {"upper": input.upper(), "metadata": metadata}


async def sleepy(input: str) -> AsyncIterator[str]:
    yield "started"
    await asyncio.sleep(float(input))
    yield "woke up"


def sleepy_sync(input: str) -> Iterator[str]:
    yield "started"
    deadline = time.monotonic() + float(input)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        yield "."


def broken(input: str) -> str:
    raise RuntimeError(f"broken by design: {input}")


def counted(input: str, metadata: dict[str, Any], task_id: str) -> str:
    """Counts its executions in Redis, to prove each task ran exactly once."""
    client = connect(metadata["redis_url"])  # a cluster URL too
    client.incr(f"test:executions:{task_id}")
    client.close()
    return input


def suicide(input: str) -> str:
    os.kill(os.getpid(), signal.SIGKILL)
    return "never"


async def async_nap(input: str) -> str:
    await asyncio.sleep(float(input))
    return "napped"


def nap(input: str) -> str:
    time.sleep(float(input))
    return "napped"


def flaky(input: str, metadata: dict[str, Any], task_id: str) -> str:
    """Fails its first ``input`` attempts, then succeeds (attempts counted in Redis)."""
    client = connect(metadata["redis_url"])
    attempt = int(client.incr(f"test:attempts:{task_id}"))
    client.close()
    if attempt <= int(input):
        raise RuntimeError(f"attempt {attempt} fails")
    return f"succeeded on attempt {attempt}"


def _count(metadata: dict[str, Any], task_id: str) -> int:
    client = connect(metadata["redis_url"])
    executions = int(client.incr(f"test:executions:{task_id}"))
    client.close()
    return executions


class Doom(BaseException):
    """Not an Exception: escapes whatever catches errors, and ends the thread it runs on."""


def doom(input: str, metadata: dict[str, Any], task_id: str) -> str:
    _count(metadata, task_id)
    raise Doom("this slot ends here")


class Unstorable:
    pass


def unstorable(input: str, metadata: dict[str, Any], task_id: str) -> dict[str, Any]:
    """Returns what JSON cannot hold."""
    _count(metadata, task_id)
    return {"thing": Unstorable()}


def spin(input: str, metadata: dict[str, Any], task_id: str) -> str:
    """Busy for ``input`` seconds without ever yielding: under gevent it holds up every
    other greenlet of its worker, the main one included."""
    _count(metadata, task_id)
    deadline = time.monotonic() + float(input)
    while time.monotonic() < deadline:
        pass
    return "spun"


class BadModel:
    """Looks like a pydantic model, but dumping it fails."""

    def model_dump(self, **options: Any) -> dict[str, Any]:
        raise RuntimeError("this model cannot be dumped")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message either")


def bad_model(input: str, metadata: dict[str, Any], task_id: str) -> dict[str, Any]:
    _count(metadata, task_id)
    return {"model": BadModel()}


def unprintable(input: str, metadata: dict[str, Any], task_id: str) -> str:
    _count(metadata, task_id)
    raise Unprintable()


OPTIONAL_EXTRAS = ("gevent", "prometheus_client", "temporalio", "pydantic_ai", "tabulate")


def loaded_extras(input: str) -> list[str]:
    """Which optional libraries the worker running this has imported."""
    return sorted(name for name in OPTIONAL_EXTRAS if name in sys.modules)


def legacy_events(input: str) -> Iterator[dict[str, Any] | str]:
    """Yields what older orbiter-sync agents did: a tool_call_delta, and a tool result
    that is a dict rather than the string the async library's event holds."""
    yield {"type": "tool_call", "tool_name": "lookup", "tool_call_id": "c1"}
    yield {"type": "tool_call_delta", "tool_call_id": "c1", "arguments_delta": "{}"}
    yield {"type": "tool_result", "tool_name": "lookup", "tool_call_id": "c1",
           "result": {"found": 2}}  # fmt: skip
    yield {"type": "status", "status": "completed", "message": "lookup"}  # not the end yet
    yield "done"


@orbiter_sync.agent(max_retries=0, timeout=20, name="shouter")
def shout(input: str, task_id: str) -> str:
    """An agent defined in the app with @agent, and its own submit defaults."""
    return input.upper()
