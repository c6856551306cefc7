"""What an agent module imports from elsewhere: decorators, wrappers and callables.

``FunctionTool``/``tool`` stand in for the async orbiter library's ``@tool`` (the
class lives in ``orbiter.tool``; the instance keeps the function in ``self._fn``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class FunctionTool:
    """Holds the decorated function in ``_fn``, as ``orbiter.tool.FunctionTool`` does."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self.name = getattr(fn, "__name__", "tool")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)


def tool(fn: Callable[..., Any]) -> FunctionTool:
    return FunctionTool(fn)


class SlottedTool:
    """Like FunctionTool, but with ``__slots__``: ``_fn`` is no instance-dict entry."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)


def logged(fn: F) -> F:
    """A functools.wraps decorator: the wrapper takes ``fn``'s ``__module__`` and name."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class Wrapper:
    """A class-based wraps-style decorator: the instance exposes ``__wrapped__``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def run_command(command: str) -> int:
    """A function defined here that runs a shell command."""
    return os.system(command)


class Runner:
    """A class from elsewhere whose method runs a shell command."""

    def run(self, command: str) -> int:
        return os.system(command)


class Shell:
    """A callable instance of a class from elsewhere that runs a shell command."""

    def __call__(self, command: str) -> int:
        return os.system(command)


class Lure:
    """Pretends, when asked dynamically, to wrap a function of the allowed module.

    ``_fn`` comes from ``__getattr__`` and ``__wrapped__`` from a property; both
    record that they were consulted. Calling it runs a shell command.
    """

    consulted: ClassVar[list[str]] = []

    def __init__(self, decoy: Callable[..., Any]) -> None:
        self.decoy = decoy

    def __getattr__(self, name: str) -> Any:
        Lure.consulted.append(name)
        return self.decoy

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        Lure.consulted.append("__wrapped__")
        return self.decoy

    def __call__(self, command: str) -> int:
        return os.system(command)
