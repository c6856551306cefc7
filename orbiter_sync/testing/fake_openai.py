"""A scripted, OpenAI-compatible chat-completions server for tests and the offline demo.

It owns the wire format of ``POST /v1/chat/completions`` as the real API sends it (one JSON
completion, or ``text/event-stream`` chunks ending in ``data: [DONE]``), the FIFO script of
:class:`Reply` objects that every client shares, and the record of what the clients sent.
Standard library only: a ``ThreadingHTTPServer`` on 127.0.0.1 serving from a daemon thread.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = ["NO_SCRIPT", "FakeOpenAI", "Reply"]

Body = dict[str, Any]
NO_SCRIPT = "fake OpenAI server: no reply scripted for this request"
PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
# (type, code) as OpenAI sends them: pydantic-ai picks its error class from them and the status.
ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    401: ("invalid_request_error", "invalid_api_key"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer, built by ``text``, ``tool_calls``, ``error`` or ``hang``."""

    kind: Literal["text", "tool_calls", "error", "hang"]
    content: str = ""  # the text, or the error message
    chunks: int = 1
    usage: tuple[int, int] = (10, 5)  # (prompt_tokens, completion_tokens)
    chunk_delay: float = 0.0
    reasoning: str = ""
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(
        cls,
        content: str,
        *,
        chunks: int = 1,
        usage: tuple[int, int] = (10, 5),
        chunk_delay: float = 0.0,
        reasoning: str = "",
    ) -> Reply:
        """``content`` in ``chunks`` deltas ``chunk_delay`` s apart, after ``reasoning_content``."""
        return cls("text", content, max(1, chunks), usage, chunk_delay, reasoning)

    @classmethod
    def tool_calls(
        cls, *calls: tuple[str, dict[str, Any]], text: str = "", usage: tuple[int, int] = (10, 5)
    ) -> Reply:
        """One assistant turn calling each ``(function name, arguments)``; ids are ``call_<n>``."""
        return cls("tool_calls", text, usage=usage, calls=tuple(calls))

    @classmethod
    def error(
        cls, status: int, message: str = "", *, headers: dict[str, str] | None = None
    ) -> Reply:
        """HTTP ``status`` with an OpenAI error body (the ``type`` and ``code`` OpenAI sends)."""
        message = message or f"fake OpenAI server: scripted HTTP {status}"
        return cls("error", message, status=status, headers=tuple((headers or {}).items()))

    @classmethod
    def hang(cls, first_text: str = "thinking") -> Reply:
        """Stream ``first_text`` (non-streamed: nothing), then stall until the client leaves."""
        return cls("hang", first_text)


