"""The demo's offline model: a local OpenAI-compatible server that plays an LLM's part.

``orbiter-sync demo`` runs real LLM agents (pydantic-ai, chat completions over
HTTP) without a network or an API key: the workers' ``OPENAI_BASE_URL`` points
at this server (orbiter_sync.testing.fake_openai), whose answers are made from
the request the way a model would make them: with tools offered, it calls them
on the user's text; given their results, it streams a sentence about them;
without tools, it answers as the agent's instructions say it should.
"""

from __future__ import annotations

import json
import re
from typing import Any

from orbiter_sync.testing.fake_openai import Reply

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
PACE = 0.06  # seconds between streamed chunks, the way tokens arrive


def answer(body: dict[str, Any]) -> Reply:
    """The reply to one chat-completions request."""
    messages = body.get("messages") or [{}]
    offered = {t["function"]["name"] for t in body.get("tools") or []}
    system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
    user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
    if messages[-1].get("role") == "tool":
        return _spoken(_about_results(messages))
    if offered:
        calls: list[tuple[str, dict[str, Any]]] = []
        if "word_count" in offered:
            calls.append(("word_count", {"text": user}))
        numbers = [float(n) for n in NUMBER.findall(user)]
        if "add" in offered and numbers:
            calls.append(("add", {"numbers": numbers}))
        if calls:
            return Reply.tool_calls(*calls, text="Let me check. ")
    if "research" in system.lower():
        return _spoken(f"Notes on {user.rstrip('.')}: queued in Redis, claimed by a sync "
                       "worker, streamed back live.")  # fmt: skip
    if "writ" in system.lower():
        return _spoken(f"Brief: {user.rstrip('.')} Nothing to rewrite in Django or Flask.")
    return _spoken(f"You asked: {user}")


def _about_results(messages: list[dict[str, Any]]) -> str:
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            names[call.get("id", "")] = call.get("function", {}).get("name", "")
    said = []
    for message in messages:
        if message.get("role") != "tool":
            continue
        name, content = names.get(message.get("tool_call_id", ""), ""), message.get("content", "")
        if name == "word_count":
            counts = _json(content)
            said.append(f"the text has {counts.get('words', '?')} words")
        elif name == "add":
            said.append(f"the numbers add up to {content}")
    return ("Done: " + " and ".join(said) + ".") if said else "Done."


def _spoken(text: str) -> Reply:
    return Reply.text(text, chunks=max(1, len(text.split()) // 2), chunk_delay=PACE)


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
