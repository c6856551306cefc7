"""Task hooks (hooks.py): what a framework wraps around every attempt, never losing one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from orbiter_sync import hooks


@pytest.fixture(autouse=True)
def no_hooks() -> Iterator[None]:
    hooks.clear()
    yield
    hooks.clear()


def test_hooks_wrap_an_attempt_in_the_order_registered() -> None:
    seen: list[str] = []

    def named(name: str) -> hooks.HookFactory:
        @contextmanager
        def hook() -> Iterator[None]:
            seen.append(f"{name} in")
            yield
            seen.append(f"{name} out")

        return hook

    first, second = named("a"), named("b")
    hooks.around_each_task(first)
    hooks.around_each_task(second)
    hooks.around_each_task(first)  # once is enough
    with hooks.around_task("w1", "t1"):
        seen.append("attempt")
    assert seen == ["a in", "b in", "attempt", "b out", "a out"]


def test_a_failing_hook_is_logged_and_the_attempt_runs(caplog: pytest.LogCaptureFixture) -> None:
    @contextmanager
    def broken_entry() -> Iterator[None]:
        raise RuntimeError("database down")
        yield

    @contextmanager
    def broken_exit() -> Iterator[None]:
        yield
        raise RuntimeError("cannot close")

    hooks.around_each_task(broken_entry)
    hooks.around_each_task(broken_exit)
    ran = []
    with hooks.around_task("w1", "t1"):
        ran.append(True)
    assert ran == [True]
    logged = [r.getMessage() for r in caplog.records]
    assert "worker w1: task t1: a task hook failed on entry" in logged
    assert "worker w1: task t1: a task hook failed on exit" in logged
