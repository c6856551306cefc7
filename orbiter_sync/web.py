"""The web endpoints of the Flask and Django integrations, with neither framework imported.

``contrib/flask.py`` and ``contrib/django/`` turn requests into calls on
:class:`TaskEndpoints` and its :class:`Reply` objects into responses; this module
owns everything else, so both frameworks answer alike:

- the settings both read (``ORBITER_REDIS_URL``, ``ORBITER_QUEUE``, ``ORBITER_AGENTS``
  ...), in :class:`WebSettings`
- submit: only an agent the app declared, by name, with ``input`` (and optional
  ``messages``, ``detailed``); a browser never sends an agent_config
- status, and events as JSON polling (``?after=<event id>``), for servers where a
  long response would hold a whole worker
- events as Server-Sent Events (``orbiter_sync.sse``), refused with 404 for an
  unknown task before any byte of the stream is sent
- the JSON shapes of every answer, errors included (``{"error": "..."}``)

Authorization is the adapters' part (each framework passes what it has: Flask the
action and task id, Django the request too); :data:`FORBIDDEN` is the refusal.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from orbiter_sync import keys
from orbiter_sync.client import TaskHandle, distributed
from orbiter_sync.cluster_client import REDIS_FAILURES
from orbiter_sync.errors import (
    ConfigurationError,
    TaskNotFoundError,
    TaskTimeoutError,
    ValidationError,
)
from orbiter_sync.models import TaskResult, TaskStatus, is_task_id
from orbiter_sync.sse import sse_stream

logger = logging.getLogger(__name__)

# The settings both frameworks read (Flask's app.config, Django's settings), by name.
REDIS_URL = "ORBITER_REDIS_URL"  # unset: $ORBITER_REDIS_URL, then $REDIS_URL
QUEUE = "ORBITER_QUEUE"
AGENTS = "ORBITER_AGENTS"  # {"name": agent_config dict or Agent/Swarm}: what may be submitted
URL_PREFIX = "ORBITER_URL_PREFIX"  # Flask only: Django routes through include()
TASK_TIMEOUT = "ORBITER_TASK_TIMEOUT"  # seconds a submitted run may take
SSE_KEEPALIVE = "ORBITER_SSE_KEEPALIVE"  # seconds of silence before an SSE comment line
POLL_LIMIT = "ORBITER_POLL_LIMIT"  # most events one poll answers with
CLIENT_TIMEOUT = "ORBITER_CLIENT_TIMEOUT"  # seconds one Redis call of a request may take

POLL_WAIT = 0.05  # seconds a poll waits for events when none are stored after its cursor
ACTIONS = ("submit", "status", "events", "poll")  # what an authorization hook is asked about
SUBMIT_FIELDS = frozenset({"agent", "input", "messages", "detailed"})
# Stream entry ids, as the SSE ``id:`` lines and the poll answers give them out.
_EVENT_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")  # ASCII digits only, as Redis reads them


@functools.cache
def warn_allow_all() -> None:
    """Said once a process: with no authorization hook, anyone may submit and read."""
    logger.warning(
        "orbiter-sync routes have no authorization hook: every request is allowed "
        "(set one: OrbiterSync(authorize=...) or ORBITER_PERMISSION)"
    )


def is_event_id(text: str) -> bool:
    """Whether ``text`` is a stream entry id Redis accepts (each part below 2**64)."""
    return bool(_EVENT_ID.fullmatch(text)) and all(int(p) < 2**64 for p in text.split("-"))


@dataclass(frozen=True)
class Reply:
    """A JSON answer: its HTTP status and body."""

    status: int
    body: dict[str, Any]


FORBIDDEN = Reply(403, {"error": "forbidden"})


def _error(status: int, message: str) -> Reply:
    return Reply(status, {"error": message})


def agent_configs(agents: Mapping[str, Any] | None) -> dict[str, Any]:
    """Name -> agent: an agent_config dict (copied), or an object with ``to_dict()``
    (``Agent``, ``Swarm``, an ``@agent`` function, kept so its own submit defaults
    apply); a ``ConfigurationError`` names the entry that is neither."""
    if agents is None:
        return {}
    if not isinstance(agents, Mapping):
        raise ConfigurationError(f"{AGENTS} must be a dict of name -> agent, got {agents!r}")
    configs: dict[str, Any] = {}
    for name, agent in agents.items():
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{AGENTS}: agent names must be strings, got {name!r}")
        if isinstance(agent, dict):
            configs[name] = dict(agent)
        elif callable(getattr(agent, "to_dict", None)):
            configs[name] = agent
        else:
            raise ConfigurationError(
                f"{AGENTS}[{name!r}] must be an agent_config dict or an Agent/Swarm, "
                f"got {type(agent).__name__}"
            )
    return configs


def _number(name: str, value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class WebSettings:
    """What the endpoints need, as the ``ORBITER_*`` settings give it."""

    redis_url: str | None = None
    queue_name: str | None = None
    """The app's queue (None: the default one); an ``@agent``'s own queue wins."""
    agents: Mapping[str, Any] = field(default_factory=dict)
    url_prefix: str = "/orbiter"
    task_timeout: float | None = None
    """Seconds a submitted run may take (None: an ``@agent``'s own, else 300)."""
    keepalive: float = 15.0
    poll_limit: int = 100
    client_timeout: float | None = None
    """Seconds one Redis call of a request may take (None: ``$ORBITER_CLIENT_TIMEOUT``, 5)."""

    @classmethod
    def read(cls, get: Callable[[str], Any]) -> WebSettings:
        """The settings from ``get(name)``, which returns None for a name that is unset."""
        prefix = get(URL_PREFIX)
        return cls(
            redis_url=get(REDIS_URL) or None,
            queue_name=get(QUEUE) or None,
            agents=agent_configs(get(AGENTS)),
            url_prefix="/orbiter" if prefix is None else "/" + str(prefix).strip("/"),
            task_timeout=None
            if get(TASK_TIMEOUT) is None
            else _number(TASK_TIMEOUT, get(TASK_TIMEOUT), 300.0),
            keepalive=_number(SSE_KEEPALIVE, get(SSE_KEEPALIVE), 15.0),
            poll_limit=max(1, int(_number(POLL_LIMIT, get(POLL_LIMIT), 100))),
            client_timeout=None
            if get(CLIENT_TIMEOUT) is None
            else _number(CLIENT_TIMEOUT, get(CLIENT_TIMEOUT), 5.0),
        )


def status_body(state: TaskResult) -> dict[str, Any]:
    """A task's state as the status endpoint answers it."""
    return {
        "task_id": state.task_id,
        "status": state.status.value,
        "ended": state.status.is_terminal,
        "result": state.result,
        "error": state.error_summary or None,
        "retries": state.retries,
        "created_at": state.created_at,
        "started_at": state.started_at,
        "completed_at": state.completed_at,
    }


class TaskEndpoints:
    """Submit, status, poll and SSE events, each answering a :class:`Reply` (or, for a
    task whose events can be streamed, the stream itself).

    ``agents`` overrides ``settings.agents`` with a mapping the caller may keep
    adding to (Flask's ``register_agent``).
    """

    def __init__(
        self, settings: WebSettings, agents: Mapping[str, dict[str, Any]] | None = None
    ) -> None:
        self.settings = settings
        self.agents = settings.agents if agents is None else agents

    def _handle(self, task_id: str) -> TaskHandle:
        return TaskHandle(task_id, redis_url=self.settings.redis_url,
                          queue_name=self.settings.queue_name or keys.DEFAULT_QUEUE,
                          client_timeout=self.settings.client_timeout)  # fmt: skip

    def _state(self, task_id: str) -> TaskResult | Reply:
        """The task's state, or the Reply that says why there is none to show."""
        if not is_task_id(task_id):
            return _error(404, "no such task")  # such an id can name no task
        try:
            state = self._handle(task_id).status()
        except ValidationError as exc:
            logger.warning("task %s has an unreadable state: %s", task_id, exc)
            return _error(500, "the task's state cannot be read")
        except REDIS_FAILURES as exc:
            return _unavailable(exc)
        return _error(404, "no such task") if state is None else state

    def submit(self, data: Any, links: Callable[[str], dict[str, str]]) -> Reply:
        """Queue a run of a declared agent. ``data`` is the decoded JSON body (None when
        it was not JSON); ``links(task_id)`` gives the URLs to answer with."""
        if not isinstance(data, dict):
            return _error(400, "the body must be a JSON object")
        unknown = sorted(set(data) - SUBMIT_FIELDS)
        if unknown:
            return _error(400, f"unknown fields: {', '.join(map(str, unknown))}")
        name, text = data.get("agent"), data.get("input")
        if not isinstance(name, str) or name not in self.agents:
            return _error(400, f"unknown agent {name!r}")
        if not isinstance(text, str):
            return _error(400, "'input' must be a string")
        messages, detailed = data.get("messages"), data.get("detailed", False)
        if messages is not None and not isinstance(messages, list):
            return _error(400, "'messages' must be a list of objects")
        if not isinstance(detailed, bool):
            return _error(400, "'detailed' must be true or false")
        try:
            agent = self.agents[name]
            own = agent.submit_defaults() if hasattr(agent, "submit_defaults") else {}
            handle = distributed(
                agent,
                text,
                messages=messages,
                detailed=detailed,
                redis_url=self.settings.redis_url,
                # the app's settings fill what an @agent does not set itself
                queue=own.get("queue") or self.settings.queue_name,
                timeout=own.get("timeout") or self.settings.task_timeout,
                metadata={"agent": name},
                client_timeout=self.settings.client_timeout,
            )
        except ValidationError as exc:
            return _error(400, str(exc))
        except REDIS_FAILURES as exc:
            return _unavailable(exc)
        body = {"task_id": handle.task_id, "agent": name, "status": TaskStatus.PENDING.value}
        return Reply(202, {**body, **links(handle.task_id)})

    def status(self, task_id: str) -> Reply:
        state = self._state(task_id)
        return state if isinstance(state, Reply) else Reply(200, status_body(state))

    def poll(self, task_id: str, after: str | None) -> Reply:
        """The events after ``after`` (all when it is empty), at most ``poll_limit``.

        ``ended`` is true once the answer holds the terminal event; ``last_event_id``
        is what to send as ``after`` next time.
        """
        after = after or None
        if after is not None and not is_event_id(after):
            return _error(400, "'after' must be an event id such as 1712345678901-0")
        state = self._state(task_id)
        if isinstance(state, Reply):
            return state
        events: list[dict[str, Any]] = []
        last, ended = after or "", False
        try:
            # what is stored now: the read waits POLL_WAIT at most for the next event;
            # an ended task without its terminal event left gets one made from its hash
            for entry_id, event in self._handle(task_id).entries(after, timeout=POLL_WAIT):
                events.append({"id": entry_id, "event": event.to_dict()})
                last = entry_id or last
                ended = event.is_terminal
                if ended or len(events) >= self.settings.poll_limit:
                    break
        except TaskTimeoutError:
            pass
        except TaskNotFoundError:
            return _error(404, "no such task")  # expired since it was read
        except REDIS_FAILURES as exc:
            return _unavailable(exc)
        if ended and not state.status.is_terminal:
            later = self._state(task_id)  # it ended since it was read: say how
            state = later if isinstance(later, TaskResult) else state
        return Reply(200, {"task_id": task_id, "status": state.status.value, "ended": ended,
                           "events": events, "last_event_id": last})  # fmt: skip

    def events(self, task_id: str, last_event_id: str | None) -> Reply | Iterator[str]:
        """The task's events as SSE messages from ``last_event_id`` on, or the Reply
        that refuses them; an unknown task is refused here, before any byte is sent."""
        last_event_id = last_event_id or None
        if last_event_id is not None and not is_event_id(last_event_id):
            return _error(400, "Last-Event-ID must be an event id such as 1712345678901-0")
        state = self._state(task_id)
        if isinstance(state, Reply):
            return state
        stream = sse_stream(self._handle(task_id), last_event_id,
                            keepalive=self.settings.keepalive)  # fmt: skip
        return _guarded(stream, task_id)


def _unavailable(exc: Exception) -> Reply:
    # the library's own errors carry masked URLs; redis-py's name hosts, not passwords
    logger.warning("Redis unavailable to the web endpoints: %s: %s", type(exc).__name__, exc)
    return _error(503, "the task queue is unavailable, try again later")


def _guarded(stream: Iterator[str], task_id: str) -> Iterator[str]:
    """``stream``, ended quietly when the task or Redis goes away mid-stream: the status
    line has been sent, so there is no error to answer with; the browser reconnects
    with ``Last-Event-ID`` and gets its answer then."""
    try:
        yield from stream
    except TaskNotFoundError:
        logger.info("task %s expired while its events were streamed", task_id)
    except ValidationError as exc:
        logger.warning("task %s has an unreadable state: %s", task_id, exc)
    except REDIS_FAILURES as exc:
        logger.warning("events of task %s: Redis unavailable: %s", task_id, type(exc).__name__)
