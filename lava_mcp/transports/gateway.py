"""The OpenAI- and Anthropic-compatible gateway: `/v1/chat/completions`, `/v1/messages`,
`/v1/models`, authenticated with a spend key.

Each call runs through the metering core (hold → upstream → settle) with the key's
rules; this module only parses the request, picks the service from the model, relays
the upstream answer (streams chunk by chunk, as they arrive) and renders errors in the
caller's API shape. The caller's key never goes upstream: upstream keys come from the
catalog.

The whole body is read (within `LAVA_BODY_TIMEOUT_S`, else 408) before the key is looked
up: a call is judged by the key as it is once the request is complete, never by a key
read while the client was still sending — a rotate, revoke, pause or narrowed scope that
lands meanwhile refuses it. The hold then confirms the key has not changed since
(`spend_keys.reserve` checks its version).

The hot path (issue 11, each step measured with a profile: see the README's figures):
- The key is judged from `core.key_cache` (no read per call): the hold's conditional
  UPDATE checks the key's version and secret, so a key changed on any process is refused
  on the very next call. `GET /v1/models` lists from a fresh read (it takes no hold).
- Bodies are parsed with orjson (`parse_body`: the same rules, depth limit and 400s as
  `http.parse_json`); a JSON answer is forwarded as the bytes the provider sent
  (`upstream.Answer.raw`) — nothing in it is changed — and errors are rendered by orjson.
- `asgi_routes` lets the app send the three gateway routes straight to their handlers,
  past Starlette's middleware and route matching.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lava_mcp.core import spend_keys
from lava_mcp.core.metering import Metering, Ticket
from lava_mcp.core.relay import StreamRelay
from lava_mcp.errors import BadRequest, InternalError, LavaError, UpstreamError
from lava_mcp.ids import new_id
from lava_mcp.providers import upstream
from lava_mcp.providers.catalog import Service
from lava_mcp.store.db import unavailable
from lava_mcp.store.models import SpendKey
from lava_mcp.transports.http import (
    MAX_JSON_DEPTH,
    _depth_over,
    bearer_token,
    parse_json,
    read_body,
    retry_after_headers,
    runtime_of,
)

logger = logging.getLogger("lava_mcp.gateway")

Shape = Literal["openai", "anthropic"]
REQUEST_ID_HEADER = "x-lava-request-id"

# The one mapping from our error codes to each API's error type (and OpenAI's `code`).
ERROR_TYPES_OPENAI: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    402: ("insufficient_quota", "insufficient_quota"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("invalid_request_error", "request_timeout"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    431: ("invalid_request_error", "headers_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("api_error", "internal_error"),
    502: ("api_error", "upstream_error"),
    503: ("api_error", "service_unavailable"),
}
ERROR_TYPES_ANTHROPIC: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "invalid_request_error",
    413: "request_too_large",
    431: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
}


def error_body(shape: Shape, error: LavaError) -> dict[str, Any]:
    """`error` in the API's own error shape."""
    message = f"{error.message} ({error.next_step})" if error.next_step else error.message
    if shape == "anthropic":
        return {
            "type": "error",
            "error": {"type": ERROR_TYPES_ANTHROPIC.get(error.code, "api_error"), "message": message},
        }
    kind, code = ERROR_TYPES_OPENAI.get(error.code, ("api_error", "internal_error"))
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


