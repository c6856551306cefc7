"""A permission hook (``ORBITER_PERMISSION``): a header says which actions are allowed."""

from __future__ import annotations

from typing import Any


def by_header(request: Any, action: str, task_id: str | None) -> bool:
    return action in request.headers.get("X-Allow", "").split(",")
