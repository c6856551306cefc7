"""Agent and Swarm specs (orbiter_sync/specs.py) and the flow DSL (orbiter_sync/flow.py).

The expected dicts are written out by hand from the async library's ``Agent.to_dict()``
and ``Swarm.to_dict()`` (orbiter-core agent.py and swarm.py): same keys, same order.
The expected orders follow its ``topological_sort`` (Kahn's algorithm, sorted ties).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from typing import Any

import pytest
import redis
import spec_tools
from helpers import stream_entries
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_tools import Answer, Calculator, Toolbox, Wrapped, fetch_page, search, wrapped_search

from orbiter_sync.client import distributed
from orbiter_sync.errors import AgentConfigError
from orbiter_sync.flow import MAX_FLOW_CHARS, SWARM_MODES, flow_order, parse_flow
from orbiter_sync.specs import Agent, Swarm

# An Agent.to_dict() dict copied verbatim from the original's shape: Agent(name="helper").
ORIGINAL_MINIMAL = {
    "name": "helper",
    "model": "openai:gpt-4o",
    "instructions": "",
    "max_steps": 10,
    "temperature": 1.0,
    "max_tokens": None,
}


def assert_same(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal, and equal as the wire sees it: key order included, at every level."""
    assert got == expected
    assert list(got) == list(expected)
    assert json.dumps(got) == json.dumps(expected)


def plain(name: str, **overrides: Any) -> dict[str, Any]:
    """The original's dict for ``Agent(name=name)`` with ``overrides`` in its key order."""
    return {**ORIGINAL_MINIMAL, "name": name, **overrides}


def test_a_minimal_agent_is_the_original_s_dict() -> None:
    assert_same(Agent(name="helper").to_dict(), ORIGINAL_MINIMAL)
    # None and empty lists serialize as the original's empty tools / handoffs: no key
    assert_same(Agent(name="helper", tools=[], handoffs=None).to_dict(), ORIGINAL_MINIMAL)  # type: ignore[arg-type]


def test_a_full_agent_is_the_original_s_dict() -> None:
    editor = Agent(name="editor", model="gpt-4o", output_type="spec_tools.Answer")
    writer = Agent(name="writer", tools=["spec_tools.search"], handoffs=[editor], temperature=0)
    researcher = Agent(
        name="researcher",
        model="anthropic:claude-sonnet-4",
        instructions="Find sources.",
        tools=[search, Calculator(), Wrapped(fetch_page)],
        handoffs=[writer],
        output_type=Answer,
        max_steps=5,
        temperature=0.2,
        max_tokens=512,
    )
    expected = {
        "name": "researcher",
        "model": "anthropic:claude-sonnet-4",
        "instructions": "Find sources.",
        "max_steps": 5,
        "temperature": 0.2,
        "max_tokens": 512,
        "tools": ["spec_tools.search", "spec_tools.Calculator", "spec_tools.fetch_page"],
        "handoffs": [
            {
                "name": "writer",
                "model": "openai:gpt-4o",
                "instructions": "",
                "max_steps": 10,
                "temperature": 0,  # kept as given, as the original keeps it
                "max_tokens": None,
                "tools": ["spec_tools.search"],
                "handoffs": [plain("editor", model="gpt-4o", output_type="spec_tools.Answer")],
            }
        ],
        "output_type": "spec_tools.Answer",
    }
    assert_same(researcher.to_dict(), expected)


@pytest.mark.parametrize(
    ("tool", "path"),
    [
        (search, "spec_tools.search"),
        (fetch_page, "spec_tools.fetch_page"),
        (Calculator, "spec_tools.Calculator"),
        (Calculator(), "spec_tools.Calculator"),
        (wrapped_search, "spec_tools.search"),
        ("pkg.module.func", "pkg.module.func"),
        ("tools.func", "tools.func"),
    ],
)
def test_each_form_of_tool_is_its_dotted_path(tool: Any, path: str) -> None:
    assert_same(Agent(name="a", tools=[tool]).to_dict(), plain("a", tools=[path]))


def test_to_dict_is_fresh_and_the_specs_are_frozen_and_keyword_only() -> None:
    agent = Agent(name="a", tools=[search], handoffs=[Agent(name="b")])
    first = agent.to_dict()
    first["tools"].append("x.y")
    first["handoffs"][0]["name"] = "changed"
    assert agent.to_dict() == plain("a", tools=["spec_tools.search"], handoffs=[plain("b")])
    assert isinstance(agent.tools, tuple)  # a list given is copied: changing it changes nothing
    with pytest.raises(dataclasses.FrozenInstanceError):
        agent.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Agent("a")  # type: ignore[call-arg]


