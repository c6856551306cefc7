"""Example agents: the entrypoints ``orbiter-sync demo`` runs.

An entrypoint is ``func(input, **context)``; it may be a plain function, a
coroutine function, a generator or an async generator. What it yields is
streamed to whoever watches the task (a ``str`` is a text event, a dict with a
``type`` is that event); what it returns is the task's output.

Workers only import entrypoints from modules their operator allowed::

    orbiter-sync start worker --allow-import examples.agents

The entrypoints call no model: they stream their words with small pauses, the
way an LLM streams tokens, and call small local tools. ``analyst`` and ``brief``
are LLM agents (the ``agents`` extra, pydantic-ai): an ``Agent`` with the two
tools below, and a two-agent workflow ``Swarm``. They are plain data, built
without asyncio; the worker runs them. The demo points them at a local model
server, so they too run offline (``orbiter-sync demo --model openai:gpt-4o-mini``
runs them on OpenAI with the worker's ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

from orbiter_sync import Agent, Swarm

PACE = 0.08  # seconds between streamed words
MODEL = "openai:gpt-4o-mini"


def word_count(text: str) -> dict[str, int]:
    """A tool: count words and characters."""
    return {"words": len(text.split()), "characters": len(text)}


def add(numbers: list[float]) -> float:
    """A tool: add numbers."""
    return sum(numbers)


analyst = Agent(
    name="analyst",
    model=MODEL,
    instructions="You answer questions about a text. Use your tools to count and add.",
    tools=[word_count, add],
    max_steps=4,
)

brief = Swarm(
    agents=[
        Agent(name="writer", model=MODEL, instructions="You write a two-line brief from notes."),
        Agent(name="researcher", model=MODEL, instructions="You research the topic: short notes."),
    ],
    flow="researcher >> writer",
)


def call_tool(name: str, tool: Callable[..., Any], **arguments: Any) -> Iterator[dict[str, Any]]:
    """Yield the tool_call and tool_result events of one tool call."""
    call_id = f"call_{uuid.uuid4().hex[:8]}"
    yield {"type": "tool_call", "tool_name": name, "tool_call_id": call_id,
           "arguments": json.dumps(arguments)}  # fmt: skip
    started = time.perf_counter()
    try:
        result, error = tool(**arguments), None
    except Exception as exc:  # noqa: BLE001 - a failing tool is reported, not raised
        result, error = None, f"{type(exc).__name__}: {exc}"
    yield {
        "type": "tool_result",
        "tool_name": name,
        "tool_call_id": call_id,
        "arguments": arguments,
        "result": result,
        "error": error,
        "success": error is None,
        "duration_ms": (time.perf_counter() - started) * 1000,
    }


def stream_words(text: str) -> Iterator[str]:
    for word in text.split():
        time.sleep(PACE)
        yield word + " "


def summarize(input: str) -> Generator[Any, None, str]:
    """Streams a short answer about the input and counts its words with a tool."""
    yield from stream_words(f"Reading: {input}.")
    yield from call_tool("word_count", word_count, text=input)
    counts = word_count(input)
    yield from stream_words(f"It has {counts['words']} words.")
    return f"{counts['words']} words, {counts['characters']} characters"


def calculator(input: str) -> Generator[Any, None, float]:
    """Adds the numbers in the input with the ``add`` tool."""
    numbers = [float(n) for n in input.replace(",", " ").split()]
    yield from stream_words(f"Adding {len(numbers)} numbers.")
    yield from call_tool("add", add, numbers=numbers)
    total = add(numbers)
    yield from stream_words(f"The total is {total:g}.")
    return total


async def haiku(input: str) -> AsyncIterator[str]:
    """An async agent: streams a three-line poem about the input."""
    lines = [f"{input} arrives", "queued, claimed, then carried through", "the stream ends in calm"]
    for line in lines:
        for word in line.split():
            await asyncio.sleep(PACE)
            yield word + " "
        yield "\n"


def slow(input: str) -> Generator[str, None, str]:
    """Streams one word per second, for as many seconds as the input says (cancel it)."""
    for second in range(int(input or "30")):
        time.sleep(1)
        yield f"{second + 1}s "
    return "done"
