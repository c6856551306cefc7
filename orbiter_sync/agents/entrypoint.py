"""The entrypoint kind: ``{"entrypoint": "pkg.module:func"}`` (or ``pkg.module.func``), user code.

``func(input, **context)`` may be an async generator, a coroutine function, a
generator or a plain function; the executor runs whichever it is. The function
is reached only through the import allowlist (imports.py): it must be one
function, class or ``@tool``-style wrapper *defined in* an allowed module, never
an attribute chain, a re-export, a built-in or a bound method.
"""

from __future__ import annotations

import functools
from typing import Any

from orbiter_sync.agents.base import ResolvedAgent
from orbiter_sync.agents.imports import ImportPolicy, import_allowed
from orbiter_sync.errors import AgentConfigError

KIND = "entrypoint"


def claims(agent_config: dict[str, Any]) -> bool:
    return "entrypoint" in agent_config


@functools.lru_cache(maxsize=512)
def _callable(path: str, policy: ImportPolicy) -> Any:
    """The function ``path`` names, through the allowlist; looked up once per path and
    policy (a refusal is not remembered: it raises again, every time)."""
    target = import_allowed(path, policy, what=KIND)
    if not callable(target):
        raise AgentConfigError(f"entrypoint {path!r} is not callable")
    return target


def resolve(agent_config: dict[str, Any], policy: ImportPolicy) -> ResolvedAgent:
    path = agent_config["entrypoint"]
    if not isinstance(path, str):
        raise AgentConfigError("agent_config.entrypoint must be a string 'pkg.module:func'")
    target = _callable(path, policy)
    name = agent_config.get("name")
    return ResolvedAgent(
        name=name if isinstance(name, str) and name else path, kind=KIND, runnable=target
    )
