"""The import allowlist: the gate every dotted path named in a payload goes through.

A payload is data, never a way to run arbitrary code: the module named in it is
imported only when it equals, or sits under, one of the prefixes the worker's
operator allowed (``--allow-import`` / ``ORBITER_ALLOW_IMPORTS``). Anything else
fails before any import happens.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orbiter_sync.env import ALLOW_IMPORTS_ENV
from orbiter_sync.errors import AgentConfigError, ImportNotAllowedError

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


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
            if not _DOTTED.match(prefix):
                raise AgentConfigError(
                    f"bad --allow-import prefix {prefix!r}: use a dotted module name"
                )
            prefixes.append(prefix)
        return cls(tuple(dict.fromkeys(prefixes)))

    def allows(self, module: str) -> bool:
        return any(module == p or module.startswith(p + ".") for p in self.prefixes)


def split_path(path: str) -> tuple[str, str]:
    """``pkg.mod:func`` or ``pkg.mod.func`` -> (``pkg.mod``, ``func``)."""
    module, colon, attr = path.partition(":")
    if not colon:
        module, _, attr = path.rpartition(".")
    if not module or not attr or not _DOTTED.match(module) or not _DOTTED.match(attr):
        raise AgentConfigError(f"bad entrypoint {path!r}: expected 'pkg.module:func'")
    return module, attr


def import_allowed(path: str, policy: ImportPolicy) -> Any:
    """The object named by ``path``, imported only if the policy allows its module."""
    module_name, attr = split_path(path)
    if not policy.allows(module_name):
        allowed = ", ".join(policy.prefixes) or "nothing"
        raise ImportNotAllowedError(
            f"entrypoint {path!r} is not allowed: module {module_name!r} is outside the import "
            f"allowlist ({allowed}); the worker operator can allow it with --allow-import "
            f"{module_name} or {ALLOW_IMPORTS_ENV}={module_name}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentConfigError(
            f"entrypoint {path!r}: cannot import {module_name!r}: {exc}"
        ) from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise AgentConfigError(f"entrypoint {path!r}: {module_name!r} has no {attr!r}")
    return target
