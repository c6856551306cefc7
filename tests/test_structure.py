"""The shape of the code base, checked so that it stays as the README's module map says.

No module over 400 lines (tests included); no import cycle among orbiter_sync modules (imports
under TYPE_CHECKING and inside functions count too); only the worker module and
the CLI import the worker module; the public API's ``__all__`` and its lazy
import table agree; every Redis script is a ``.lua`` file with a KEYS/ARGV header.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
import redis

import orbiter_sync
from orbiter_sync import lua

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "orbiter_sync"
CLI_DIR = ROOT / "cli"
MAX_LINES = 400


def module_name(path: Path) -> str:
    if path.is_relative_to(CLI_DIR):
        parts = ["orbiter_sync", "cli", *path.relative_to(CLI_DIR).with_suffix("").parts]
    else:
        parts = ["orbiter_sync", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *CLI_DIR.rglob("*.py")])


MODULES = {module_name(path): path for path in python_files()}


def imports_of(path: Path) -> set[str]:
    """Every orbiter_sync module ``path`` imports, wherever the import statement is."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {name for name in found if name in MODULES and name != this}


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


ALL_PYTHON = sorted(
    path.relative_to(ROOT).as_posix()
    for folder in ("orbiter_sync", "cli", "tests", "examples", "benchmarks")
    for path in (ROOT / folder).rglob("*.py")
)


@pytest.mark.parametrize("relative", ALL_PYTHON)
def test_no_module_is_over_400_lines(relative: str) -> None:
    lines = len((ROOT / relative).read_text().splitlines())
    assert lines <= MAX_LINES, f"{relative} has {lines} lines"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that ends where it starts), or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return None
        for dep in sorted(graph.get(name, ())):
            cycle = visit(dep, [*path, name])
            if cycle:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle:
            return cycle
    return None


def test_no_import_cycles() -> None:
    # The package's own __init__ only names the public API for type checkers and
    # imports lazily; a cycle through it would not be an import cycle at runtime.
    graph = {name: deps - {"orbiter_sync"} for name, deps in GRAPH.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles() -> None:
    # the check above must be able to fail
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    # and the graph it checks holds the edges it should: plain, relative, under
    # TYPE_CHECKING and inside functions
    assert "orbiter_sync.consumer" in GRAPH["orbiter_sync.heartbeat"]
    assert "orbiter_sync.cli.common" in GRAPH["orbiter_sync.cli.worker"]
    assert "orbiter_sync.worker" in GRAPH["orbiter_sync"]  # under TYPE_CHECKING


def test_only_the_worker_module_and_the_cli_import_the_worker() -> None:
    importers = {name for name, deps in GRAPH.items() if "orbiter_sync.worker" in deps}
    allowed = {"orbiter_sync"} | {n for n in MODULES if n.startswith("orbiter_sync.cli")}
    assert importers <= allowed, importers - allowed


def test_all_and_the_lazy_import_table_agree() -> None:
    table: dict[str, str] = orbiter_sync._MODULE_OF
    assert sorted(orbiter_sync.__all__) == sorted(table)
    assert len(set(orbiter_sync.__all__)) == len(orbiter_sync.__all__)
    for name, module in table.items():
        assert getattr(importlib.import_module(module), name) is getattr(orbiter_sync, name)
    # the names type checkers see are the same, from the same modules
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    typed = {
        alias.name: node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    assert {name: typed.get(name) for name in table} == table


def test_the_version_is_written_once() -> None:
    setup = (ROOT / "setup.cfg").read_text()
    assert "version = attr: orbiter_sync.__version__" in setup
    elsewhere = [
        path
        for path in python_files()
        if path != PACKAGE / "__init__.py" and orbiter_sync.__version__ in path.read_text()
    ]
    assert elsewhere == []


# -- Lua -------------------------------------------------------------------------------

LUA_DIR = PACKAGE / "lua"
_BINDING = re.compile(r"^local \w+ = (?:tonumber\(|cjson\.decode\()?(KEYS|ARGV)\[(\d+)\]\)?$")


def test_every_script_is_a_lua_file_and_every_file_a_script() -> None:
    assert {p.stem for p in LUA_DIR.glob("*.lua")} == set(lua.SCRIPTS)
    assert {p.stem for p in (LUA_DIR / "lib").glob("*.lua")} == set(lua.LIBRARIES)


@pytest.mark.parametrize("name", lua.SCRIPTS)
def test_scripts_document_and_bind_their_keys_and_arguments(name: str) -> None:
    text = (LUA_DIR / f"{name}.lua").read_text()
    header = [line for line in text.splitlines() if line.startswith("--")]
    documented = {
        (kind, int(n))
        for kind, n in re.findall(r"^-- (KEYS|ARGV)\[(\d+)\]", "\n".join(header), re.M)
    }
    bound: set[tuple[str, int]] = set()
    logic_started = False
    for line in text.splitlines():
        if not line or line.startswith("--"):
            continue
        match = _BINDING.match(line)
        if match:
            assert not logic_started, f"{name}.lua binds {line!r} after its logic began"
            bound.add((match.group(1), int(match.group(2))))
        else:
            logic_started = True
            assert "KEYS[" not in line and "ARGV[" not in line, (
                f"{name}.lua uses KEYS/ARGV outside its bindings: {line!r}"
            )
    assert bound, f"{name}.lua binds nothing"
    # variadic arguments are documented as ARGV[n...] and taken with unpack
    assert documented == bound
    for kind in ("KEYS", "ARGV"):
        numbers = sorted(n for k, n in bound if k == kind)
        assert numbers == list(range(1, len(numbers) + 1)), f"{name}.lua {kind} gaps"


@pytest.mark.parametrize("name", [*lua.SCRIPTS, *(f"lib/{n}" for n in lua.LIBRARIES)])
def test_status_is_written_only_through_the_transition_rule(name: str) -> None:
    text = (LUA_DIR / f"{name}.lua").read_text()
    if name == "lib/status":
        return  # the rule itself, and set_status, its only writer
    for line in text.splitlines():
        if "HSET" in line.upper() and not line.lstrip().startswith("--"):
            assert "status" not in line, f"{name}.lua writes a status itself: {line!r}"
    if "set_status(" in text or "may_become(" in text:
        assert '--- @include "status"' in text, f"{name}.lua uses the rule without including it"


def test_the_transition_rule_exists_once() -> None:
    everywhere = [*PACKAGE.rglob("*.lua"), *PACKAGE.rglob("*.py")]
    defining = [p for p in everywhere if "function may_become" in p.read_text()]
    assert defining == [LUA_DIR / "lib" / "status.lua"]


def test_every_script_compiles_in_redis(r: redis.Redis) -> None:
    for name in lua.SCRIPTS:
        source = lua.source(name)
        assert "@include" not in source
        assert r.script_load(source)
