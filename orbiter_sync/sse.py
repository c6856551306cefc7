"""Server-Sent Events for web views: a task's events as ``text/event-stream`` chunks.

Each event carries its stream entry id in an ``id:`` line, so a browser whose
``EventSource`` reconnects sends it back as ``Last-Event-ID`` and the view resumes
right after it. Works with any WSGI framework that takes an iterator of strings
(Flask's ``Response``, Django's ``StreamingHttpResponse``).
"""

from __future__ import annotations

from collections.abc import Iterator

from orbiter_sync.client import TaskHandle
from orbiter_sync.events import StreamEvent

CONTENT_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: do not buffer
KEEPALIVE = ": keep-alive\n\n"


def format_sse(entry_id: str, event: StreamEvent) -> str:
    """One SSE message: ``id:`` (when known), ``event:`` (the event type) and ``data:`` (JSON)."""
    head = f"id: {entry_id}\n" if entry_id else ""
    return f"{head}event: {event.type}\ndata: {event.to_json()}\n\n"


def sse_stream(
    handle: TaskHandle, last_event_id: str | None = None, *, keepalive: float = 15.0
) -> Iterator[str]:
    """The task's events after ``last_event_id`` as SSE messages, until the terminal one.

    A comment line goes out every ``keepalive`` seconds of silence, so proxies do
    not close an idle connection while an agent thinks.
    """
    for item in handle.follow(last_event_id or None, idle=keepalive):
        yield KEEPALIVE if item is None else format_sse(*item)
