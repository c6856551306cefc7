"""The swarm flow DSL, shared by the client (``specs.Swarm``) and the worker.

A flow names the order in which a swarm's agents run::

    "a >> b >> c"          a, then b, then c
    "(a | b) >> c"         a and b (a parallel group), then c
    "c >> (b | a) >> d"    c, then the group, then d

:func:`parse_flow` splits a flow into its stages; :func:`flow_order` gives the
execution order exactly as the async library computes it: every stage feeds every
member of the next, and the resulting graph is sorted topologically (Kahn's
algorithm, ready nodes taken in sorted name order). Every problem is an
:class:`~orbiter_sync.errors.AgentConfigError` with a one-line message, whatever
the input: a flow comes from a payload on the worker side.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from orbiter_sync.errors import AgentConfigError

__all__ = ["MAX_FLOW_CHARS", "MAX_FLOW_NODES", "SWARM_MODES", "flow_order", "parse_flow"]

SWARM_MODES = ("workflow", "handoff", "team")
"""How a swarm runs its agents: a pipeline, agent-driven handoffs, or a lead with workers."""

# Bounds for input from outside: without them a payload's flow of a few megabytes,
# or two parallel groups of thousands of members, costs the worker seconds of CPU.
MAX_FLOW_CHARS = 10_000
MAX_FLOW_NODES = 1000

_EXAMPLE = "expected e.g. 'a >> b >> c' or '(a | b) >> c'"


def _show(text: str, limit: int = 60) -> str:
    """``repr(text)``, shortened: messages stay one short line whatever the input."""
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


def _checked_dsl(dsl: Any) -> str:
    if not isinstance(dsl, str):
        raise AgentConfigError(f"flow must be a string or None, got {type(dsl).__name__}")
    if len(dsl) > MAX_FLOW_CHARS:
        raise AgentConfigError(
            f"flow is too long: {len(dsl)} characters (at most {MAX_FLOW_CHARS})"
        )
    return dsl


def _group_members(stage: str) -> list[str] | None:
    """The members of ``(x | y)``, or None when ``stage`` is not a parallel group.

    A group is exactly a ``(``, then at least one character none of which is ``)``,
    then a ``)``: anything else (``()``, ``((a | b))``, ``a | b``) is one plain name,
    as in the async library, and so is refused later as an unknown agent.
    """
    if len(stage) < 3 or stage[0] != "(" or stage[-1] != ")" or ")" in stage[1:-1]:
        return None
    return [member.strip() for member in stage[1:-1].split("|")]


def parse_flow(dsl: str) -> list[list[str]]:
    """The stages of ``dsl`` in order, each a list of agent names (one, or a group's).

    Names are not checked against any agent here; see :func:`flow_order`.
    """
    text = _checked_dsl(dsl).strip()
    if not text:
        raise AgentConfigError(f"flow is empty ({_EXAMPLE})")
    stages: list[list[str]] = []
    count = 0
    for raw in (part.strip() for part in text.split(">>")):
        if not raw:
            raise AgentConfigError(
                f"malformed flow {_show(text)}: a '>>' with no agent on one side ({_EXAMPLE})"
            )
        members = _group_members(raw)
        if members is None:
            members = [raw]
        elif "" in members:
            raise AgentConfigError(f"flow has an empty member in the parallel group {_show(raw)}")
        count += len(members)
        if count > MAX_FLOW_NODES:
            raise AgentConfigError(f"flow names too many agents (at most {MAX_FLOW_NODES})")
        stages.append(members)
    return stages


def _checked_names(names: Any) -> list[str]:
    if isinstance(names, str | bytes) or not isinstance(names, Sequence):
        raise AgentConfigError(f"agent names must be a list, got {type(names).__name__}")
    if len(names) > MAX_FLOW_NODES:
        raise AgentConfigError(f"too many agents: {len(names)} (at most {MAX_FLOW_NODES})")
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise AgentConfigError(f"agent names must be strings, got {type(name).__name__}")
        if name in seen:
            raise AgentConfigError(f"duplicate agent name {_show(name)}")
        seen.add(name)
    return list(names)


def _known_list(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(_show(n, 30) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def flow_order(dsl: str | None, names: Sequence[str]) -> list[str]:
    """The order in which a swarm of agents called ``names`` runs under the flow ``dsl``.

    Without a flow the agents run in the order given. With one, only the agents it
    names run, in topological order; it must name known agents and have no cycle
    (an agent in two stages makes one; twice in one group is harmless).
    """
    known = _checked_names(names)
    if dsl is None:
        return known
    stages = parse_flow(dsl)

    # The graph: every member of a stage precedes every member of the next one.
    # Successors are kept as sets: Kahn's algorithm below visits them sorted, so
    # their order never matters, and a repeated edge counts once, as in the original.
    successors: dict[str, set[str]] = {}
    for stage in stages:
        for node in stage:
            successors.setdefault(node, set())
    for before, after in zip(stages, stages[1:], strict=False):
        for source in before:
            successors[source].update(after)

    known_set = set(known)
    for node in successors:  # first appearance order, so the first unknown is reported
        if node not in known_set:
            hint = " (a parallel group needs parentheses: '(a | b)')" if "|" in node else ""
            raise AgentConfigError(
                f"flow references unknown agent {_show(node)}{hint}; "
                f"the agents are {_known_list(known)}"
            )

    in_degree = dict.fromkeys(successors, 0)
    for targets in successors.values():
        for target in targets:
            in_degree[target] += 1
    ready = deque(sorted(node for node, degree in in_degree.items() if degree == 0))
    order: list[str] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for target in sorted(successors[node]):
            in_degree[target] -= 1
            if in_degree[target] == 0:
                ready.append(target)
    if len(order) != len(successors):
        repeated = _repeated(stages)
        who = "agent" if len(repeated) == 1 else "agents"
        verb = "is" if len(repeated) == 1 else "are"
        raise AgentConfigError(
            f"flow has a cycle: {who} {_known_list(repeated)} {verb} in more than one stage"
        )
    return order


def _repeated(stages: list[list[str]]) -> list[str]:
    """The agents found in two stages or more: in a chain of stages, exactly the cause
    of every cycle (``a >> b >> a``, ``a >> a``)."""
    stage_of: dict[str, int] = {}
    repeated: dict[str, None] = {}
    for index, stage in enumerate(stages):
        for node in stage:
            if stage_of.setdefault(node, index) != index:
                repeated[node] = None
    return list(repeated)
