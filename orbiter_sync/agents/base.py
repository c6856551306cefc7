"""What resolving an agent_config yields, and what a kind of agent provides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orbiter_sync.agents.imports import ImportPolicy


@dataclass(frozen=True)
class ResolvedAgent:
    """An agent ready to run: its name (for events), its kind, and what to call.

    ``runnable(input, **context)`` may be an async generator, a coroutine
    function, a generator or a plain function: yielded items are events, the
    return value is the output.
    """

    name: str
    kind: str
    runnable: Callable[..., Any]


@dataclass(frozen=True)
class AgentKind:
    """One form of agent_config: which configs it claims, and how it resolves them."""

    name: str
    claims: Callable[[dict[str, Any]], bool]
    resolve: Callable[[dict[str, Any], ImportPolicy], ResolvedAgent]
