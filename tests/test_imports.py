"""The import allowlist against a payload trying to escape it (orbiter_sync/agents/imports.py).

``hostile.agents`` (tests/hostile/) is allowed, and imports ``os``, built-ins,
partials, foreign objects and wrappers: a payload may name only what it defines.
Each bypass is resolved as the worker would and, were it wrongly allowed, run with
a shell command that touches a marker file: the marker must never appear.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hostile.agents as agents
import pytest
from helpers import Spawn
from hostile.toolkit import Lure

from orbiter_sync import distributed
from orbiter_sync.agents import ImportPolicy, resolve_agent
from orbiter_sync.agents.imports import import_allowed, split_path
from orbiter_sync.errors import AgentConfigError, ImportNotAllowedError, TaskFailedError

POLICY = ImportPolicy(("hostile.agents",))
NOT_HERE = "not a function or class defined there"
REFUSED = ImportNotAllowedError
BROKEN = AgentConfigError  # not a policy refusal: the path names nothing importable


def attempt(path: str, marker: Path, policy: ImportPolicy = POLICY) -> AgentConfigError:
    """Resolve ``path`` as the worker does; if that wrongly works, run it as the worker would."""
    with pytest.raises(AgentConfigError) as info:
        agent = resolve_agent({"entrypoint": path}, policy)
        agent.runnable(f"touch {marker}")
    assert not marker.exists(), f"{path} ran the payload's command"
    return info.value


def assert_clear(error: AgentConfigError, path: str, why: str) -> None:
    """One line that names the path and says why."""
    message = str(error)
    assert why in message, message
    assert repr(path) in message and "\n" not in message, message


BYPASSES = [
    # through a module bound in the allowed one
    ("hostile.agents:os.system", REFUSED, "'os.system' is an attribute chain"),
    ("hostile.agents:os", REFUSED, f"'os' in hostile.agents is a module, {NOT_HERE}"),
    ("hostile.agents.os", REFUSED, f"'os' in hostile.agents is a module, {NOT_HERE}"),
    ("hostile.agents:toolkit", REFUSED, "is a module"),
    ("hostile.agents.os.system", BROKEN, "cannot import 'hostile.agents.os'"),
    # dunder and private names
    ("hostile.agents:__loader__.get_data", REFUSED, "'__loader__' is a dunder name"),
    ("hostile.agents:__loader__", REFUSED, "'__loader__' is a dunder name"),
    ("hostile.agents:__getattr__", REFUSED, "'__getattr__' is a dunder name"),
    ("hostile.agents:legit.__globals__", REFUSED, "'__globals__' is a dunder name"),
    ("hostile.agents:_hidden", REFUSED, "'_hidden' is private"),
    ("hostile.agents._hidden", REFUSED, "'_hidden' is private"),
    # a module __getattr__ is never asked
    ("hostile.agents:lazy_system", BROKEN, "'hostile.agents' has no 'lazy_system'"),
    # built-ins and re-exports
    ("hostile.agents:system", REFUSED, "'system' in hostile.agents is a built-in function"),
    ("hostile.agents.system", REFUSED, "is a built-in function"),
    ("hostile.agents:run_command", REFUSED, f"a function defined in 'hostile.toolkit', {NOT_HERE}"),
    ("hostile.agents:join", REFUSED, "a function defined in 'posixpath'"),
    ("hostile.agents:Popen", REFUSED, "a class defined in 'subprocess'"),
    ("hostile.agents:logged_system", REFUSED, "a function defined in 'posix'"),
    # partials and bound methods
    ("hostile.agents:run_shell", REFUSED, f"a functools.partial, {NOT_HERE}"),
    ("hostile.agents:local_partial", REFUSED, "a functools.partial"),
    ("hostile.agents:bound", REFUSED, f"a bound method, {NOT_HERE}"),
    ("hostile.agents:local_bound", REFUSED, "a bound method"),
    # attributes of a class defined there
    ("hostile.agents:Agent.run", REFUSED, "'Agent.run' is an attribute chain"),
    ("hostile.agents:Agent.shell", REFUSED, "'Agent.shell' is an attribute chain"),
    ("hostile.agents.Agent.run", BROKEN, "cannot import 'hostile.agents.Agent'"),
    # instances of classes from elsewhere, and wrappers of what is not defined there
    ("hostile.agents:shell", REFUSED, "an instance of hostile.toolkit.Shell that wraps no"),
    ("hostile.agents:system_tool", REFUSED, "an instance of hostile.toolkit.FunctionTool"),
    ("hostile.agents:foreign_tool", REFUSED, "an instance of hostile.toolkit.FunctionTool"),
    ("hostile.agents:static_system", REFUSED, "an instance of builtins.staticmethod"),
    ("hostile.agents:lure", REFUSED, "an instance of hostile.toolkit.Lure"),
]


@pytest.mark.parametrize(("path", "error", "why"), BYPASSES)
def test_bypass_is_refused_and_nothing_runs(
    path: str, error: type[AgentConfigError], why: str, tmp_path: Path
) -> None:
    # Given hostile.agents is allowed
    # When a payload names something in it that it does not define
    refusal = attempt(path, tmp_path / "ran")

    # Then the path is refused, for a stated reason, and the command did not run
    assert type(refusal) is error
    assert_clear(refusal, path, why)


def test_objects_of_foreign_wrappers_are_read_without_running_their_code(
    tmp_path: Path,
) -> None:
    Lure.consulted.clear()

    attempt("hostile.agents:lure", tmp_path / "ran")

    # neither its __getattr__ (asked for _fn) nor its __wrapped__ property ran
    assert Lure.consulted == []


SMITH, SECRETS = "hostile.agentsmith", "hostile._secrets"


@pytest.mark.parametrize(
    ("path", "module", "policy", "why"),
    [
        ("hostile.agentsmith:run", SMITH, POLICY, "--allow-import hostile.agentsmith"),
        ("hostile.agentsmith.run", SMITH, POLICY, "outside the import allowlist (hostile.agents)"),
        ("hostile._secrets:run", SECRETS, ImportPolicy(("hostile",)), "'_secrets' is private"),
        ("hostile._secrets.run", SECRETS, ImportPolicy(("hostile",)), "'_secrets' is private"),
    ],
)
def test_a_refused_module_is_not_imported_at_all(
    path: str, module: str, policy: ImportPolicy, why: str, tmp_path: Path
) -> None:
    # Given a module never imported, and a path into it that is refused
    assert module not in sys.modules

    refusal = attempt(path, tmp_path / "ran", policy)

    # Then it stays unimported

    assert isinstance(refusal, ImportNotAllowedError)
    assert_clear(refusal, path, why)
    assert module not in sys.modules


def test_outside_the_allowlist_names_the_settings_that_would_allow_it(tmp_path: Path) -> None:
    refusal = attempt("os:system", tmp_path / "ran")

    assert "--allow-import os" in str(refusal) and "ORBITER_ALLOW_IMPORTS=os" in str(refusal)


def test_a_module_binding_is_refused_even_through_an_allowed_package(tmp_path: Path) -> None:
    # Given the whole hostile package is allowed, and hostile.agents is imported (so bound)
    policy = ImportPolicy(("hostile",))
    assert "agents" in vars(sys.modules["hostile"])

    # Then its submodules are still no functions
    for path in ("hostile:agents", "hostile.agents", "hostile:toolkit"):
        assert_clear(attempt(path, tmp_path / "ran", policy), path, "is a module")


def test_main_and_builtins_are_refused_even_when_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an operator allowed __main__ and builtins, and __main__ holds an agent
    monkeypatch.setattr(sys.modules["__main__"], "agent", agents.legit, raising=False)
    policy = ImportPolicy(("__main__", "builtins"))

    main = attempt("__main__:agent", tmp_path / "ran", policy)
    evaluate = attempt("builtins:exec", tmp_path / "ran", policy)
    dotted = attempt("builtins.eval", tmp_path / "ran", policy)

    assert_clear(main, "__main__:agent", "module '__main__' is the script the worker runs as")
    assert_clear(evaluate, "builtins:exec", "module 'builtins' is Python's built-ins")
    assert_clear(dotted, "builtins.eval", "module 'builtins' is Python's built-ins")


ACCEPTED = [
    "legit",  # a function defined there
    "legit_async",  # an async one
    "Agent",  # a class defined there
    "callable_agent",  # an instance of a class defined there
    "local_tool",  # @tool: a FunctionTool (from elsewhere) whose _fn is defined there
    "slotted_agent",  # the same, with __slots__
    "logged_agent",  # a functools.wraps wrapper of a function defined there
    "wrapped_agent",  # a class-based wraps-style wrapper (__wrapped__) of one
]


@pytest.mark.parametrize("name", ACCEPTED)
@pytest.mark.parametrize("separator", [":", "."])
def test_what_the_module_defines_is_reached_in_both_spellings(name: str, separator: str) -> None:
    path = f"hostile.agents{separator}{name}"

    assert import_allowed(path, POLICY) is vars(agents)[name]
    assert resolve_agent({"entrypoint": path}, POLICY).runnable is vars(agents)[name]


def test_accepted_wrappers_run_the_function_defined_there() -> None:
    def run(name: str) -> Any:
        return resolve_agent({"entrypoint": f"hostile.agents.{name}"}, POLICY).runnable("hi")

    assert run("local_tool") == "tool: hi"
    assert run("slotted_agent") == "legit: hi"
    assert run("logged_agent") == "logged: hi"
    assert run("wrapped_agent") == "wrapped: hi"
    assert run("callable_agent") == "callable: hi"


@pytest.mark.parametrize(
    "path",
    ["hostile.agents:", ":legit", "hostile.agents:legit()", "hostile.agents:legit\n", "a b:c"],
)
def test_malformed_paths_are_refused_before_any_lookup(path: str) -> None:
    with pytest.raises(AgentConfigError, match="^bad entrypoint .*expected 'pkg.module:func'$"):
        import_allowed(path, POLICY)


def test_split_path_checks_everything_it_can_without_importing() -> None:
    assert split_path("pkg.mod:func") == ("pkg.mod", "func")
    assert split_path("pkg.mod.func") == ("pkg.mod", "func")
    with pytest.raises(ImportNotAllowedError, match="'Class.method' is an attribute chain"):
        split_path("pkg.mod:Class.method")
    with pytest.raises(ImportNotAllowedError, match="'_impl' is private"):
        split_path("never_imported._impl.func")
    assert "never_imported" not in sys.modules


def test_messages_name_what_the_path_is_for() -> None:
    with pytest.raises(ImportNotAllowedError, match="^tool 'hostile.agents:os' is not allowed"):
        import_allowed("hostile.agents:os", POLICY, what="tool")


def test_worker_fails_a_bypass_for_good_and_goes_on(
    redis_url: str, spawn_worker: Spawn, tmp_path: Path
) -> None:
    # Given a worker that allows hostile.agents
    worker = spawn_worker(redis_url, "--allow-import", "hostile.agents")
    marker = tmp_path / "shell-ran"

    # When a payload reaches for os.system through it
    handle = distributed(
        {"entrypoint": "hostile.agents:os.system"}, f"touch {marker}", redis_url=redis_url
    )

    # Then the task fails at once, saying why, is never retried, and nothing ran
    with pytest.raises(TaskFailedError, match="'os.system' is an attribute chain"):
        handle.result(timeout=10)
    state = handle.status()
    assert state is not None and state.retries == 0
    assert not marker.exists()
    # and the worker goes on, running what the module defines (the async library's spelling)
    tool = distributed({"entrypoint": "hostile.agents.local_tool"}, "hi", redis_url=redis_url)
    assert tool.result(timeout=10) == {"output": "tool: hi"}
    assert not marker.exists() and worker.poll() is None