class OrjsonResponse(Response):
    """A JSON response rendered by orjson (or sent as given, for bytes already JSON)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return upstream.dumps(content)


def error_response(shape: Shape, error: LavaError) -> Response:
    return OrjsonResponse(
        error_body(shape, error), status_code=error.code, headers=retry_after_headers(error)
    )


Handler = Callable[[Request, str], Awaitable[Response]]


def gateway_endpoint(
    shape: Shape | Callable[[Request], Shape],
) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Give the handler a request id, and render its LavaErrors in the API's shape."""

    def decorate(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            request_id = new_id("req")
            try:
                response = await handler(request, request_id)
            except LavaError as error:
                response = error_response(shape if isinstance(shape, str) else shape(request), error)
            except Exception as failure:
                if (busy := unavailable(failure)) is not None:
                    logger.warning("gateway request %s: %s (%s)", request_id, busy.message, failure)
                    response = error_response(shape if isinstance(shape, str) else shape(request), busy)
                else:
                    logger.exception("gateway request %s failed", request_id)
                    internal = InternalError("internal error in the gateway; nothing was charged")
                    response = error_response(shape if isinstance(shape, str) else shape(request), internal)
            response.headers[REQUEST_ID_HEADER] = request_id
            return response

        endpoint.__name__ = handler.__name__
        return endpoint

    return decorate


# -- the request ---------------------------------------------------------------------------


def spend_key_secret(request: Request) -> str | None:
    """The spend key from `x-api-key` or `Authorization: Bearer` (both accepted on both shapes)."""
    api_key = request.headers.get("x-api-key", "").strip()
    return api_key or bearer_token(request)


async def authenticate(request: Request, *, fresh: bool = False) -> SpendKey:
    """The request's spend key: from `key_cache` when it's there (the hold validates it),
    else read (and cached); `fresh`: always read (for what no hold will check).

    Raises: Unauthorized for a missing, unknown or revoked key, or a wallet key.
    """
    if fresh:
        database = runtime_of(request).db
        return await database.run(spend_keys.read_and_remember, database, spend_key_secret(request))
    return (await _spend_key(request))[0]


async def _spend_key(request: Request) -> tuple[SpendKey, bool]:
    """The request's spend key, and whether it came from the cache."""
    secret = spend_key_secret(request)
    database = runtime_of(request).db
    key = spend_keys.cached(database, secret)
    if key is not None:
        return key, True
    return await database.run(spend_keys.read_and_remember, database, secret), False


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, parsed by orjson; whatever orjson refuses (NaN, a number
    beyond a double, a lone surrogate, malformed text) is judged by `http.parse_json`, so
    the rules and the 400s are exactly the REST parser's (`exact_numbers=False`), the depth
    limit (`MAX_JSON_DEPTH`) included. One difference: an integer beyond 64 bits reads as a
    float, as the providers' own parsers read it (a token limit must be an integer, so such
    a one is refused).

    Raises: BadRequest.
    """
    if not raw.strip():
        raise BadRequest("request body must be a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = parse_json(raw, exact_numbers=False)  # raises the usual BadRequest, or reads it
    else:
        if _depth_over(body, MAX_JSON_DEPTH):
            raise BadRequest(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def service_for(metering: Metering, shape: Shape, body: dict[str, Any]) -> Service:
    """The catalog service that serves the body's model in this API shape.

    Raises: BadRequest (no model, or a model served in the other shape); NotFound.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        raise BadRequest("model must be a non-empty string")
    service = metering.catalog.for_model(model)
    if service.shape != shape:
        endpoint = "POST /v1/messages" if service.shape == "anthropic" else "POST /v1/chat/completions"
        raise BadRequest(f"model {model[:80]!r} is served in the {service.shape} shape: use {endpoint}")
    return service