def split(text: str, parts: int) -> list[str]:
    """``text`` in up to ``parts`` non-empty pieces of nearly equal length."""
    count = max(1, min(parts, len(text)))
    bounds = [len(text) * index // count for index in range(count + 1)]
    return [text[start:end] for start, end in itertools.pairwise(bounds) if start < end]


class FakeOpenAI:
    """The server: ``with FakeOpenAI() as llm:``, then point ``OPENAI_BASE_URL`` at ``llm.url``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._changed = threading.Condition()  # guards the state below; notified on each change
        self._script: deque[Reply] = deque()
        self._responder: Callable[[Body], Reply] | None = None
        self._requests: list[Body] = []
        self._disconnects = self.connections_opened = 0  # TCP connections clients opened
        self._calls = 0
        self._connections: set[socket.socket] = set()
        self._stopping = False
        self._server = _Server((host, port), _Handler)
        self._server.fake = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL clients use, ``http://127.0.0.1:<port>/v1``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeOpenAI:
        # The poll interval only bounds how long stop() waits for the accept loop to notice.
        serve = self._server.serve_forever
        self._thread = threading.Thread(target=serve, args=(0.05,), name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: stalled replies end (no disconnect counted) and connections close."""
        with self._changed:
            if self._stopping:
                return
            self._stopping = True
            connections = list(self._connections)
        # Shutting the sockets wakes handlers blocked reading a kept-alive connection or
        # stalled in a hang, so that server_close() can join their threads.
        for connection in connections:
            _shut(connection)
        if self._thread is not None:  # shutdown() would wait for ever on a loop never started
            self._server.shutdown()
            self._thread.join(timeout=5.0)
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def script(self, *replies: Reply) -> None:
        """Queue replies; each request takes the oldest one, whichever client sends it."""
        with self._changed:
            self._script.extend(replies)

    def respond_with(self, responder: Callable[[Body], Reply] | None) -> None:
        """Answer with ``responder(request body)`` whenever the script is empty (``None``: stop)."""
        with self._changed:
            self._responder = responder

    @property
    def pending(self) -> int:
        """How many scripted replies no request has taken yet."""
        with self._changed:
            return len(self._script)

    @property
    def requests(self) -> list[Body]:
        """The JSON bodies POSTed to the chat-completions path so far, oldest first."""
        with self._changed:
            return list(self._requests)

    @property
    def disconnects(self) -> int:
        """How many replies ended early because the client closed the connection."""
        with self._changed:
            return self._disconnects

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[Body]:
        """The requests, once at least ``n`` arrived; ``TimeoutError`` after ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"{len(self._requests)} of {n} requests within {timeout}s")
            return list(self._requests)

    def wait_for_disconnects(self, n: int, timeout: float = 5.0) -> int:
        """The disconnect count, once at least ``n``; ``TimeoutError`` after ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._disconnects >= n, timeout):
                raise TimeoutError(f"{self._disconnects} of {n} disconnects within {timeout}s")
            return self._disconnects

    def _receive(self, body: Body) -> Reply | None:
        with self._changed:
            self._requests.append(body)
            self._changed.notify_all()
            if self._script:
                return self._script.popleft()
            responder = self._responder
        # Called outside the lock: a responder may well read ``requests``.
        return responder(body) if responder is not None else None

    def _call_id(self) -> str:
        with self._changed:
            self._calls += 1
            return f"call_{self._calls}"

    def _client_left(self) -> None:
        with self._changed:
            if not self._stopping:
                self._disconnects += 1
                self._changed.notify_all()

    def _track(self, connection: socket.socket, open_: bool) -> None:
        with self._changed:
            if not open_:
                self._connections.discard(connection)
            elif self._stopping:
                _shut(connection)
            else:
                self._connections.add(connection)
                self.connections_opened += 1


def _shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # the client closed it already


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client vanishing mid-reply is routine here (cancel tests); anything else stays loud.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive between replies: JSON ones carry Content-Length,
    # streamed ones use chunked transfer encoding, as api.openai.com does.
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read stderr

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0] not in PATHS:
            return self._not_found()
        try:
            body = json.loads(raw)
        except ValueError as error:
            return self._error(Reply.error(400, f"fake OpenAI server: body is not JSON ({error})"))
        if not isinstance(body, dict):
            return self._error(Reply.error(400, "fake OpenAI server: body is not a JSON object"))
        try:
            reply = self.server.fake._receive(body)
        except Exception as error:  # noqa: BLE001 - a broken responder must fail the test, not hang it
            return self._error(
                Reply.error(500, f"fake OpenAI server: respond_with raised {error!r}")
            )
        if reply is None or reply.kind == "error":
            return self._error(reply or Reply.error(500, NO_SCRIPT))
        if body.get("stream"):
            return self._stream(body, reply)
        # Not streamed: answer whole after the stream's delays (a hang stalls until the end).
        if self._wait(None if reply.kind == "hang" else reply.chunk_delay * (reply.chunks - 1)):
            return
        self._json(200, _completion(self.server.fake, body, reply))

    def _not_found(self) -> None:
        self._error(
            Reply.error(404, f"fake OpenAI server: no route for {self.command} {self.path}")
        )

    do_GET = do_PUT = do_PATCH = do_DELETE = _not_found

    def _error(self, reply: Reply) -> None:
        default = ("server_error" if reply.status >= 500 else "invalid_request_error", None)
        error_type, code = ERROR_KINDS.get(reply.status, default)
        error = {"message": reply.content, "type": error_type, "param": None, "code": code}
        self._json(reply.status, {"error": error}, reply.headers)

    def _json(self, status: int, payload: Body, headers: tuple[tuple[str, str], ...] = ()) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, body: Body, reply: Reply) -> None:
        """``data: <chunk>`` events in HTTP chunks, ``data: [DONE]``, then the empty last chunk."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        head = _head(body, "chat.completion.chunk")
        if include_usage := bool((body.get("stream_options") or {}).get("include_usage")):
            head["usage"] = None  # as OpenAI sends it: null on every chunk but the last
        finish_reason = "tool_calls" if reply.kind == "tool_calls" else "stop"
        for pause, delta in itertools.chain(_deltas(reply, self.server.fake), [(0, None)]):
            if self._wait(pause):
                return
            choice = {"index": 0, "delta": delta or {}, "logprobs": None}
            choice["finish_reason"] = None if delta is not None else finish_reason
            if not self._event({**head, "choices": [choice]}):
                return
        if include_usage and not self._event({**head, "choices": [], "usage": _usage(reply)}):
            return
        if self._write(b"data: [DONE]\n\n"):
            self._write(b"")  # the zero-length chunk ends the body; the connection stays open

    def _event(self, chunk: Body) -> bool:
        return self._write(b"data: %s\n\n" % json.dumps(chunk).encode())

    def _write(self, data: bytes) -> bool:
        """Write one HTTP chunk; False, with the connection given up, if the client is gone."""
        try:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        except OSError:
            self.close_connection = True
            self.server.fake._client_left()
            return False
        return True

    def _wait(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (``None``: for ever); True, the connection given up, if it ended."""
        # select() on the socket, not a Condition: nothing signals a closed socket unless someone
        # watches it. It turns readable when the client closes it (EOF) or stop() shuts it down.
        if seconds is not None and seconds <= 0:
            return False
        readable, _, _ = select.select([self.connection], [], [], seconds)
        if not readable:
            return False
        self.close_connection = True
        try:
            peeked = self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            peeked = b""
        if not peeked:
            self.server.fake._client_left()
        return True  # bytes mid-reply come from a confused client: end the reply all the same


