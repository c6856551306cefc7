"""LLM agents on real worker subprocesses, against a real HTTP model server.

The model is a local OpenAI-compatible server (orbiter_sync.testing.fake_openai)
scripted per test and reached over real HTTP by pydantic-ai's real client in the
worker; what is checked is what a client sees: events in Redis, the task's hash,
the requests the server received.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from helpers import Spawn, events_of

from orbiter_sync.client import TaskHandle, distributed
from orbiter_sync.testing.fake_openai import FakeOpenAI, Reply


def agent(name: str = "helper", **fields: Any) -> dict[str, Any]:
    """An agent_config as orbiter's ``Agent.to_dict()`` writes it."""
    config: dict[str, Any] = {
        "name": name,
        "model": "openai:gpt-4o-mini",
        "instructions": f"You are {name}.",
        "max_steps": 10,
        "temperature": 1.0,
        "max_tokens": None,
    }
    return {**config, **fields}


def kinds(r: redis.Redis, handle: TaskHandle) -> list[str]:
    """The task's event types, with a status event's status: ``status:running``."""
    return [
        f"status:{e['status']}" if e["type"] == "status" else e["type"]
        for e in events_of(r, handle.task_id)
    ]


def test_an_agent_streams_its_text_from_the_model(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    # Given a worker and a model that answers in three chunks
    llm_worker()
    llm.script(Reply.text("Paris is the capital.", chunks=3))
    # When an Agent dict runs
    handle = distributed(
        agent(temperature=0.2, max_tokens=50), "Capital of France?", redis_url=redis_url
    )
    # Then the text arrives as three text events, between the run's own statuses
    assert handle.result(timeout=20) == {"output": "Paris is the capital."}
    assert kinds(r, handle) == ["status:running", "text", "text", "text", "status:completed"]
    texts = [e for e in events_of(r, handle.task_id) if e["type"] == "text"]
    assert "".join(e["text"] for e in texts) == "Paris is the capital."
    assert {e["agent_name"] for e in texts} == {"helper"}
    # and the model was asked on chat completions, with the agent's settings
    (request,) = llm.requests
    assert request["model"] == "gpt-4o-mini" and request["stream"] is True
    assert request["temperature"] == 0.2
    assert 50 in (request.get("max_tokens"), request.get("max_completion_tokens"))
    roles = [(m["role"], m["content"]) for m in request["messages"]]
    assert roles == [("system", "You are helper."), ("user", "Capital of France?")]


def test_a_models_reasoning_is_published_as_reasoning_events(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    llm_worker()
    llm.script(Reply.text("42.", reasoning="The answer is well known."))
    handle = distributed(agent(), "Meaning of life?", redis_url=redis_url)
    assert handle.result(timeout=20) == {"output": "42."}  # the reasoning is not output
    events = events_of(r, handle.task_id)
    assert [e["type"] for e in events] == ["status", "reasoning", "text", "status"]
    assert events[1] == {
        "type": "reasoning",
        "agent_name": "helper",
        "text": "The answer is well known.",
    }


def test_a_tool_round_with_detailed_events_in_the_originals_order(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    llm_worker()
    llm.script(
        Reply.tool_calls(("add", {"a": 2, "b": 3}), ("lookup", {"word": "sun"}), usage=(11, 4)),
        Reply.text("The sum is 5.", chunks=2, usage=(20, 6)),
    )
    config = agent(tools=["llm_tools.add", "llm_tools.Lookup"])
    handle = distributed(config, "Add 2 and 3", redis_url=redis_url, detailed=True)

    assert handle.result(timeout=20) == {"output": "The sum is 5."}
    assert kinds(r, handle) == [
        "status:running",  # the worker's: the run started
        "status:starting",
        "step", "usage", "tool_call", "tool_call", "tool_result", "tool_result", "step",
        "step", "text", "text", "usage", "step",
        "status:running",  # the agent's "completed", published as running: only settling ends
        "status:completed",
    ]  # fmt: skip
    events = events_of(r, handle.task_id)
    results = {e["tool_name"]: e for e in events if e["type"] == "tool_result"}
    assert results["add"]["result"] == "5" and results["add"]["success"] is True
    assert results["add"]["arguments"] == {"a": 2, "b": 3}
    assert results["lookup"]["result"] == "{'word': 'sun', 'found': True}"
    steps = [e for e in events if e["type"] == "step"]
    assert [(s["step_number"], s["status"]) for s in steps] == [
        (1, "started"), (1, "completed"), (2, "started"), (2, "completed"),
    ]  # fmt: skip
    usage = [e for e in events if e["type"] == "usage"]
    assert usage[0]["usage"] == {"input_tokens": 11, "output_tokens": 4, "total_tokens": 15}
    assert usage[0]["model"] == "openai:gpt-4o-mini"
    # the second request carried the tool results back to the model
    second = llm.requests[1]["messages"]
    told = [m["content"] for m in second if m["role"] == "tool"]
    assert told == ["5", '{"word":"sun","found":true}']  # the model reads JSON
    tools = {t["function"]["name"]: t["function"] for t in llm.requests[0]["tools"]}
    assert tools["add"]["description"].startswith("Add two numbers")
    assert set(tools["add"]["parameters"]["properties"]) == {"a", "b"}
    assert tools["lookup"]["parameters"]["required"] == ["word"]


def test_without_detailed_there_is_no_step_usage_or_tool_result(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    llm_worker()
    llm.script(Reply.tool_calls(("shout", {"text": "hi"})), Reply.text("HI"))
    handle = distributed(agent(tools=["llm_tools.shout"]), "shout hi", redis_url=redis_url)
    assert handle.result(timeout=20) == {"output": "HI"}
    assert kinds(r, handle) == ["status:running", "tool_call", "text", "status:completed"]


def test_a_tool_that_raises_is_a_failed_result_and_the_run_goes_on(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str, r: redis.Redis
) -> None:
    llm_worker()
    llm.script(Reply.tool_calls(("explode", {"reason": "bad input"})), Reply.text("Sorry."))
    config = agent(tools=["llm_tools.explode"])
    handle = distributed(config, "go", redis_url=redis_url, detailed=True)
    assert handle.result(timeout=20) == {"output": "Sorry."}
    (result,) = [e for e in events_of(r, handle.task_id) if e["type"] == "tool_result"]
    assert result["success"] is False and result["result"] == ""
    assert result["error"] == "tool exploded: bad input"
    told = [m for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert "tool exploded: bad input" in told[0]["content"]


def test_a_slot_reuses_one_http_connection_for_its_runs(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str
) -> None:
    llm_worker("--concurrency", "1")
    llm.respond_with(lambda _body: Reply.text("ok"))
    for n in range(5):
        assert distributed(agent(), f"run {n}", redis_url=redis_url).result(timeout=20)
    assert len(llm.requests) == 5 and llm.connections_opened == 1


def test_the_payloads_messages_are_the_history(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str
) -> None:
    llm_worker()
    llm.script(Reply.text("You said hello."))
    history = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi! How can I help?"},
    ]
    handle = distributed(
        agent(), "What did I say?", messages=history, redis_url=redis_url, model="openai:other"
    )
    assert handle.result(timeout=20) == {"output": "You said hello."}
    assert llm.requests[0]["model"] == "other"  # the payload's model overrides the agent's
    sent = [(m["role"], m["content"]) for m in llm.requests[0]["messages"]]
    assert sent[-3:] == [
        ("user", "hello"), ("assistant", "Hi! How can I help?"), ("user", "What did I say?"),
    ]  # fmt: skip


def test_output_type_gives_a_structured_result(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str
) -> None:
    llm_worker()
    llm.script(Reply.tool_calls(("final_result", {"label": "positive", "score": 0.9})))
    config = agent(output_type="llm_tools.Verdict")
    handle = distributed(config, "Rate: great!", redis_url=redis_url)
    assert handle.result(timeout=20) == {"output": {"label": "positive", "score": 0.9}}
    (schema,) = [t["function"] for t in llm.requests[0]["tools"]]
    assert set(schema["parameters"]["properties"]) == {"label", "score"}


def test_max_steps_bounds_the_model_requests(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str
) -> None:
    llm_worker()
    llm.respond_with(lambda _body: Reply.tool_calls(("add", {"a": 1, "b": 1}), text="again "))
    config = agent(tools=["llm_tools.add"], max_steps=3)
    handle = distributed(config, "loop", redis_url=redis_url)
    # the original's loop ends with what it has when max_steps runs out
    assert handle.result(timeout=20) == {"output": "again again again "}
    assert len(llm.requests) == 3


def test_an_agent_dict_copied_verbatim_from_the_original_runs(
    llm_worker: Spawn, llm: FakeOpenAI, redis_url: str
) -> None:
    # What orbiter-core's Agent(name="researcher", model="openai:gpt-4o", tools=[add],
    # handoffs=[Agent(name="writer")]).to_dict() produces, key for key.
    config = json.loads(
        '{"name": "researcher", "model": "openai:gpt-4o", "instructions": "", "max_steps": 10, '
        '"temperature": 1.0, "max_tokens": null, "tools": ["llm_tools.add"], "handoffs": '
        '[{"name": "writer", "model": "openai:gpt-4o", "instructions": "", "max_steps": 10, '
        '"temperature": 1.0, "max_tokens": null}]}'
    )
    llm_worker()
    llm.script(Reply.text("writer"))
    handle = distributed(config, "Research", redis_url=redis_url)
    # a standalone agent's handoffs are carried, not followed, as in the original
    assert handle.result(timeout=20) == {"output": "writer"}
    assert len(llm.requests) == 1 and llm.requests[0]["model"] == "gpt-4o"
