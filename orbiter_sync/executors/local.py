"""The local executor: runs an agent in the slot that claimed it.

``func(input, **context)`` may be an async generator, a coroutine function, a
generator or a plain function. Async work runs on the slot's own event loop,
created when the slot starts and reused for every run on it; sync code runs
directly in the slot. Yielded items become events (a plain str is a text
event); the return value, or else the concatenated text, becomes
``{"output": ...}``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from orbiter_sync.agents import ImportPolicy, resolve_agent, resources
from orbiter_sync.control import RunControl
from orbiter_sync.events import TextEvent, coerce_event
from orbiter_sync.executors.base import Executor, RunContext
from orbiter_sync.models import TaskPayload
from orbiter_sync.outcome import RunInterrupted


class LocalExecutor(Executor):
    """Runs agents in-process, behind the import allowlist."""

    name = "local"

    def __init__(self, policy: ImportPolicy) -> None:
        self.policy = policy
        # One asyncio loop per slot. Under gevent, threading.local is patched to be
        # greenlet-local, so each greenlet slot gets its own loop too.
        self._slot_state = threading.local()

    @contextmanager
    def slot(self) -> Iterator[None]:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._slot_state.loop = loop
        try:
            yield
        finally:
            self._slot_state.loop = None
            loop.run_until_complete(resources.close_loop(loop))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)

    def execute(self, payload: TaskPayload, context: RunContext) -> dict[str, Any]:
        agent = resolve_agent(payload.agent_config, self.policy)
        texts: list[str] = []

        def emit(item: Any) -> None:
            event = coerce_event(item, agent.name)
            if isinstance(event, TextEvent):
                texts.append(event.text)
            context.publish(event)

        value = self._call(agent.runnable, payload, context, emit)
        return {"output": value if value is not None else "".join(texts)}

    def _call(
        self,
        func: Callable[..., Any],
        payload: TaskPayload,
        context: RunContext,
        emit: Callable[[Any], None],
    ) -> Any:
        outcome = func(payload.input, **_context_kwargs(func, payload, context.control, emit))
        if inspect.isasyncgen(outcome):
            return self._run_async(_drain_async(outcome, emit), context.control)
        if inspect.isawaitable(outcome):
            return self._run_async(_await(outcome), context.control)
        if inspect.isgenerator(outcome):
            return _drain_sync(outcome, emit, context.control)
        return outcome

    def _run_async(self, coro: Coroutine[Any, Any, Any], control: RunControl) -> Any:
        loop: asyncio.AbstractEventLoop | None = getattr(self._slot_state, "loop", None)
        if loop is None:
            coro.close()
            raise RuntimeError("async agents run only inside a slot (LocalExecutor.slot())")
        task = loop.create_task(coro)
        control.attach(loop, task)
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if control.reason is not None:
                raise RunInterrupted(control.reason) from None
            raise
        finally:
            control.detach()


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
    func: Callable[..., Any],
    payload: TaskPayload,
    control: RunControl,
    emit: Callable[[Any], None],
) -> dict[str, Any]:
    """The context keywords ``func`` accepts: all of them with ``**kwargs``, else those it names.

    ``emit(item)`` publishes an event (what a generator would yield) from an agent that
    returns its output, such as a coroutine."""
    context = {
        "task_id": payload.task_id,
        "messages": payload.messages,
        "metadata": payload.metadata,
        "detailed": payload.detailed,
        "model": payload.model,
        "agent_config": payload.agent_config,
        "cancel_event": control.event,
        "emit": emit,
    }
    try:
        names = _accepted_names(func)
    except TypeError:  # an unhashable callable: inspected every time
        names = _accepted_names.__wrapped__(func)
    if names is None:
        return context
    return {k: v for k, v in context.items() if k in names}


@functools.lru_cache(maxsize=1024)
def _accepted_names(func: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword names ``func`` takes; None when it takes any (or cannot be inspected).
    Cached: the signature of an entrypoint is read once, not once per run."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY)
