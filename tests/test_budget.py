"""A hung Redis (``DEBUG SLEEP``) cannot hold a CLI command past its five-second budget.

``orbiter-sync health`` is a container health check: it must answer within its budget
even when Redis accepts connections and never replies.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import CLI, wait_for
from redis.backoff import NoBackoff
from redis.retry import Retry

from orbiter_sync.connection import Budget, connect
from orbiter_sync.embedded import EmbeddedRedis, free_port
from orbiter_sync.errors import RedisUnavailableError

# The CLI's 5 s budget, plus the interpreter's start-up and a margin for a loaded machine.
BOUND = 8.0
PASSWORD = "hung-s3cret"
NO_RETRY = Retry(NoBackoff(), 0)  # redis-py's own default retries for seconds


def _hang(port: int) -> None:
    """Run DEBUG SLEEP 30; it returns when the sleep ends or the server is killed."""
    client = redis.Redis(port=port, retry=NO_RETRY)
    try:
        client.execute_command("DEBUG", "SLEEP", "30")  # type: ignore[no-untyped-call]
    except redis.RedisError:
        pass  # killed under it, as the test ends
    finally:
        client.close()


def _is_hung(port: int) -> bool:
    probe = redis.Redis(port=port, socket_timeout=0.2, retry=NO_RETRY)
    try:
        probe.ping()
        return False
    except redis.TimeoutError:
        return True
    finally:
        probe.close()


@pytest.fixture
def hung_redis() -> Iterator[EmbeddedRedis]:
    """A private server that accepts connections and answers nothing for 30 s."""
    with EmbeddedRedis(debug=True) as server:
        sleeper = threading.Thread(target=_hang, args=(server.port,), daemon=True)
        sleeper.start()
        try:
            wait_for(lambda: _is_hung(server.port), timeout=5)
            yield server
        finally:
            server.kill()  # SIGTERM would wait for the sleep to end
            sleeper.join(timeout=5)
            assert not server.running and not sleeper.is_alive()


def run_timed(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {"PATH": str(Path(CLI).parent) + ":/usr/bin:/bin", "HOME": "/tmp"}
    started = time.monotonic()
    done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60, env=env)
    return time.monotonic() - started, done


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [(["worker", "list"], 1), (["task", "status", "X"], 1), (["queue", "stats"], 1),
     (["health", "X"], 2)],
)  # fmt: skip
def test_a_command_against_a_hung_redis_ends_within_its_budget(
    hung_redis: EmbeddedRedis, args: list[str], exit_code: int
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{hung_redis.port}/0"

    elapsed, done = run_timed(*args, "--redis-url", url)

    assert elapsed < BOUND, f"{' '.join(args)} took {elapsed:.1f}s"
    assert done.returncode == exit_code, done
    # one line: the health verdict on stdout, any other error on stderr
    if args[0] == "health":
        shown, other, prefix = done.stdout, done.stderr, "unhealthy: cannot read the heartbeat: "
    else:
        shown, other, prefix = done.stderr, done.stdout, "Error: "
    [line] = shown.splitlines()
    assert other == ""
    assert line.startswith(prefix + "Redis unreachable"), line
    assert "Timeout" in line and PASSWORD not in line


def test_a_budget_bounds_one_call_retries_included(hung_redis: EmbeddedRedis) -> None:
    budget = Budget(1.0)
    hung = connect(hung_redis.url, budget=budget)
    refused = connect(f"redis://127.0.0.1:{free_port()}/0", budget=budget)
    for client in (hung, refused):
        started = time.monotonic()
        with pytest.raises(RedisUnavailableError):
            budget.retry.call(client.ping)
        assert time.monotonic() - started < 1.0 + 0.3
    hung.close()
    refused.close()


def test_a_budget_scope_reaches_code_that_connects_by_itself(hung_redis: EmbeddedRedis) -> None:
    # Given clients made inside and after a scope, by code that passes no budget
    with Budget(1.0).scope():
        inside = connect(hung_redis.url)
    after = connect(hung_redis.url)

    # Then the one made inside gives up on a hung Redis after half the budget
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        inside.ping()
    assert 0.45 < time.monotonic() - started < 1.0
    # and the scope is over: the other has the long-lived default (15 s: not waited for)
    assert after.connection_pool.connection_kwargs["socket_timeout"] == 15.0
    inside.close()
    after.close()
