"""Helpers for tests: waiting on conditions, and a connection killer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import redis
from redis.commands.core import Script

from orbiter_sync.connection import RetryPolicy
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.maintenance import Maintenance, RetryPromoter
from orbiter_sync.queue import Delivery

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Wait until ``condition()`` is truthy and return it; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


class ConnectionKiller:
    """Kills every normal client connection of a server, over and over, from a thread."""

    def __init__(self, url: str, interval: float = 0.003) -> None:
        self._client = redis.Redis.from_url(url)
        self._interval = interval
        self._stop = threading.Event()
        self.kills = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.kills += int(self._client.execute_command("CLIENT KILL TYPE normal SKIPME yes"))  # type: ignore[no-untyped-call]
            time.sleep(self._interval)

    def __enter__(self) -> ConnectionKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._client.close()


# The console script installed beside the interpreter running the tests.
CLI = str(Path(sys.executable).with_name("orbiter-sync"))

TESTS = Path(__file__).resolve().parent
# `make test` runs the worker tests a second time with ORBITER_TEST_POOL=gevent.
TEST_POOL = os.environ.get("ORBITER_TEST_POOL", "thread")
ROOT = TESTS.parent
Spawn = Callable[..., subprocess.Popen[str]]


def log_of(process: subprocess.Popen[str]) -> str:
    """What a process started by ``spawn_worker`` wrote."""
    return Path(process.log_path).read_text()  # type: ignore[attr-defined]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "redis.key", directory / "redis.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


def stream_entries(r: redis.Redis, stream: str) -> list[tuple[str, dict[str, str]]]:
    """``r.xrange(stream)``, typed as what it is: ``r`` decodes responses, and an XRANGE
    entry always has an id and fields (redis-py types them for every protocol)."""
    return cast("list[tuple[str, dict[str, str]]]", r.xrange(stream))


def events_of(r: redis.Redis, task_id: str) -> list[dict[str, Any]]:
    """Every event stored in the task's stream, decoded."""
    return [json.loads(f["event"]) for _, f in stream_entries(r, f"orbiter:stream:{task_id}")]


def terminal_events(r: redis.Redis, task_id: str) -> list[str]:
    """The statuses of the terminal status events in the task's stream."""
    return [
        e["status"]
        for e in events_of(r, task_id)
        if e["type"] == "status" and e["status"] in ("completed", "error", "cancelled")
    ]


def pending_count(r: redis.Redis) -> int:
    """Entries claimed and not settled in the default queue's group."""
    return int(r.xpending("orbiter:tasks", "orbiter:tasks:group")["pending"])


def claim_as_worker(consumer: TaskConsumer, timeout: float = 3.0) -> Delivery | None:
    """Claim as a worker's slot does while the worker's maintenance loop runs beside it:
    retries that are due go back on the queue, dead workers' entries are taken over."""
    promoter = RetryPromoter(settings=consumer.settings, client=consumer._client)
    stopping = threading.Event()
    maintenance = threading.Thread(
        target=Maintenance(consumer, promoter, stopping).run, daemon=True
    )
    maintenance.start()
    try:
        return consumer.claim(timeout=timeout)
    finally:
        stopping.set()
        maintenance.join(5)


def claim_and_begin(consumer: TaskConsumer) -> Delivery:
    """Claim the next task and move it to running, as a slot does."""
    delivery = claim_as_worker(consumer)
    assert delivery is not None
    assert consumer.begin(delivery)
    return delivery


class LostFirstReply(RetryPolicy):
    """Runs every script call twice and returns the second reply: what happens when the
    first call's reply is lost on a dropped connection and the retry policy repeats it."""

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if isinstance(fn, Script):
            fn(*args, **kwargs)
        return fn(*args, **kwargs)
