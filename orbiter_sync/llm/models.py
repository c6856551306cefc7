"""From an orbiter model string (``provider:model``) to a pydantic-ai model, and the provider
clients behind them: one per slot, reused for every run on it, with the SDK's own retries off.

- ``openai:<model>`` (or a bare ``<model>``, as the original reads it) runs on pydantic-ai's
  chat-completions model class, ``OpenAIChatModel``: the original calls chat completions, and
  most OpenAI-compatible servers (vLLM, Ollama, LiteLLM, Azure deployments) serve only that.
  ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` are honoured (a base URL alone is enough: local
  servers take any key).
- ``anthropic:<model>`` runs on ``AnthropicModel`` (``ANTHROPIC_API_KEY``,
  ``ANTHROPIC_BASE_URL``).
- ``test`` (or ``test:<anything>``) is pydantic-ai's offline ``TestModel``.

The SDK clients retry nothing (``max_retries=0``): the task's retry policy is the one
policy that decides, so a failed call fails the attempt (errors.py says how, by kind).
Clients live in :mod:`orbiter_sync.agents.resources`, keyed by the slot's event loop,
and are closed when the slot ends.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from orbiter_sync.agents import resources
from orbiter_sync.errors import AGENTS_EXTRA_HINT, AgentConfigError

PROVIDERS = ("openai", "anthropic", "test")


def split_model(model: str) -> tuple[str, str]:
    """``provider:name`` -> (provider, name); no colon means openai, as the original reads it."""
    provider, colon, name = model.partition(":")
    if not colon:
        return ("test", "") if model == "test" else ("openai", model)
    return provider, name


def check_model(model: str, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(provider, name) of ``model`` when this worker can run it; else ``AgentConfigError``
    saying what to set. Nothing is imported or built: every agent of a swarm is checked
    before the first one runs."""
    env = os.environ if env is None else env
    provider, name = split_model(model)
    if provider == "test":
        return provider, name
    if provider not in PROVIDERS:
        raise AgentConfigError(
            f"unknown model provider {provider!r} in {model!r}: this worker runs "
            f"{', '.join(p + ':<model>' for p in PROVIDERS[:2])} and 'test'"
        )
    if not name:
        raise AgentConfigError(f"model {model!r} names no model after {provider + ':'!r}")
    if provider == "openai" and not (env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL")):
        raise AgentConfigError(
            f"model {model!r} needs OPENAI_API_KEY set on the worker (or OPENAI_BASE_URL "
            "for an OpenAI-compatible server)"
        )
    if provider == "anthropic" and not env.get("ANTHROPIC_API_KEY"):
        raise AgentConfigError(f"model {model!r} needs ANTHROPIC_API_KEY set on the worker")
    return provider, name


def build_model(model: str, env: Mapping[str, str] | None = None) -> Any:
    """The pydantic-ai model for ``model``; ``AgentConfigError`` when it cannot be built here."""
    env = os.environ if env is None else env
    provider, name = check_model(model, env)
    if provider == "test":
        test = _import("pydantic_ai.models.test", "pydantic-ai")
        return test.TestModel()
    if provider == "openai":
        return _openai_model(name, env)
    return _anthropic_model(name, env)


def _openai_model(name: str, env: Mapping[str, str]) -> Any:
    chat = _import("pydantic_ai.models.openai", "openai")
    providers = _import("pydantic_ai.providers.openai", "openai")
    sdk = _import("openai", "openai")
    base_url = env.get("OPENAI_BASE_URL") or None
    api_key = env.get("OPENAI_API_KEY") or None

    def client() -> Any:
        return sdk.AsyncOpenAI(base_url=base_url, api_key=api_key or "unused", max_retries=0)

    openai_client = resources.per_loop(("openai", base_url, api_key), client)
    provider = providers.OpenAIProvider(openai_client=openai_client)
    return chat.OpenAIChatModel(name, provider=provider)


def _anthropic_model(name: str, env: Mapping[str, str]) -> Any:
    models = _import("pydantic_ai.models.anthropic", "anthropic")
    providers = _import("pydantic_ai.providers.anthropic", "anthropic")
    sdk = _import("anthropic", "anthropic")
    base_url = env.get("ANTHROPIC_BASE_URL") or None
    api_key = env.get("ANTHROPIC_API_KEY") or None

    def client() -> Any:
        return sdk.AsyncAnthropic(base_url=base_url, api_key=api_key, max_retries=0)

    anthropic_client = resources.per_loop(("anthropic", base_url, api_key), client)
    provider = providers.AnthropicProvider(anthropic_client=anthropic_client)
    return models.AnthropicModel(name, provider=provider)


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AgentConfigError(
            f"LLM agents need pydantic-ai with {what} support ({exc}): {AGENTS_EXTRA_HINT}"
        ) from None
