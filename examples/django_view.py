"""Django views that submit agent runs and stream their events (SSE), in one runnable file.

In a project, copy ``submit_run`` and ``run_events`` into a views module and
route them as below. To try it alone::

    pip install django
    export ORBITER_REDIS_URL=redis://localhost:6379
    orbiter-sync start worker --allow-import examples.agents &
    python -m examples.django_view runserver

``POST /runs`` with ``input=...`` queues a run; ``GET /runs/<id>/events`` streams
its events as Server-Sent Events with ``id:`` lines, so a reconnecting browser
resumes from ``Last-Event-ID``.
"""

from __future__ import annotations

import sys

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from orbiter_sync import TaskHandle, distributed
from orbiter_sync.sse import CONTENT_TYPE, HEADERS, sse_stream

AGENT = {"entrypoint": "examples.agents:summarize"}


@csrf_exempt  # an example API; keep CSRF protection for session-authenticated views
@require_POST
def submit_run(request: HttpRequest) -> HttpResponse:
    text = request.POST.get("input", "")
    if not text.strip():
        return JsonResponse({"error": "'input' must be a non-empty string"}, status=400)
    handle = distributed(AGENT, text, timeout=120)
    return JsonResponse(
        {"task_id": handle.task_id, "events_url": f"/runs/{handle.task_id}/events"}, status=202
    )


@require_GET
def run_events(request: HttpRequest, task_id: str) -> HttpResponse:
    handle = TaskHandle(task_id)
    if handle.status() is None:
        return JsonResponse({"error": f"task {task_id} not found"}, status=404)
    last_event_id = request.headers.get("Last-Event-ID")
    response = StreamingHttpResponse(sse_stream(handle, last_event_id), content_type=CONTENT_TYPE)
    for name, value in HEADERS.items():
        response[name] = value
    return response


urlpatterns = [
    path("runs", submit_run),
    path("runs/<str:task_id>/events", run_events),
]


def configure() -> None:
    """Settings for running this file alone (a real project has its own)."""
    if not settings.configured:
        settings.configure(
            DEBUG=True,
            SECRET_KEY="example-only-not-secret",
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
        )


if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    configure()
    execute_from_command_line(sys.argv)
