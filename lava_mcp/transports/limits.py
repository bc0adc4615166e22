"""What a request may send before anything reads it: header size and count, body size, time.

An ASGI middleware around the whole app (`transports.app.build_app`), so no route, MCP
transport or OAuth endpoint ever sees a request over the limits:

- **Headers** (`LAVA_MAX_HEADER_BYTES`, `LAVA_MAX_HEADER_COUNT`): the request line and
  header lines as sent (`name: value\\r\\n` each) over the byte limit, or more header lines
  than the count, are 431 before any route runs. The byte limit is kept at or below uvicorn's
  own parser limit so the client hears a clear 431, never the parser's answer: h11 answers a
  request head whose unfinished part passes 16 KiB with a bare text 400 ("Invalid HTTP request
  received.") and resets the connection when megabytes keep coming; httptools has no limit
  at all (a 10 MB head, 100,000 headers are parsed into memory and reach the app).
- **Body size** (`LAVA_MAX_BODY_BYTES`): a declared `Content-Length` over the limit is 413
  at once — the body is never read, and a client waiting on `Expect: 100-continue` is never
  asked to send it. A body of undeclared length (chunked) is counted as it arrives and
  refused as soon as it passes the limit.
- **Head time** (`LAVA_HEADER_TIMEOUT_S`): uvicorn never times out a connection that is
  opened and sends nothing, or sends its request head a byte at a time (its keep-alive
  timer runs only after a response), so a few hundred such connections hold the server.
  `with_head_timeout` gives uvicorn's HTTP protocol a timer, armed whenever the connection
  waits for a request head and stopped when one is complete: past it, a connection that
  had begun a head hears 408, and either way it is closed. (`lava-mcp serve` runs it.)
- **Body time** (`LAVA_BODY_TIMEOUT_S`): the whole body must arrive within the timeout, else
  408, on every path — including the MCP SDK's apps (`/mcp`, `/messages/`) and its OAuth
  endpoints, which read bodies themselves with no time limit (and a 4 MiB size limit of
  their own, answered in plain text).

So every body is read here, whole, before the app runs, and replayed to it: every rule
about a request (a key, a hold, a form token) is judged on the complete request, whatever
reads it (our routes' `http.read_body`, the MCP SDK, FastAPI). The one exception is the
gateway's model routes, the hot path: their handler reads the body first with
`http.read_body` — the same limit, timeout and error shapes — so each body is read once
(wrapping every body in a timeout here costs ~12 µs a request, measured).

Refusals are in the surface's own error shape: the gateway's model routes in OpenAI's or
Anthropic's (`gateway.error_body`, with a request id like every gateway answer), everything
else the flat `{"error", "code"}` JSON; each closes the connection, so an unread body is
never parsed as the next request.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any, Literal

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lava_mcp.config import Settings
from lava_mcp.errors import HeadersTooLarge, LavaError
from lava_mcp.ids import new_id
from lava_mcp.transports.gateway import REQUEST_ID_HEADER, error_body
from lava_mcp.transports.http import body_timed_out, body_too_large

# What a header line costs beyond its name and value: ": " and CRLF.
HEADER_LINE_OVERHEAD_BYTES = 4


# The gateway's model routes read their bodies with `http.read_body` before anything else
# (the same size limit, timeout and error shapes): the hot path reads each body once.
READ_BY_THEIR_HANDLER = frozenset({"/v1/chat/completions", "/v1/messages"})


class RequestLimits:
    """The ASGI middleware. `settings` gives the limits (read once, at build time)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_header_bytes = settings.max_header_bytes
        self.max_header_count = settings.max_header_count
        self.max_body_bytes = settings.max_body_bytes
        self.body_timeout_s = settings.body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_body, refusal = self._judge_head(scope)
        if refusal is not None:
            await refuse(scope, send, refusal)
            return
        if not has_body or scope["path"] in READ_BY_THEIR_HANDLER:
            await self.app(scope, receive, send)
            return
        messages: deque[Message] = deque()
        try:
            with anyio.fail_after(self.body_timeout_s):
                complete = await self._read_body(receive, messages)
            if not complete:
                return  # the client left before its body was whole: nothing to run, no one to answer
        except TimeoutError:
            await refuse(scope, send, body_timed_out(self.body_timeout_s))
            return
        except LavaError as error:
            await refuse(scope, send, error)
            return

        async def replay() -> Message:
            if messages:
                return messages.popleft()
            return await receive()

        await self.app(scope, replay, send)

    def _judge_head(self, scope: Scope) -> tuple[bool, LavaError | None]:
        """(whether a body follows, the refusal the head earns if any), in one pass over
        the headers: the head's limits first, then a declared body's."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if len(headers) > self.max_header_count:
            return False, HeadersTooLarge(
                f"more than {self.max_header_count} request headers; nothing was done",
                next_step=f"send at most {self.max_header_count} headers (LAVA_MAX_HEADER_COUNT)",
            )
        size = request_line_bytes(scope)
        declared: bytes | None = None
        chunked = False
        for name, value in headers:
            size += len(name) + len(value) + HEADER_LINE_OVERHEAD_BYTES
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if size > self.max_header_bytes:
            return False, HeadersTooLarge(
                f"request line and headers over {self.max_header_bytes} bytes; nothing was done",
                next_step=f"send at most {self.max_header_bytes} bytes of headers (LAVA_MAX_HEADER_BYTES)",
            )
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return True, body_too_large(self.max_body_bytes)
        # HTTP/1.1: without either header a request has no body at all.
        return chunked or (declared is not None and declared != b"0"), None

    async def _read_body(self, receive: Receive, messages: deque[Message]) -> bool:
        """Read the whole body into one message for the app. False: the client left first.

        Raises: PayloadTooLarge as soon as the bytes read pass the limit.
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return False
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise body_too_large(self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                messages.append({"type": "http.request", "body": b"".join(chunks), "more_body": False})
                return True


def request_line_bytes(scope: Scope) -> int:
    """The request line as the client sent it (within a few bytes: the HTTP version's
    spelling); each header line adds its name, its value and HEADER_LINE_OVERHEAD_BYTES."""
    target = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return len(scope["method"]) + 1 + len(target) + (len(query) + 1 if query else 0) + len(" HTTP/1.1\r\n")


def error_shape(scope: Scope) -> Literal["openai", "anthropic", "flat"]:
    """Which error shape the caller reads: the gateway's model routes answer as the API they
    imitate (`/v1/models` as Anthropic's when the caller names an `anthropic-version`)."""
    path: str = scope["path"]
    if path == "/v1/chat/completions":
        return "openai"
    if path == "/v1/messages":
        return "anthropic"
    if path == "/v1/models":
        named = any(name == b"anthropic-version" for name, _ in scope["headers"])
        return "anthropic" if named else "openai"
    return "flat"


async def refuse(scope: Scope, send: Send, error: LavaError) -> None:
    """Answer `error` in the surface's shape and close the connection."""
    shape = error_shape(scope)
    payload = error.to_dict() if shape == "flat" else error_body(shape, error)
    body = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if shape != "flat":  # every gateway answer names its request, refusals too
        headers.append((REQUEST_ID_HEADER.encode(), new_id("req").encode()))
    await send({"type": "http.response.start", "status": error.code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def with_head_timeout(base: type[asyncio.Protocol], timeout_s: float) -> type[asyncio.Protocol]:
    """`base`, one of uvicorn's HTTP protocols (`H11Protocol`, `HttpToolsProtocol`), closing a
    connection whose next request head is not complete within `timeout_s`: for
    `uvicorn.Config(http=...)`. It relies on what both share: `cycle` (the request being
    served, a new object per request), `loop`, `transport`, `on_response_complete`."""
    refusal = json.dumps(
        {"error": f"the request headers did not arrive within {timeout_s:g} s; nothing was done", "code": 408}
    ).encode()
    answer = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(refusal)}\r\n".encode()
        + b"connection: close\r\n\r\n"
        + refusal
    )

    class HeadTimeoutProtocol(base):  # type: ignore[valid-type, misc]
        _head_timer: asyncio.TimerHandle | None = None
        _head_begun = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._await_head()

        def data_received(self, data: bytes) -> None:
            serving = self.cycle
            if self._head_timer is not None:
                self._head_begun = True
            super().data_received(data)
            if self.cycle is not serving:  # a head is complete: its request runs
                self._stop_timer()

        def on_response_complete(self) -> None:
            serving = self.cycle
            super().on_response_complete()
            # (a pipelined request already buffered may have started inside the call)
            if self.cycle is serving and not self.transport.is_closing():
                self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def _await_head(self) -> None:
            self._stop_timer()
            self._head_begun = False
            self._head_timer = self.loop.call_later(timeout_s, self._head_timed_out)

        def _stop_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            if self._head_begun:
                self.transport.write(answer)
            self.transport.close()

    HeadTimeoutProtocol.__name__ = f"HeadTimeout{base.__name__}"
    return HeadTimeoutProtocol


def http_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """The HTTP protocol `lava-mcp serve` runs: uvicorn's own pick (httptools when installed,
    else h11) with the head timeout."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return with_head_timeout(AutoHTTPProtocol, settings.header_timeout_s)
