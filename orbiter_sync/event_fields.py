"""How event fields become JSON data: the dict of an event (as ``dataclasses.asdict``
gives it, faster), and a tool's result as the async library's events hold it."""

from __future__ import annotations

from dataclasses import asdict, fields, is_dataclass
from typing import Any

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def field_names(cls: type) -> tuple[str, ...]:
    """The dataclass fields of ``cls``, read once per class."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def copied(value: Any) -> Any:
    """``value`` as ``asdict`` would give it (nested dataclasses as dicts, containers
    copied), without ``asdict``'s cost for the plain str and number fields."""
    if isinstance(value, str | int | float | bool | None):
        return value
    if isinstance(value, dict):
        return {k: copied(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(copied(v) for v in value))
    if isinstance(value, list | tuple):
        return type(value)(copied(v) for v in value)
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


CONTENT_BLOCK_TYPES = frozenset({"text", "image_url", "image_data", "audio", "video", "document"})


def tool_content(value: Any) -> str | list[Any]:
    """A tool's result as the async library's ``ToolResultEvent.result`` holds it: a str, or
    a list of content blocks; anything else becomes ``str(value)``, as orbiter-core does
    (``""`` for none, as for a tool that failed)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(block, dict) and block.get("type") in CONTENT_BLOCK_TYPES for block in value
    ):
        return value
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a tool's own __str__: anything goes
        return f"<{type(value).__name__} that cannot be shown as text>"
