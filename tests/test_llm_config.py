"""The worker's reading of LLM agent_configs and message history, on good and hostile input.

Everything here runs in-process (no model is called): an Agent or Swarm dict from
any client is either read into a spec or refused with ``AgentConfigError``, never
anything else, whatever its shape.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orbiter_sync.agents import ImportPolicy, resolve_agent
from orbiter_sync.errors import AgentConfigError
from orbiter_sync.llm.history import to_history
from orbiter_sync.llm.spec import AgentSpec, agent_spec, swarm_spec
from orbiter_sync.specs import Agent, Swarm

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    ["name", "model", "instructions", "max_steps", "temperature", "max_tokens", "tools",
     "handoffs", "output_type", "agents", "flow", "mode", "max_handoffs", "role", "content"]
)  # fmt: skip
CONFIGS = st.dictionaries(FIELDS, JSON, max_size=8)


def test_an_agent_dict_reads_with_the_originals_defaults() -> None:
    assert agent_spec({"name": "bot"}) == AgentSpec(name="bot")
    spec = agent_spec(Agent(name="bot", handoffs=[Agent(name="b")], max_tokens=9).to_dict())
    assert (spec.model, spec.max_steps, spec.temperature, spec.max_tokens) == (
        "openai:gpt-4o", 10, 1.0, 9,
    )  # fmt: skip
    assert spec.handoff_names == ("b",)


def test_a_swarm_dict_reads_in_flow_order() -> None:
    swarm = Swarm(agents=[Agent(name="a"), Agent(name="b")], flow="b >> a", mode="handoff")
    spec = swarm_spec(swarm.to_dict())
    assert (spec.order, spec.mode, spec.name) == (("b", "a"), "handoff", "swarm(b...)")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": ""}, "name must be a non-empty string"),
        ({"name": "a", "max_steps": True}, "max_steps must be an integer"),
        ({"name": "a", "temperature": float("nan")}, "temperature must be a number"),
        ({"name": "a", "temperature": 7}, "between 0 and 2"),
        ({"name": "a", "tools": "pkg.mod.f"}, "tools must be a list"),
        ({"name": "a", "tools": [3]}, "must be a dotted path"),
        ({"name": "a", "handoffs": [{"name": "b"}, {"name": "b"}]}, "duplicate handoff agent"),
        ({"name": "a", "instructions": ["x"]}, "instructions must be a string"),
    ],
)
def test_a_bad_agent_dict_is_refused_with_what_is_wrong(
    config: dict[str, Any], message: str
) -> None:
    with pytest.raises(AgentConfigError, match=message):
        agent_spec(config)


@pytest.mark.parametrize(
    "fields",
    [{"temperature": 2.5}, {"max_steps": 5000}, {"max_tokens": 10**9}, {"name": "n" * 201}],
)
def test_the_client_refuses_what_the_worker_would(fields: dict[str, Any]) -> None:
    # a config the worker fails for good is a ValueError in the view already
    with pytest.raises(AgentConfigError):
        agent_spec({"name": "a", **fields})
    with pytest.raises(ValueError):
        Agent(**{"name": "a", **fields})


def test_handoffs_cannot_nest_without_end() -> None:
    config: dict[str, Any] = {"name": "leaf"}
    for depth in range(20):
        config = {"name": f"a{depth}", "handoffs": [config]}
    with pytest.raises(AgentConfigError, match="nest deeper than 8"):
        agent_spec(config)


@settings(max_examples=300, deadline=None)
@given(CONFIGS)
def test_any_json_config_is_a_spec_or_a_config_error(config: dict[str, Any]) -> None:
    for read in (agent_spec, swarm_spec):
        try:
            read(config)
        except AgentConfigError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(FIELDS, JSON, max_size=4) | JSON, max_size=6) | JSON)
def test_any_json_history_is_messages_or_a_config_error(messages: Any) -> None:
    try:
        to_history(messages)
    except AgentConfigError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_as_a_config_never_reach_past_the_gate(raw: bytes) -> None:
    try:
        config = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        config = {"name": raw.decode("latin-1"), "model": raw.decode("latin-1")}
    if not isinstance(config, dict):
        config = {"name": "x", "model": "test", "tools": [config]}
    try:
        resolve_agent(config, ImportPolicy(()))
    except AgentConfigError:
        pass


def test_provider_errors_are_sorted_into_how_the_attempt_ends() -> None:
    from pydantic_ai import exceptions as x

    from orbiter_sync.errors import ModelRefusedError, RetryLaterError
    from orbiter_sync.llm.errors import sorted_out

    def http(category: type, status: int) -> Exception:
        return x.ModelHTTPError.for_category(category, status_code=status, model_name="m")

    quota = sorted_out(http(x.ModelQuotaExceededError, 429))
    assert isinstance(quota, ModelRefusedError)  # waiting will not refill a quota
    limited = sorted_out(x.ModelHTTPError(429, "m", headers={"retry-after": "7"}))
    assert isinstance(limited, RetryLaterError) and limited.retry_after == 7
    assert isinstance(sorted_out(x.ModelHTTPError(403, "m")), ModelRefusedError)
    timeout = x.ModelHTTPError(408, "m")
    assert sorted_out(timeout) is timeout  # a failed attempt: retried
    server = x.ModelHTTPError(502, "m")
    assert sorted_out(server) is server
    assert isinstance(sorted_out(x.UserError("two tools named final_result")), AgentConfigError)


def test_history_in_both_shapes_becomes_requests_and_responses() -> None:
    history = to_history(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "add 1 and 2"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "name": "add", "arguments": '{"a": 1, "b": 2}'},
            ]},
            {"role": "tool", "tool_call_id": "c1", "tool_name": "add", "content": "3"},
            {"role": "assistant", "content": "3", "tool_calls": [
                {"id": "c2", "type": "function", "function": {"name": "add", "arguments": {}}},
            ]},
            {"role": "tool", "tool_call_id": "c2", "name": "add", "error": "boom"},
        ]
    )  # fmt: skip
    assert [m.kind for m in history] == ["request", "response", "request", "response", "request"]
    assert history[1].parts[0].tool_name == "add" and history[1].parts[0].tool_call_id == "c1"
    assert history[4].parts[0].content == "Error: boom"
    with pytest.raises(AgentConfigError, match="role must be user, system, assistant or tool"):
        to_history([{"role": "wizard", "content": "hi"}])


def test_the_offline_test_model_runs_an_agent_in_process() -> None:
    events: list[dict[str, Any]] = []
    resolved = resolve_agent({"name": "offline", "model": "test"}, ImportPolicy(()))

    async def run() -> Any:
        return await resolved.runnable("hi", emit=lambda e: events.append(e.to_dict()))

    output = asyncio.run(run())
    assert isinstance(output, str) and output
    assert "".join(e["text"] for e in events if e["type"] == "text") == output


def test_each_provider_gets_its_model_class_or_says_what_to_set() -> None:
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.models.openai import OpenAIChatModel

    from orbiter_sync.llm.models import build_model

    async def build(model: str, env: dict[str, str]) -> Any:
        return build_model(model, env)

    chat = asyncio.run(build("openai:gpt-4o-mini", {"OPENAI_API_KEY": "k"}))
    assert isinstance(chat, OpenAIChatModel)  # chat completions, not the Responses API
    assert isinstance(asyncio.run(build("gpt-4o", {"OPENAI_API_KEY": "k"})), OpenAIChatModel)
    claude = asyncio.run(build("anthropic:claude-sonnet-4-5", {"ANTHROPIC_API_KEY": "k"}))
    assert isinstance(claude, AnthropicModel)
    with pytest.raises(AgentConfigError, match="needs ANTHROPIC_API_KEY set on the worker"):
        asyncio.run(build("anthropic:claude-sonnet-4-5", {}))
    with pytest.raises(AgentConfigError, match="unknown model provider 'gemini'"):
        asyncio.run(build("gemini:pro", {}))
