"""The app's configuration: on ``ready``, every task a worker of this process runs is
wrapped in ``close_old_connections()`` calls (``orbiter_sync.hooks``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.apps import AppConfig
from django.db import close_old_connections

from orbiter_sync import hooks


@contextmanager
def fresh_connections() -> Iterator[None]:
    """Django's request cycle for a task: connections that died while the worker waited
    (or passed ``CONN_MAX_AGE``) are closed before it, and its own after it, so a
    long-lived worker never runs a query on a dead connection."""
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


class OrbiterSyncConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    name = "orbiter_sync.contrib.django"
    label = "orbiter_sync"
    verbose_name = "orbiter-sync"

    def ready(self) -> None:
        # here rather than in the command only: a Worker a project starts itself gets it too
        hooks.around_each_task(fresh_connections)
