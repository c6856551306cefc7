import configparser
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from helpers import CLI

import orbiter_sync

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_holds_the_package_and_its_cli_but_no_top_level_cli(tmp_path: Path) -> None:
    # Built from a copy of the tree without build/: setuptools never empties that
    # folder, so a module deleted from the source would still ship from it.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = tmp_path.glob("orbiter_sync-*.whl")
    names = zipfile.ZipFile(wheel).namelist()

    # exactly the package's modules: nothing stale, nothing missing
    shipped = {n for n in names if n.endswith(".py")}
    expected = {f"orbiter_sync/{p.relative_to(ROOT / 'orbiter_sync').as_posix()}"
                for p in (ROOT / "orbiter_sync").rglob("*.py")}  # fmt: skip
    expected |= {f"orbiter_sync/cli/{p.relative_to(ROOT / 'cli').as_posix()}"
                 for p in (ROOT / "cli").rglob("*.py")}  # fmt: skip
    assert shipped == expected

    assert "orbiter_sync/__init__.py" in names
    assert "orbiter_sync/cli/main.py" in names
    # every Redis script ships as its .lua file, shared Lua included
    lua_dir = ROOT / "orbiter_sync" / "lua"
    for script in [*lua_dir.glob("*.lua"), *lua_dir.glob("lib/*.lua")]:
        assert f"orbiter_sync/lua/{script.relative_to(lua_dir)}" in names
    assert not [n for n in names if n.startswith("cli/")]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Python: >=3.11" in text
    assert f"Version: {orbiter_sync.__version__}" in text
    for requirement in ("redis[hiredis]", "click", "tabulate", "tenacity", "prometheus-client"):
        assert f"Requires-Dist: {requirement}" in text
    for extra in ("gevent", "temporal", "agents", "dev"):
        assert f"Provides-Extra: {extra}" in text
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert (
        "orbiter-sync = orbiter_sync.cli.entry:main"
        in zipfile.ZipFile(wheel).read(entry_points).decode()
    )


def test_metadata_lives_in_setup_cfg_only() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(pyproject) == {"build-system", "tool"}
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["metadata"]["name"] == "orbiter-sync"
    assert "orbiter_sync.cli = cli" in setup["options"]["package_dir"]


def test_console_script_shows_the_group() -> None:
    done = subprocess.run([CLI, "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "Usage: orbiter-sync" in done.stdout
