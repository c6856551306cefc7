"""Swarms: several LLM agents run as one task, with the original's three modes.

- ``workflow``: the agents run in flow order, each one's text the next one's input;
  the output is the last agent's.
- ``handoff``: the first agent in flow order runs; when its whole output (stripped)
  is the name of one of its ``handoffs`` that is also in the swarm, control passes
  to that agent, with that output as its input, at most ``max_handoffs`` times
  (one more is a ``SwarmError``). The output is the last agent's.
- ``team``: the first agent leads; it gets a ``delegate_to_<name>`` tool per other
  agent, which runs that agent on the given task and answers with its text (the
  worker's own events are not published, as in the original); the output is the
  lead's.

With ``detailed``, a ``status: running`` event says which agent runs next, as the
original's swarm stream does. Every event carries the name of the agent that made it.
An Agent dict's ``handoffs`` matter only in a handoff-mode swarm: a standalone
agent with handoffs runs alone, as it does in the original.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orbiter_sync.events import StatusEvent, StreamEvent
from orbiter_sync.llm.runner import AgentOutput, Emit, PreparedAgent, run_agent
from orbiter_sync.llm.spec import SwarmSpec
from orbiter_sync.llm.tools import delegate_tool
from orbiter_sync.redaction import error_text


class SwarmError(RuntimeError):
    """A swarm run that went wrong (too many handoffs): a failed attempt, as in the original."""


class DelegateError(RuntimeError):
    """A team worker's run failed: its lead's ``delegate_to_<worker>`` tool result says why."""


@dataclass(frozen=True)
class PreparedSwarm:
    """A swarm whose agents all passed the allowlist; no model called yet."""

    spec: SwarmSpec
    agents: Mapping[str, PreparedAgent]


async def run_swarm(
    swarm: PreparedSwarm,
    user_input: str,
    *,
    emit: Emit,
    detailed: bool,
    history: Sequence[Any] = (),
    model: str | None = None,
) -> Any:
    """Run ``swarm`` on ``user_input`` in its mode; returns the output."""
    run = _SwarmRun(swarm, emit, detailed, history, model)
    mode = swarm.spec.mode
    if mode == "workflow":
        return await run.workflow(user_input)
    if mode == "handoff":
        return await run.handoff(user_input)
    return await run.team(user_input)


class _SwarmRun:
    def __init__(
        self,
        swarm: PreparedSwarm,
        emit: Emit,
        detailed: bool,
        history: Sequence[Any],
        model: str | None,
    ) -> None:
        self.swarm, self.emit, self.detailed = swarm, emit, detailed
        self.history, self.model = history, model

    def running(self, agent_name: str, message: str) -> None:
        if self.detailed:
            self.emit(StatusEvent(status="running", agent_name=agent_name, message=message))

    async def agent(self, name: str, text: str, **options: Any) -> AgentOutput:
        options.setdefault("emit", self.emit)
        options.setdefault("detailed", self.detailed)
        options.setdefault("history", self.history)
        return await run_agent(self.swarm.agents[name], text, model=self.model, **options)

    async def workflow(self, text: str) -> Any:
        output: AgentOutput | None = None
        for name in self.swarm.spec.order:
            self.running(name, f"Workflow executing agent '{name}'")
            output = await self.agent(name, text)
            text = output.text
        assert output is not None  # a swarm has at least one agent
        return output.output

    async def handoff(self, text: str) -> Any:
        spec = self.swarm.spec
        name, handoffs = spec.order[0], 0
        while True:
            self.running(name, f"Handoff executing agent '{name}'")
            output = await self.agent(name, text)
            target = self._handoff_target(name, output.text)
            if target is None:
                return output.output
            handoffs += 1
            if handoffs > spec.max_handoffs:
                raise SwarmError(f"Max handoffs ({spec.max_handoffs}) exceeded in swarm")
            self.running(target, f"Handoff from '{name}' to '{target}'")
            name, text = target, output.text

    def _handoff_target(self, name: str, text: str) -> str | None:
        said = text.strip()
        for target in self.swarm.spec.agents[name].handoff_names:
            if target in self.swarm.spec.agents and said == target:
                return target
        return None

    async def team(self, text: str) -> Any:
        lead, *workers = self.swarm.spec.order
        tools = [delegate_tool(worker, self._delegate(worker)) for worker in workers]
        self.running(lead, f"Team lead '{lead}' starting execution")
        output = await self.agent(lead, text, extra_tools=tools)
        return output.output

    def _delegate(self, worker: str) -> Any:
        async def run(task: str) -> str:
            # the task alone, no history, as the original's delegate tool runs it; whatever
            # goes wrong is the lead's tool error, never the whole run's
            try:
                output = await self.agent(worker, task, emit=_quiet, detailed=False, history=())
            except Exception as exc:  # noqa: BLE001 - reported to the lead as a failed tool
                raise DelegateError(f"{worker}: {error_text(exc)}") from None
            return output.text

        return run


def _quiet(_event: StreamEvent) -> None:
    """Where a team worker's events go: nowhere, as in the original."""
