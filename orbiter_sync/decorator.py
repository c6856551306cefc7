"""Agents defined in the app: ``@orbiter_sync.agent`` on a module-level function.

The function stays callable as it was; it also knows its entrypoint path
(``module:name``), so a view submits it by attribute (``summarise.submit(text)``)
and a typo is an ``AttributeError`` there, not a task failing on a worker. The
worker imports it through its allowlist like any entrypoint (``--allow-import``
the function's module); what it finds there is this wrapper, which passes the
gate because it wraps (``__wrapped__``) a function defined in that module::

    @orbiter_sync.agent(max_retries=0, timeout=120)
    def summarise(input: str, **context) -> str: ...

    handle = summarise.submit("Some text", detailed=True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from orbiter_sync.agents.imports import entrypoint_path

if TYPE_CHECKING:
    from orbiter_sync.client import TaskHandle


class AgentFunction:
    """A module-level function made an agent, with its submit defaults."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        queue: str | None = None,
        retry_timeouts: bool | None = None,
    ) -> None:
        functools.update_wrapper(self, function)
        self.path = entrypoint_path(function)
        self.name = name or function.__name__
        self.max_retries = max_retries
        self.timeout = timeout
        self.queue = queue
        self.retry_timeouts = retry_timeouts

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<agent {self.name} ({self.path})>"

    def __reduce__(self) -> str:
        # pickled by reference, as the function it replaces in its module would be
        return str(self.__qualname__)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        """The agent_config a worker runs: this function's entrypoint."""
        return {"entrypoint": self.path, "name": self.name}

    def submit(self, input: str, **options: Any) -> TaskHandle:
        """Queue one run (``distributed(self, input, **options)``); the options given
        here win over the agent's defaults."""
        from orbiter_sync.client import distributed

        return distributed(self, input, **options)

    def submit_defaults(self) -> dict[str, Any]:
        """What ``distributed()`` uses for options the caller did not give (None: not
        set here, so an app's setting or the library's default applies)."""
        return {
            "max_retries": self.max_retries,
            "timeout": self.timeout,
            "queue": self.queue,
            "retry_timeouts": self.retry_timeouts,
        }


@overload
def agent(function: Callable[..., Any], /) -> AgentFunction: ...
@overload
def agent(
    *,
    name: str | None = None,
    max_retries: int | None = None,
    timeout: float | None = None,
    queue: str | None = None,
    retry_timeouts: bool | None = None,
) -> Callable[[Callable[..., Any]], AgentFunction]: ...
def agent(
    function: Callable[..., Any] | None = None, /, **defaults: Any
) -> AgentFunction | Callable[[Callable[..., Any]], AgentFunction]:
    """Make a module-level function an agent: ``@agent`` or ``@agent(name=..., max_retries=...,
    timeout=..., queue=..., retry_timeouts=...)``."""
    if function is not None:
        return AgentFunction(function, **defaults)
    return lambda fn: AgentFunction(fn, **defaults)
