"""A Flask app that submits agent runs and streams their events to the browser (SSE).

    pip install flask
    export ORBITER_REDIS_URL=redis://localhost:6379
    orbiter-sync start worker --allow-import examples.agents &
    flask --app examples.flask_sse run

Open http://127.0.0.1:5000/ and submit some text. ``POST /runs`` queues a run;
``POST /ask`` queues a question for ``ANALYST``, an LLM agent built right here
with ``orbiter_sync.Agent`` (plain data: no asyncio in the view; the worker runs
it on pydantic-ai and needs ``OPENAI_API_KEY``, or ``OPENAI_BASE_URL`` for an
OpenAI-compatible server). ``GET /runs/<id>/events`` streams either run's events
as Server-Sent Events. Each message
carries an ``id:`` line, so when the connection drops the browser's EventSource
reconnects with ``Last-Event-ID`` and the stream resumes right after that event.
Use a threaded or gevent server in production: each open stream holds a worker
thread (``gunicorn -k gevent``, or ``--threads``).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response, abort, jsonify, request

from examples.agents import add, word_count
from orbiter_sync import Agent, TaskHandle, distributed
from orbiter_sync.sse import CONTENT_TYPE, HEADERS, sse_stream

AGENT = {"entrypoint": "examples.agents:summarize"}
# The worker imports the tools by their paths (examples.agents.word_count ...), so
# it must allow that module: --allow-import examples.agents
ANALYST = Agent(
    name="analyst",
    model=os.environ.get("ORBITER_EXAMPLE_MODEL", "openai:gpt-4o-mini"),
    instructions="You answer questions about a text. Use your tools to count and add.",
    tools=[word_count, add],
    max_steps=4,
)

PAGE = """<!doctype html>
<title>orbiter-sync</title>
<form id="f"><input name="input" value="Redis Streams carry agent runs"><button>Run</button></form>
<pre id="out"></pre>
<script>
document.getElementById("f").onsubmit = async (e) => {
  e.preventDefault();
  const out = document.getElementById("out");
  const body = JSON.stringify({input: e.target.input.value});
  const run = await (await fetch("/runs", {method: "POST", body,
                      headers: {"Content-Type": "application/json"}})).json();
  const source = new EventSource(run.events_url);
  source.onmessage = source.onerror = null;
  for (const type of ["status", "text", "tool_call", "tool_result", "error"]) {
    source.addEventListener(type, (m) => {
      const event = JSON.parse(m.data);
      out.textContent += type === "text" ? event.text : `\\n[${type}] ${m.data}\\n`;
      if (type === "status" && ["completed", "error", "cancelled"].includes(event.status)) {
        source.close();
      }
    });
  }
};
</script>
"""


def create_app(redis_url: str | None = None, keepalive: float = 15.0) -> Flask:
    """The app; ``redis_url`` defaults to ORBITER_REDIS_URL, then REDIS_URL."""
    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        return PAGE

    @app.post("/runs")
    def submit_run() -> Any:
        data = request.get_json(silent=True) or {}
        text = data.get("input")
        if not isinstance(text, str) or not text.strip():
            return jsonify(error="'input' must be a non-empty string"), 400
        handle = distributed(AGENT, text, redis_url=redis_url, timeout=120)
        return jsonify(task_id=handle.task_id, events_url=f"/runs/{handle.task_id}/events"), 202

    @app.post("/ask")
    def ask() -> Any:
        data = request.get_json(silent=True) or {}
        question = data.get("question")
        if not isinstance(question, str) or not question.strip():
            return jsonify(error="'question' must be a non-empty string"), 400
        # detailed: the browser also sees the tool results, steps and token usage
        handle = distributed(ANALYST, question, redis_url=redis_url, timeout=120, detailed=True)
        return jsonify(task_id=handle.task_id, events_url=f"/runs/{handle.task_id}/events"), 202

    @app.get("/runs/<task_id>/events")
    def run_events(task_id: str) -> Response:
        handle = TaskHandle(task_id, redis_url=redis_url)
        if handle.status() is None:
            abort(404)
        stream = sse_stream(handle, request.headers.get("Last-Event-ID"), keepalive=keepalive)
        return Response(stream, mimetype=CONTENT_TYPE, headers=HEADERS)

    return app


if __name__ == "__main__":
    create_app().run(threaded=True)