def test_reprs_are_short() -> None:
    agent = Agent(name="a", tools=[search, Calculator], handoffs=[Agent(name="b")])
    assert repr(agent) == (
        "Agent(name='a', model='openai:gpt-4o', tools=['search', 'calculator'], handoffs=['b'])"
    )
    swarm = Swarm(agents=[agent, Agent(name="c")], flow="a >> c")
    assert repr(swarm) == "Swarm(mode='workflow', agents=['a', 'c'], flow='a >> c')"


@pytest.mark.parametrize("mode", SWARM_MODES)
def test_a_swarm_is_the_original_s_dict_in_every_mode(mode: str) -> None:
    agents = [Agent(name="c"), Agent(name="b", tools=[search]), Agent(name="a")]
    swarm = Swarm(agents=agents, flow="c >> (b | a)", mode=mode, max_handoffs=3)
    expected = {
        "agents": [plain("c"), plain("b", tools=["spec_tools.search"]), plain("a")],
        "flow": "c >> (b | a)",
        "mode": mode,
        "max_handoffs": 3,
    }
    assert_same(swarm.to_dict(), expected)
    assert swarm.flow_order == ["c", "a", "b"]
    assert swarm.name == "swarm(c...)"


def test_a_swarm_without_flow_runs_its_agents_in_the_order_given() -> None:
    swarm = Swarm(agents=[Agent(name="z"), Agent(name="a")])
    assert_same(
        swarm.to_dict(),
        {"agents": [plain("z"), plain("a")], "flow": None, "mode": "workflow", "max_handoffs": 10},
    )
    assert swarm.flow_order == ["z", "a"] and swarm.name == "swarm(z...)"


