"""A payload's ``messages`` as pydantic-ai message history.

The async library's messages are orbiter ``Message`` dicts, which are also the
shape of OpenAI's chat messages: ``{"role": "user" | "system" | "assistant" |
"tool", "content": ...}``, an assistant's ``tool_calls`` (``{"id", "name",
"arguments"}``, or OpenAI's ``{"id", "function": {"name", "arguments"}}``) and a
tool message's ``tool_call_id`` (and ``tool_name`` / ``name``). Anything else is
an :class:`AgentConfigError` naming the message: history that cannot be read
would be read the same way on every retry.
"""

from __future__ import annotations

import json
from typing import Any

from orbiter_sync.errors import AgentConfigError

MAX_MESSAGES = 10_000


def to_history(messages: Any) -> list[Any]:
    """pydantic-ai ``ModelMessage``s for a payload's ``messages`` (empty for none)."""
    from pydantic_ai import messages as m

    if not messages:
        return []
    if not isinstance(messages, list) or len(messages) > MAX_MESSAGES:
        raise AgentConfigError(f"messages must be a list of at most {MAX_MESSAGES} messages")
    history: list[Any] = []
    request: list[Any] = []  # request parts are gathered until a response comes

    def flush() -> None:
        if request:
            history.append(m.ModelRequest(parts=list(request)))
            request.clear()

    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise AgentConfigError(f"messages[{i}] must be an object")
        role = message.get("role")
        content = _text(message.get("content"), i)
        if role == "user":
            request.append(m.UserPromptPart(content=content))
        elif role == "system":
            request.append(m.SystemPromptPart(content=content))
        elif role == "tool":
            request.append(_tool_return(m, message, content, i))
        elif role == "assistant":
            flush()
            parts: list[Any] = [m.TextPart(content=content)] if content else []
            parts += [_tool_call(m, call, i) for call in _calls(message, i)]
            history.append(m.ModelResponse(parts=parts))
        else:
            raise AgentConfigError(
                f"messages[{i}].role must be user, system, assistant or tool, got {role!r}"
            )
    flush()
    return history


def _text(content: Any, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: the text ones are kept
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        return "".join(t for t in texts if isinstance(t, str))
    raise AgentConfigError(f"messages[{i}].content must be a string")


def _calls(message: dict[str, Any], i: int) -> list[Any]:
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise AgentConfigError(f"messages[{i}].tool_calls must be a list")
    return calls


def _tool_call(m: Any, call: Any, i: int) -> Any:
    if not isinstance(call, dict):
        raise AgentConfigError(f"messages[{i}].tool_calls entries must be objects")
    nested = call.get("function")
    function: dict[str, Any] = nested if isinstance(nested, dict) else call
    name, arguments = function.get("name"), function.get("arguments", "")
    call_id = call.get("id")
    if not isinstance(name, str) or not name or not isinstance(call_id, str):
        raise AgentConfigError(f"messages[{i}].tool_calls entries need a string id and name")
    if isinstance(arguments, dict):
        arguments = json.dumps(arguments)
    if not isinstance(arguments, str):
        raise AgentConfigError(f"messages[{i}].tool_calls arguments must be a JSON string")
    return m.ToolCallPart(tool_name=name, args=arguments or "{}", tool_call_id=call_id)


def _tool_return(m: Any, message: dict[str, Any], content: str, i: int) -> Any:
    call_id = message.get("tool_call_id")
    name = message.get("tool_name") or message.get("name") or ""
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str):
        raise AgentConfigError(f"messages[{i}] (a tool result) needs a string tool_call_id")
    error = message.get("error")
    if isinstance(error, str) and error:  # the original's failed tool result
        content = content or f"Error: {error}"
    return m.ToolReturnPart(tool_name=name, content=content, tool_call_id=call_id)
