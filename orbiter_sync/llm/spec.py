"""What an LLM agent_config says, checked: the worker's reading of ``Agent.to_dict()`` and
``Swarm.to_dict()`` dicts.

The dicts come from any client, so nothing is trusted: every field is checked
for its type and range, nesting is bounded, and anything wrong is an
:class:`AgentConfigError` (the task fails for good, it can never run). The
defaults are the original's ``Agent.from_dict`` / ``Swarm.from_dict`` ones.
Nothing here imports pydantic-ai or any path a config names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orbiter_sync.errors import AgentConfigError
from orbiter_sync.flow import SWARM_MODES, flow_order

DEFAULT_MODEL = "openai:gpt-4o"
# The limits a worker holds configs to; orbiter_sync.specs checks the same in the client.
MAX_STEPS_LIMIT = 1000  # a config asking for more is a mistake, not a plan
MAX_TOKENS = 10_000_000
MAX_HANDOFFS = 10_000
MAX_NAME = 200  # characters: a name goes into every event the agent makes
MAX_TOOLS = 128
MAX_HANDOFF_DEPTH = 8
MAX_SWARM_AGENTS = 64
MAX_TEXT = 1_000_000  # characters of instructions


@dataclass(frozen=True)
class AgentSpec:
    """One orbiter Agent dict, checked."""

    name: str
    model: str = DEFAULT_MODEL
    instructions: str = ""
    max_steps: int = 10
    temperature: float = 1.0
    max_tokens: int | None = None
    tools: tuple[str, ...] = ()
    handoffs: tuple[AgentSpec, ...] = ()
    output_type: str | None = None

    @property
    def handoff_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.handoffs)


@dataclass(frozen=True)
class SwarmSpec:
    """One orbiter Swarm dict, checked; ``order`` is the flow's execution order."""

    agents: Mapping[str, AgentSpec]
    order: tuple[str, ...]
    mode: str = "workflow"
    max_handoffs: int = 10

    @property
    def name(self) -> str:
        """The original's name for a swarm: ``swarm(<first>...)``."""
        return f"swarm({self.order[0]}...)"


def agent_spec(config: Any, *, where: str = "agent_config", depth: int = 0) -> AgentSpec:
    """The :class:`AgentSpec` of an orbiter Agent dict; ``AgentConfigError`` if it has none."""
    if not isinstance(config, dict):
        raise AgentConfigError(f"{where} must be an object, got {type(config).__name__}")
    if depth > MAX_HANDOFF_DEPTH:
        raise AgentConfigError(f"{where}: handoffs nest deeper than {MAX_HANDOFF_DEPTH} levels")
    name = config.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise AgentConfigError(
            f"{where}.name must be a non-empty string of at most {MAX_NAME} characters"
        )
    where = f"{where} {name!r}" if depth == 0 and where == "agent_config" else where
    handoffs = _items(config, "handoffs", where, limit=MAX_SWARM_AGENTS)
    specs = tuple(
        agent_spec(h, where=f"{where}.handoffs[{i}]", depth=depth + 1)
        for i, h in enumerate(handoffs)
    )
    _unique([s.name for s in specs], f"{where}: duplicate handoff agent")
    tools = tuple(
        _path(t, f"{where}.tools[{i}]") for i, t in enumerate(_items(config, "tools", where))
    )
    return AgentSpec(
        name=name,
        model=_model(config.get("model", DEFAULT_MODEL), where),
        instructions=_instructions(config.get("instructions", ""), where),
        max_steps=_count(config.get("max_steps", 10), f"{where}.max_steps", MAX_STEPS_LIMIT),
        temperature=_temperature(config.get("temperature", 1.0), where),
        max_tokens=_max_tokens(config.get("max_tokens"), where),
        tools=tools,
        handoffs=specs,
        output_type=_optional_path(config.get("output_type"), f"{where}.output_type"),
    )


def swarm_spec(config: Any) -> SwarmSpec:
    """The :class:`SwarmSpec` of an orbiter Swarm dict; ``AgentConfigError`` if it has none."""
    if not isinstance(config, dict):
        raise AgentConfigError(f"agent_config must be an object, got {type(config).__name__}")
    members = config.get("agents")
    if not isinstance(members, list) or not members:
        raise AgentConfigError("swarm agent_config.agents must be a non-empty list of agents")
    if len(members) > MAX_SWARM_AGENTS:
        raise AgentConfigError(f"a swarm may have at most {MAX_SWARM_AGENTS} agents")
    specs = [agent_spec(a, where=f"agents[{i}]") for i, a in enumerate(members)]
    names = [s.name for s in specs]
    _unique(names, "duplicate agent name in swarm:")
    mode = config.get("mode", "workflow")
    if mode not in SWARM_MODES:
        raise AgentConfigError(
            f"unsupported swarm mode {_show(mode)}: choose one of {', '.join(SWARM_MODES)}"
        )
    flow = config.get("flow")
    if flow is not None and not isinstance(flow, str):
        raise AgentConfigError("swarm flow must be a string like 'a >> b' or null")
    order = tuple(flow_order(flow, names))
    if mode == "team" and len(specs) < 2:
        raise AgentConfigError("team mode requires at least two agents (lead + workers)")
    return SwarmSpec(
        agents={s.name: s for s in specs},
        order=order,
        mode=mode,
        max_handoffs=_count(config.get("max_handoffs", 10), "max_handoffs", MAX_HANDOFFS, least=0),
    )


def _items(config: dict[str, Any], key: str, where: str, *, limit: int = MAX_TOOLS) -> list[Any]:
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise AgentConfigError(f"{where}.{key} must be a list, got {type(value).__name__}")
    if len(value) > limit:
        raise AgentConfigError(f"{where}.{key}: at most {limit} allowed, got {len(value)}")
    return value


def _unique(names: list[str], message: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise AgentConfigError(f"{message} {name!r}")
        seen.add(name)


def _model(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 300:
        raise AgentConfigError(f"{where}.model must be a string like 'openai:gpt-4o'")
    return value


def _instructions(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AgentConfigError(f"{where}.instructions must be a string")
    if len(value) > MAX_TEXT:
        raise AgentConfigError(f"{where}.instructions is longer than {MAX_TEXT} characters")
    return value


def _count(value: Any, where: str, most: int, *, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise AgentConfigError(
            f"{where} must be an integer from {least} to {most}, got {_show(value)}"
        )
    return value


def _temperature(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AgentConfigError(f"{where}.temperature must be a number, got {_show(value)}")
    if not 0 <= value <= 2:
        raise AgentConfigError(f"{where}.temperature must be between 0 and 2, got {_show(value)}")
    return float(value)


def _max_tokens(value: Any, where: str) -> int | None:
    if value is None:
        return None
    return _count(value, f"{where}.max_tokens", MAX_TOKENS)


def _show(value: Any) -> str:
    """``repr(value)``, short: a config's values end up in errors others read."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:59] + "…"


def _path(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 500:
        raise AgentConfigError(f"{where} must be a dotted path like 'pkg.module.func'")
    return value


def _optional_path(value: Any, where: str) -> str | None:
    return None if value is None else _path(value, where)
