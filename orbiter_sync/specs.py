"""``Agent`` and ``Swarm``: agent_configs built in plain synchronous code.

A Django view (or any client) describes the agent to run without asyncio, pydantic
or orbiter-core; ``to_dict()`` gives the same dict, key for key and in the same
order, as the async library's ``Agent.to_dict()`` / ``Swarm.to_dict()`` for the
same settings, so :func:`orbiter_sync.client.distributed` can queue either.

Everything a worker could never rebuild is refused here, at construction, with a
``ValueError`` that says why and what to do: a worker imports tools and output
types by dotted path through its import allowlist (``agents/imports.py``), so
lambdas, closures, local or nested definitions, ``__main__``, bound methods,
built-ins, partials and private names can never reach it.
"""

from __future__ import annotations

import functools
import math
import re
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orbiter_sync.errors import AgentConfigError
from orbiter_sync.flow import SWARM_MODES, flow_order
from orbiter_sync.llm.spec import MAX_HANDOFFS, MAX_NAME, MAX_STEPS_LIMIT, MAX_TOKENS

__all__ = ["DEFAULT_MODEL", "Agent", "Swarm"]

DEFAULT_MODEL = "openai:gpt-4o"

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED_PATH = re.compile(rf"{_NAME}(?:\.{_NAME})+")  # a module, then one name at least
# Modules no worker imports from: why, and the advice that goes before the fix.
_UNIMPORTABLE = {
    "__main__": (
        "__main__ (the script being run), which a worker cannot import",
        "move it into a module and ",
    ),
    "builtins": ("builtins (Python's built-ins), which the worker's allowlist refuses", ""),
}
_USE_FUNCTION = "use a module-level function"
_TOOL_MEMBERS = ("name", "description", "parameters", "execute")
_TOOL_KINDS = (
    "a module-level function, a tool class or instance (with name, description, "
    "parameters and execute), or a dotted path 'pkg.module.func'"
)


def _label(obj: Any) -> str:
    """How a refused tool is named in a message: short, and never its whole repr."""
    if isinstance(obj, str):
        return repr(obj[:80])
    for attribute in ("__name__", "name"):  # a function or class; a tool object
        name = getattr(obj, attribute, None)
        if isinstance(name, str) and name:
            return repr(name[:80])
    return f"of type {type(obj).__name__}"


def _check_segments(path: str, what: str, fix: str) -> str:
    """``path`` itself, if the worker's allowlist could ever import it."""
    module = path.rpartition(".")[0]
    if module in _UNIMPORTABLE:
        why, advice = _UNIMPORTABLE[module]
        raise ValueError(f"{what} is defined in {why}: {advice}{fix}")
    for segment in path.split("."):
        if segment.startswith("_"):
            raise ValueError(
                f"{what} has a private or dunder name ({segment!r} in {path!r}), which the "
                f"worker's import allowlist refuses: {fix} with a public name"
            )
    return path


def _dotted_path(path: str, what: str) -> str:
    """A path given as a string, kept as given once it looks like ``pkg.module.name``."""
    if not _DOTTED_PATH.fullmatch(path):
        raise ValueError(f"{what} is not a dotted path like 'pkg.module.name'")
    return _check_segments(path, what, "name a public module-level function or class")


