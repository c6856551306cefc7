"""The Flask extension: agent runs submitted, watched and streamed through a blueprint.

::

    from orbiter_sync.contrib.flask import OrbiterSync

    app.config["ORBITER_AGENTS"] = {"summarise": {"entrypoint": "myapp.agents:summarise"}}
    orbiter = OrbiterSync(app)          # or OrbiterSync(); orbiter.init_app(app)

    @orbiter.authorize
    def allowed(action: str, task_id: str | None) -> bool:
        return current_user.is_authenticated

Settings (``app.config``, read by ``init_app``): ``ORBITER_REDIS_URL`` (unset:
``$ORBITER_REDIS_URL``, then ``$REDIS_URL``), ``ORBITER_QUEUE``, ``ORBITER_AGENTS``
(the agents a request may name: agent_config dicts or ``Agent``/``Swarm``; more
with :meth:`OrbiterSync.register_agent`), ``ORBITER_URL_PREFIX`` (``/orbiter``),
``ORBITER_TASK_TIMEOUT`` (300 s), ``ORBITER_SSE_KEEPALIVE`` (15 s),
``ORBITER_POLL_LIMIT`` (100 events).

Routes, under the prefix (the blueprint is ``orbiter_sync``):

- ``POST /tasks`` ``{"agent": name, "input": str, "messages"?: [...], "detailed"?: bool}``
  -> 202 ``{"task_id", "agent", "status", "status_url", "events_url", "poll_url"}``
- ``GET /tasks/<id>`` -> the task's state (``orbiter_sync.web.status_body``)
- ``GET /tasks/<id>/events`` -> Server-Sent Events until the terminal status;
  resumes after ``Last-Event-ID``; 404 for an unknown task before any byte is sent
- ``GET /tasks/<id>/poll?after=<event id>`` -> ``{"events": [{"id", "event"}],
  "last_event_id", "ended", "status", "task_id"}``

Every route asks the authorization hook first, ``fn(action, task_id)`` with action
``submit`` (task_id None), ``status``, ``events`` or ``poll``; False answers 403.
The default allows everything: a production app must set one.

Servers: an SSE response holds its worker for the whole run. Serve it with gunicorn's
``gthread`` workers (``--threads 16``: one thread per open stream) or ``gevent``
workers (``-k gevent``: one greenlet per stream). Plain ``sync`` workers are held
for the whole stream, one run per process: there, have the browser use the poll
route, which answers at once.
"""

from __future__ import annotations

import logging
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request, url_for

from orbiter_sync.sse import CONTENT_TYPE, HEADERS
from orbiter_sync.web import (
    FORBIDDEN,
    Reply,
    TaskEndpoints,
    WebSettings,
    agent_configs,
    warn_allow_all,
)

logger = logging.getLogger(__name__)

Authorize = Callable[[str, "str | None"], bool]
EXTENSION = "orbiter_sync"  # the key in app.extensions, and the blueprint's name


def _allow_all(action: str, task_id: str | None) -> bool:
    warn_allow_all()
    return True


class _AppState:
    """What one app's requests use: its endpoints and the extension's hook."""

    def __init__(self, extension: OrbiterSync, endpoints: TaskEndpoints) -> None:
        self.extension = extension
        self.endpoints = endpoints


class OrbiterSync:
    """The extension. ``agents`` and ``authorize`` may be given here or later
    (:meth:`register_agent`, :meth:`authorize` as a decorator).

    Without an authorization hook every request is allowed: production apps must set one.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        agents: Mapping[str, Any] | None = None,
        authorize: Authorize | None = None,
    ) -> None:
        self._registered: dict[str, dict[str, Any]] = agent_configs(agents)
        self._authorize: Authorize = authorize or _allow_all
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the app's ``ORBITER_*`` settings and register the blueprint."""
        settings = WebSettings.read(app.config.get)
        # agents registered on the extension, now or later, win over the config's
        agents = ChainMap(self._registered, dict(settings.agents))
        app.extensions[EXTENSION] = _AppState(self, TaskEndpoints(settings, agents))
        app.register_blueprint(_blueprint(), url_prefix=settings.url_prefix)
        logger.debug("orbiter-sync routes under %s, agents: %s", settings.url_prefix,
                     ", ".join(sorted(agents)) or "none")  # fmt: skip

    def authorize(self, fn: Authorize) -> Authorize:
        """Set the hook ``fn(action, task_id) -> bool`` every route asks (a decorator)."""
        self._authorize = fn
        return fn

    def register_agent(self, name: str, agent: Any) -> None:
        """Let requests submit ``agent`` (an agent_config dict, ``Agent`` or ``Swarm``)
        as ``name``."""
        self._registered.update(agent_configs({name: agent}))

    def allowed(self, action: str, task_id: str | None) -> bool:
        return bool(self._authorize(action, task_id))


def _state() -> _AppState:
    state: _AppState = current_app.extensions[EXTENSION]
    return state


def _json(reply: Reply) -> Response:
    response = jsonify(reply.body)
    response.status_code = reply.status
    return response


def _links(task_id: str) -> dict[str, str]:
    return {
        "status_url": url_for(f"{EXTENSION}.status", task_id=task_id),
        "events_url": url_for(f"{EXTENSION}.events", task_id=task_id),
        "poll_url": url_for(f"{EXTENSION}.poll", task_id=task_id),
    }


def submit() -> Response:
    state = _state()
    if not state.extension.allowed("submit", None):
        return _json(FORBIDDEN)
    return _json(state.endpoints.submit(request.get_json(silent=True), _links))


def status(task_id: str) -> Response:
    state = _state()
    if not state.extension.allowed("status", task_id):
        return _json(FORBIDDEN)
    return _json(state.endpoints.status(task_id))


def poll(task_id: str) -> Response:
    state = _state()
    if not state.extension.allowed("poll", task_id):
        return _json(FORBIDDEN)
    return _json(state.endpoints.poll(task_id, request.args.get("after")))


def events(task_id: str) -> Response:
    state = _state()
    if not state.extension.allowed("events", task_id):
        return _json(FORBIDDEN)
    answer = state.endpoints.events(task_id, request.headers.get("Last-Event-ID"))
    if isinstance(answer, Reply):
        return _json(answer)
    return Response(answer, mimetype=CONTENT_TYPE, headers=HEADERS)


def _blueprint() -> Blueprint:
    """A new blueprint for each app (a blueprint's routes are fixed once registered)."""
    blueprint = Blueprint(EXTENSION, __name__)
    blueprint.add_url_rule("/tasks", "submit", submit, methods=["POST"])
    blueprint.add_url_rule("/tasks/<task_id>", "status", status, methods=["GET"])
    blueprint.add_url_rule("/tasks/<task_id>/events", "events", events, methods=["GET"])
    blueprint.add_url_rule("/tasks/<task_id>/poll", "poll", poll, methods=["GET"])
    return blueprint
