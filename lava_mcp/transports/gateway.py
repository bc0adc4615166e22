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
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from lava_mcp.core import spend_keys
from lava_mcp.core.metering import Metering, Ticket
from lava_mcp.core.relay import StreamRelay
from lava_mcp.errors import BadRequest, InternalError, LavaError, UpstreamError
from lava_mcp.ids import new_id
from lava_mcp.providers import upstream
from lava_mcp.providers.catalog import Service
from lava_mcp.store.db import unavailable
from lava_mcp.store.models import SpendKey
from lava_mcp.transports.http import bearer_token, json_body, retry_after_headers, runtime_of

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


def error_response(shape: Shape, error: LavaError) -> JSONResponse:
    return JSONResponse(error_body(shape, error), status_code=error.code, headers=retry_after_headers(error))


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


async def authenticate(request: Request) -> SpendKey:
    """Raises: Unauthorized for a missing, unknown or revoked key, or a wallet key."""
    secret = spend_key_secret(request)
    database = runtime_of(request).db
    return await database.run(spend_keys.authenticate, database, secret)


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
    # Body first, key second: the key is read only once the whole request is in.
    body = await json_body(request, exact_numbers=False)
    key = await authenticate(request)
    metering = runtime_of(request).metering
    service = service_for(metering, shape, body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false")
    endpoint = request.url.path
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
        result = await metering.call(**options)
        return JSONResponse(result.result)
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
    key = await authenticate(request)
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
    return JSONResponse(
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
        await self.relay.run(forward, end, disconnected)


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
]