def _definition_path(obj: Any, what: str, fix: str) -> str:
    """``module.qualname`` of a function or class, as the async library writes it,
    if a worker can import it back: defined at the top level of an importable module."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not module or not isinstance(qualname, str):
        raise ValueError(f"{what} has no module or qualified name to import it by: {fix}")
    if "<lambda>" in qualname:
        raise ValueError(f"{what} is a lambda, which cannot be serialized: {fix}")
    if "<" in qualname:
        raise ValueError(
            f"{what} is defined inside a function ({qualname}): a closure or local "
            f"definition cannot be serialized: {fix}"
        )
    if "." in qualname:
        raise ValueError(
            f"{what} is defined inside a class ({qualname}); a worker imports only names "
            f"at the top level of a module: {fix}"
        )
    return _check_segments(f"{module}.{qualname}", what, fix)


def _function_path(fn: Any, what: str) -> str:
    if not isinstance(fn, types.FunctionType):
        kind = "a built-in" if isinstance(fn, types.BuiltinFunctionType) else type(fn).__name__
        raise ValueError(f"{what} wraps {kind}, not a Python function: {_USE_FUNCTION}")
    return _definition_path(fn, what, _USE_FUNCTION)


def _class_has(cls: type, member: str) -> bool:
    """Whether ``cls`` has ``member``, as an attribute or as a declared annotation (a
    tool base class may only annotate ``name``, set by each instance)."""
    if hasattr(cls, member):
        return True
    return any(member in vars(klass).get("__annotations__", {}) for klass in cls.__mro__)


def _tool_entry(tool: Any, owner: str) -> tuple[str, str | None]:
    """``(dotted path, tool name or None if unknown)`` for one tool of agent ``owner``."""
    what = f"agent {owner!r}: tool {_label(tool)}"
    if isinstance(tool, str):
        return _dotted_path(tool, what), None
    if isinstance(tool, functools.partial):
        raise ValueError(
            f"{what} is a functools.partial, which cannot be serialized: {_USE_FUNCTION}"
        )
    if isinstance(tool, types.MethodType):
        raise ValueError(f"{what} is a bound method, which cannot be serialized: {_USE_FUNCTION}")
    if isinstance(tool, types.BuiltinFunctionType):
        raise ValueError(
            f"{what} is a built-in function, which cannot be serialized: "
            f"{_USE_FUNCTION} that calls it"
        )
    if isinstance(tool, types.FunctionType):
        return _function_path(tool, what), tool.__name__
    if isinstance(tool, type):
        missing = [m for m in _TOOL_MEMBERS if not _class_has(tool, m)]
        if missing:
            raise ValueError(
                f"{what} is a class without {', '.join(missing)}: expected {_TOOL_KINDS}"
            )
        name = getattr(tool, "name", None)
        path = _definition_path(tool, what, "define the tool class at module level")
        return path, name if isinstance(name, str) else None
    wrapped = getattr(tool, "_fn", None)
    if wrapped is not None:  # orbiter's FunctionTool: the wrapped function is what is imported
        name = getattr(tool, "name", None)
        path = _function_path(wrapped, what)
        return path, name if isinstance(name, str) else getattr(wrapped, "__name__", None)
    missing = [m for m in _TOOL_MEMBERS if not hasattr(tool, m)]
    if missing:
        raise ValueError(
            f"{what} is not a tool (it has no {', '.join(missing)}): expected {_TOOL_KINDS}"
        )
    name = tool.name
    path = _definition_path(type(tool), what, "define the tool class at module level")
    return path, name if isinstance(name, str) else None


def _output_type_path(value: Any, owner: str) -> str | None:
    what = f"agent {owner!r}: output_type {_label(value)}"
    if value is None:
        return None
    if isinstance(value, str):
        return _dotted_path(value, what)
    if isinstance(value, type):
        return _definition_path(value, what, "define the model class at module level")
    raise ValueError(
        f"agent {owner!r}: output_type must be a class (a pydantic model) or a dotted path "
        f"'pkg.module.Model', got {type(value).__name__}"
    )


def _positive_int(value: Any, what: str, most: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"{what} must be an integer from 1 to {most}, got {value!r}"[:200])


def _items(value: Any, what: str) -> tuple[Any, ...]:
    """A list or tuple as a tuple (None counts as empty, as in the async library)."""
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"{what} must be a list, got {type(value).__name__}")
    return tuple(value)


@dataclass(frozen=True, kw_only=True, repr=False)
class Agent:
    """One LLM agent, described for a worker: the async library's ``Agent`` settings
    that survive serialization (hooks, memory and context do not).

    ``tools`` holds module-level functions, tool classes or instances (``name``,
    ``description``, ``parameters``, ``execute``), orbiter ``FunctionTool`` objects
    or dotted paths; ``handoffs`` holds other :class:`Agent`; ``output_type`` is a
    class (a pydantic model) or a dotted path. Settings are checked here: a mistake
    is a ``ValueError`` where the agent is built, not a failed task later.
    """

    name: str
    model: str = DEFAULT_MODEL
    instructions: str = ""
    tools: Sequence[Any] = ()
    handoffs: Sequence[Agent] = ()
    output_type: type | str | None = None
    max_steps: int = 10
    temperature: float = 1.0
    max_tokens: int | None = None
    # Computed once here, so to_dict() cannot fail later and every call agrees.
    _tool_paths: tuple[str, ...] = field(init=False, compare=False, default=())
    _tool_names: tuple[str, ...] = field(init=False, compare=False, default=())
    _output_path: str | None = field(init=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > MAX_NAME:
            raise ValueError(
                f"Agent name must be a non-empty string of at most {MAX_NAME} characters, "
                f"got {self.name!r}"[:200]
            )
        owner = self.name
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(
                f"agent {owner!r}: model must be a non-empty string like "
                f"'openai:gpt-4o', got {self.model!r}"[:200]
            )
        if callable(self.instructions):
            raise ValueError(
                f"agent {owner!r}: callable instructions cannot be serialized (the async "
                "library's to_dict refuses them too): give the instructions as a string"
            )
        if not isinstance(self.instructions, str):
            raise ValueError(
                f"agent {owner!r}: instructions must be a string, "
                f"got {type(self.instructions).__name__}"
            )
        _positive_int(self.max_steps, f"agent {owner!r}: max_steps", MAX_STEPS_LIMIT)
        temperature = self.temperature
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or (isinstance(temperature, float) and not math.isfinite(temperature))
            or not 0 <= temperature <= 2
        ):
            raise ValueError(
                f"agent {owner!r}: temperature must be a number from 0 to 2, got {temperature!r}"[
                    :200
                ]
            )
        if self.max_tokens is not None:
            _positive_int(self.max_tokens, f"agent {owner!r}: max_tokens (or None)", MAX_TOKENS)

        tools = _items(self.tools, f"agent {owner!r}: tools")
        paths: list[str] = []
        names: list[str] = []  # for repr: a path's last name when its tool's is unknown
        known: set[str] = set()
        for tool in tools:
            path, name = _tool_entry(tool, owner)
            # The async library keys tools by name, and a path a worker imports twice
            # yields two tools of one name: either way, a duplicate. A path given as a
            # string has no name known here (a @tool may rename its function).
            if name is not None and name in known:
                raise ValueError(f"agent {owner!r} has two tools named {name!r}")
            if path in paths:
                raise ValueError(f"agent {owner!r} has the tool {path!r} twice")
            paths.append(path)
            if name is None:
                names.append(path.rpartition(".")[2])
            else:
                names.append(name)
                known.add(name)

        handoffs = _items(self.handoffs, f"agent {owner!r}: handoffs")
        seen: set[str] = set()
        for target in handoffs:
            if not isinstance(target, Agent):
                raise ValueError(
                    f"agent {owner!r}: a handoff must be an Agent, got {type(target).__name__}"
                )
            if target.name in seen:
                raise ValueError(f"agent {owner!r} has two handoffs named {target.name!r}")
            seen.add(target.name)

        object.__setattr__(self, "tools", tools)
        object.__setattr__(self, "handoffs", handoffs)
        object.__setattr__(self, "_tool_paths", tuple(paths))
        object.__setattr__(self, "_tool_names", tuple(names))
        object.__setattr__(self, "_output_path", _output_type_path(self.output_type, owner))

    def to_dict(self) -> dict[str, Any]:
        """The agent_config, as the async library's ``Agent.to_dict()`` writes it: the
        same keys in the same order; ``tools``, ``handoffs`` and ``output_type`` only
        when set. A new dict every call."""
        data: dict[str, Any] = {
            "name": self.name,
            "model": self.model,
            "instructions": self.instructions,
            "max_steps": self.max_steps,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self._tool_paths:
            data["tools"] = list(self._tool_paths)
        if self.handoffs:
            data["handoffs"] = [target.to_dict() for target in self.handoffs]
        if self._output_path is not None:
            data["output_type"] = self._output_path
        return data

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}", f"model={self.model!r}"]
        if self._tool_names:
            parts.append(f"tools={list(self._tool_names)}")
        if self.handoffs:
            parts.append(f"handoffs={[target.name for target in self.handoffs]}")
        return f"Agent({', '.join(parts)})"


@dataclass(frozen=True, kw_only=True, repr=False)
class Swarm:
    """Several :class:`Agent` run as one, as the async library's ``Swarm``.

    ``flow`` orders them (``"a >> (b | c) >> d"``, see :mod:`orbiter_sync.flow`);
    without it they run in the order given. ``mode`` is one of
    :data:`~orbiter_sync.flow.SWARM_MODES`. Checked here, mode included (the async
    library only finds a bad mode when the swarm runs).
    """

    agents: Sequence[Agent]
    flow: str | None = None
    mode: str = "workflow"
    max_handoffs: int = 10
    _order: tuple[str, ...] = field(init=False, compare=False, default=())

    def __post_init__(self) -> None:
        agents = _items(self.agents, "Swarm agents")
        if not agents:
            raise ValueError("a Swarm needs at least one agent")
        names: list[str] = []
        for agent in agents:
            if not isinstance(agent, Agent):
                raise ValueError(f"Swarm agents must be Agent objects, got {type(agent).__name__}")
            if agent.name in names:
                raise ValueError(f"two agents of the Swarm are named {agent.name!r}")
            names.append(agent.name)
        try:
            order = flow_order(self.flow, names)
        except AgentConfigError as exc:  # not a ValueError: the view expects one
            raise ValueError(str(exc)) from None
        if not isinstance(self.mode, str) or self.mode not in SWARM_MODES:
            modes = ", ".join(repr(m) for m in SWARM_MODES)
            raise ValueError(f"Swarm mode must be one of {modes}, got {self.mode!r}"[:200])
        if self.mode == "team" and len(agents) < 2:
            raise ValueError("Swarm mode 'team' needs at least two agents (a lead and workers)")
        max_handoffs = self.max_handoffs
        if (
            isinstance(max_handoffs, bool)
            or not isinstance(max_handoffs, int)
            or not 0 <= max_handoffs <= MAX_HANDOFFS
        ):
            raise ValueError(
                f"Swarm max_handoffs must be an integer from 0 to {MAX_HANDOFFS}, "
                f"got {max_handoffs!r}"[:200]
            )
        object.__setattr__(self, "agents", agents)
        object.__setattr__(self, "_order", tuple(order))

    @property
    def flow_order(self) -> list[str]:
        """The names of the agents in the order they run."""
        return list(self._order)

    @property
    def name(self) -> str:
        """``swarm(<first agent to run>...)``, the async library's name for a swarm."""
        return f"swarm({self._order[0]}...)"

    def to_dict(self) -> dict[str, Any]:
        """The agent_config, as the async library's ``Swarm.to_dict()`` writes it."""
        return {
            "agents": [agent.to_dict() for agent in self.agents],
            "flow": self.flow,
            "mode": self.mode,
            "max_handoffs": self.max_handoffs,
        }

    def __repr__(self) -> str:
        names = [agent.name for agent in self.agents]
        return f"Swarm(mode={self.mode!r}, agents={names}, flow={self.flow!r})"
