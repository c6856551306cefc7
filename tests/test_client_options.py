"""What a web app's client does per run: agents defined in the app, per-task options,
errors kept once with their traceback, a time budget while Redis is away, lifetimes."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
import redis
import sample_agents
from helpers import Spawn, log_of, stream_entries, wait_for

from orbiter_sync import TaskHandle, agent, distributed
from orbiter_sync.embedded import EmbeddedRedis
from orbiter_sync.errors import RedisUnavailableError, TaskFailedError, ValidationError


def entry(name: str) -> dict[str, str]:
    return {"entrypoint": f"sample_agents:{name}"}


def payload_of(r: redis.Redis, queue: str = "orbiter:tasks") -> dict[str, Any]:
    [(_, fields)] = stream_entries(r, queue)
    payload: dict[str, Any] = json.loads(fields["payload"])
    return payload


def test_an_agent_defined_in_the_app_submits_itself(redis_url: str, r: redis.Redis) -> None:
    # Given an @agent function in the app's module (tests/sample_agents.py)
    handle = sample_agents.shout.submit("hello", redis_url=redis_url)
    # Then the payload names its entrypoint, and carries its defaults
    payload = payload_of(r)
    assert payload["agent_config"] == {"entrypoint": "sample_agents:shout", "name": "shouter"}
    assert (payload["max_retries"], payload["timeout_seconds"]) == (0, 20)
    assert isinstance(handle, TaskHandle)
    # it is still the function it was
    assert sample_agents.shout("hi", task_id="t") == "HI"
    # a typo is found in the view, not on a worker
    with pytest.raises(AttributeError):
        sample_agents.shuot.submit("x")  # type: ignore[attr-defined]


def test_an_app_agent_and_a_plain_function_run_on_a_worker(
    redis_url: str, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url)
    assert sample_agents.shout.submit("hey", redis_url=redis_url).result(timeout=15) == {
        "output": "HEY"
    }
    plain = distributed(sample_agents.echo, "there", redis_url=redis_url)
    assert plain.result(timeout=15) == {"output": "echo: there"}


def test_what_no_worker_could_import_is_refused_where_it_is_defined() -> None:
    def nested(input: str) -> str:
        return input

    with pytest.raises(ValueError, match="not a module-level function"):
        agent(nested)
    with pytest.raises(ValidationError, match="not a module-level function"):
        distributed(lambda text: text, "x", redis_url="redis://127.0.0.1:1")


def test_max_retries_per_run(redis_url: str, spawn_worker: Spawn) -> None:
    spawn_worker(redis_url)
    handle = distributed(entry("broken"), "once", redis_url=redis_url, max_retries=0)
    with pytest.raises(TaskFailedError):
        handle.result(timeout=15)
    state = handle.status()
    assert state is not None and state.retries == 0


def test_an_error_is_kept_once_with_its_traceback(
    redis_url: str, spawn_worker: Spawn, r: redis.Redis
) -> None:
    worker = spawn_worker(redis_url)
    handle = distributed(entry("broken"), "x", redis_url=redis_url, max_retries=0)
    with pytest.raises(TaskFailedError) as failure:
        handle.result(timeout=15)
    assert str(failure.value).count("RuntimeError") == 1
    state = handle.status()
    assert state is not None
    assert (state.error, state.extra["error_type"]) == ("broken by design: x", "RuntimeError")
    assert 'raise RuntimeError(f"broken by design: {input}")' in state.traceback
    assert state.traceback.rstrip().endswith("RuntimeError: broken by design: x")
    wait_for(lambda: "broken by design: x\nTraceback" in log_of(worker))


def test_a_delayed_run_waits_pending_then_runs(
    redis_url: str, spawn_worker: Spawn, r: redis.Redis
) -> None:
    spawn_worker(redis_url)
    submitted = time.time()
    handle = distributed(entry("echo"), "later", redis_url=redis_url, delay=1.5)
    assert r.zcard("orbiter:tasks:delayed") == 1 and r.xlen("orbiter:tasks") == 0
    assert handle.status().status == "pending"  # type: ignore[union-attr]
    assert handle.result(timeout=15) == {"output": "echo: later"}
    started = handle.status().started_at  # type: ignore[union-attr]
    assert started is not None and started - submitted >= 1.4


def test_the_client_chooses_the_queue(redis_url: str, spawn_worker: Spawn) -> None:
    spawn_worker(redis_url, "--queue", "urgent")
    handle = distributed(entry("echo"), "now", redis_url=redis_url, queue="urgent")
    assert handle.result(timeout=15) == {"output": "echo: now"}


def test_a_view_gets_its_error_within_the_budget_when_redis_is_down(
    private_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    url = private_redis.url
    distributed(entry("echo"), "warm", redis_url=url, client_timeout=2)  # connected once
    private_redis.stop()
    caplog.set_level(logging.WARNING)
    began = time.monotonic()
    with pytest.raises(RedisUnavailableError):
        distributed(entry("echo"), "lost", redis_url=url, client_timeout=2)
    assert time.monotonic() - began < 3.0  # the budget, not the worker's 30 s
    retries = [r for r in caplog.records if r.getMessage().startswith("Redis call failed")]
    assert len(retries) == 1  # one line, not one per retry


def test_the_default_budget_is_five_seconds_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orbiter_sync.client import resolve_client_timeout
    from orbiter_sync.errors import ConfigurationError

    monkeypatch.delenv("ORBITER_CLIENT_TIMEOUT", raising=False)
    assert resolve_client_timeout() == 5.0
    monkeypatch.setenv("ORBITER_CLIENT_TIMEOUT", "1.5")
    assert resolve_client_timeout() == 1.5
    assert resolve_client_timeout(9) == 9
    monkeypatch.setenv("ORBITER_CLIENT_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match="ORBITER_CLIENT_TIMEOUT must be seconds"):
        resolve_client_timeout()


def test_result_and_event_lifetimes_are_settings(
    redis_url: str, spawn_worker: Spawn, r: redis.Redis
) -> None:
    spawn_worker(redis_url, "--result-ttl", "120", "--events-ttl", "40")
    handle = distributed(entry("echo"), "x", redis_url=redis_url)
    handle.result(timeout=15)
    assert 0 < r.ttl(f"orbiter:task:{handle.task_id}") <= 120
    assert 0 < r.ttl(f"orbiter:stream:{handle.task_id}") <= 40


def test_a_short_budget_still_streams_a_long_run(
    redis_url: str, spawn_worker: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a 1 s budget means 0.5 s socket reads: blocking reads must stay inside them
    monkeypatch.setenv("ORBITER_CLIENT_TIMEOUT", "1")
    spawn_worker(redis_url)
    handle = distributed(entry("sleepy"), "2", redis_url=redis_url)  # quiet for 2 s
    events = list(handle.stream(timeout=20))
    assert events[-1].to_dict()["status"] == "completed"


def test_a_cancelled_delayed_run_never_runs_even_past_its_result_ttl(
    redis_url: str, spawn_worker: Spawn, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given hashes kept 1 s only, and a run delayed 2 s
    monkeypatch.setenv("ORBITER_RESULT_TTL", "1")
    spawn_worker(redis_url)
    handle = distributed(
        entry("counted"), "x", redis_url=redis_url, delay=2, metadata={"redis_url": redis_url}
    )
    assert r.ttl(f"orbiter:task:{handle.task_id}") >= 2  # it waits longer than 1 s
    # When it is cancelled while it waits
    assert handle.cancel()
    # Then, once due and taken by the worker, it is acknowledged, not run
    wait_for(lambda: r.zcard("orbiter:tasks:delayed") == 0, timeout=10)
    wait_for(lambda: r.xlen("orbiter:tasks") == 0, timeout=10)
    assert handle.status().status == "cancelled"  # type: ignore[union-attr]
    assert r.get(f"test:executions:{handle.task_id}") is None


def test_a_misspelt_option_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown run option\\(s\\): max_retry, timout"):
        distributed(entry("echo"), "x", max_retry=0, timout=5)  # type: ignore[call-arg]


def test_our_own_fields_of_another_clients_shape_are_kept_not_read() -> None:
    from orbiter_sync.events import event_from_dict
    from orbiter_sync.models import TaskPayload

    # a payload whose max_retries is not ours (a float, say) still runs, field kept
    payload = TaskPayload.from_dict({"task_id": "t1", "max_retries": 2.5, "retry_timeouts": "y"})
    assert (payload.max_retries, payload.retry_timeouts) == (None, False)
    assert payload.to_dict()["max_retries"] == 2.5
    # a running event with an attempt that is not ours is read without it
    event = event_from_dict({"type": "status", "status": "running", "attempt": 1.0})
    assert event.to_dict() == {
        "type": "status",
        "agent_name": "",
        "status": "running",
        "message": "",
    }


def test_an_app_agent_pickles_by_reference() -> None:
    import pickle

    assert pickle.loads(pickle.dumps(sample_agents.shout)) is sample_agents.shout
