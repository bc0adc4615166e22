"""A small fake of the upstream providers on loopback: OpenAI chat completions and
Anthropic messages, streaming and not. It records every request it receives.

`ConnectionDropper` is a provider that reads a request and closes the connection without
answering (what a provider that crashed, or a stale pooled connection, looks like).

Usage it reports is deterministic and within the bounds real tokenizers respect:
input tokens = UTF-8 bytes of the message contents // 4 + 1, output tokens = the words
it sends (at most max_tokens).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REPLY_WORDS = ["Hello", " from", " the", " fake", " provider", "."]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeProvider:
    """Controls: `fail_status` (answer every call with this HTTP status), `reply_words`,
    `chunk_delay_s` (pause between stream chunks), `overreport_tokens` (report more usage
    than sent, to test the hold's cap)."""

    received: list[Received] = field(default_factory=list)
    fail_status: int | None = None
    reply_words: list[str] = field(default_factory=lambda: list(REPLY_WORDS))
    chunk_delay_s: float = 0.0
    overreport_tokens: int = 0
    url: str = ""
    # Pause a stream after this many words until `stream_gate` is set (`stream_paused` is
    # set when it pauses), so a test can act mid-stream without sleeping.
    pause_after_words: int | None = None
    stream_gate: threading.Event = field(default_factory=threading.Event)
    stream_paused: threading.Event = field(default_factory=threading.Event)
    # Omit the final usage from streams (a provider that never reports it).
    omit_stream_usage: bool = False
    omit_usage: bool = False  # non-streaming answers without a `usage` object
    # Report this object as the usage instead (malformed usage: {}, strings, floats...).
    usage_override: Any = None
    # Prompt caching: of the input tokens, report these as cache reads, cache writes, and
    # of the writes these at the 1-hour TTL (each shape in its own fields).
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    # Break a stream off (the connection drops) after this many words.
    break_stream_after_words: int | None = None
    # Hold non-streaming answers until `answer_gate` is set (`answer_waiting` is set then).
    hold_answers: bool = False
    answer_gate: threading.Event = field(default_factory=threading.Event)
    answer_waiting: threading.Event = field(default_factory=threading.Event)
    # Answer non-streaming chat completions with these bytes verbatim (status 200).
    raw_answer: bytes | None = None
    # The pause and hold knobs above stall only requests whose message text contains this
    # (None: every request), so other traffic flows while one call is stalled.
    stall_only: str | None = None

    def reset(self) -> None:
        """Back to the defaults (the session's provider is shared by every test)."""
        self.received.clear()
        self.fail_status = None
        self.reply_words = list(REPLY_WORDS)
        self.chunk_delay_s = 0.0
        self.overreport_tokens = 0
        self.pause_after_words = None
        self.stream_gate.set()  # release a stream a previous test left paused
        self.stream_gate = threading.Event()
        self.stream_paused = threading.Event()
        self.omit_stream_usage = False
        self.omit_usage = False
        self.usage_override = None
        self.cache_read_tokens = self.cache_write_tokens = self.cache_write_1h_tokens = 0
        self.break_stream_after_words = None
        self.hold_answers = False
        self.raw_answer = None
        self.stall_only = None
        self.answer_gate.set()
        self.answer_gate = threading.Event()
        self.answer_waiting = threading.Event()

    def _stalls(self, body: dict[str, Any]) -> bool:
        return self.stall_only is None or self.stall_only in "".join(
            _text(message.get("content")) for message in body.get("messages", [])
        )

    async def _maybe_hold_answer(self, body: dict[str, Any]) -> None:
        if self.hold_answers and self._stalls(body):
            self.answer_waiting.set()
            gate = self.answer_gate
            await asyncio.to_thread(gate.wait, 30)

    def _maybe_break(self, sent_words: int) -> None:
        if self.break_stream_after_words is not None and sent_words >= self.break_stream_after_words:
            raise ConnectionAbortedError("the fake provider breaks the stream off")

    async def _maybe_pause(self, sent_words: int, body: dict[str, Any]) -> None:
        if self.pause_after_words is not None and sent_words == self.pause_after_words and self._stalls(body):
            self.stream_paused.set()
            gate = self.stream_gate
            await asyncio.to_thread(gate.wait, 30)

    def input_tokens(self, body: dict[str, Any]) -> int:
        text = "".join(_text(message.get("content")) for message in body.get("messages", []))
        system = _text(body.get("system"))
        return len((system + text).encode()) // 4 + 1

    def words(self, body: dict[str, Any]) -> list[str]:
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or len(self.reply_words)
        return self.reply_words[: int(limit)]

    def app(self) -> Starlette:
        async def record(request: Request) -> dict[str, Any]:
            body = await request.json()
            self.received.append(Received(request.url.path, dict(request.headers), body))
            return body  # type: ignore[no-any-return]

        async def chat(request: Request) -> Response:
            body = await record(request)
            if self.fail_status:
                return JSONResponse(
                    {"error": {"message": "fake failure", "type": "server_error"}}, self.fail_status
                )
            if not _readable(body):
                return JSONResponse({"error": {"message": UNREADABLE, "type": "invalid_request_error"}}, 400)
            words = self.words(body)
            prompt_tokens = self.input_tokens(body) + self.cache_read_tokens
            usage: Any = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(words) + self.overreport_tokens,
                "total_tokens": prompt_tokens + len(words) + self.overreport_tokens,
            }
            if self.cache_read_tokens:
                usage["prompt_tokens_details"] = {"cached_tokens": self.cache_read_tokens}
            if self.usage_override is not None:
                usage = self.usage_override
            base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": body["model"]}
            if not body.get("stream"):
                await self._maybe_hold_answer(body)
                if self.raw_answer is not None:
                    return Response(self.raw_answer, media_type="application/json")
                return JSONResponse(
                    {
                        **base,
                        "object": "chat.completion",
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "".join(words)},
                            }
                        ],
                        **({} if self.omit_usage else {"usage": usage}),
                    }
                )

            async def events() -> AsyncIterator[bytes]:
                for sent, word in enumerate(words):
                    chunk = {
                        **base,
                        "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                    }
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                    self._maybe_break(sent + 1)
                    await self._maybe_pause(sent + 1, body)
                    if self.chunk_delay_s:
                        await asyncio.sleep(self.chunk_delay_s)
                final = {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
                yield f"data: {json.dumps(final)}\n\n".encode()
                if (body.get("stream_options") or {}).get("include_usage") and not self.omit_stream_usage:
                    yield f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n".encode()
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        async def messages(request: Request) -> Response:
            body = await record(request)
            if self.fail_status:
                return JSONResponse(
                    {"type": "error", "error": {"type": "api_error", "message": "fake failure"}},
                    self.fail_status,
                )
            if not _readable(body):
                return JSONResponse(
                    {"type": "error", "error": {"type": "invalid_request_error", "message": UNREADABLE}}, 400
                )
            words = self.words(body)
            input_tokens = self.input_tokens(body)
            output_tokens = len(words) + self.overreport_tokens
            usage: Any = {"input_tokens": input_tokens, "output_tokens": output_tokens}
            if self.cache_read_tokens or self.cache_write_tokens:
                usage["cache_read_input_tokens"] = self.cache_read_tokens
                usage["cache_creation_input_tokens"] = self.cache_write_tokens
                usage["cache_creation"] = {
                    "ephemeral_5m_input_tokens": self.cache_write_tokens - self.cache_write_1h_tokens,
                    "ephemeral_1h_input_tokens": self.cache_write_1h_tokens,
                }
            if self.usage_override is not None:
                usage = self.usage_override
            message = {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "stop_reason": "end_turn",
                "stop_sequence": None,
            }
            if not body.get("stream"):
                await self._maybe_hold_answer(body)
                return JSONResponse(
                    {**message, "content": [{"type": "text", "text": "".join(words)}], "usage": usage}
                )

            async def events() -> AsyncIterator[bytes]:
                def event(name: str, data: dict[str, Any]) -> bytes:
                    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

                start_usage = {**usage, "output_tokens": 1} if isinstance(usage, dict) else usage
                start = {**message, "content": [], "stop_reason": None, "usage": start_usage}
                yield event("message_start", {"message": start})
                yield event(
                    "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
                )
                for sent, word in enumerate(words):
                    yield event(
                        "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word}}
                    )
                    self._maybe_break(sent + 1)
                    await self._maybe_pause(sent + 1, body)
                    if self.chunk_delay_s:
                        await asyncio.sleep(self.chunk_delay_s)
                yield event("content_block_stop", {"index": 0})
                if not self.omit_stream_usage:
                    yield event(
                        "message_delta",
                        {
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": (
                                {"output_tokens": output_tokens}
                                if self.usage_override is None
                                else self.usage_override
                            ),
                        },
                    )
                yield event("message_stop", {})

            return StreamingResponse(events(), media_type="text/event-stream")

        async def data(request: Request) -> Response:
            body = await record(request)
            if self.fail_status:
                return JSONResponse({"error": "fake failure"}, self.fail_status)
            return JSONResponse({"echo": body, "source": "fake data service"})

        return Starlette(
            routes=[
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/v1/messages", messages, methods=["POST"]),
                Route("/data", data, methods=["POST"]),
            ]
        )


UNREADABLE = "messages must be a list of objects"


def _readable(body: dict[str, Any]) -> bool:
    """A body whose messages the fake can read. Like a real provider, it refuses others
    with a 400 (the gateway forwards what it need not understand to bound the cost)."""
    messages = body.get("messages")
    return isinstance(messages, list) and all(isinstance(message, dict) for message in messages)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Run an ASGI app with uvicorn on loopback in a background thread; yields its URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


class ConnectionDropper:
    """A provider that reads each request whole, counts it, and closes the connection
    without a byte of answer. `received` counts the requests that arrived."""

    def __init__(self) -> None:
        self.received = 0
        self.url = ""
        self._lock = threading.Lock()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            await reader.readexactly(length)
            with self._lock:
                self.received += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on loopback in a background thread; yields the base URL."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        port = free_port()

        async def main() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", port)
            async with server:
                started.set()
                await server.serve_forever()

        task: list[asyncio.Task[None]] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            task.append(loop.create_task(main()))
            try:
                loop.run_until_complete(task[0])
            except asyncio.CancelledError:
                pass
            finally:
                loop.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert started.wait(15), "the dropping provider did not start"
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self.url
        finally:
            loop.call_soon_threadsafe(task[0].cancel)
            thread.join(timeout=15)