def make_in_main(source: str, name: str) -> Any:
    """A function or class whose ``__module__`` is ``__main__``, as in a script."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(source, namespace)
    return namespace[name]


def local_function(text: str) -> Any:
    def inner(query: str) -> str:
        return text + query

    return inner


def local_tool_class() -> type:
    class Nested(Calculator):
        pass

    return Nested


MAIN_RUN = make_in_main("def run(q): return q", "run")
MAIN_SHELL = make_in_main(
    "class Shell:\n name = description = parameters = ''\n def execute(self): pass", "Shell"
)
IN_MAIN = "is defined in __main__ (the script being run), which a worker cannot import: "


TOOL_REFUSALS: list[tuple[Any, str]] = [
    (lambda q: q, "tool '<lambda>' is a lambda, which cannot be serialized: use a module-level"),
    (local_function("x"), "tool 'inner' is defined inside a function (local_function.<locals>"),
    (local_tool_class(), "is defined inside a function (local_tool_class.<locals>.Nested)"),
    (MAIN_RUN, f"tool 'run' {IN_MAIN}move it into a module and use a module-level function"),
    (MAIN_SHELL, f"tool 'Shell' {IN_MAIN}move it into a module and define the tool class at"),
    (MAIN_SHELL(), f"tool of type Shell {IN_MAIN}move it into a module and define the tool"),
    (Calculator().execute, "tool 'execute' is a bound method, which cannot be serialized"),
    (len, "tool 'len' is a built-in function, which cannot be serialized"),
    (functools.partial(search, "q"), "is a functools.partial, which cannot be serialized"),
    (Toolbox.lookup, "is defined inside a class (Toolbox.lookup); a worker imports only names"),
    (spec_tools._private_tool, "has a private or dunder name ('_private_tool' in 'spec_tools."),
    (Wrapped(lambda q: q, name="anon"), "tool 'anon' is a lambda"),
    (Wrapped(len), "tool 'len' wraps a built-in, not a Python function"),
    ("search", "tool 'search' is not a dotted path like 'pkg.module.name'"),
    ("spec_tools:search", "is not a dotted path like 'pkg.module.name'"),
    ("__main__.run", "tool '__main__.run' is defined in __main__ (the script being run)"),
    ("builtins.eval", "is defined in builtins (Python's built-ins)"),
    ("pkg._internal.run", "has a private or dunder name ('_internal' in 'pkg._internal.run')"),
    (42, "tool of type int is not a tool (it has no name, description, parameters, execute)"),
    (Answer, "tool 'Answer' is a class without name, description, parameters, execute"),
]


@pytest.mark.parametrize(("tool", "message"), TOOL_REFUSALS)
def test_tools_a_worker_could_not_import_are_refused(tool: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        Agent(name="a", tools=[tool])
    assert str(info.value).startswith("agent 'a': tool ") and "\n" not in str(info.value)


AGENT_REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"name": ""}, "Agent name must be a non-empty string of at most 200 characters, got ''"),
    ({"name": None}, "Agent name must be a non-empty string of at most 200 characters, got None"),
    ({"model": ""}, "agent 'a': model must be a non-empty string like 'openai:gpt-4o'"),
    ({"instructions": lambda name: "hi"}, "agent 'a': callable instructions cannot be serialized"),
    ({"instructions": 5}, "agent 'a': instructions must be a string, got int"),
    ({"max_steps": 0}, "agent 'a': max_steps must be an integer from 1 to 1000, got 0"),
    ({"max_steps": True}, "agent 'a': max_steps must be an integer from 1 to 1000, got True"),
    ({"max_steps": "3"}, "agent 'a': max_steps must be an integer from 1 to 1000, got '3'"),
    ({"temperature": "hot"}, "agent 'a': temperature must be a number from 0 to 2, got 'hot'"),
    ({"temperature": math.nan}, "agent 'a': temperature must be a number from 0 to 2, got nan"),
    (
        {"max_tokens": 0},
        "agent 'a': max_tokens (or None) must be an integer from 1 to 10000000, got 0",
    ),
    ({"max_tokens": 1.5}, "max_tokens (or None) must be an integer from 1 to 10000000, got 1.5"),
    ({"tools": "spec_tools.search"}, "agent 'a': tools must be a list, got str"),
    ({"tools": [search, search]}, "agent 'a' has two tools named 'search'"),
    ({"tools": [search, wrapped_search]}, "agent 'a' has two tools named 'search'"),
    ({"tools": [Calculator, Calculator()]}, "agent 'a' has two tools named 'calculator'"),
    ({"tools": [search, "spec_tools.search"]}, "agent 'a' has the tool 'spec_tools.search' twice"),
    ({"handoffs": [Agent(name="b"), Agent(name="b")]}, "agent 'a' has two handoffs named 'b'"),
    ({"handoffs": [{"name": "b"}]}, "agent 'a': a handoff must be an Agent, got dict"),
    ({"output_type": local_tool_class()}, "output_type 'Nested' is defined inside a function"),
    ({"output_type": make_in_main("class M: pass", "M")}, "output_type 'M' is defined in __main__"),
    ({"output_type": "Answer"}, "output_type 'Answer' is not a dotted path like 'pkg.module.name'"),
    ({"output_type": Answer(text="x")}, "output_type must be a class (a pydantic model) or a"),
]


@pytest.mark.parametrize(("settings_", "message"), AGENT_REFUSALS)
def test_bad_agent_settings_are_refused(settings_: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        Agent(**{"name": "a", **settings_})
    assert "\n" not in str(info.value)


A, B, C = Agent(name="a"), Agent(name="b"), Agent(name="c")

SWARM_REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"agents": []}, "a Swarm needs at least one agent"),
    ({"agents": [A, Agent(name="a", model="gpt-4o")]}, "two agents of the Swarm are named 'a'"),
    ({"agents": [A, {"name": "b"}]}, "Swarm agents must be Agent objects, got dict"),
    ({"flow": "a >> x"}, "flow references unknown agent 'x'; the agents are 'a', 'b', 'c'"),
    ({"flow": "a >> b >> a"}, "flow has a cycle: agent 'a' is in more than one stage"),
    ({"flow": "a >>"}, "malformed flow 'a >>': a '>>' with no agent on one side"),
    ({"flow": ""}, "flow is empty (expected e.g. 'a >> b >> c' or '(a | b) >> c')"),
    ({"flow": 3}, "flow must be a string or None, got int"),
    ({"mode": "round-robin"}, "Swarm mode must be one of 'workflow', 'handoff', 'team', got 'r"),
    ({"mode": "team", "agents": [A]}, "Swarm mode 'team' needs at least two agents"),
    ({"max_handoffs": -1}, "Swarm max_handoffs must be an integer from 0 to 10000, got -1"),
]


@pytest.mark.parametrize(("settings_", "message"), SWARM_REFUSALS)
def test_bad_swarms_are_refused(settings_: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        Swarm(**{"agents": [A, B, C], **settings_})
    assert "\n" not in str(info.value)


# -- the flow DSL -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsl", "stages", "order"),
    [
        ("a >> b >> c", [["a"], ["b"], ["c"]], ["a", "b", "c"]),
        ("(b | a) >> c", [["b", "a"], ["c"]], ["a", "b", "c"]),
        ("c >> (b | a) >> d", [["c"], ["b", "a"], ["d"]], ["c", "a", "b", "d"]),
        ("  d>>(c|b)  ", [["d"], ["c", "b"]], ["d", "b", "c"]),
        ("(a | a) >> b", [["a", "a"], ["b"]], ["a", "b"]),  # twice in one group: harmless
        ("b", [["b"]], ["b"]),  # the flow's agents run, the others do not
    ],
)
def test_flow_orders(dsl: str, stages: list[list[str]], order: list[str]) -> None:
    assert parse_flow(dsl) == stages
    assert flow_order(dsl, ["d", "c", "b", "a"]) == order


def test_without_a_flow_the_order_is_the_names_given() -> None:
    assert flow_order(None, ("b", "a")) == ["b", "a"]


@pytest.mark.parametrize(
    ("dsl", "message"),
    [
        ("   ", "flow is empty"),
        ("a >>", "malformed flow 'a >>'"),
        (">> a", "malformed flow '>> a'"),
        ("a >> >> b", "malformed flow 'a >> >> b'"),
        ("(a | ) >> b", "flow has an empty member in the parallel group '(a | )'"),
        ("a >> x", "flow references unknown agent 'x'"),
        ("a | b", "unknown agent 'a | b' (a parallel group needs parentheses: '(a | b)')"),
        ("((a | b))", "unknown agent '((a | b))'"),
        ("a >> a", "flow has a cycle: agent 'a' is in more than one stage"),
        ("a >> (b | c) >> (a | b)", "flow has a cycle: agents 'a', 'b' are in more than one"),
        ("a >> " * 2000 + "a", f"flow is too long: 10001 characters (at most {MAX_FLOW_CHARS})"),
        ("(" + "|".join(["a"] * 1001) + ")", "flow names too many agents (at most 1000)"),
        (b"a >> b", "flow must be a string or None, got bytes"),
    ],
)
def test_flow_errors(dsl: Any, message: str) -> None:
    with pytest.raises(AgentConfigError, match=re.escape(message)) as info:
        flow_order(dsl, ["a", "b", "c"])
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ("ab", "agent names must be a list, got str"),
        ([1], "agent names must be strings, got int"),
        (["a", "a"], "duplicate agent name 'a'"),
        (["a"] * 1001, "too many agents: 1001 (at most 1000)"),
    ],
)
def test_bad_name_lists_are_refused(names: Any, message: str) -> None:
    with pytest.raises(AgentConfigError, match=re.escape(message)):
        flow_order(None, names)


DSL_TEXT = st.one_of(st.text(max_size=60), st.text(alphabet="ab()| >\n", max_size=40))
ANYTHING = st.one_of(
    DSL_TEXT, st.none(), st.integers(), st.binary(max_size=10), st.lists(st.text(max_size=3))
)
NAMES = st.one_of(
    st.lists(st.sampled_from(["a", "b", "c", "a | b", ""]), max_size=5),
    st.lists(st.text(max_size=4), max_size=5),
    st.lists(st.one_of(st.integers(), st.text(max_size=2)), max_size=3),
    st.text(max_size=3),
    st.none(),
    st.integers(),
)


@settings(max_examples=400, deadline=None)
@given(dsl=ANYTHING, names=NAMES)
def test_flow_input_from_outside_only_ever_raises_agent_config_error(dsl: Any, names: Any) -> None:
    for call in (lambda: parse_flow(dsl), lambda: flow_order(dsl, names)):
        try:
            result = call()
        except AgentConfigError as exc:
            assert "\n" not in str(exc)
        else:
            assert isinstance(result, list)


STAGE = st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=2), min_size=1, max_size=3)


@settings(max_examples=200, deadline=None)
@given(stages=st.lists(STAGE, min_size=1, max_size=5))
def test_a_flow_without_repeats_runs_stage_by_stage_sorted(stages: list[list[str]]) -> None:
    flat = [name for stage in stages for name in stage]
    if len(set(flat)) != len(flat):
        return  # a repeated name is a cycle, or a group's harmless repeat: tested above
    dsl = " >> ".join(s[0] if len(s) == 1 else "(" + " | ".join(s) + ")" for s in stages)
    # Kahn's algorithm with sorted ties on a chain of stages: each stage, sorted
    assert flow_order(dsl, sorted(flat)) == [name for stage in stages for name in sorted(stage)]


# -- through the real client ----------------------------------------------------------------


def queued_agent_config(r: redis.Redis) -> Any:
    [(_, fields)] = stream_entries(r, "orbiter:tasks")  # the payload is the queue entry's
    return json.loads(fields["payload"])["agent_config"]


def test_distributed_queues_the_agent_s_dict(redis_url: str, r: redis.Redis) -> None:
    writer = Agent(name="writer", output_type=Answer)
    agent = Agent(name="a", tools=[search, Calculator()], handoffs=[writer], max_tokens=100)
    distributed(agent, "input", redis_url=redis_url)
    assert_same(queued_agent_config(r), agent.to_dict())


def test_distributed_queues_the_swarm_s_dict(redis_url: str, r: redis.Redis) -> None:
    swarm = Swarm(agents=[A, B, C], flow="(b | a) >> c", mode="handoff")
    distributed(swarm, "input", redis_url=redis_url)
    assert_same(queued_agent_config(r), swarm.to_dict())
