"""Code a worker runs around every task attempt, registered by the process it runs in.

A framework integration registers what it needs before the worker starts, such as
Django's ``close_old_connections`` (contrib/django), so that a long-lived worker
never runs a task on a database connection that went stale while it waited::

    from orbiter_sync import hooks
    hooks.around_each_task(my_context_manager_factory)

Each factory is called with no arguments in the slot that runs the attempt (its
thread or greenlet) and entered around the attempt, in the order registered. An
exception raised by a hook is logged and the attempt runs anyway: a hook never
loses a task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager

logger = logging.getLogger(__name__)

HookFactory = Callable[[], AbstractContextManager[object]]
_AROUND: list[HookFactory] = []


def around_each_task(factory: HookFactory) -> HookFactory:
    """Register ``factory``; its context manager wraps every task attempt of this process.
    Registering the same factory twice has no effect. Returns it (usable as a decorator)."""
    if factory not in _AROUND:
        _AROUND.append(factory)
    return factory


def clear() -> None:
    """Forget every registered hook (for tests)."""
    _AROUND.clear()


@contextmanager
def around_task(worker_id: str, task_id: str) -> Iterator[None]:
    """Enter every registered hook around one attempt (nothing at all when there are none)."""
    if not _AROUND:
        yield
        return
    with ExitStack() as stack:
        for factory in list(_AROUND):
            stack.enter_context(_guarded(factory, worker_id, task_id))
        yield


@contextmanager
def _guarded(factory: HookFactory, worker_id: str, task_id: str) -> Iterator[None]:
    """``factory()`` entered and exited with its errors logged, never raised."""
    try:
        hook = factory()
        hook.__enter__()
    except Exception:  # noqa: BLE001 - a hook never loses a task
        logger.exception("worker %s: task %s: a task hook failed on entry", worker_id, task_id)
        yield
        return
    try:
        yield
    finally:
        try:
            hook.__exit__(None, None, None)
        except Exception:  # noqa: BLE001 - the attempt has its outcome already
            logger.exception("worker %s: task %s: a task hook failed on exit", worker_id, task_id)
