"""Tools and an output type for tests/test_specs.py, defined where a worker could import
them: module-level functions, a tool class, a FunctionTool look-alike, a pydantic model.
Also the near misses the specs must refuse (private, nested in a class)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel


def search(query: str) -> str:
    """Search the web."""
    return f"results for {query}"


async def fetch_page(url: str) -> str:
    """Fetch a page (async tools are module-level functions too)."""
    return f"<html>{url}</html>"


def _private_tool(text: str) -> str:
    return text


class Calculator:
    """A tool class as the async library's Tool subclasses are: its name, description
    and parameters as class attributes, and an execute method."""

    name = "calculator"
    description = "Add two numbers."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    }

    def execute(self, **kwargs: Any) -> str:
        return str(kwargs["a"] + kwargs["b"])


class Toolbox:
    """Its method is a function with a dotted qualname: not a top-level name."""

    @staticmethod
    def lookup(key: str) -> str:
        return key


class Wrapped:
    """What orbiter's ``@tool`` makes of a function: an object holding it in ``_fn``."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        self._fn = fn
        self.name = name or fn.__name__
        self.description = fn.__doc__ or ""
        self.parameters: dict[str, Any] = {"type": "object", "properties": {}}

    def execute(self, **kwargs: Any) -> Any:
        return self._fn(**kwargs)


wrapped_search = Wrapped(search)


class Answer(BaseModel):
    """A structured output type."""

    text: str
    confidence: float = 1.0
