"""An allowed module (``--allow-import hostile.agents``) that a payload tries to abuse.

Its imports, re-exports, partials and foreign objects must stay out of reach;
only the functions, classes and wrappers defined here may be named.
"""

from __future__ import annotations

import os
from functools import partial
from os import system
from os.path import join
from subprocess import Popen
from typing import Any

from hostile import toolkit
from hostile.toolkit import Lure, Runner, Shell, SlottedTool, Wrapper, logged, run_command, tool

__all__ = ["Popen", "join", "run_command", "system", "toolkit"]  # re-exports, on purpose


# Legitimate: defined here.


def legit(input: str, **context: Any) -> str:
    return f"legit: {input}"


async def legit_async(input: str) -> str:
    return f"async: {input}"


class Agent:
    """A class defined here, with a method and class attributes a path must not reach."""

    shell = os.system
    greeting = "hello"

    def __init__(self, input: str = "") -> None:
        self.input = input

    def run(self, command: str) -> int:
        return os.system(command)


class CallableAgent:
    def __call__(self, input: str) -> str:
        return f"callable: {input}"


callable_agent = CallableAgent()


@tool
def local_tool(input: str, **context: Any) -> str:
    return f"tool: {input}"


@logged
def logged_agent(input: str) -> str:
    return f"logged: {input}"


@Wrapper
def wrapped_agent(input: str) -> str:
    return f"wrapped: {input}"


slotted_agent = SlottedTool(legit)


# Hostile: what a payload must never reach through this module.

run_shell = partial(os.system)
local_partial = partial(legit)
bound = Runner().run
local_bound = Agent().run
shell = Shell()
system_tool = tool(os.system)
foreign_tool = tool(run_command)
logged_system = logged(os.system)
static_system = staticmethod(os.system)
lure = Lure(legit)


def _hidden(command: str) -> int:
    return os.system(command)


def __getattr__(name: str) -> Any:
    if name == "lazy_system":
        return os.system
    raise AttributeError(name)
