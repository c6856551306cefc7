"""The ``llm`` and ``swarm`` agent kinds: an orbiter Agent or Swarm dict, checked and made
ready to run (tools and output type through the import allowlist) before any model call.

The runnable is a coroutine function the local executor calls with the run's
context (``messages``, ``detailed``, ``model``, ``emit``); it publishes events
through ``emit`` and returns the output. The payload's ``model``, when set,
overrides every agent's model.
"""

from __future__ import annotations

from typing import Any

from orbiter_sync.agents.base import ResolvedAgent
from orbiter_sync.agents.imports import ImportPolicy
from orbiter_sync.llm.history import to_history
from orbiter_sync.llm.models import check_model
from orbiter_sync.llm.runner import Emit, prepare, run_agent
from orbiter_sync.llm.spec import agent_spec, swarm_spec
from orbiter_sync.llm.swarm import PreparedSwarm, run_swarm


def resolve_llm(config: dict[str, Any], policy: ImportPolicy) -> ResolvedAgent:
    agent = prepare(agent_spec(config), policy)

    async def run(
        input: Any, *, emit: Emit, messages: Any = None, detailed: bool = False,
        model: str | None = None,
    ) -> Any:  # fmt: skip
        check_model(model or agent.spec.model)
        output = await run_agent(
            agent, _text(input), emit=emit, detailed=detailed, history=to_history(messages),
            model=model,
        )  # fmt: skip
        return output.output

    return ResolvedAgent(name=agent.spec.name, kind="llm", runnable=run)


def resolve_swarm(config: dict[str, Any], policy: ImportPolicy) -> ResolvedAgent:
    spec = swarm_spec(config)
    swarm = PreparedSwarm(spec, {name: prepare(a, policy) for name, a in spec.agents.items()})

    async def run(
        input: Any, *, emit: Emit, messages: Any = None, detailed: bool = False,
        model: str | None = None,
    ) -> Any:  # fmt: skip
        for member in spec.agents.values():  # all of them, before the first one runs
            check_model(model or member.model)
        return await run_swarm(
            swarm, _text(input), emit=emit, detailed=detailed, history=to_history(messages),
            model=model,
        )  # fmt: skip

    return ResolvedAgent(name=spec.name, kind="swarm", runnable=run)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)
