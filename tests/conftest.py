"""Shared fixtures: private redis-server processes on free ports, and library objects on them.

Nothing is faked or mocked: every test talks to a real server it started.
A missing redis-server binary fails the run with a clear message (never a skip).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import CLI, TEST_POOL, TESTS, Spawn, wait_for

from orbiter_sync.admin import QueueAdmin
from orbiter_sync.connection import connect
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.embedded import INSTALL_HINT, EmbeddedRedis
from orbiter_sync.events import EventPublisher, EventSubscriber
from orbiter_sync.producer import TaskProducer
from orbiter_sync.shards import workers_layout
from orbiter_sync.store import TaskStore
from orbiter_sync.testing.fake_openai import FakeOpenAI


def pytest_sessionstart(session: pytest.Session) -> None:
    if shutil.which("redis-server") is None:
        raise pytest.UsageError(f"the tests need a real Redis: {INSTALL_HINT}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """One private server for the session; tests that kill Redis use ``private_redis``."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The session server, emptied before each test."""
    if not redis_server.running:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    """A server of this test's own, with AOF on, so it can be killed and restarted."""
    with EmbeddedRedis(appendonly=True) as server:
        yield server


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client for looking at what is in Redis."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def producer(redis_url: str) -> Iterator[TaskProducer]:
    p = TaskProducer(redis_url)
    yield p
    p.close()


@pytest.fixture
def consumer(redis_url: str) -> Iterator[TaskConsumer]:
    """The consumer side as worker ``w1`` holds it."""
    c = TaskConsumer(redis_url, "w1")
    yield c
    c.close()


@pytest.fixture
def admin(redis_url: str) -> Iterator[QueueAdmin]:
    a = QueueAdmin(redis_url)
    yield a
    a.close()


@pytest.fixture
def store(redis_url: str) -> Iterator[TaskStore]:
    s = TaskStore(redis_url)
    yield s
    s.close()


@pytest.fixture
def publisher(redis_url: str) -> Iterator[EventPublisher]:
    p = EventPublisher(redis_url)
    yield p
    p.close()


@pytest.fixture
def subscriber(redis_url: str) -> Iterator[EventSubscriber]:
    s = EventSubscriber(redis_url)
    yield s
    s.close()


@pytest.fixture
def no_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Redis URL or worker setting from the developer's shell (the CLI tests use it)."""
    for name in ("ORBITER_REDIS_URL", "REDIS_URL", "TEMPORAL_HOST", "ORBITER_POOL"):
        monkeypatch.delenv(name, raising=False)


def pytest_report_header() -> str:
    return f"worker pool under test: {TEST_POOL}"


# Settings a developer's shell may hold that would change what a test's worker does.
_WORKER_SETTINGS_ENV = (
    "ORBITER_ALLOW_IMPORTS",
    "TEMPORAL_HOST",
    "ORBITER_POOL",
    "ORBITER_REDIS_URL",
    "ORBITER_METRICS_PORT",
)


def _first_key(client: redis.Redis, pattern: str) -> str | None:
    """A key matching ``pattern`` (on every master of a cluster), or None."""
    return next(iter(client.scan_iter(match=pattern, count=1000)), None)


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[Spawn]:
    """Start ``orbiter-sync start worker`` subprocesses; kill whatever is left at the end."""
    started: list[subprocess.Popen[str]] = []

    def spawn(
        url: str,
        *args: str,
        worker_id: str | None = None,
        may_die: bool = False,
        env: dict[str, str] | None = None,
        pool: str | None = TEST_POOL,
    ) -> subprocess.Popen[str]:
        inherited = {k: v for k, v in os.environ.items() if k not in _WORKER_SETTINGS_ENV}
        env = {**inherited, "PYTHONPATH": str(TESTS), **(env or {})}
        command = [CLI, "start", "worker", "--redis-url", url, "--allow-import", "sample_agents",
                   "--retry-backoff", "0.05", "--heartbeat-ttl", "3", *args]  # fmt: skip
        if pool:
            command += ["--pool", pool]
        if worker_id:
            command += ["--worker-id", worker_id]
        log = open(tmp_path / f"worker-{len(started)}.log", "w")  # noqa: SIM115
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        process.log_path = log.name  # type: ignore[attr-defined]
        started.append(process)
        client = connect(url)
        # its own heartbeat: the id given, or the default one, which holds the pid
        pattern = f"{workers_layout(client).worker_prefix}{worker_id or f'*-{process.pid}-*'}"
        wait_for(lambda: process.poll() is not None or _first_key(client, pattern), timeout=15)
        client.close()
        assert may_die or process.poll() is None, Path(log.name).read_text()
        return process

    yield spawn
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def llm_worker(spawn_worker: Spawn, redis_url: str, llm: FakeOpenAI) -> Spawn:
    """``start(*args)`` starts a worker that reaches the fake model and allows llm_tools."""

    def start(*args: str, **options: Any) -> Any:
        env = {"OPENAI_BASE_URL": llm.url, "OPENAI_API_KEY": "test-key-123456"}
        env.update(options.pop("env", {}))
        return spawn_worker(redis_url, "--allow-import", "llm_tools", *args, env=env, **options)

    return start
