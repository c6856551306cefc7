"""An LLM agent's tools: named by dotted path, reached only through the import allowlist,
and run so that a tool that raises is reported to the model while the run goes on.

A path (``pkg.module.func``, as the original's ``to_dict`` writes it, or
``pkg.module:func``) passes the same gate as an entrypoint (agents/imports.py):
the object must be defined in an allowed module, never reached through another
object. What it may be, as the original's ``_deserialize_tool`` accepts:

- a plain function, sync or async: its signature and docstring become the schema;
- an orbiter ``@tool`` object wrapping such a function (``_fn``);
- an object with ``name``, ``description``, ``parameters`` (a JSON schema) and
  ``execute(**kwargs)`` (sync or async), or a class of such objects (checked for
  them before anything of it runs, then made with no arguments for each run, as
  the original makes one per task).

:class:`ReportingToolset` wraps the run's tools: an exception from a tool becomes
a failed tool result the model sees (pydantic-ai's ``ToolFailed``), and its text
is kept by tool call id for the ``tool_result`` event (``success: false``).
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import ToolFailed
from pydantic_ai.tools import Tool
from pydantic_ai.toolsets import WrapperToolset

from orbiter_sync.agents.imports import ImportPolicy, import_allowed, split_path
from orbiter_sync.errors import AgentConfigError, ImportNotAllowedError
from orbiter_sync.redaction import error_text

_TOOL_ATTRIBUTES = ("name", "parameters", "execute")


def load_tools(paths: tuple[str, ...], policy: ImportPolicy) -> list[Tool[Any]]:
    """pydantic-ai tools for ``paths``; ``AgentConfigError`` for any that is not allowed."""
    tools = [_made(path, _found(path, policy)) for path in paths]
    names = [t.name for t in tools]
    for name in names:
        if names.count(name) > 1:
            raise AgentConfigError(f"duplicate tool name {name!r}")
    return tools


@functools.lru_cache(maxsize=512)
def _found(path: str, policy: ImportPolicy) -> Tool[Any] | type:
    """The tool ``path`` names (a tool class: made per run), looked up once per path and
    policy (a refusal is not remembered: it raises again, every time)."""
    target = import_allowed(path, policy, what="tool")
    module = split_path(path, "tool")[0]
    if isinstance(target, type):
        missing = [a for a in _TOOL_ATTRIBUTES if inspect.getattr_static(target, a, None) is None]
        if missing:  # checked before anything of it runs: only a tool class is ever made
            raise AgentConfigError(f"tool {path!r} is a class without {', '.join(missing)}")
        return target
    wrapped = inspect.getattr_static(target, "_fn", None)
    if type(wrapped) is types.FunctionType:  # an orbiter @tool: the function it wraps
        if wrapped.__module__ != module:
            raise ImportNotAllowedError(
                f"tool {path!r} is not allowed: it wraps a function defined in "
                f"{wrapped.__module__!r}, not in {module}"
            )
        name = getattr(target, "name", None)
        return _function_tool(path, wrapped, name if isinstance(name, str) else None)
    if type(target) is types.FunctionType:
        return _function_tool(path, target)
    return _object_tool(path, target)


def _made(path: str, found: Tool[Any] | type) -> Tool[Any]:
    """A tool class made with no arguments, as the original does, one per run."""
    if isinstance(found, Tool):
        return found
    try:
        made = found()
    except Exception as exc:  # noqa: BLE001 - a tool class that cannot be made is config
        raise AgentConfigError(f"tool {path!r}: cannot create {found.__name__}(): {exc}") from None
    return _object_tool(path, made)


def _function_tool(path: str, function: Any, name: str | None = None) -> Tool[Any]:
    try:
        return Tool(function, takes_ctx=False, name=name)
    except Exception as exc:  # noqa: BLE001 - a signature no schema fits can never run
        raise AgentConfigError(f"tool {path!r}: no schema can be made from it: {exc}") from None


def _object_tool(path: str, obj: Any) -> Tool[Any]:
    name, description = getattr(obj, "name", None), getattr(obj, "description", "")
    parameters, execute = getattr(obj, "parameters", None), getattr(obj, "execute", None)
    if not isinstance(name, str) or not name or not callable(execute):
        raise AgentConfigError(
            f"tool {path!r} is neither a function nor a tool object (name, description, "
            "parameters, execute)"
        )
    if not isinstance(parameters, dict):
        raise AgentConfigError(f"tool {path!r}: parameters must be a JSON schema object")

    async def run(**kwargs: Any) -> Any:
        result = execute(**kwargs)
        return await result if inspect.isawaitable(result) else result

    text = description if isinstance(description, str) else ""
    return Tool.from_schema(run, name=name, description=text, json_schema=parameters)


def delegate_tool(worker: str, run: Callable[[str], Awaitable[str]]) -> Tool[Any]:
    """The team mode's ``delegate_to_<worker>`` tool, as the original describes it: one
    string ``task``, answered with the worker agent's output."""
    schema = {
        "type": "object",
        "properties": {
            "task": {
                "type": "string",
                "description": f"The task description to send to '{worker}'.",
            }
        },
        "required": ["task"],
    }

    async def delegate(task: str = "") -> str:
        return await run(task)

    return Tool.from_schema(
        delegate,
        name=f"delegate_to_{worker}",
        description=f"Delegate a task to the '{worker}' worker agent.",
        json_schema=schema,
    )


@dataclass
class ReportingToolset(WrapperToolset[Any]):
    """The run's tools, with each raised error reported to the model and kept for events."""

    failures: dict[str, str] = field(default_factory=dict)

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: Any, tool: Any) -> Any:
        try:
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)
        except Exception as exc:  # noqa: BLE001 - a tool's error is the model's to see, as in orbiter
            if type(exc).__module__.startswith("pydantic_ai"):
                raise  # pydantic-ai's own signals (ModelRetry, ToolFailed, approvals ...)
            error = error_text(exc)
            self.failures[ctx.tool_call_id or ""] = error
            raise ToolFailed(error) from exc
