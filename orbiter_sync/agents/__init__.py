"""From ``agent_config`` to a :class:`ResolvedAgent`, through a table of agent kinds.

Each kind is one module with ``claims(config)`` and ``resolve(config, policy)``
and one entry in :data:`AGENT_KINDS`, tried in order:

- ``entrypoint`` (entrypoint.py): ``{"entrypoint": "pkg.module:func"}``, user code;
- ``swarm``: an orbiter Swarm dict (``agents``, ``flow``, ``mode``);
- ``llm``: an orbiter Agent dict (``model``, ``instructions``, ``tools`` ...).

The swarm and LLM kinds live in :mod:`orbiter_sync.llm` and run on pydantic-ai
(the ``agents`` extra); they are imported only when such a config arrives, so a
worker that runs entrypoints never loads them, and a worker without the extra
fails those tasks for good with an error that says what to install. Every dotted
path a payload names goes through the import allowlist (imports.py).
"""

from __future__ import annotations

import importlib
from typing import Any

from orbiter_sync.agents import entrypoint
from orbiter_sync.agents.base import AgentKind, ResolvedAgent
from orbiter_sync.agents.imports import ImportPolicy
from orbiter_sync.errors import AGENTS_EXTRA_HINT, AgentConfigError

__all__ = [
    "AGENT_KINDS",
    "AgentKind",
    "ImportPolicy",
    "ResolvedAgent",
    "resolve_agent",
]


def _kinds_module() -> Any:
    try:
        return importlib.import_module("orbiter_sync.llm.kinds")
    except ImportError as exc:
        raise AgentConfigError(
            f"LLM agents need pydantic-ai ({exc}): {AGENTS_EXTRA_HINT}"
        ) from None


def _llm(config: dict[str, Any], policy: ImportPolicy) -> ResolvedAgent:
    resolved: ResolvedAgent = _kinds_module().resolve_llm(config, policy)
    return resolved


def _swarm(config: dict[str, Any], policy: ImportPolicy) -> ResolvedAgent:
    resolved: ResolvedAgent = _kinds_module().resolve_swarm(config, policy)
    return resolved


AGENT_KINDS: tuple[AgentKind, ...] = (
    AgentKind(entrypoint.KIND, entrypoint.claims, entrypoint.resolve),
    AgentKind("swarm", lambda config: "agents" in config, _swarm),
    AgentKind("llm", lambda config: "model" in config or "instructions" in config, _llm),
)


def resolve_agent(agent_config: dict[str, Any], policy: ImportPolicy) -> ResolvedAgent:
    """The agent to run for ``agent_config``; ``AgentConfigError`` if there is none."""
    for kind in AGENT_KINDS:
        if kind.claims(agent_config):
            return kind.resolve(agent_config, policy)
    raise AgentConfigError(
        'agent_config has no \'entrypoint\' (expected {"entrypoint": "pkg.module:func"})'
    )
