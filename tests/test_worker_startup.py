"""How a worker finds and loads agents' code when it starts, as Celery's and RQ's do: the
current directory and ``--path`` on the path, every allowed module imported at start-up,
and a module that cannot be imported stopping the worker at once."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import CLI, wait_for

from orbiter_sync.client import distributed

AGENT = "def hello(input):\n    return 'hello ' + input\n"


@pytest.fixture
def start(redis_url: str, tmp_path: Path) -> Iterator[object]:
    """``start(*args, cwd=...)`` runs ``orbiter-sync start worker`` with no PYTHONPATH."""
    started: list[subprocess.Popen[str]] = []

    def run(*args: str, cwd: Path = tmp_path) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        env = {k: v for k, v in env.items() if not k.startswith("ORBITER_")}
        process = subprocess.Popen(
            [CLI, "start", "worker", "--redis-url", redis_url, *args],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def banner_of(process: subprocess.Popen[str], url: str) -> str:
    client = redis.Redis.from_url(url)
    wait_for(lambda: client.keys("orbiter:workers:*"), timeout=15)
    client.close()
    process.terminate()
    out, _ = process.communicate(timeout=15)
    return out


def test_the_current_directory_is_on_the_path(
    start: object, redis_url: str, tmp_path: Path
) -> None:
    # Given an agents module in the directory the worker starts from, and no PYTHONPATH
    (tmp_path / "myagents.py").write_text(AGENT)
    process = start("--allow-import", "myagents")  # type: ignore[operator]
    # Then its agents run
    handle = distributed({"entrypoint": "myagents:hello"}, "there", redis_url=redis_url)
    assert handle.result(timeout=15) == {"output": "hello there"}
    assert "imports:     myagents" in banner_of(process, redis_url)


def test_path_adds_a_directory(start: object, redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "pathagents.py").write_text(AGENT)
    start("--path", str(tmp_path / "src"), "--allow-import", "pathagents")  # type: ignore[operator]
    handle = distributed({"entrypoint": "pathagents:hello"}, "src", redis_url=redis_url)
    assert handle.result(timeout=15) == {"output": "hello src"}


@pytest.mark.parametrize(
    ("module", "source", "said"),
    [
        ("misspelt", None, "cannot import allowed module 'misspelt': ModuleNotFoundError"),
        ("broken", "raise RuntimeError('no config')\n", "'broken': RuntimeError: no config"),
    ],
)
def test_an_allowed_module_that_cannot_be_imported_stops_the_worker(
    start: object, tmp_path: Path, module: str, source: str | None, said: str
) -> None:
    if source is not None:
        (tmp_path / f"{module}.py").write_text(source)
    process = start("--allow-import", module)  # type: ignore[operator]
    out, _ = process.communicate(timeout=20)
    assert process.returncode == 2
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and said in errors[0]
    assert "Traceback" not in out


def test_an_empty_allowlist_starts_and_says_so(start: object, redis_url: str) -> None:
    process = start()  # type: ignore[operator]
    banner = banner_of(process, redis_url)
    assert "imports:     none (only LLM agent dicts can run" in banner


def test_id_file_lets_a_health_check_find_the_worker(
    start: object, redis_url: str, tmp_path: Path
) -> None:
    id_file = tmp_path / "worker-id"
    process = start("--id-file", str(id_file), "--worker-id", "box-1")  # type: ignore[operator]
    wait_for(id_file.exists, timeout=15)
    assert id_file.read_text() == "box-1\n"
    check = [CLI, "health", "--id-file", str(id_file), "--redis-url", redis_url]
    wait_for(lambda: subprocess.run(check, capture_output=True).returncode == 0, timeout=15)
    # stopped, it takes its file with it: the check then fails as it should
    process.terminate()
    process.communicate(timeout=15)
    assert not id_file.exists()
    assert subprocess.run(check, capture_output=True).returncode == 2
