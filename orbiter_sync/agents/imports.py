"""The import allowlist: the gate every dotted path named in a payload goes through.

A payload is data, never a way to run arbitrary code. A path names a module and
exactly one name in it: ``pkg.mod:name``, or ``pkg.mod.name`` (the async library's
spelling of a tool, ``module.qualname``); either way the last name is the binding
and everything before it is the module, so the module is known before anything is
imported. Then, in order:

1. every segment is public (no ``_x``, no dunder), and the module is neither
   ``__main__`` nor ``builtins``;
2. the module equals, or sits under, one of the prefixes the worker's operator
   allowed (``--allow-import`` / ``ORBITER_ALLOW_IMPORTS``); nothing is imported
   otherwise;
3. the module is imported and the binding read from its namespace
   (``vars(module)``, so a module ``__getattr__`` cannot hand out objects);
4. the binding must be *defined there*: a Python function or a class whose
   ``__module__`` is the module, or an instance whose class is, or which wraps
   (``_fn``, as the ``@tool`` decorator's ``FunctionTool`` does, or ``__wrapped__``)
   a Python function that is. Modules, built-ins, bound methods, ``functools.partial``
   objects and whatever was imported from elsewhere are refused.

Every refusal is an :class:`AgentConfigError` (``ImportNotAllowedError`` when the
path is well formed but not allowed), so the task fails for good. Nothing found
is ever called here: attributes of foreign objects are read statically.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orbiter_sync.env import ALLOW_IMPORTS_ENV
from orbiter_sync.errors import AgentConfigError, ConfigurationError, ImportNotAllowedError

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_NAME}(\.{_NAME})*")
# Never importable through a path, whatever the allowlist says.
_NEVER = {
    "__main__": "the script the worker runs as",
    "builtins": "Python's built-ins",
}
# Attributes through which a wrapper object (not defined in the module) may hold the
# function it wraps: orbiter's FunctionTool keeps it in ``_fn``; functools.wraps-style
# wrappers expose ``__wrapped__``. Never ``functools.partial.func``.
_WRAPPED = ("_fn", "__wrapped__")
_MISSING = object()


@dataclass(frozen=True)
class ImportPolicy:
    """Module prefixes payloads may import from; empty allows nothing."""

    prefixes: tuple[str, ...] = ()

    @classmethod
    def from_settings(
        cls, allow_imports: Iterable[str] = (), env: Mapping[str, str] | None = None
    ) -> ImportPolicy:
        """Prefixes given explicitly plus those of ``ORBITER_ALLOW_IMPORTS`` (comma-separated)."""
        env = os.environ if env is None else env
        found = [*allow_imports, *env.get(ALLOW_IMPORTS_ENV, "").split(",")]
        prefixes = []
        for prefix in (p.strip().rstrip(".") for p in found):
            if not prefix:
                continue
            if not _DOTTED.fullmatch(prefix):
                raise AgentConfigError(
                    f"bad --allow-import prefix {prefix!r}: use a dotted module name"
                )
            prefixes.append(prefix)
        return cls(tuple(dict.fromkeys(prefixes)))

    def allows(self, module: str) -> bool:
        return any(module == p or module.startswith(p + ".") for p in self.prefixes)

    def preload(self) -> None:
        """Import every allowed module now, as a worker does when it starts: a module that
        cannot be imported is a ``ConfigurationError`` naming it (the worker does not start),
        not a failure of every task that needs it later."""
        for prefix in self.prefixes:
            try:
                importlib.import_module(prefix)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever an import raises
                raise ConfigurationError(
                    f"cannot import allowed module {prefix!r}: {type(exc).__name__}: {exc} "
                    "(is its directory on the path? see --path)"
                ) from None


def split_path(path: str, what: str = "entrypoint") -> tuple[str, str]:
    """``pkg.mod:name`` or ``pkg.mod.name`` -> (``pkg.mod``, ``name``), checked, importing nothing.

    Refuses malformed paths, attribute chains (``pkg.mod:Class.method``), private and
    dunder segments, and the modules ``__main__`` and ``builtins``.
    """
    module, colon, name = path.partition(":")
    if not colon:
        module, _, name = path.rpartition(".")
    if not module or not name or not _DOTTED.fullmatch(module) or not _DOTTED.fullmatch(name):
        raise AgentConfigError(f"bad {what} {path!r}: expected 'pkg.module:func'")
    refused = f"{what} {path!r} is not allowed:"
    if module in _NEVER:
        raise ImportNotAllowedError(f"{refused} module {module!r} is {_NEVER[module]}")
    for segment in (*module.split("."), *name.split(".")):
        if segment.startswith("__") and segment.endswith("__"):
            raise ImportNotAllowedError(f"{refused} {segment!r} is a dunder name")
        if segment.startswith("_"):
            raise ImportNotAllowedError(f"{refused} {segment!r} is private (starts with '_')")
    if "." in name:
        raise ImportNotAllowedError(
            f"{refused} {name!r} is an attribute chain; name exactly one function or class "
            f"defined in {module} ('{module}:func')"
        )
    return module, name


def import_allowed(path: str, policy: ImportPolicy, what: str = "entrypoint") -> Any:
    """The function, class or wrapper object ``path`` names, if the rules above allow it.

    ``what`` labels the path in error messages ("entrypoint", "tool" ...).
    """
    module_name, name = split_path(path, what)
    if not policy.allows(module_name):
        allowed = ", ".join(policy.prefixes) or "nothing"
        raise ImportNotAllowedError(
            f"{what} {path!r} is not allowed: module {module_name!r} is outside the import "
            f"allowlist ({allowed}); the worker operator can allow it with --allow-import "
            f"{module_name} or {ALLOW_IMPORTS_ENV}={module_name}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentConfigError(f"{what} {path!r}: cannot import {module_name!r}: {exc}") from None
    if not issubclass(type(module), types.ModuleType):
        raise ImportNotAllowedError(
            f"{what} {path!r} is not allowed: {module_name!r} is not a module"
        )
    target = vars(module).get(name, _MISSING)
    if target is _MISSING:
        raise AgentConfigError(f"{what} {path!r}: {module_name!r} has no {name!r}")
    reason = _why_not_defined_there(target, module_name)
    if reason:
        raise ImportNotAllowedError(
            f"{what} {path!r} is not allowed: {name!r} in {module_name} is {reason}"
        )
    return target


def _why_not_defined_there(target: Any, module: str) -> str:
    """Why ``target`` is not a function, class or wrapper defined in ``module`` ("" if it is).

    Only ``type(target)`` is trusted (``isinstance`` may ask ``__class__``), and nothing
    of ``target`` is called.
    """
    kind = type(target)
    not_here = "not a function or class defined there"
    if issubclass(kind, types.ModuleType):
        return f"a module, {not_here}"
    if issubclass(kind, functools.partial):
        return f"a functools.partial, {not_here}"
    if kind is types.MethodType:
        return f"a bound method, {not_here}"
    if kind is types.BuiltinFunctionType:
        return f"a built-in function, {not_here}"
    if kind is types.FunctionType:
        home = target.__module__
        return "" if home == module else f"a function defined in {home!r}, {not_here}"
    if issubclass(kind, type):
        home = _module_of_class(target)
        return "" if home == module else f"a class defined in {home!r}, {not_here}"
    if _module_of_class(kind) == module:
        return ""  # an instance of a class defined there
    for attribute in _WRAPPED:
        wrapped = _static_attribute(target, attribute)
        if type(wrapped) is types.FunctionType and wrapped.__module__ == module:
            return ""  # a wrapper (a @tool, a functools.wraps-style object) of a function there
    qualname = type.__dict__["__qualname__"].__get__(kind, type)
    return (
        f"an instance of {_module_of_class(kind)}.{qualname} that wraps no function defined "
        f"there, {not_here}"
    )


def _module_of_class(cls: type) -> Any:
    """``cls.__module__`` read by ``type``'s own getter: a metaclass property cannot run."""
    return type.__dict__["__module__"].__get__(cls, type)


def _static_attribute(obj: Any, name: str) -> Any:
    """``obj.<name>`` without running properties, ``__getattr__`` or other Python code."""
    value = inspect.getattr_static(obj, name, None)
    if type(value) is types.MemberDescriptorType:  # a __slots__ entry: read by C, no code runs
        try:
            value = value.__get__(obj, type(obj))
        except (AttributeError, TypeError):
            return None
    return value


def entrypoint_path(function: Any) -> str:
    """``module:name`` of a module-level function; ``ValueError`` for what a worker could
    never import (a lambda, a nested function, a method, ``__main__``)."""
    target = getattr(function, "__wrapped__", function)
    if type(target) is not types.FunctionType:
        raise ValueError(f"an agent must be a module-level function, got {type(target).__name__}")
    module, qualname = target.__module__, target.__qualname__
    if "<" in qualname or "." in qualname:
        raise ValueError(
            f"{qualname} is not a module-level function: a worker imports agents by "
            "module and name (define it at the top level of a module)"
        )
    if module == "__main__":
        raise ValueError(
            f"{qualname} is defined in __main__ (the script being run), which a worker "
            "cannot import: move it into a module"
        )
    return f"{module}:{qualname}"