async def _model_call(request: Request, request_id: str, shape: Shape) -> Response:
    # Body first, key second: the key is read only once the whole request is in. A call
    # with no key at all is refused first (nothing that arrives later can make it valid),
    # so a caller without credentials hears 401, never a judgement of its body.
    if spend_key_secret(request) is None:
        await authenticate(request)  # raises Unauthorized
    body = parse_body(await read_body(request))
    key, from_cache = await _spend_key(request)
    metering = runtime_of(request).metering
    service = service_for(metering, shape, body)
    if from_cache:
        key = await spend_keys.judge_cached(
            runtime_of(request).db,
            key,
            spend_key_secret(request),
            service_id=service.id,
            model=body["model"],
            shape=shape,
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false")
    endpoint: str = request.scope["path"]
    options: dict[str, Any] = {
        "wallet_id": key.wallet_id,
        "service_id": service.id,
        "model": body["model"],
        "body": body,
        "endpoint": endpoint,
        "spend_key": key,
        "request_shape": shape,
        "request_id": request_id,
    }
    if not stream:
        answer = (await metering.call(**options)).result
        return OrjsonResponse(answer.raw if isinstance(answer, upstream.Answer) else answer)
    ticket = await metering.open(**options)
    return await _start_stream(metering, ticket, shape)


@gateway_endpoint("openai")
async def chat_completions(request: Request, request_id: str) -> Response:
    """OpenAI's `POST /v1/chat/completions`, streaming or not."""
    return await _model_call(request, request_id, "openai")


@gateway_endpoint("anthropic")
async def messages(request: Request, request_id: str) -> Response:
    """Anthropic's `POST /v1/messages`, streaming or not."""
    return await _model_call(request, request_id, "anthropic")


def _models_shape(request: Request) -> Shape:
    return "anthropic" if "anthropic-version" in request.headers else "openai"


@gateway_endpoint(_models_shape)
async def models(request: Request, request_id: str) -> Response:
    """`GET /v1/models`: the models this key may call, readable by both SDKs."""
    key = await authenticate(request, fresh=True)
    catalog = runtime_of(request).catalog
    data = [
        {
            "id": model,
            "object": "model",
            "created": 0,
            "owned_by": service_id,
            "type": "model",
            "display_name": model,
            "created_at": "1970-01-01T00:00:00Z",
        }
        for model, service_id in spend_keys.usable_models(key, catalog)
        if catalog.services[service_id].shape == key.request_shape
    ]
    return OrjsonResponse(
        {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


# -- streams ---------------------------------------------------------------------------------


async def _start_stream(metering: Metering, ticket: Ticket, shape: Shape) -> Response:
    """Open the upstream stream; an upstream refusal fails the ticket (nothing charged).

    Raises: UpstreamError or BadRequest when the provider fails before the stream starts.
    """
    service = ticket.service
    exchange = upstream.Exchange()
    try:
        response = await metering.upstream.open_stream(service, ticket.body, exchange)
    except UpstreamError as failure:
        await metering.fail(ticket, failure)
        raise
    except BaseException:
        with anyio.CancelScope(shield=True):
            # Sent, it may be billed: the hold (no usage can come now); else nothing.
            if exchange.sent:
                await metering.settle(ticket, None)
            else:
                await metering.fail(ticket, UpstreamError("call cancelled"))
        raise
    if response.status >= 400:
        try:
            content = await response.read()
        except upstream.TRANSPORT_ERRORS:
            content = b""
        finally:
            response.release()
        try:
            upstream.raise_for_upstream_status(service, response.status, content)
        except LavaError as error:
            await metering.fail(ticket, error)
            raise
    return MeteredStream(StreamRelay(metering, ticket, response, shape, exchange))


class MeteredStream(Response):
    """Relays an upstream SSE stream chunk by chunk; `core.relay` settles it when it ends
    (and reads on for its usage when the client leaves early)."""

    def __init__(self, relay: StreamRelay) -> None:
        super().__init__(status_code=200, media_type=None)
        self.relay = relay
        content_type = relay.response.headers.get("content-type", "text/event-stream")
        self.headers["content-type"] = content_type
        self.headers["cache-control"] = "no-cache"
        del self.headers["content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def forward(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async def end() -> None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
        except OSError:
            self.relay.client_gone.set()
        except BaseException:
            # The provider answered 2xx and may bill: charged by the rule, never left to expire.
            await self.relay.settle()
            raise
        await self.relay.run(forward, end, disconnected)


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
]


def _asgi(route: Route) -> ASGIApp:
    endpoint = route.endpoint

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = route  # as Starlette's routing sets it (the metrics label by it)
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


# The same three routes as plain ASGI apps by (method, path), for the app's fast dispatch:
# each endpoint renders every error itself, so nothing of Starlette's stack is needed.
asgi_routes: dict[tuple[str, str], ASGIApp] = {
    (method, route.path): _asgi(route)
    for route in routes
    for method in route.methods or ()
    if method != "HEAD"
}
