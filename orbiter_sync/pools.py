"""Where slots run: ``"thread"`` (one OS thread each). The gevent pool plugs in here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from orbiter_sync.errors import ConfigurationError

POOLS = ("thread",)


class ThreadPool:
    """Runs each slot in its own daemon thread."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []

    def spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every slot to end; True if they all did."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)


def make_pool(name: str) -> ThreadPool:
    if name == "thread":
        return ThreadPool()
    raise ConfigurationError(f"unknown pool {name!r}: choose one of {', '.join(POOLS)}")
