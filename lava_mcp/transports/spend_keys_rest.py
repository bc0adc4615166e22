"""`/v1/spend_keys`: create, list, retrieve, update, rotate and revoke spend keys (Lava's
REST shapes), authenticated with the wallet key. Another wallet's key id answers 404."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lava_mcp.core import spend_keys
from lava_mcp.money import format_cost, format_dollars
from lava_mcp.store.models import SpendKey, Wallet, utc_now
from lava_mcp.transports import render
from lava_mcp.transports.http import json_body, runtime_of, wallet_endpoint
from lava_mcp.transports.render import iso


def spend_key_json(
    key: SpendKey, *, secret: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """A spend key in Lava's shape; `key` (the secret) only right after create or rotate."""
    counters = spend_keys.figures(key, now or utc_now())
    body: dict[str, Any] = {
        "spend_key_id": key.id,
        "key_preview": key.key_preview,
        "wallet_id": key.wallet_id,
        "name": key.name,
        "allowed_providers": key.allowed_providers,
        "allowed_models": key.allowed_models,
        "request_shape": key.request_shape,
        "spend_limit": (
            {"amount": format_dollars(key.spend_limit_micros), "cycle": key.spend_cycle or "total"}
            if key.spend_limit_micros is not None
            else None
        ),
        "request_limit": (
            {"count": key.request_limit_count, "cycle": key.request_cycle or "total"}
            if key.request_limit_count is not None
            else None
        ),
        "rate_limit": (
            {"rpm": key.rate_rpm, "burst": key.rate_burst or key.rate_rpm}
            if key.rate_rpm is not None
            else None
        ),
        "expires_at": iso(key.expires_at),
        "status": key.status,
        "current_spend": format_cost(counters.current_spend_micros),
        "total_spend": format_cost(counters.total_spend_micros),
        "current_requests": counters.current_requests,
        "total_requests": counters.total_requests,
        "last_used_at": iso(key.last_used_at),
        "created_at": iso(key.created_at),
    }
    if secret is not None:
        body["key"] = secret
    return body


@wallet_endpoint
async def create_key(request: Request, owner: Wallet) -> Response:
    runtime = runtime_of(request)
    options = await json_body(request, allow_empty=True)
    created = await anyio.to_thread.run_sync(
        lambda: spend_keys.create(runtime.db, owner.id, options, catalog=runtime.catalog)
    )
    return JSONResponse(spend_key_json(created.key, secret=created.secret), status_code=201)


@wallet_endpoint
async def list_keys(request: Request, owner: Wallet) -> Response:
    params = request.query_params
    page = await anyio.to_thread.run_sync(
        lambda: spend_keys.list_keys(
            runtime_of(request).db,
            owner.id,
            limit=params.get("limit"),
            cursor=params.get("cursor"),
            status=params.get("status"),
        )
    )
    now = utc_now()
    return JSONResponse(
        render.list_json([spend_key_json(key, now=now) for key in page.keys], page.next_cursor)
    )


@wallet_endpoint
async def retrieve_key(request: Request, owner: Wallet) -> Response:
    key_id = request.path_params["key_id"]
    key = await anyio.to_thread.run_sync(spend_keys.get, runtime_of(request).db, owner.id, key_id)
    return JSONResponse(spend_key_json(key))


@wallet_endpoint
async def update_key(request: Request, owner: Wallet) -> Response:
    runtime = runtime_of(request)
    key_id = request.path_params["key_id"]
    options = await json_body(request)
    key = await anyio.to_thread.run_sync(
        lambda: spend_keys.update_key(runtime.db, owner.id, key_id, options, catalog=runtime.catalog)
    )
    return JSONResponse(spend_key_json(key))


@wallet_endpoint
async def rotate_key(request: Request, owner: Wallet) -> Response:
    key_id = request.path_params["key_id"]
    rotated = await anyio.to_thread.run_sync(spend_keys.rotate, runtime_of(request).db, owner.id, key_id)
    return JSONResponse(spend_key_json(rotated.key, secret=rotated.secret))


@wallet_endpoint
async def revoke_key(request: Request, owner: Wallet) -> Response:
    key_id = request.path_params["key_id"]
    await anyio.to_thread.run_sync(spend_keys.revoke, runtime_of(request).db, owner.id, key_id)
    return JSONResponse({"success": True})


routes = [
    Route("/v1/spend_keys", create_key, methods=["POST"]),
    Route("/v1/spend_keys", list_keys, methods=["GET"]),
    Route("/v1/spend_keys/{key_id}", retrieve_key, methods=["GET"]),
    Route("/v1/spend_keys/{key_id}", update_key, methods=["PUT"]),
    Route("/v1/spend_keys/{key_id}/rotate", rotate_key, methods=["POST"]),
    Route("/v1/spend_keys/{key_id}", revoke_key, methods=["DELETE"]),
]
