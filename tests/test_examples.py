"""The examples run for real: a script, the Flask SSE app and the Django view, each
against a real worker that may import ``examples.agents``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT, TESTS, Spawn

from orbiter_sync import TaskHandle, distributed
from orbiter_sync.sse import KEEPALIVE, sse_stream
from orbiter_sync.testing.fake_openai import FakeOpenAI, Reply


@pytest.fixture
def example_worker(redis_url: str, spawn_worker: Spawn) -> str:
    spawn_worker(redis_url, "--allow-import", "examples.agents", "--concurrency", "2",
                 env={"PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])})  # fmt: skip
    return redis_url


def parse_sse(body: str) -> list[dict[str, str]]:
    """SSE messages as dicts of their fields (comments dropped)."""
    messages = []
    for block in body.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            messages.append(fields)
    return messages


def test_flask_streams_a_run_and_resumes_from_last_event_id(example_worker: str) -> None:
    from examples.flask_sse import create_app

    client = create_app(example_worker).test_client()

    # Given a run submitted through the app
    submitted = client.post("/runs", json={"input": "streams carry agent runs"})
    assert submitted.status_code == 202
    task_id, events_url = submitted.json["task_id"], submitted.json["events_url"]  # type: ignore[index]

    # When the browser reads its event stream (live: the run is still going)
    response = client.get(events_url)
    messages = parse_sse(response.get_data(as_text=True))

    # Then every event arrives with an id, ending in one terminal status
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    types = [m["event"] for m in messages]
    assert types[0] == "status" and types[-1] == "status"
    assert {"text", "tool_call", "tool_result"} <= set(types)
    assert json.loads(messages[-1]["data"])["status"] == "completed"
    ids = [m["id"] for m in messages]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))

    # And a reconnect with Last-Event-ID gets exactly the events after it
    resumed = client.get(events_url, headers={"Last-Event-ID": ids[3]})
    assert [m["id"] for m in parse_sse(resumed.get_data(as_text=True))] == ids[4:]
    assert (
        TaskHandle(task_id, redis_url=example_worker)
        .result(timeout=5)["output"]
        .startswith("4 words")
    )


def test_flask_submits_an_llm_agent_built_in_the_view(
    redis_url: str, spawn_worker: Spawn, llm: FakeOpenAI
) -> None:
    from examples.flask_sse import create_app

    # Given a worker whose model is a local OpenAI-compatible server
    spawn_worker(redis_url, "--allow-import", "examples.agents",
                 env={"PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]),
                      "OPENAI_BASE_URL": llm.url, "OPENAI_API_KEY": "k"})  # fmt: skip
    llm.script(Reply.tool_calls(("add", {"numbers": [2, 3]})), Reply.text("It is 5.", chunks=2))
    client = create_app(redis_url).test_client()
    # When a question goes to the Agent(...) of the view
    asked = client.post("/ask", json={"question": "What is 2 + 3?"})
    assert asked.status_code == 202
    messages = parse_sse(client.get(asked.json["events_url"]).get_data(as_text=True))  # type: ignore[index]
    # Then its events stream to the browser as they came from the model
    events = [json.loads(m["data"]) for m in messages]
    assert [e["type"] for e in events if e["type"] in ("tool_call", "tool_result", "text")] == [
        "tool_call", "tool_result", "text", "text",
    ]  # fmt: skip
    assert {e["agent_name"] for e in events if e["type"] == "text"} == {"analyst"}
    assert events[-1]["status"] == "completed"
    assert llm.requests[0]["tools"][0]["function"]["name"] in ("word_count", "add")
    assert client.post("/ask", json={"question": " "}).status_code == 400


def test_flask_rejects_bad_requests(redis_url: str) -> None:
    from examples.flask_sse import create_app

    client = create_app(redis_url).test_client()

    assert client.post("/runs", json={"input": " "}).status_code == 400
    assert client.post("/runs", data="not json").status_code == 400
    assert client.get("/runs/nope/events").status_code == 404
    assert b"EventSource" in client.get("/").data


def test_sse_sends_keepalives_while_a_task_waits(redis_url: str) -> None:
    # No worker: the task stays pending, so the stream has nothing but keep-alives
    handle = distributed({"entrypoint": "examples.agents:summarize"}, "x", redis_url=redis_url)
    stream = sse_stream(handle, keepalive=0.2)

    assert next(stream) == KEEPALIVE
    handle.cancel()
    rest = list(stream)
    assert parse_sse("".join(rest))[-1]["event"] == "status"
    assert json.loads(parse_sse("".join(rest))[-1]["data"])["status"] == "cancelled"


def test_django_view_streams_a_run(example_worker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import django
    from django.test import Client

    from examples import django_view

    monkeypatch.setenv("ORBITER_REDIS_URL", example_worker)
    django_view.configure()
    django.setup()
    client = Client()

    submitted = client.post("/runs", {"input": "django views stream too"})
    assert submitted.status_code == 202
    response = client.get(submitted.json()["events_url"])
    body = b"".join(response.streaming_content).decode()
    messages = parse_sse(body)

    assert response["Content-Type"] == "text/event-stream"
    assert json.loads(messages[-1]["data"])["status"] == "completed"
    resumed = client.get(
        submitted.json()["events_url"], headers={"last-event-id": messages[1]["id"]}
    )
    resumed_body = b"".join(resumed.streaming_content).decode()
    assert [m["id"] for m in parse_sse(resumed_body)] == [m["id"] for m in messages[2:]]
    assert client.get("/runs/nope/events").status_code == 404
    assert client.post("/runs", {"input": ""}).status_code == 400


def test_submit_and_wait_script(example_worker: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples.submit_and_wait", "three small words"],
        cwd=ROOT, env={**os.environ, "ORBITER_REDIS_URL": example_worker},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("submitted task ")
    assert any(line.startswith("  tool_call:") for line in lines)
    assert lines[-1] == "result: 3 words, 17 characters"
