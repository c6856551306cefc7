"""The local executor: runs an entrypoint agent in the slot that claimed it.

``func(input, **context)`` may be an async generator, a coroutine function, a
generator or a plain function. Async work runs on the slot's own event loop,
created once per slot and reused; sync code runs directly in the slot. Yielded
items become events (a plain str is a text event); the return value, or else the
concatenated text, becomes ``{"output": ...}``.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from orbiter_sync.agents import ImportPolicy, resolve_agent
from orbiter_sync.control import TIMEOUT, RunControl
from orbiter_sync.errors import RunInterrupted
from orbiter_sync.events import StreamEvent, TextEvent, coerce_event
from orbiter_sync.models import TaskPayload


@dataclass
class RunContext:
    """What a run needs from its slot: where events go, its stop switch, its loop."""

    publish: Callable[[StreamEvent], object]
    control: RunControl
    loop: asyncio.AbstractEventLoop

    def run_async(self, coro: Coroutine[Any, Any, Any]) -> Any:
        task = self.loop.create_task(coro)
        self.control.attach(self.loop, task)
        try:
            return self.loop.run_until_complete(task)
        except asyncio.CancelledError:
            if self.control.reason is not None:
                raise RunInterrupted(self.control.reason) from None
            raise
        finally:
            self.control.detach()


class LocalExecutor:
    """Runs entrypoint agents in-process, behind the import allowlist."""

    def __init__(self, policy: ImportPolicy) -> None:
        self.policy = policy

    def execute(self, payload: TaskPayload, context: RunContext) -> dict[str, Any]:
        func = resolve_agent(payload.agent_config, self.policy)
        agent_name = str(payload.agent_config.get("name") or payload.agent_config.get("entrypoint"))
        texts: list[str] = []

        def emit(item: Any) -> None:
            event = coerce_event(item, agent_name)
            if isinstance(event, TextEvent):
                texts.append(event.text)
            context.publish(event)

        timer = threading.Timer(payload.timeout_seconds, context.control.stop, args=(TIMEOUT,))
        timer.daemon = True
        timer.start()
        try:
            value = _call(func, payload, context, emit)
            context.control.check()  # a sync function that ran past its timeout, say
        finally:
            timer.cancel()
        return {"output": value if value is not None else "".join(texts)}


def _call(
    func: Callable[..., Any], payload: TaskPayload, context: RunContext, emit: Callable[[Any], None]
) -> Any:
    outcome = func(payload.input, **_context_kwargs(func, payload, context.control))
    if inspect.isasyncgen(outcome):
        return context.run_async(_drain_async(outcome, emit))
    if inspect.isawaitable(outcome):
        return context.run_async(_await(outcome))
    if inspect.isgenerator(outcome):
        return _drain_sync(outcome, emit, context.control)
    return outcome


async def _await(awaitable: Any) -> Any:
    return await awaitable


async def _drain_async(agen: AsyncIterator[Any], emit: Callable[[Any], None]) -> None:
    async for item in agen:
        emit(item)


def _drain_sync(gen: Iterator[Any], emit: Callable[[Any], None], control: RunControl) -> Any:
    try:
        while True:
            control.check()
            emit(next(gen))
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()  # type: ignore[attr-defined]


def _context_kwargs(
    func: Callable[..., Any], payload: TaskPayload, control: RunControl
) -> dict[str, Any]:
    """The context keywords ``func`` accepts: all of them with ``**kwargs``, else those it names."""
    context = {
        "task_id": payload.task_id,
        "messages": payload.messages,
        "metadata": payload.metadata,
        "detailed": payload.detailed,
        "model": payload.model,
        "agent_config": payload.agent_config,
        "cancel_event": control.event,
    }
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return context
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return context
    names = {p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return {k: v for k, v in context.items() if k in names}
