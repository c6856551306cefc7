"""From ``agent_config`` to a :class:`ResolvedAgent`, through a table of agent kinds.

Each kind is one module with ``claims(config)`` and ``resolve(config, policy)``
and one entry in :data:`AGENT_KINDS`, tried in order:

- ``entrypoint`` (entrypoint.py): ``{"entrypoint": "pkg.module:func"}``, user code;
- ``swarm``: an orbiter Swarm dict (``agents``, ``flow``, ``mode``);
- ``llm``: an orbiter Agent dict (``model``, ``instructions``, ``tools`` ...).

The swarm and LLM kinds are not built yet: they fail with a clear, permanent
error. Every dotted path a payload names goes through the import allowlist
(imports.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orbiter_sync.agents import entrypoint
from orbiter_sync.agents.base import AgentKind, ResolvedAgent
from orbiter_sync.agents.imports import ImportPolicy
from orbiter_sync.errors import AgentConfigError

__all__ = [
    "AGENT_KINDS",
    "AgentKind",
    "ImportPolicy",
    "ResolvedAgent",
    "resolve_agent",
]


def _not_built(label: str) -> Callable[[dict[str, Any], ImportPolicy], ResolvedAgent]:
    def resolve(_config: dict[str, Any], _policy: ImportPolicy) -> ResolvedAgent:
        raise AgentConfigError(f"{label} agent_configs are not supported by this worker yet")

    return resolve


AGENT_KINDS: tuple[AgentKind, ...] = (
    AgentKind(entrypoint.KIND, entrypoint.claims, entrypoint.resolve),
    AgentKind("swarm", lambda config: "agents" in config, _not_built("swarm")),
    AgentKind(
        "llm", lambda config: "model" in config or "instructions" in config, _not_built("LLM")
    ),
)


def resolve_agent(agent_config: dict[str, Any], policy: ImportPolicy) -> ResolvedAgent:
    """The agent to run for ``agent_config``; ``AgentConfigError`` if there is none."""
    for kind in AGENT_KINDS:
        if kind.claims(agent_config):
            return kind.resolve(agent_config, policy)
    raise AgentConfigError(
        'agent_config has no \'entrypoint\' (expected {"entrypoint": "pkg.module:func"})'
    )
