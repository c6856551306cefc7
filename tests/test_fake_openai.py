"""The scripted OpenAI server (orbiter_sync/testing/fake_openai.py) against the real clients.

pydantic-ai's ``OpenAIChatModel`` and the ``openai`` SDK talk to it over real HTTP, so
what passes here is what the real API would have to send; a few raw ``http.client``
requests cover the routes and the errors the SDK never asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI
from pydantic_ai import Agent, ModelAuthenticationError, ModelHTTPError, ModelRateLimitError
from pydantic_ai.messages import ModelResponse, TextPart, ThinkingPart, ToolCallPart
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RunUsage

from orbiter_sync.testing.fake_openai import NO_SCRIPT, FakeOpenAI, Reply


@contextlib.asynccontextmanager
async def chat_model(llm: FakeOpenAI) -> AsyncIterator[OpenAIChatModel]:
    """pydantic-ai's model on the fake server; no SDK retries, so errors surface at once."""
    async with AsyncOpenAI(base_url=llm.url, api_key="test-key", max_retries=0) as client:
        yield OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))


def adder(model: OpenAIChatModel) -> Agent[None, str]:
    agent = Agent(model)

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return agent


def tokens(usage: RunUsage) -> tuple[int, int]:
    return usage.input_tokens, usage.output_tokens


def connect(llm: FakeOpenAI) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(llm.url.split("/")[2], timeout=5)


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_a_streamed_text_reply_arrives_in_chunks_with_its_usage(llm: FakeOpenAI) -> None:
    # Given
    llm.script(Reply.text("Hello there friend", chunks=3, usage=(11, 7)))

    # When
    async def main() -> tuple[list[str], str, tuple[int, int]]:
        async with chat_model(llm) as model, Agent(model).run_stream("hi") as result:
            deltas = [d async for d in result.stream_text(delta=True, debounce_by=None)]
            return deltas, await result.get_output(), tokens(result.usage)

    deltas, output, usage = asyncio.run(main())

    # Then
    assert deltas == ["Hello ", "there ", "friend"]
    assert output == "Hello there friend"
    assert usage == (11, 7)
    (body,) = llm.requests
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_a_run_gets_one_json_completion_and_the_settings_are_recorded(llm: FakeOpenAI) -> None:
    # Given
    llm.script(Reply.text("Paris", usage=(20, 3)))

    # When
    async def main() -> tuple[str, tuple[int, int]]:
        async with chat_model(llm) as model:
            settings: ModelSettings = {"temperature": 0.3, "max_tokens": 64}
            result = await Agent(model, instructions="Be brief.").run(
                "Capital of France?", model_settings=settings
            )
            return result.output, tokens(result.usage)

    # Then
    assert asyncio.run(main()) == ("Paris", (20, 3))
    (body,) = llm.requests
    assert body.get("stream", False) is False and "stream_options" not in body
    assert body["temperature"] == 0.3
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert "tools" not in body


def test_a_tool_call_round_sends_the_results_back(llm: FakeOpenAI) -> None:
    # Given: two calls in one turn, then the answer
    llm.script(Reply.tool_calls(("add", {"a": 1, "b": 2}), ("add", {"a": 5, "b": 5})))
    llm.script(Reply.text("3 and 10"))

    # When
    async def main() -> tuple[str, list[ToolCallPart]]:
        async with chat_model(llm) as model, adder(model).run_stream("sums?") as result:
            output = await result.get_output()
            responses = [m for m in result.all_messages() if isinstance(m, ModelResponse)]
            calls = [p for p in responses[0].parts if isinstance(p, ToolCallPart)]
            return output, calls

    output, calls = asyncio.run(main())

    # Then
    assert output == "3 and 10"
    assert [(c.tool_call_id, c.tool_name, c.args_as_dict()) for c in calls] == [
        ("call_1", "add", {"a": 1, "b": 2}),
        ("call_2", "add", {"a": 5, "b": 5}),
    ]
    first, second = llm.requests
    (tool,) = first["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == "add"
    assert tool["function"]["description"] == "Add two integers."
    assert tool["function"]["parameters"]["properties"] == {
        "a": {"type": "integer"},
        "b": {"type": "integer"},
    }
    assert second["messages"][-2:] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "3"},
        {"role": "tool", "tool_call_id": "call_2", "content": "10"},
    ]
    assert [c["id"] for c in second["messages"][-3]["tool_calls"]] == ["call_1", "call_2"]


