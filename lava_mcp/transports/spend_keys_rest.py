"""`/v1/spend_keys`: create, list, retrieve, update, rotate and revoke spend keys (Lava's
REST shapes), authenticated with the wallet key. Another wallet's key id answers 404."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from lava_mcp import contract
from lava_mcp.contract.common import Success
from lava_mcp.contract.errors import error_responses
from lava_mcp.core import spend_keys
from lava_mcp.money import format_cost, format_dollars
from lava_mcp.store.models import SpendKey, utc_now
from lava_mcp.transports import render
from lava_mcp.transports.api import KeyCursor, Limit, Owner, WalletRoute, flat_json, links
from lava_mcp.transports.http import runtime_of
from lava_mcp.transports.render import iso

router = APIRouter(route_class=WalletRoute)


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


KeyId = Annotated[
    str, Path(description="The spend key's id.", examples=["sk_id_01a2088fc5c4a4e635db3ed8a15d"])
]
TAG = "spend keys"
NO_FIELDS = contract.SpendKeyCreate()  # an empty body: every default (frozen, so shared)
# What a key's answer links to: the key's own operations, by its id.
BY_KEY_ID = {"key_id": "$response.body#/spend_key_id"}
KEY_OPERATIONS = ("getSpendKey", "updateSpendKey", "rotateSpendKey", "revokeSpendKey")


@router.post(
    "/v1/spend_keys",
    status_code=201,
    response_model=contract.SpendKey,
    tags=[TAG],
    operation_id="createSpendKey",
    summary="Create a spend key",
    description="The answer carries the secret in `key`: shown once, stored only as a hash.",
    responses={**error_responses(404), **links(201, BY_KEY_ID, *KEY_OPERATIONS)},
)
async def create_key(request: Request, owner: Owner, body: contract.SpendKeyCreate = NO_FIELDS) -> Response:
    runtime = runtime_of(request)
    created = await anyio.to_thread.run_sync(
        lambda: spend_keys.create(runtime.db, owner.id, body, catalog=runtime.catalog)
    )
    return flat_json(spend_key_json(created.key, secret=created.secret), status_code=201)


@router.get(
    "/v1/spend_keys",
    response_model=contract.SpendKeyList,
    tags=[TAG],
    operation_id="listSpendKeys",
    summary="The wallet's spend keys, newest first (previews only, never secrets)",
    responses=links(200, {"key_id": "$response.body#/data/0/spend_key_id"}, *KEY_OPERATIONS),
)
async def list_keys(
    request: Request,
    owner: Owner,
    limit: Limit = None,
    cursor: KeyCursor = None,
    status: Annotated[
        Literal["active", "paused", "revoked"] | None, Query(description="Only keys in this status.")
    ] = None,
) -> Response:
    page = await anyio.to_thread.run_sync(
        lambda: spend_keys.list_keys(
            runtime_of(request).db, owner.id, limit=limit, cursor=cursor, status=status
        )
    )
    now = utc_now()
    return flat_json(render.list_json([spend_key_json(key, now=now) for key in page.keys], page.next_cursor))


@router.get(
    "/v1/spend_keys/{key_id}",
    response_model=contract.SpendKey,
    tags=[TAG],
    operation_id="getSpendKey",
    summary="One spend key, with its counters",
    responses={**error_responses(404), **links(200, BY_KEY_ID, *KEY_OPERATIONS)},
)
async def retrieve_key(request: Request, owner: Owner, key_id: KeyId) -> Response:
    key = await anyio.to_thread.run_sync(spend_keys.get, runtime_of(request).db, owner.id, key_id)
    return flat_json(spend_key_json(key))


@router.put(
    "/v1/spend_keys/{key_id}",
    response_model=contract.SpendKey,
    tags=[TAG],
    operation_id="updateSpendKey",
    summary="Change a key's name, scope, limits or status (the secret stays)",
    description="Only the fields given change, and inside a limit only the parts given:"
    ' `{"spend_limit": {"amount": "5.00"}}` keeps the cycle. `null` removes a limit.'
    " A change applies to every call whose hold is not yet taken.",
    responses={**error_responses(404), **links(200, BY_KEY_ID, *KEY_OPERATIONS)},
)
async def update_key(
    request: Request, owner: Owner, key_id: KeyId, body: contract.SpendKeyUpdate
) -> Response:
    runtime = runtime_of(request)
    key = await anyio.to_thread.run_sync(
        lambda: spend_keys.update_key(runtime.db, owner.id, key_id, body, catalog=runtime.catalog)
    )
    return flat_json(spend_key_json(key))


@router.post(
    "/v1/spend_keys/{key_id}/rotate",
    response_model=contract.SpendKey,
    tags=[TAG],
    operation_id="rotateSpendKey",
    summary="A new secret for the same key; the old one fails at once",
    responses={**error_responses(404), **links(200, BY_KEY_ID, *KEY_OPERATIONS)},
)
async def rotate_key(request: Request, owner: Owner, key_id: KeyId) -> Response:
    rotated = await anyio.to_thread.run_sync(spend_keys.rotate, runtime_of(request).db, owner.id, key_id)
    return flat_json(spend_key_json(rotated.key, secret=rotated.secret))


@router.delete(
    "/v1/spend_keys/{key_id}",
    response_model=Success,
    tags=[TAG],
    operation_id="revokeSpendKey",
    summary="Revoke a key for good (idempotent; the record stays for the history)",
    responses=error_responses(404),
)
async def revoke_key(request: Request, owner: Owner, key_id: KeyId) -> Response:
    await anyio.to_thread.run_sync(spend_keys.revoke, runtime_of(request).db, owner.id, key_id)
    return flat_json({"success": True})


routes = router.routes
