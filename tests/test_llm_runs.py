"""LLM runs that end otherwise, and swarms: cancel, timeout, provider errors, refused configs,
and the three swarm modes, on real worker subprocesses against a real HTTP model server."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import TESTS, Spawn, events_of, wait_for
from test_llm import agent, kinds

from orbiter_sync.client import distributed
from orbiter_sync.errors import TaskCancelledError, TaskFailedError
from orbiter_sync.models import TaskStatus
from orbiter_sync.testing.fake_openai import FakeOpenAI, Reply


def failure(handle: Any) -> tuple[str, str, int]:
    """(error_type, error, retries) of a failed task."""
    with pytest.raises(TaskFailedError):
        handle.result(timeout=20)
    state = handle.status()
    assert state is not None and state.status == TaskStatus.FAILED
    return state.extra.get("error_type", ""), state.error or "", state.retries


def test_cancelling_a_run_mid_stream_stops_the_model_call(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    # Given a run whose model is still streaming
    llm_worker()
    llm.script(Reply.hang("Let me think"))
    handle = distributed(agent(), "Think hard", redis_url=redis_url)
    wait_for(lambda: any(e["type"] == "text" for e in events_of(r, handle.task_id)))
    # When it is cancelled
    cancelled_at = time.monotonic()
    assert handle.cancel()
    # Then the model call's connection is closed within a second
    llm.wait_for_disconnects(1, timeout=5)
    assert time.monotonic() - cancelled_at < 1.0
    with pytest.raises(TaskCancelledError):
        handle.result(timeout=10)
    assert [e.type for e in handle.stream(timeout=5)] == ["status", "text", "status"]
    assert kinds(r, handle) == ["status:running", "text", "status:cancelled"]


def test_timeout_seconds_stops_a_slow_model(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str
) -> None:
    llm_worker("--max-retries", "0")
    # a first run imports pydantic-ai (over a second on a busy machine), so that the
    # second's timeout covers the model call alone
    llm.script(Reply.text("warm"), Reply.hang())
    assert distributed(agent(), "warm up", redis_url=redis_url).result(timeout=20)
    handle = distributed(agent(), "slow", redis_url=redis_url, timeout=1)
    error_type, error, _ = failure(handle)
    assert (error_type, error) == ("TimeoutError", "timed out after 1s")
    assert len(llm.requests) == 2  # the slow call was made, and then its stream closed
    llm.wait_for_disconnects(1, timeout=5)


def test_a_server_error_fails_the_attempt_and_the_retry_succeeds(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    llm_worker()
    llm.script(Reply.error(503, "overloaded"), Reply.text("Back again."))
    handle = distributed(agent(), "hi", redis_url=redis_url)
    assert handle.result(timeout=20) == {"output": "Back again."}
    # one request per attempt: the provider client retried nothing itself
    assert len(llm.requests) == 2
    state = handle.status()
    assert state is not None and state.retries == 1
    errors = [e for e in events_of(r, handle.task_id) if e["type"] == "error"]
    assert errors and "503" in errors[0]["error"]


def test_a_rate_limit_waits_for_retry_after(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str
) -> None:
    llm_worker()
    llm.script(Reply.error(429, "slow down", headers={"Retry-After": "2"}), Reply.text("ok"))
    handle = distributed(agent(), "hi", redis_url=redis_url)
    llm.wait_for_requests(1, timeout=10)
    refused_at = time.monotonic()
    llm.wait_for_requests(2, timeout=10)
    # the worker's own backoff is 0.05 s; the provider asked for 2
    assert time.monotonic() - refused_at >= 1.8
    assert handle.result(timeout=20) == {"output": "ok"}


def test_bad_credentials_fail_for_good(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    llm_worker()
    llm.script(Reply.error(401, "Incorrect API key provided: test-key-123456"))
    handle = distributed(agent(), "hi", redis_url=redis_url)
    error_type, error, retries = failure(handle)
    assert error_type == "ModelRefusedError" and retries == 0
    assert "401" in error and "check the worker's API key" in error
    assert len(llm.requests) == 1
    # the key the provider quoted is written nowhere: not the hash, not an event
    assert "test-key-123456" not in error and "***" in error
    assert "test-key-123456" not in json.dumps(events_of(r, handle.task_id))


def test_an_unknown_model_fails_for_good(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str
) -> None:
    llm_worker()
    llm.script(Reply.error(404, "The model `gpt-9` does not exist"))
    error_type, error, retries = failure(
        distributed(agent(model="openai:gpt-9"), "hi", redis_url=redis_url)
    )
    assert (error_type, retries) == ("ModelRefusedError", 0)
    assert "check the agent's model name" in error


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (agent(tools=["os.system"]), "tool 'os.system' is not allowed: module 'os' is outside"),
        (agent(tools=["llm_tools.missing"]), "'llm_tools' has no 'missing'"),
        (agent(output_type="llm_tools.add"), "output_type 'llm_tools.add' is not a pydantic model"),
        (agent(model="mystery:m1"), "unknown model provider 'mystery'"),
        (agent(tools=["llm_tools.NotATool"]), "is a class without name, parameters, execute"),
        (  # every agent of a swarm is checked before the first one runs
            {"agents": [agent("a"), agent("b", model="anthropic:claude-x")]},
            "'anthropic:claude-x' needs ANTHROPIC_API_KEY set on the worker",
        ),
        (agent(tools=["llm_tools.opaque"]), "tool 'llm_tools.opaque': no schema can be made"),
        (agent(max_steps=0), "max_steps must be an integer from 1"),
        ({"agents": [agent("a")], "mode": "party"}, "unsupported swarm mode 'party'"),
        ({"agents": [agent("a")], "flow": "a >> b"}, "unknown agent 'b'"),
    ],
)
def test_a_config_that_can_never_run_fails_for_good_before_any_model_call(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, config: dict[str, Any], expected: str
) -> None:
    llm_worker()
    error_type, error, retries = failure(distributed(config, "hi", redis_url=redis_url))
    assert expected in error and retries == 0
    assert error_type in ("AgentConfigError", "ImportNotAllowedError")
    assert llm.requests == []


def test_a_missing_api_key_says_what_to_set(spawn_worker: Spawn, redis_url: str) -> None:
    spawn_worker(redis_url, env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
    _, error, _ = failure(distributed(agent(), "hi", redis_url=redis_url))
    assert "needs OPENAI_API_KEY set on the worker" in error


def test_a_worker_without_the_agents_extra_says_what_to_install(
    spawn_worker: Spawn, redis_url: str, tmp_path: Path
) -> None:
    # a pydantic_ai first on the path that cannot be imported: as if the extra were missing
    (tmp_path / "pydantic_ai").mkdir()
    (tmp_path / "pydantic_ai" / "__init__.py").write_text("raise ImportError('not installed')\n")
    spawn_worker(redis_url, env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS)])})
    error_type, error, retries = failure(distributed(agent(), "hi", redis_url=redis_url))
    assert (error_type, retries) == ("AgentConfigError", 0)
    assert "pip install 'orbiter-sync[agents]'" in error
    # entrypoints run as before
    assert distributed({"entrypoint": "sample_agents:echo"}, "x", redis_url=redis_url).result(
        timeout=10
    )


def test_an_unreachable_model_server_fails_the_attempt(spawn_worker: Spawn, redis_url: str) -> None:
    closed = "http://127.0.0.1:9/v1"  # the discard port: nothing listens
    spawn_worker(redis_url, "--max-retries", "1",
                 env={"OPENAI_BASE_URL": closed, "OPENAI_API_KEY": "k"})  # fmt: skip
    error_type, error, retries = failure(distributed(agent(), "hi", redis_url=redis_url))
    assert (error_type, retries) == ("ModelConnectionError", 1)  # retried, as 5xx is


def test_the_models_mistakes_with_tools_go_back_to_it_and_the_run_goes_on(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    llm_worker()
    llm.script(
        Reply.tool_calls(("search", {"q": "x"})),  # no such tool
        Reply.tool_calls(("add", {"a": "one", "b": 2})),  # not an integer
        Reply.tool_calls(("add", {"a": "two", "b": 2})),  # again: still the model's to fix
        Reply.text("I give up."),
    )
    handle = distributed(agent(tools=["llm_tools.add"]), "go", redis_url=redis_url, detailed=True)
    assert handle.result(timeout=20) == {"output": "I give up."}
    events = events_of(r, handle.task_id)
    calls = [e["tool_name"] for e in events if e["type"] == "tool_call"]
    results = [(e["success"], e["error"]) for e in events if e["type"] == "tool_result"]
    assert calls == ["search", "add", "add"]
    assert results[0] == (False, "Unknown tool 'search'")
    assert [ok for ok, _ in results[1:]] == [False, False]
    assert all("invalid arguments" in error for _, error in results[1:])


def test_tool_results_come_in_the_order_the_model_called_the_tools(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    llm_worker()
    llm.script(
        Reply.tool_calls(("nap", {"seconds": 0.3}), ("add", {"a": 1, "b": 2})), Reply.text("ok")
    )
    config = agent(tools=["llm_tools.nap", "llm_tools.add"])
    handle = distributed(config, "go", redis_url=redis_url, detailed=True)
    assert handle.result(timeout=20) == {"output": "ok"}
    results = [e for e in events_of(r, handle.task_id) if e["type"] == "tool_result"]
    assert [e["tool_name"] for e in results] == ["nap", "add"]  # add finished first
    assert results[0]["duration_ms"] >= 250 > results[1]["duration_ms"]


def test_a_team_workers_failure_is_the_leads_failed_tool_result(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    llm_worker()
    llm.script(
        Reply.tool_calls(("delegate_to_researcher", {"task": "look it up"})),
        Reply.error(503, "the researcher's model is down"),
        Reply.text("I could not find out."),
    )
    swarm = {"agents": [agent("lead"), agent("researcher")], "mode": "team"}
    handle = distributed(swarm, "When does water boil?", redis_url=redis_url, detailed=True)
    assert handle.result(timeout=20) == {"output": "I could not find out."}
    (result,) = [e for e in events_of(r, handle.task_id) if e["type"] == "tool_result"]
    assert result["success"] is False and result["error"].startswith("researcher: ")
    assert "503" in result["error"]


def test_a_workflow_swarm_chains_output_to_input(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    llm_worker()
    llm.script(Reply.text("draft: sun is hot"), Reply.text("Final: the sun is hot."))
    swarm = {
        "agents": [agent("writer"), agent("editor")],
        "flow": "editor >> writer",  # the flow decides the order, not the list
        "mode": "workflow",
        "max_handoffs": 10,
    }
    handle = distributed(swarm, "Write about the sun", redis_url=redis_url, detailed=True)
    assert handle.result(timeout=20) == {"output": "Final: the sun is hot."}
    first, second = llm.requests
    assert first["messages"][0]["content"] == "You are editor."
    assert second["messages"][-1] == {"role": "user", "content": "draft: sun is hot"}
    says = [(e["agent_name"], e.get("message")) for e in events_of(r, handle.task_id)
            if e["type"] == "status" and e["status"] == "running"]  # fmt: skip
    assert ("editor", "Workflow executing agent 'editor'") in says
    assert ("writer", "Workflow executing agent 'writer'") in says
    texts = [
        (e["agent_name"], e["text"]) for e in events_of(r, handle.task_id) if e["type"] == "text"
    ]
    assert texts == [("editor", "draft: sun is hot"), ("writer", "Final: the sun is hot.")]


def test_a_handoff_swarm_passes_control_by_naming_the_target(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    llm_worker()
    llm.script(Reply.text(" billing "), Reply.text("Your invoice is paid."))
    triage = agent("triage", handoffs=[agent("billing")])
    swarm = {
        "agents": [triage, agent("billing")],
        "flow": None,
        "mode": "handoff",
        "max_handoffs": 2,
    }
    handle = distributed(swarm, "Is my invoice paid?", redis_url=redis_url, detailed=True)
    assert handle.result(timeout=20) == {"output": "Your invoice is paid."}
    assert llm.requests[1]["messages"][0]["content"] == "You are billing."
    says = [e["message"] for e in events_of(r, handle.task_id) if e["type"] == "status"]
    assert "Handoff from 'triage' to 'billing'" in says


def test_a_handoff_swarm_stops_after_max_handoffs(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str
) -> None:
    llm_worker("--max-retries", "0")
    llm.respond_with(lambda body: Reply.text("b" if "You are a." in str(body) else "a"))
    swarm = {
        "agents": [agent("a", handoffs=[agent("b")]), agent("b", handoffs=[agent("a")])],
        "mode": "handoff",
        "max_handoffs": 3,
    }
    error_type, error, _ = failure(distributed(swarm, "ping", redis_url=redis_url))
    assert (error_type, error) == ("SwarmError", "Max handoffs (3) exceeded in swarm")
    assert len(llm.requests) == 4


def test_a_team_lead_delegates_to_a_worker_through_a_tool(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    llm_worker()
    llm.script(
        Reply.tool_calls(("delegate_to_researcher", {"task": "find the boiling point"})),
        Reply.text("100 C at sea level"),  # the researcher's answer
        Reply.text("Water boils at 100 C."),  # the lead, with the answer
    )
    swarm = {"agents": [agent("lead"), agent("researcher")], "mode": "team"}
    handle = distributed(swarm, "When does water boil?", redis_url=redis_url, detailed=True)
    assert handle.result(timeout=20) == {"output": "Water boils at 100 C."}
    tools = [t["function"]["name"] for t in llm.requests[0]["tools"]]
    assert tools == ["delegate_to_researcher"]
    # the worker gets the task alone, as the original's delegate tool sends it
    assert [m["role"] for m in llm.requests[1]["messages"]] == ["system", "user"]
    assert llm.requests[1]["messages"][-1] == {"role": "user", "content": "find the boiling point"}
    events = events_of(r, handle.task_id)
    (result,) = [e for e in events if e["type"] == "tool_result"]
    assert (result["agent_name"], result["result"]) == ("lead", "100 C at sea level")
    # the worker's own events are not published, as in the original
    assert {e["agent_name"] for e in events if e["type"] == "text"} == {"lead"}