def test_the_stream_is_what_the_openai_sdk_expects(llm: FakeOpenAI) -> None:
    # Given
    llm.script(Reply.tool_calls(("lookup", {"city": "Paris", "units": "metric"}), usage=(8, 4)))

    # When: the sync SDK, as a worker's thread would use it
    with OpenAI(base_url=llm.url, api_key="k", max_retries=0) as client:
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "weather?"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    # Then: role first, id and name once, arguments in pieces, finish reason, usage last
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    calls = [call for d in deltas for call in d.tool_calls or []]
    assert [(c.id, c.function and c.function.name) for c in calls if c.id] == [("call_1", "lookup")]
    pieces = [c.function.arguments for c in calls if c.function and c.function.arguments]
    assert len(pieces) >= 2
    assert json.loads("".join(pieces)) == {"city": "Paris", "units": "metric"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 12
    assert {c.model for c in chunks} == {"m"}


def test_reasoning_content_becomes_a_thinking_part_and_is_sent_back(llm: FakeOpenAI) -> None:
    # Given
    llm.script(Reply.text("42", chunks=2, reasoning="Six times seven."), Reply.text("Yes."))

    # When
    async def main() -> list[Any]:
        async with chat_model(llm) as model:
            agent = Agent(model)
            async with agent.run_stream("Answer?") as result:
                await result.get_output()
                history = result.all_messages()
            await agent.run("Sure?", message_history=history)
            response = history[-1]
            assert isinstance(response, ModelResponse)
            return list(response.parts)

    parts = asyncio.run(main())

    # Then: pydantic-ai keeps it as thinking, and replays it to the same provider
    assert isinstance(parts[0], ThinkingPart) and parts[0].content == "Six times seven."
    assert isinstance(parts[1], TextPart) and parts[1].content == "42"
    assert llm.requests[1]["messages"][1] == {
        "role": "assistant",
        "reasoning_content": "Six times seven.",
        "content": "42",
    }


@pytest.mark.parametrize("stream", [False, True])
def test_a_429_is_a_rate_limit_error_with_retry_after(llm: FakeOpenAI, stream: bool) -> None:
    # Given
    llm.script(Reply.error(429, "Slow down", headers={"Retry-After": "2"}))

    # When
    async def main() -> None:
        async with chat_model(llm) as model:
            if stream:
                async with Agent(model).run_stream("hi") as result:
                    await result.get_output()
            else:
                await Agent(model).run("hi")

    with pytest.raises(ModelRateLimitError) as info:
        asyncio.run(main())

    # Then
    error = info.value
    assert isinstance(error, ModelHTTPError)
    assert (error.status_code, error.retry_after) == (429, 2.0)
    assert error.body == {
        "message": "Slow down",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }


def test_a_401_is_an_authentication_error(llm: FakeOpenAI) -> None:
    llm.script(Reply.error(401, "Incorrect API key provided"))

    async def main() -> None:
        async with chat_model(llm) as model:
            await Agent(model).run("hi")

    with pytest.raises(ModelAuthenticationError) as info:
        asyncio.run(main())
    assert isinstance(info.value, ModelHTTPError) and info.value.status_code == 401


def test_nothing_scripted_is_a_500_not_a_hang(llm: FakeOpenAI) -> None:
    async def main() -> None:
        async with chat_model(llm) as model:
            await Agent(model).run("hi")

    with pytest.raises(ModelHTTPError) as info:
        asyncio.run(main())
    assert info.value.status_code == 500
    assert isinstance(info.value.body, dict) and info.value.body["message"] == NO_SCRIPT
    assert len(llm.requests) == 1


@pytest.mark.parametrize(
    "reply", [Reply.hang("thinking"), Reply.text("a b c d e f", chunks=6, chunk_delay=0.2)]
)
def test_cancelling_a_run_closes_the_stream(llm: FakeOpenAI, reply: Reply) -> None:
    # Given: a reply still streaming after its first text
    llm.script(reply)

    async def main() -> float:
        async with chat_model(llm) as model:
            first = asyncio.Event()

            async def run() -> None:
                async with Agent(model).run_stream("go") as result:
                    async for _ in result.stream_text(delta=True, debounce_by=None):
                        first.set()

            task = asyncio.create_task(run())
            await asyncio.wait_for(first.wait(), timeout=5)

            # When
            started = time.monotonic()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.to_thread(llm.wait_for_disconnects, 1, 2.0)
            return time.monotonic() - started

    # Then
    assert asyncio.run(main()) < 2.0
    assert llm.disconnects == 1


def test_stopping_the_server_ends_a_hang_without_counting_a_disconnect() -> None:
    # Given: a raw client stalled on a hang, its first chunk read
    llm = FakeOpenAI().start()
    llm.script(Reply.hang())
    stalled, ended = threading.Event(), []
    body = json.dumps({"model": "m", "messages": [], "stream": True}).encode()

    def client() -> None:
        with contextlib.closing(connect(llm)) as conn:
            conn.request("POST", "/v1/chat/completions", body)
            with conn.getresponse() as response:
                assert response.read(5) == b"data:"
                stalled.set()
                try:
                    ended.append(response.read())
                except http.client.IncompleteRead as cut:
                    ended.append(cut.partial)

    thread = threading.Thread(target=client)
    thread.start()
    assert stalled.wait(timeout=5)

    # When
    started = time.monotonic()
    llm.stop()
    thread.join(timeout=5)

    # Then: the body was cut short (no [DONE]) and nobody counted it as the client leaving
    assert time.monotonic() - started < 2.0 and not thread.is_alive()
    assert len(ended) == 1 and b"[DONE]" not in ended[0]
    assert llm.disconnects == 0


def test_routes_bad_bodies_and_kept_alive_connections(
    llm: FakeOpenAI, request: pytest.FixtureRequest
) -> None:
    # Given: one connection for every request
    llm.script(Reply.text("one"), Reply.text("two", chunks=2))
    conn = connect(llm)
    request.addfinalizer(conn.close)
    good = json.dumps({"model": "m", "messages": []}).encode()

    # When / Then
    status, payload = post(conn, "/v1/models", good)
    assert status == 404 and "no route" in payload["error"]["message"]
    status, payload = post(conn, "/v1/chat/completions", b"{not json")
    assert status == 400 and payload["error"]["type"] == "invalid_request_error"
    socket_before = conn.sock
    status, payload = post(conn, "/chat/completions", good)
    assert status == 200 and payload["choices"][0]["message"]["content"] == "one"
    assert payload["object"] == "chat.completion" and payload["usage"]["total_tokens"] == 15
    conn.request("POST", "/v1/chat/completions", json.dumps({"stream": True}).encode())
    streamed = conn.getresponse().read().decode()
    assert streamed.endswith("data: [DONE]\n\n") and '"content": "wo"' in streamed
    assert conn.sock is socket_before  # neither reply closed the connection
    conn.request("GET", "/v1/chat/completions")
    assert conn.getresponse().status == 404
    assert len(llm.requests) == 2  # only well-formed chat-completions bodies are recorded


def test_respond_with_answers_what_the_script_does_not(llm: FakeOpenAI) -> None:
    # Given: one scripted reply, then a function of the request
    llm.script(Reply.text("scripted"))

    def echo(body: dict[str, Any]) -> Reply:
        return Reply.text(f"echo: {body['messages'][-1]['content']}")

    llm.respond_with(echo)

    # When: five concurrent runs
    async def main() -> list[str]:
        async with chat_model(llm) as model:
            agent = Agent(model)
            results = await asyncio.gather(*(agent.run(f"q{i}") for i in range(5)))
            return [r.output for r in results]

    outputs = asyncio.run(main())

    # Then: the script went to exactly one of them, the function answered the others
    assert outputs.count("scripted") == 1
    assert all(out in ("scripted", f"echo: q{i}") for i, out in enumerate(outputs))
    assert llm.pending == 0 and len(llm.wait_for_requests(5)) == 5


def test_a_broken_responder_is_a_500(llm: FakeOpenAI) -> None:
    def broken(body: dict[str, Any]) -> Reply:
        raise KeyError("nope")

    llm.respond_with(broken)
    with contextlib.closing(connect(llm)) as conn:
        status, payload = post(conn, "/v1/chat/completions", b'{"messages": []}')
    assert status == 500 and "respond_with raised KeyError" in payload["error"]["message"]


def test_waiting_for_requests_that_never_come_times_out(llm: FakeOpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="0 of 1 requests"):
        llm.wait_for_requests(1, timeout=0.1)
    with pytest.raises(TimeoutError, match="0 of 1 disconnects"):
        llm.wait_for_disconnects(1, timeout=0.1)
    assert time.monotonic() - started < 1.0
