"""Calls to upstream providers over one shared, pooled aiohttp session.

aiohttp rather than httpx on this path: with 32 calls in flight httpx's connection pool
costs about 3 ms of CPU a request (it scans every pooled connection per request), aiohttp
about 0.2 ms — measured on the 2-core machine the README's figures come from. Upstream
keys come from the catalog (i.e. from configuration), never from the caller.

At most once: a request is POSTed once per client call and never resent. Once its first
bytes were handed to a connection the provider may have received it, run it and billed
it; a resend could bill twice. An `Exchange` records whether that point was reached, so
that a call cancelled or cut short is charged (`Metering`) only when it may have run.

JSON both ways with orjson (several times faster than the standard library on these
bodies). A JSON answer is returned as an `Answer`: the parsed object, which carries the
bytes it was parsed from, so the gateway forwards the provider's body as it came instead
of rendering it again.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson

from lava_mcp.errors import BadRequest, LavaError, UpstreamError
from lava_mcp.observability import metrics
from lava_mcp.providers.catalog import Service

API_VERSION_ANTHROPIC = "2023-06-01"
# Errors that mean the provider could not be reached or stopped answering.
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
CONNECT_TIMEOUT_S = 10.0


class Answer(dict[str, Any]):
    """A provider's JSON object answer, with `raw`: the exact bytes it was parsed from."""

    __slots__ = ("raw",)
    raw: bytes


def dumps(body: Any) -> bytes:
    """`body` as compact JSON. orjson, except for what it can't encode (an integer beyond
    64 bits): the standard library's output then."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def loads(content: bytes) -> Any:
    """Parse a provider's JSON; an object comes back as an `Answer` carrying `content`.

    Raises: ValueError for content that is not JSON (orjson's error is one).
    """
    value = orjson.loads(content)
    if isinstance(value, dict):
        answer = Answer(value)
        answer.raw = content
        return answer
    return value


@dataclass
class Exchange:
    """One upstream request's progress, as far as billing is concerned."""

    # The request's headers were written to a connection: the provider may have it.
    sent: bool = False
    # The provider answered with a 2xx status: it accepted the request and may bill it.
    accepted: bool = False


async def _on_headers_sent(
    _session: aiohttp.ClientSession, context: SimpleNamespace, _params: aiohttp.TraceRequestHeadersSentParams
) -> None:
    exchange = context.trace_request_ctx
    if isinstance(exchange, Exchange):
        exchange.sent = True


def _trace_config() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig()
    config.on_request_headers_sent.append(_on_headers_sent)
    return config


class Upstream:
    """The pooled HTTP client for every upstream call.

    The aiohttp session is opened on first use, inside the event loop that will use it
    (an aiohttp session belongs to the loop that created it). Timeouts: `connect_timeout_s`
    to connect, and `timeout_s` for each wait on the provider (a long stream is fine while
    it flows). A hold's lifetime covers both (`Settings`).
    """

    def __init__(self, timeout_s: float, *, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=timeout_s)
        # A JSON answer must arrive whole within timeout_s (streams are kept alive instead).
        self.json_timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300, keepalive_timeout=4.0),
                timeout=self.timeout,
                auto_decompress=True,
                trace_configs=[_trace_config()],
            )
        return self._session

    async def post_json(
        self, service: Service, body: dict[str, Any], exchange: Exchange | None = None
    ) -> Any:
        """POST `body` to the service (once) and return its JSON.

        Raises: UpstreamError (502) when the provider can't be reached, fails, or answers
        something that isn't JSON; BadRequest (400) when it rejects the request as invalid.
        """
        response = await self._send(service, body, exchange, timeout=self.json_timeout)
        try:
            content = await response.read()
        except TRANSPORT_ERRORS as error:
            raise UpstreamError(
                f"{service.id} stopped answering ({type(error).__name__}); nothing was charged"
            ) from error
        finally:
            response.release()
        raise_for_upstream_status(service, response.status, content)
        try:
            return loads(content)
        except ValueError as error:
            raise UpstreamError(f"{service.id} answered with invalid JSON; nothing was charged") from error

    async def open_stream(
        self, service: Service, body: dict[str, Any], exchange: Exchange | None = None
    ) -> aiohttp.ClientResponse:
        """Send a streaming request (once); returns the response with its body still to read.

        Raises: UpstreamError when the provider can't be reached.
        """
        return await self._send(service, body, exchange)

    async def _send(
        self,
        service: Service,
        body: dict[str, Any],
        exchange: Exchange | None,
        *,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """Send the request and wait for the response's headers.

        Never resent: even a pooled connection the provider closed while it sat idle
        (ServerDisconnectedError) may have carried the request, and a resend could be
        billed twice. The caller gets a 502 and is charged nothing.
        """
        exchange = exchange if exchange is not None else Exchange()
        started_s = time.perf_counter()
        try:
            response = await self.session().post(
                endpoint(service),
                data=dumps(body),
                headers=headers(service),
                timeout=timeout or self.timeout,
                trace_request_ctx=exchange,
            )
        except TRANSPORT_ERRORS as error:
            raise _unreachable(service, error) from error
        metrics.upstream_answered(service.id, started_s)
        exchange.sent = True  # an answer came, so the request certainly arrived
        exchange.accepted = response.status < 300
        return response

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


def endpoint(service: Service) -> str:
    if service.shape == "openai":
        return f"{service.base_url}/chat/completions"
    if service.shape == "anthropic":
        return f"{service.base_url}/v1/messages"
    return service.base_url


def headers(service: Service) -> dict[str, str]:
    result = {"content-type": "application/json"}
    if service.api_key:
        if service.shape == "anthropic":
            result["x-api-key"] = service.api_key
        else:
            result["authorization"] = f"Bearer {service.api_key}"
    if service.shape == "anthropic":
        result["anthropic-version"] = API_VERSION_ANTHROPIC
    return result


def _unreachable(service: Service, error: BaseException) -> UpstreamError:
    return UpstreamError(f"{service.id} could not be reached ({type(error).__name__}); nothing was charged")


def raise_for_upstream_status(service: Service, status: int, content: bytes) -> None:
    """Raises the error a non-2xx upstream answer means for our caller."""
    if status < 400:
        return
    error: LavaError
    if status in (400, 404, 413, 422):
        # The provider's words about the caller's own request help the caller fix it.
        detail = _upstream_message(content)
        error = BadRequest(f"{service.id} rejected the request: {detail}; nothing was charged")
    else:
        # Not the provider's text: a 401/403 message may quote part of the operator's key.
        error = UpstreamError(f"{service.id} failed with HTTP {status}; nothing was charged")
    error.extra["upstream_status"] = status
    raise error


def _upstream_message(content: bytes) -> str:
    try:
        payload = json.loads(content)
    except (ValueError, RecursionError):
        return content[:200].decode(errors="replace") or "no detail"
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:300]
    if isinstance(error, str):
        return error[:300]
    return "no detail"
