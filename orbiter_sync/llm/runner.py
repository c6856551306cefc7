"""One LLM agent run on pydantic-ai, publishing the original's events as it goes.

The run goes through ``agent.iter()`` and each node's ``stream()``, so step
boundaries and per-request usage are known, and events are made as orbiter-core's
``run.stream()`` makes them, in its order:

- ``status: starting`` (detailed);
- per model request (a step): ``step started`` (detailed); ``text`` per text delta
  and ``reasoning`` per thinking delta; ``usage`` (detailed); then, with no tool
  calls, ``step completed`` and ``status: completed`` (detailed; the slot publishes
  that status as ``running``, since only settling ends a stream); else a
  ``tool_call`` per call, a ``tool_result`` per result (detailed) and ``step
  completed`` (detailed);
- on an error: ``error`` (always) and ``status: error`` (detailed), then it is raised.

``max_steps`` bounds the model requests; reaching it ends the run with what it
has, as the original's loop does. The output is the agent's text (all of it, as
the async worker joins it), or its structured ``output_type`` as a JSON object.
A provider's error is sorted (errors.py): refused for good, retry later, or a
failed attempt.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_ai import Agent as PydanticAgent
from pydantic_ai import UsageLimitExceeded
from pydantic_ai import messages as m
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import Tool
from pydantic_ai.toolsets import FunctionToolset
from pydantic_ai.usage import UsageLimits

from orbiter_sync.agents.imports import ImportPolicy, import_allowed
from orbiter_sync.errors import AgentConfigError
from orbiter_sync.events import (
    ErrorEvent,
    ReasoningEvent,
    StatusEvent,
    StepEvent,
    StreamEvent,
    TextEvent,
    ToolCallEvent,
    ToolResultEvent,
    Usage,
    UsageEvent,
)
from orbiter_sync.llm import errors
from orbiter_sync.llm.models import PROVIDERS, build_model, check_model, split_model
from orbiter_sync.llm.spec import AgentSpec
from orbiter_sync.llm.tools import ReportingToolset, load_tools
from orbiter_sync.redaction import error_text

Emit = Callable[[StreamEvent], object]


@dataclass(frozen=True)
class PreparedAgent:
    """An agent whose tools and output type passed the allowlist; no model call made yet."""

    spec: AgentSpec
    tools: tuple[Tool[Any], ...]
    output_type: type | None


@dataclass(frozen=True)
class AgentOutput:
    """What a run ended with: all its text, and the output (that text, or a JSON object)."""

    text: str
    output: Any


def prepare(spec: AgentSpec, policy: ImportPolicy) -> PreparedAgent:
    """Check what ``spec`` names before anything runs; ``AgentConfigError`` for what cannot."""
    provider, _ = split_model(spec.model)
    if provider not in PROVIDERS:
        check_model(spec.model)  # raises the unknown-provider error
    output_type = _output_type(spec.output_type, policy) if spec.output_type else None
    return PreparedAgent(spec, tuple(load_tools(spec.tools, policy)), output_type)


@functools.lru_cache(maxsize=256)
def _output_type(path: str, policy: ImportPolicy) -> type:
    from pydantic import BaseModel

    target = import_allowed(path, policy, what="output_type")
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        raise AgentConfigError(f"output_type {path!r} is not a pydantic model class")
    return target


async def run_agent(
    agent: PreparedAgent,
    user_input: str,
    *,
    emit: Emit,
    detailed: bool,
    history: Sequence[Any] = (),
    model: str | None = None,
    extra_tools: Sequence[Tool[Any]] = (),
) -> AgentOutput:
    """Run ``agent`` once on ``user_input``, publishing its events through ``emit``."""
    spec = agent.spec
    run = _Run(spec.name, spec.model if model is None else model, emit, detailed)
    tools = [*agent.tools, *extra_tools]
    run.tool_names = frozenset(t.name for t in tools)
    run.structured = agent.output_type is not None
    # a model's bad arguments go back to it, as in the original; max_steps bounds the rest
    toolset = ReportingToolset(FunctionToolset(tools, max_retries=spec.max_steps))
    settings = ModelSettings(temperature=spec.temperature)
    if spec.max_tokens is not None:
        settings["max_tokens"] = spec.max_tokens
    pydantic_agent: PydanticAgent[None, Any] = PydanticAgent(
        build_model(run.model),
        output_type=agent.output_type or str,
        instructions=spec.instructions or None,
        name=spec.name,
        model_settings=settings,
        toolsets=[toolset],
    )
    run.status("starting", f"Agent '{spec.name}' starting execution")
    try:
        async with pydantic_agent.iter(
            user_input,
            message_history=list(history) or None,
            usage_limits=UsageLimits(request_limit=spec.max_steps),
        ) as agent_run:
            async for node in agent_run:
                if PydanticAgent.is_model_request_node(node):
                    async with node.stream(agent_run.ctx) as stream:
                        await run.model_request(stream)
                elif PydanticAgent.is_call_tools_node(node) and run.calling_tools:
                    async with node.stream(agent_run.ctx) as stream:
                        await run.tool_results(stream, toolset.failures)
            result = agent_run.result
    except UsageLimitExceeded:  # max_steps reached: the original's loop ends with what it has
        return AgentOutput(run.text, run.text)
    except Exception as exc:
        run.failed(exc)
        raise errors.sorted_out(exc) from exc
    if agent.output_type is not None and result is not None:
        return AgentOutput(run.text, result.output.model_dump(mode="json"))
    return AgentOutput(run.text, run.text)


class _Run:
    """The event-making state of one agent run: its step, texts and pending tool calls."""

    def __init__(self, name: str, model: str, emit: Emit, detailed: bool) -> None:
        self.name, self.model, self.emit, self.detailed = name, model, emit, detailed
        self.texts: list[str] = []
        self.step = 0
        self.started_at = 0.0
        self.usage = Usage()
        self.tool_names: frozenset[str] = frozenset()
        self.structured = False
        self.calling_tools = False
        self.arguments: dict[str, dict[str, Any]] = {}

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def status(self, status: str, message: str) -> None:
        if self.detailed:
            self.emit(StatusEvent(status=status, agent_name=self.name, message=message))

    def step_event(self, status: str) -> None:
        if not self.detailed:
            return
        completed = status == "completed"
        self.emit(
            StepEvent(
                step_number=self.step,
                agent_name=self.name,
                status=status,  # type: ignore[arg-type]
                started_at=self.started_at,
                completed_at=time.time() if completed else None,
                usage=self.usage if completed else None,
            )
        )

    async def model_request(self, stream: Any) -> None:
        self.step += 1
        self.started_at = time.time()
        self.usage = Usage()
        self.step_event("started")
        async for event in stream:
            self._delta(event)
        response = stream.response
        self.usage = _usage(response.usage)
        if self.detailed:
            self.emit(
                UsageEvent(
                    usage=self.usage, agent_name=self.name, step_number=self.step, model=self.model
                )
            )
        calls = [
            p
            for p in response.parts
            if isinstance(p, m.ToolCallPart) and not self._is_output(p.tool_name)
        ]
        self.calling_tools = bool(calls)
        if not calls:
            self.step_event("completed")
            self.status("completed", f"Agent '{self.name}' completed execution")
            return
        for call in calls:
            self.arguments[call.tool_call_id] = call.args_as_dict()
            self.emit(
                ToolCallEvent(
                    tool_name=call.tool_name,
                    tool_call_id=call.tool_call_id,
                    arguments=call.args_as_json_str(),
                    agent_name=self.name,
                )
            )

    def _is_output(self, tool_name: str) -> bool:
        """Whether a call is pydantic-ai's way of giving the structured output, not a tool's."""
        return self.structured and tool_name.startswith("final_result")

    def _delta(self, event: Any) -> None:
        text = reasoning = ""
        if isinstance(event, m.PartStartEvent):
            if isinstance(event.part, m.TextPart):
                text = event.part.content
            elif isinstance(event.part, m.ThinkingPart):
                reasoning = event.part.content
        elif isinstance(event, m.PartDeltaEvent):
            if isinstance(event.delta, m.TextPartDelta):
                text = event.delta.content_delta
            elif isinstance(event.delta, m.ThinkingPartDelta):
                reasoning = event.delta.content_delta or ""
        if text:
            self.texts.append(text)
            self.emit(TextEvent(text=text, agent_name=self.name))
        if reasoning:
            self.emit(ReasoningEvent(text=reasoning, agent_name=self.name))

    async def tool_results(self, stream: Any, failures: dict[str, str]) -> None:
        started: dict[str, float] = {}
        results: dict[str, ToolResultEvent] = {}
        async for event in stream:
            if isinstance(event, m.FunctionToolCallEvent):
                started[event.part.tool_call_id] = time.monotonic()
            elif isinstance(event, m.FunctionToolResultEvent) and self.detailed:
                part = event.part
                if self._is_output(part.tool_name):
                    continue
                call_id = part.tool_call_id
                error = failures.pop(call_id, None) or self._refused(part)
                began = started.pop(call_id, time.monotonic())
                results[call_id] = ToolResultEvent(
                    tool_name=part.tool_name,
                    tool_call_id=call_id,
                    arguments=self.arguments.get(call_id, {}),
                    result="" if error is not None else _content(part),
                    error=error,
                    success=error is None,
                    duration_ms=(time.monotonic() - began) * 1000,
                    agent_name=self.name,
                )
        # in the order the model called them, as the original publishes them
        for call_id in [*self.arguments, *results]:
            if call_id in results:
                self.emit(results.pop(call_id))
        self.arguments.clear()
        self.step_event("completed")
        self.calling_tools = False

    def _refused(self, part: Any) -> str | None:
        """Why pydantic-ai did not run a call (None when it ran): an unknown tool, as the
        original says it, or arguments that do not fit the tool's schema."""
        if part.tool_name not in self.tool_names:
            return f"Unknown tool '{part.tool_name}'"
        outcome = getattr(part, "outcome", "success")
        if isinstance(part, m.RetryPromptPart) or outcome == "retried":
            return error_text(ValueError(f"invalid arguments: {part.content}"))
        if outcome != "success":
            return error_text(ValueError(str(part.content) or "tool failed"))
        return None

    def failed(self, exc: Exception) -> None:
        message = error_text(exc)
        self.emit(
            ErrorEvent(
                error=message,
                error_type=type(exc).__name__,
                agent_name=self.name,
                step_number=self.step or None,
                recoverable=False,
            )
        )
        self.status("error", message)


def _content(part: Any) -> Any:
    """A tool's return as the original makes it: the string, or ``str()`` of anything else."""
    content = getattr(part, "content", "")
    return content if isinstance(content, str) else str(content)


def _usage(usage: Any) -> Usage:
    tokens_in = int(getattr(usage, "input_tokens", 0) or 0)
    tokens_out = int(getattr(usage, "output_tokens", 0) or 0)
    return Usage(
        input_tokens=tokens_in, output_tokens=tokens_out, total_tokens=tokens_in + tokens_out
    )