def _deltas(reply: Reply, fake: FakeOpenAI) -> Iterator[tuple[float | None, Body]]:
    """A streamed reply's deltas, each after a pause in seconds (``None``: stall to the end)."""
    if reply.kind == "hang":
        yield 0, {"role": "assistant", "content": reply.content}
        yield None, {}
    elif reply.kind == "text":
        yield 0, {"role": "assistant", "content": ""}
        pieces = [{"reasoning_content": p} for p in split(reply.reasoning, reply.chunks)]
        pieces += [{"content": p} for p in split(reply.content, reply.chunks)]
        for index, piece in enumerate(pieces):
            yield (reply.chunk_delay if index else 0), piece
    else:
        yield 0, {"role": "assistant", "content": reply.content or None}
        for index, (name, arguments) in enumerate(reply.calls):
            function = {"name": name, "arguments": ""}
            call = {"index": index, "id": fake._call_id(), "type": "function", "function": function}
            yield 0, {"tool_calls": [call]}
            encoded = json.dumps(arguments)
            for part in split(encoded, max(2, len(encoded) // 16)):
                yield 0, {"tool_calls": [{"index": index, "function": {"arguments": part}}]}


def _usage(reply: Reply) -> Body:
    prompt, completion = reply.usage
    total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _head(body: Body, kind: str) -> Body:
    """The fields every completion and chunk starts with."""
    ident, model = f"chatcmpl-{uuid.uuid4().hex[:24]}", body.get("model") or "gpt-4o-mini"
    return {"id": ident, "object": kind, "created": int(time.time()), "model": model}


def _completion(fake: FakeOpenAI, body: Body, reply: Reply) -> Body:
    """The non-streamed ``chat.completion`` object for ``reply``."""
    content = reply.content if reply.kind == "text" else reply.content or None
    message: Body = {"role": "assistant", "content": content, "refusal": None}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if reply.calls:
        message["tool_calls"] = [
            {"id": fake._call_id(), "type": "function", "function": {"name": name, "arguments": a}}
            for name, a in ((name, json.dumps(arguments)) for name, arguments in reply.calls)
        ]
    finish_reason = "tool_calls" if reply.kind == "tool_calls" else "stop"
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
    return {**_head(body, "chat.completion"), "choices": [choice], "usage": _usage(reply)}
