"""Tools and an output type that the LLM tests' agents name by dotted path.

Workers in the tests allow this module (``--allow-import llm_tools``).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from pydantic import BaseModel


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


async def shout(text: str) -> str:
    """Say ``text`` loudly."""
    return text.upper()


async def nap(seconds: float) -> str:
    """Wait, then say so: a slow tool."""
    await asyncio.sleep(seconds)
    return "rested"


def explode(reason: str) -> str:
    """A tool that always fails."""
    raise RuntimeError(f"tool exploded: {reason}")


class Lookup:
    """A tool object, as the original's Tool subclasses are: made with no arguments."""

    name = "lookup"
    description = "Look a word up."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"word": {"type": "string"}},
        "required": ["word"],
    }

    def execute(self, **kwargs: Any) -> dict[str, Any]:
        return {"word": kwargs["word"], "found": True}


class NotATool:
    """A class in an allowed module that is no tool: never made by a worker."""

    def __init__(self) -> None:
        raise AssertionError("a worker made an object that is not a tool")


def opaque(handle: socket.socket) -> str:
    """A function whose parameter no JSON schema can describe."""
    return str(handle)


class Verdict(BaseModel):
    """A structured output."""

    label: str
    score: float
