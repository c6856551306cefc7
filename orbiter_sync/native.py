"""Real OS threads and locks, even in a process gevent has patched.

A gevent worker runs its slots as greenlets on one OS thread: a greenlet that never
yields (a plain sync function in a CPU loop, a C call that blocks) holds every
other greenlet up, the main one included. What must go on whatever a task does,
the heartbeat, the keep-alives of running entries and the stop watchdog, runs on
a real OS thread started here, with a Redis client of its own created on that
thread (gevent gives each thread its own hub, so its sockets never wait on the
blocked one). Data shared between that thread and the greenlets is guarded by
real locks, whose critical sections never yield.

Without gevent these are the standard library's threads and locks.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol


class LockLike(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...

    def __enter__(self) -> bool: ...

    def __exit__(self, *args: object) -> None: ...


def gevent_active() -> bool:
    """True when gevent has patched this process's threading and socket modules."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("threading") and monkey.is_module_patched("socket"))


def _original(module: str, name: str) -> Any:
    if gevent_active():
        from gevent.monkey import get_original

        return get_original(module, name)
    return getattr(sys.modules[module] if module in sys.modules else __import__(module), name)


def Lock() -> LockLike:  # noqa: N802 - it stands for a class, as threading.Lock does
    """A lock of the OS (never a greenlet lock): safe between the OS thread and greenlets,
    as long as nothing yields while holding it."""
    allocate: Callable[[], LockLike] = _original("_thread", "allocate_lock")
    return allocate()


def sleep(seconds: float) -> None:
    """Sleep this OS thread (a greenlet calling it would hold up every other greenlet)."""
    _original("time", "sleep")(seconds)


def start_thread(target: Callable[[], None], name: str) -> None:
    """Run ``target`` on a new daemon OS thread."""
    if not gevent_active():
        threading.Thread(target=target, name=name, daemon=True).start()
        return
    _original("_thread", "start_new_thread")(target, ())


class Flag:
    """A one-way switch one thread sets and another waits for; safe across OS threads
    and greenlets (waiting polls, so it never blocks a hub)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float, *, step: float = 0.05) -> bool:
        """Wait on this OS thread until set or ``timeout`` seconds passed; True if set."""
        deadline = time.monotonic() + timeout
        while not self._set:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            sleep(min(step, left))
        return True


def _call_now(fn: Callable[[], object]) -> None:
    fn()


def hub_caller() -> Callable[[Callable[[], object]], None]:
    """A function that runs callbacks where the caller of ``hub_caller()`` runs: on this
    thread's gevent hub, queued from any OS thread (they run once the hub is free);
    without gevent, right away on the calling thread."""
    if not gevent_active():
        return _call_now
    import gevent

    loop = gevent.get_hub().loop  # the hub of the thread calling hub_caller()

    def call(fn: Callable[[], object]) -> None:
        loop.run_callback_threadsafe(fn)

    return call


def share_logging() -> None:
    """Under gevent, give logging real OS locks: the heartbeat's OS thread and the
    greenlets both log, and a greenlet lock taken from another OS thread fails
    (BlockingSwitchOutError, LoopExit). Handlers made later get one as they are made
    only if this runs again; the worker calls it when it starts. No-op without gevent."""
    if not gevent_active():
        return
    rlock: Callable[[], Any] = _original("_thread", "RLock")
    logging._lock = rlock()  # type: ignore[attr-defined]
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            handler.lock = rlock()
