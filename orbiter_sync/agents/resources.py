"""Things a slot keeps for every run on it, such as a model provider's HTTP client.

An async agent runs on its slot's own event loop (executors/local.py), and an
async HTTP client belongs to the loop it was made on, so resources are kept per
loop: made on first use, reused by every later run on that slot, and closed
when the slot ends (:func:`close_loop`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, Any]] = (
    weakref.WeakKeyDictionary()
)
_LOCK = threading.Lock()  # slots on other threads add and remove their loops' entries


def per_loop(key: Hashable, make: Callable[[], T]) -> T:
    """The resource ``key`` of the running loop, made by ``make()`` the first time."""
    loop = asyncio.get_running_loop()
    with _LOCK:
        held = _BY_LOOP.setdefault(loop, {})
    if key not in held:  # only this loop's own slot reads and writes ``held``
        held[key] = make()
    resource: T = held[key]
    return resource


async def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Close (``close()`` or ``aclose()``, awaited when async) everything ``loop`` holds."""
    with _LOCK:
        held = _BY_LOOP.pop(loop, {})
    for resource in held.values():
        close = getattr(resource, "close", None) or getattr(resource, "aclose", None)
        if close is None:
            continue
        try:
            closed = close()
            if inspect.isawaitable(closed):
                await closed
        except Exception:  # noqa: BLE001 - closing is best effort; the slot is ending
            # the key may hold an API key: name the resource by its type only
            logger.warning("could not close a %s", type(resource).__name__, exc_info=True)
