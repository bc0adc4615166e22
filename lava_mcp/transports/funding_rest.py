"""REST routes for funding and saved cards (DESIGN §5). Thin: parse, call the core, render.
(Orgs have their own route module, `orgs_rest.py`.)"""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lava_mcp.core import funding, payment_methods
from lava_mcp.errors import BadRequest
from lava_mcp.store.models import Wallet
from lava_mcp.transports import render
from lava_mcp.transports.http import json_body, runtime_of, wallet_endpoint


@wallet_endpoint
async def fund_wallet(request: Request, owner: Wallet) -> Response:
    """Add funds: the same JSON as the `add_funds` MCP tool. Honours `Idempotency-Key`."""
    body = await json_body(request, allow_empty=True)
    payment_method_id = body.get("payment_method_id")
    if payment_method_id is not None and not isinstance(payment_method_id, str):
        raise BadRequest("payment_method_id must be a string")
    use_checkout = body.get("use_checkout")
    if use_checkout is not None and not isinstance(use_checkout, bool):
        raise BadRequest("use_checkout must be true or false")
    result = await funding.add_funds(
        runtime_of(request),
        owner.id,
        amount=body.get("amount"),
        payment_method_id=payment_method_id,
        use_checkout=bool(use_checkout),
        idempotency_key=request.headers.get("idempotency-key"),
    )
    return JSONResponse(result)


@wallet_endpoint
async def list_payment_methods(request: Request, owner: Wallet) -> Response:
    cards = await anyio.to_thread.run_sync(payment_methods.list_cards, runtime_of(request).db, owner.id)
    return JSONResponse(render.list_json([payment_methods.card_json(card) for card in cards]))


@wallet_endpoint
async def save_payment_method(request: Request, owner: Wallet) -> Response:
    body = await json_body(request)
    runtime = runtime_of(request)
    card = await anyio.to_thread.run_sync(
        payment_methods.save_card,
        runtime.db,
        runtime.payments,
        owner.id,
        body.get("payment_method_id"),
        limiter=runtime.processor_lane.limiter,  # it waits on the processor
    )
    return JSONResponse(payment_methods.card_json(card), status_code=201)


@wallet_endpoint
async def default_payment_method(request: Request, owner: Wallet) -> Response:
    card = await anyio.to_thread.run_sync(
        payment_methods.set_default, runtime_of(request).db, owner.id, request.path_params["id"]
    )
    return JSONResponse(payment_methods.card_json(card))


@wallet_endpoint
async def delete_payment_method(request: Request, owner: Wallet) -> Response:
    runtime = runtime_of(request)
    await anyio.to_thread.run_sync(
        payment_methods.remove_card,
        runtime.db,
        runtime.payments,
        owner.id,
        request.path_params["id"],
        limiter=runtime.processor_lane.limiter,  # it waits on the processor
    )
    return JSONResponse({"success": True})


routes = [
    Route("/v1/wallet/fund", fund_wallet, methods=["POST"]),
    Route("/v1/payment_methods", list_payment_methods, methods=["GET"]),
    Route("/v1/payment_methods", save_payment_method, methods=["POST"]),
    Route("/v1/payment_methods/{id}/default", default_payment_method, methods=["POST"]),
    Route("/v1/payment_methods/{id}", delete_payment_method, methods=["DELETE"]),
]
