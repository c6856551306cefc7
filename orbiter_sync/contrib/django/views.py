"""The app's views: ``orbiter_sync.web``'s endpoints behind the permission hook.

Each view asks ``ORBITER_PERMISSION`` first (403 on refusal), then answers as the
Flask extension does: the same JSON shapes, 404 for an unknown task before any
byte of an event stream is sent. ``submit`` keeps Django's CSRF protection: a
browser sends the ``X-CSRFToken`` header with its POST.

Event streams are a ``StreamingHttpResponse`` over a blocking iterator: serve them
from WSGI workers with threads or greenlets (gunicorn ``gthread`` or ``gevent``),
and point browsers on plain sync workers at the poll view instead.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponseNotAllowed, JsonResponse, StreamingHttpResponse
from django.urls import reverse

from orbiter_sync.contrib.django import conf
from orbiter_sync.sse import CONTENT_TYPE, HEADERS
from orbiter_sync.web import FORBIDDEN, Reply

APP_NAME = "orbiter_sync"  # the URL namespace (urls.py)


def _json(reply: Reply) -> Any:
    return JsonResponse(reply.body, status=reply.status)


def _refused(request: Any, method: str, action: str, task_id: str | None) -> Any | None:
    """The response that refuses this request, or None when it may go on."""
    if request.method != method:
        return HttpResponseNotAllowed([method])
    if not conf.permission()(request, action, task_id):
        return _json(FORBIDDEN)
    return None


def _links(task_id: str) -> dict[str, str]:
    return {
        f"{name}_url": reverse(f"{APP_NAME}:{name}", kwargs={"task_id": task_id})
        for name in ("status", "events", "poll")
    }


def _body(request: Any) -> Any:
    """The decoded JSON body, None when it is not JSON."""
    try:
        return json.loads(request.body)
    except ValueError:  # UnicodeDecodeError too
        return None


def submit(request: Any) -> Any:
    refused = _refused(request, "POST", "submit", None)
    if refused is not None:
        return refused
    return _json(conf.endpoints().submit(_body(request), _links))


def status(request: Any, task_id: str) -> Any:
    refused = _refused(request, "GET", "status", task_id)
    if refused is not None:
        return refused
    return _json(conf.endpoints().status(task_id))


def poll(request: Any, task_id: str) -> Any:
    refused = _refused(request, "GET", "poll", task_id)
    if refused is not None:
        return refused
    return _json(conf.endpoints().poll(task_id, request.GET.get("after")))


def events(request: Any, task_id: str) -> Any:
    refused = _refused(request, "GET", "events", task_id)
    if refused is not None:
        return refused
    answer = conf.endpoints().events(task_id, request.headers.get("Last-Event-ID"))
    if isinstance(answer, Reply):
        return _json(answer)
    response = StreamingHttpResponse(answer, content_type=CONTENT_TYPE)
    for name, value in HEADERS.items():
        response[name] = value
    return response
