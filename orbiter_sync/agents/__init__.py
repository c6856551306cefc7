"""From ``agent_config`` to something a slot can run.

Form 1, ``{"entrypoint": "pkg.module:func"}`` (or ``pkg.module.func``), is user
code behind the import allowlist (entrypoint.py). The built-in LLM agent and the
swarm forms arrive with the agents issue; until then they fail with a clear,
permanent error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orbiter_sync.agents.entrypoint import ImportPolicy, resolve_entrypoint
from orbiter_sync.errors import AgentConfigError

__all__ = ["ImportPolicy", "resolve_agent"]


def resolve_agent(agent_config: dict[str, Any], policy: ImportPolicy) -> Callable[..., Any]:
    """The callable to run for ``agent_config``; ``AgentConfigError`` if there is none."""
    entrypoint = agent_config.get("entrypoint")
    if entrypoint is not None:
        if not isinstance(entrypoint, str):
            raise AgentConfigError("agent_config.entrypoint must be a string 'pkg.module:func'")
        return resolve_entrypoint(entrypoint, policy)
    if "agents" in agent_config:
        raise AgentConfigError("swarm agent_configs are not supported by this worker yet")
    if "model" in agent_config or "instructions" in agent_config:
        raise AgentConfigError("LLM agent_configs are not supported by this worker yet")
    raise AgentConfigError(
        'agent_config has no \'entrypoint\' (expected {"entrypoint": "pkg.module:func"})'
    )
