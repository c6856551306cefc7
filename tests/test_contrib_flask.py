"""The Flask extension (orbiter_sync/contrib/flask.py) in real apps, against real workers:
through Flask's test client and through a real HTTP server on a free port."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from helpers import Spawn, stream_entries, wait_for
from werkzeug.serving import make_server

from orbiter_sync.contrib.flask import OrbiterSync
from orbiter_sync.embedded import EmbeddedRedis

AGENTS = {"words": {"entrypoint": "sample_agents:words"}}


def make_app(redis_url: str, **config: Any) -> tuple[Flask, OrbiterSync]:
    app = Flask(__name__)
    app.config.update({"ORBITER_REDIS_URL": redis_url, "ORBITER_AGENTS": AGENTS,
                       "ORBITER_SSE_KEEPALIVE": 0.5, **config})  # fmt: skip
    return app, OrbiterSync(app)


def parse_sse(body: str) -> list[dict[str, str]]:
    """SSE messages as dicts of their fields (comments dropped)."""
    blocks = (block.splitlines() for block in body.split("\n\n"))
    messages = [dict(line.split(": ", 1) for line in b if not line.startswith(":")) for b in blocks]
    return [m for m in messages if m]


def test_submit_stream_poll_and_status_through_the_test_client(
    redis_url: str, spawn_worker: Spawn
) -> None:
    # Given an app with the extension and a worker
    spawn_worker(redis_url)
    client = make_app(redis_url)[0].test_client()

    # When a declared agent is submitted by name
    submitted = client.post("/orbiter/tasks", json={"agent": "words", "input": "three small words"})

    # Then it is queued, with the URLs to follow it
    assert submitted.status_code == 202
    body = submitted.get_json()
    task_id = body["task_id"]
    assert body["agent"] == "words" and body["status"] == "pending"
    assert body["events_url"] == f"/orbiter/tasks/{task_id}/events"
    assert body["poll_url"] == f"/orbiter/tasks/{task_id}/poll"

    # And its events stream as SSE to the terminal status, each with an id
    response = client.get(body["events_url"])
    assert response.mimetype == "text/event-stream"
    messages = parse_sse(response.get_data(as_text=True))
    assert json.loads(messages[-1]["data"])["status"] == "completed"
    assert [m["event"] for m in messages].count("text") == 3
    ids = [m["id"] for m in messages]

    # And a reconnect with Last-Event-ID resumes after that event
    resumed = client.get(body["events_url"], headers={"Last-Event-ID": ids[1]})
    assert [m["id"] for m in parse_sse(resumed.get_data(as_text=True))] == ids[2:]

    # And polling gives the same events, in pages that chain through last_event_id
    polled, after = [], ""
    while True:
        page = client.get(f"{body['poll_url']}?after={after}").get_json()
        polled += page["events"]
        after = page["last_event_id"]
        if page["ended"]:
            break
    assert [e["id"] for e in polled] == ids
    assert polled[-1]["event"] == json.loads(messages[-1]["data"])
    again = client.get(f"{body['poll_url']}?after={ids[-2]}").get_json()
    assert [e["id"] for e in again["events"]] == ids[-1:] and again["ended"]

    # And the status shows the result
    state = client.get(body["status_url"]).get_json()
    assert state["status"] == "completed" and state["ended"] is True
    assert state["result"] == {"output": f"3 words for {task_id}"}


def test_polling_a_running_task_is_not_ended(redis_url: str) -> None:
    # Given a task no worker has taken yet
    client = make_app(redis_url, ORBITER_POLL_LIMIT=1)[0].test_client()
    task = client.post("/orbiter/tasks", json={"agent": "words", "input": "x"}).get_json()

    # When it is polled
    page = client.get(task["poll_url"]).get_json()

    # Then it has no events and has not ended; the cursor stays where it was
    assert page == {"task_id": task["task_id"], "status": "pending", "ended": False,
                    "events": [], "last_event_id": ""}  # fmt: skip
    assert client.get(f"{task['poll_url']}?after=12-0").get_json()["last_event_id"] == "12-0"


def test_refusals(redis_url: str, r: redis.Redis) -> None:
    app, orbiter = make_app(redis_url)
    client = app.test_client()
    task_id = client.post("/orbiter/tasks", json={"agent": "words", "input": "x"}).json["task_id"]  # type: ignore[index]

    # unknown ids: 404 with a JSON body, before any event stream begins
    for path in ("nope", "nope/events", "nope/poll", "{bad}/events"):
        response = client.get(f"/orbiter/tasks/{path}")
        assert response.status_code == 404, path
        assert response.get_json() == {"error": "no such task"}
    # a browser names a declared agent; it never sends an agent_config
    submits = [
        {"agent": "shell", "input": "x"},
        {"agent": "words", "input": "x", "agent_config": {"entrypoint": "os:system"}},
        {"agent": "words"},
        {"agent": "words", "input": "x", "detailed": "yes"},
        {"agent": "words", "input": "x", "messages": "hi"},
        {"agent": "words", "input": "x", "messages": ["hi"]},
    ]
    for data in submits:
        assert client.post("/orbiter/tasks", json=data).status_code == 400, data
    assert client.post("/orbiter/tasks", data="not json").status_code == 400
    assert client.get(f"/orbiter/tasks/{task_id}/poll?after=x").status_code == 400
    assert client.get(f"/orbiter/tasks/{task_id}/events",
                      headers={"Last-Event-ID": "x"}).status_code == 400  # fmt: skip
    assert r.xlen("orbiter:tasks") == 1  # only the first submit queued anything

    # the authorization hook is asked with the action and the task id; False is 403
    asked: list[tuple[str, str | None]] = []

    @orbiter.authorize
    def only_status(action: str, task_id: str | None) -> bool:
        asked.append((action, task_id))
        return action == "status"

    assert client.get(f"/orbiter/tasks/{task_id}").status_code == 200
    for path in ("events", "poll"):
        assert client.get(f"/orbiter/tasks/{task_id}/{path}").status_code == 403
    refused = client.post("/orbiter/tasks", json={"agent": "words", "input": "x"})
    assert refused.status_code == 403 and refused.get_json() == {"error": "forbidden"}
    assert asked == [("status", task_id), ("events", task_id), ("poll", task_id), ("submit", None)]
    assert r.xlen("orbiter:tasks") == 1


def test_init_app_prefix_and_registered_agents(redis_url: str) -> None:
    # Given an extension made first, an agent registered on it, and an app with a prefix
    orbiter = OrbiterSync(authorize=lambda action, task_id: True)
    orbiter.register_agent("echo", {"entrypoint": "sample_agents:echo"})
    app = Flask(__name__)
    app.config.update(ORBITER_REDIS_URL=redis_url, ORBITER_URL_PREFIX="api/runs/",
                      ORBITER_QUEUE="other:tasks")  # fmt: skip
    orbiter.init_app(app)
    client = app.test_client()

    # When the registered agent is submitted under the prefix
    submitted = client.post("/api/runs/tasks", json={"agent": "echo", "input": "hi"})

    # Then it goes to the configured queue
    assert submitted.status_code == 202
    assert submitted.json["status_url"] == f"/api/runs/tasks/{submitted.json['task_id']}"  # type: ignore[index]
    client_r = redis.Redis.from_url(redis_url)
    assert client_r.xlen("other:tasks") == 1 and not client_r.exists("orbiter:tasks")
    client_r.close()


@pytest.fixture
def server(redis_url: str) -> Iterator[tuple[str, int]]:
    """The app on a real, threaded HTTP server on a free port."""
    app = make_app(redis_url)[0]
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", httpd.server_port
    httpd.shutdown()
    thread.join(5)


def request(address: tuple[str, int], method: str, path: str,
            body: Any = None) -> tuple[int, str, dict[str, Any]]:  # fmt: skip
    connection = http.client.HTTPConnection(*address, timeout=10)
    data = None if body is None else json.dumps(body)
    connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.status, response.getheader("Content-Type", ""), json.loads(response.read())
    connection.close()
    return answer


def test_a_real_http_server_streams_and_polls_a_real_run(
    server: tuple[str, int], redis_url: str, spawn_worker: Spawn
) -> None:
    # Given a task submitted over HTTP, and no worker yet
    status, _, task = request(server, "POST", "/orbiter/tasks",
                              {"agent": "words", "input": "over the wire"})  # fmt: skip
    assert status == 202

    # When a browser opens its event stream and the worker starts
    stream = http.client.HTTPConnection(*server, timeout=10)
    stream.request("GET", task["events_url"])
    response = stream.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    assert response.readline() == b": keep-alive\n"  # the stream is live before the run
    spawn_worker(redis_url)

    # Then the events arrive as the run makes them, up to the terminal status
    lines: list[str] = []
    while not (lines and lines[-1].startswith("data:") and '"status":"completed"' in lines[-1]):
        line = response.readline().decode()
        assert line, "the stream ended before the terminal event"
        lines.append(line.rstrip("\n"))
    assert response.readline() == b"\n" and response.read() == b""  # then it ends
    stream.close()
    assert sum(line == "event: text" for line in lines) == 3

    # And polling over HTTP ends with the same terminal event
    def ended_page() -> dict[str, Any]:
        status, content_type, page = request(server, "GET", task["poll_url"])
        assert (status, content_type) == (200, "application/json")
        return page if page["ended"] else {}

    page = wait_for(ended_page)
    assert page["ended"] and page["events"][-1]["event"]["status"] == "completed"
    assert wait_for(lambda: request(server, "GET", task["status_url"])[2]["ended"])


def test_a_real_http_server_answers_404_before_any_stream(server: tuple[str, int]) -> None:
    # When a browser asks for the events of a task that does not exist
    status, content_type, body = request(server, "GET", "/orbiter/tasks/nope/events")

    # Then the status line says 404 and the body is the JSON error, not an event stream
    assert (status, content_type, body) == (404, "application/json", {"error": "no such task"})
    status, _, body = request(server, "POST", "/orbiter/tasks", {"agent": "rm", "input": ""})
    assert (status, body) == (400, {"error": "unknown agent 'rm'"})


def test_a_view_answers_503_within_the_budget_while_redis_is_down(
    private_redis: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an app whose Redis has gone away, and a one-second client budget in its config
    monkeypatch.setenv("ORBITER_CLIENT_TIMEOUT", "30")  # the app's config wins
    client = make_app(private_redis.url, ORBITER_CLIENT_TIMEOUT=1)[0].test_client()
    private_redis.stop()
    # When a browser submits and asks for a status
    began = time.monotonic()
    submitted = client.post("/orbiter/tasks", json={"agent": "words", "input": "x"})
    status = client.get("/orbiter/tasks/0123456789abcdef0123456789abcdef")
    # Then each answers with a clear error, well before a router gives up
    assert (submitted.status_code, status.status_code) == (503, 503)
    assert submitted.get_json() == {"error": "the task queue is unavailable, try again later"}
    assert time.monotonic() - began < 4.0


@pytest.mark.parametrize("bad", ["١٢٣-0", "99999999999999999999-0", "1-x", "0-0-0"])
def test_a_hostile_event_id_is_a_400_not_a_broken_stream(redis_url: str, bad: str) -> None:
    client = make_app(redis_url)[0].test_client()
    task_id = client.post("/orbiter/tasks", json={"agent": "words", "input": "x"}).get_json()
    base = f"/orbiter/tasks/{task_id['task_id']}"
    assert client.get(f"{base}/poll", query_string={"after": bad}).status_code == 400
    assert client.get(f"{base}/events", headers={"Last-Event-ID": bad}).status_code == 400


def test_an_app_agent_keeps_its_own_defaults_when_a_browser_submits_it(
    redis_url: str, r: redis.Redis
) -> None:
    import sample_agents

    client = make_app(redis_url, ORBITER_AGENTS={"shout": sample_agents.shout})[0].test_client()
    assert client.post("/orbiter/tasks", json={"agent": "shout", "input": "x"}).status_code == 202
    [(_, fields)] = stream_entries(r, "orbiter:tasks")
    payload = json.loads(fields["payload"])
    assert (payload["max_retries"], payload["timeout_seconds"]) == (0, 20)  # @agent(...)'s


def test_a_real_http_server_refuses_what_the_hook_refuses(redis_url: str) -> None:
    # Given an app whose hook lets nobody read events
    app, orbiter = make_app(redis_url)
    orbiter.authorize(lambda action, task_id: action != "events")
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    address = ("127.0.0.1", httpd.server_port)
    try:
        status, _, task = request(
            address, "POST", "/orbiter/tasks", {"agent": "words", "input": "x"}
        )
        # Then submitting is allowed and reading the events is 403, as JSON, over the wire
        assert status == 202
        assert request(address, "GET", task["events_url"])[::2] == (403, {"error": "forbidden"})
    finally:
        httpd.shutdown()
