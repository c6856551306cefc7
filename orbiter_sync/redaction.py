"""What error text others read must not hold: the worker's secrets, or without end.

Errors and events are written to Redis, where browsers, the CLI and other apps read
them, and to logs; a provider or a library may quote the key it was sent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from orbiter_sync.models import describe

SECRET_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
MAX_ERROR = 8192  # characters of an error kept in a task hash or event


def redacted(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` without the value of any secret the process holds in its environment
    (``*_API_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD`` of 8+ characters), and cut to
    ``MAX_ERROR`` characters: what goes into errors and events that others read."""
    env = os.environ if env is None else env
    for name, value in env.items():
        if len(value) >= 8 and name.upper().endswith(SECRET_SUFFIXES) and value in text:
            text = text.replace(value, "***")
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def error_text(exc: BaseException) -> str:
    """``str(exc)`` (its class name when that is empty) as others may read it: redacted."""
    return redacted(describe(exc) or type(exc).__name__)
