"""Where slots run: ``"thread"`` (one OS thread each) or ``"gevent"`` (one greenlet each).

This is the one place the two differ. The gevent pool needs a process that
``gevent.monkey.patch_all()`` patched before anything else was imported (the
``orbiter-sync`` script does it for ``--pool gevent``), so that blocking redis,
socket and time calls yield to other greenlets.

asyncio keeps one *running loop* per OS thread, and every greenlet shares the
thread: a second greenlet running its own loop while the first one waits in
``run_until_complete`` would fail with "Cannot run the event loop while another
loop is running". So the gevent pool installs a greenlet switch hook that saves
the running loop of the greenlet being left and restores the one of the greenlet
being entered. Each slot then keeps its own loop, as with threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from orbiter_sync.errors import ConfigurationError
from orbiter_sync.native import gevent_active

POOLS = ("thread", "gevent")

PATCH_HINT = (
    "the gevent pool needs gevent.monkey.patch_all() before anything else is imported: "
    "start the worker with `orbiter-sync start worker --pool gevent` (or ORBITER_POOL=gevent), "
    "or call `from gevent import monkey; monkey.patch_all()` first thing in your program"
)


class Handle(Protocol):
    """One spawned slot."""

    def alive(self) -> bool: ...


class Pool(Protocol):
    def spawn(self, target: Callable[[], None], name: str) -> Handle: ...

    def join(self, timeout: float) -> bool: ...


class _ThreadHandle:
    def __init__(self, thread: threading.Thread) -> None:
        self._thread = thread

    def alive(self) -> bool:
        return self._thread.is_alive()


class ThreadPool:
    """Runs each slot in its own daemon thread."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []

    def spawn(self, target: Callable[[], None], name: str) -> Handle:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        return _ThreadHandle(thread)

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every slot to end; True if they all did."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)


class _GreenletHandle:
    def __init__(self, greenlet: Any) -> None:
        self._greenlet = greenlet

    def alive(self) -> bool:
        return not self._greenlet.dead


class GeventPool:
    """Runs each slot in its own greenlet; hundreds of slots are normal."""

    def __init__(self) -> None:
        check_pool("gevent")
        import gevent

        self._gevent = gevent
        self._greenlets: list[Any] = []
        install_loop_switching()

    def spawn(self, target: Callable[[], None], name: str) -> Handle:
        greenlet = self._gevent.spawn(target)
        greenlet.name = name
        self._greenlets = [g for g in self._greenlets if not g.dead] + [greenlet]
        return _GreenletHandle(greenlet)

    def join(self, timeout: float) -> bool:
        self._gevent.joinall(self._greenlets, timeout=timeout)
        return all(g.dead for g in self._greenlets)


def check_pool(name: str) -> None:
    """Raise ``ConfigurationError`` unless slots can run on pool ``name`` in this process."""
    if name not in POOLS:
        raise ConfigurationError(f"unknown pool {name!r}: choose one of {', '.join(POOLS)}")
    if name != "gevent":
        return
    try:
        import gevent  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "the gevent pool needs gevent: pip install 'orbiter-sync[gevent]'"
        ) from None
    if not gevent_active():
        raise ConfigurationError(PATCH_HINT)


def make_pool(name: str) -> Pool:
    check_pool(name)
    return GeventPool() if name == "gevent" else ThreadPool()


_running_loops: weakref.WeakKeyDictionary[Any, asyncio.AbstractEventLoop] = (
    weakref.WeakKeyDictionary()
)
_switching_installed = False


def install_loop_switching() -> None:
    """Give each greenlet its own asyncio running loop (idempotent)."""
    global _switching_installed
    if _switching_installed:
        return
    import greenlet

    previous = greenlet.settrace(None)

    def on_switch(event: str, args: Any) -> None:
        if event in ("switch", "throw"):
            origin, target = args
            loop = asyncio._get_running_loop()
            if loop is not None:
                _running_loops[origin] = loop
            else:
                _running_loops.pop(origin, None)
            asyncio._set_running_loop(_running_loops.get(target))
        if previous is not None:
            previous(event, args)

    greenlet.settrace(on_switch)
    _switching_installed = True
