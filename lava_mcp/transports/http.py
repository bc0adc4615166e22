"""Shared pieces of the HTTP surfaces: error rendering, wallet-key auth, JSON bodies."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lava_mcp.core import wallet
from lava_mcp.errors import BadRequest, LavaError, RateLimited, Unauthorized
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import Wallet

MAX_BODY_BYTES = 1_000_000


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def error_response(error: LavaError) -> JSONResponse:
    """The flat REST error: `{"error", "code", ...extra}` with HTTP status = code."""
    headers = {"retry-after": str(error.retry_after_s)} if isinstance(error, RateLimited) else None
    return JSONResponse(error.to_dict(), status_code=error.code, headers=headers)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def authenticate_wallet(request: Request) -> Wallet:
    """Raises: Unauthorized unless the request carries a known wallet key as a bearer token."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing Authorization: Bearer lava_wk_… header")
    return await anyio.to_thread.run_sync(wallet.authenticate, runtime_of(request).db, token)


async def json_body(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object, read up to `MAX_BODY_BYTES` (never more into memory).

    Raises: BadRequest for a missing (unless `allow_empty`), malformed, non-object or
    oversized body.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(f"request body over {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("request body must be a JSON object")
    try:
        body = json.loads(raw)
    except ValueError as error:
        raise BadRequest("request body is not valid JSON") from error
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


Handler = Callable[[Request, Wallet], Awaitable[Response]]


def wallet_endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A REST endpoint authenticated with the wallet key, its LavaErrors rendered flat."""

    async def endpoint(request: Request) -> Response:
        try:
            owner = await authenticate_wallet(request)
            return await handler(request, owner)
        except LavaError as error:
            return error_response(error)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint
