"""REST routes for funding and saved cards (DESIGN §5). Thin: parse, call the core, render.
(Orgs have their own route module, `orgs_rest.py`.)"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header, Path
from starlette.requests import Request
from starlette.responses import Response

from lava_mcp.contract.common import Success
from lava_mcp.contract.errors import error_responses
from lava_mcp.contract.payment_methods import PaymentMethod, PaymentMethodList, SavePaymentMethod
from lava_mcp.contract.wallet import FundRequest, FundResult
from lava_mcp.core import funding, payment_methods
from lava_mcp.transports import render
from lava_mcp.transports.api import Owner, WalletRoute, flat_json, links
from lava_mcp.transports.http import runtime_of

router = APIRouter(route_class=WalletRoute)

CardId = Annotated[str, Path(description="The saved card's id.", examples=["pm_1Q…"])]
TAG = "payment methods"
NO_AMOUNT = FundRequest()  # an empty body: `amount_required` (frozen, so shared)


@router.post(
    "/v1/wallet/fund",
    response_model=FundResult,
    tags=["wallet"],
    operation_id="fundWallet",
    summary="Add funds",
    description="The same JSON as the `add_funds` MCP tool: a saved card charged now (`completed`),"
    " a bank asking for 3-D Secure (`requires_action`), a Checkout link (`checkout_required`), or,"
    " without an amount, what is needed to choose one (`amount_required`). A retry with the same"
    " `Idempotency-Key` returns the first answer and charges nothing again; the same key with"
    " another body is 409. Without a key, an identical request within the server's retry window"
    " replays (`replayed: true`).",
    responses=error_responses(402, 403, 404, 409, 429, 502, 503),
)
async def fund_wallet(
    request: Request,
    owner: Owner,
    body: FundRequest = NO_AMOUNT,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Any unique text per top-up (a UUID), 1 to 255 printable characters: a retry"
            " with it moves no money twice.",
            json_schema_extra={"minLength": 1, "maxLength": 255},
        ),
    ] = None,
) -> Response:
    """Add funds: the same JSON as the `add_funds` MCP tool. Honours `Idempotency-Key`."""
    result = await funding.add_funds(
        runtime_of(request),
        owner.id,
        amount=body.amount,
        payment_method_id=body.payment_method_id,
        use_checkout=bool(body.use_checkout),
        idempotency_key=idempotency_key,
    )
    return flat_json(result)


@router.get(
    "/v1/payment_methods",
    response_model=PaymentMethodList,
    tags=[TAG],
    operation_id="listPaymentMethods",
    summary="Saved cards",
)
async def list_payment_methods(request: Request, owner: Owner) -> Response:
    cards = await anyio.to_thread.run_sync(payment_methods.list_cards, runtime_of(request).db, owner.id)
    return flat_json(render.list_json([payment_methods.card_json(card) for card in cards]))


@router.post(
    "/v1/payment_methods",
    status_code=201,
    response_model=PaymentMethod,
    tags=[TAG],
    operation_id="savePaymentMethod",
    summary="Save a card",
    description="Attach a Stripe PaymentMethod (tokenised by Stripe.js or the Checkout page) to the"
    " wallet's Stripe customer, created on first use.",
    responses={
        **error_responses(402, 403, 404, 502, 503),
        **links(201, {"id": "$response.body#/id"}, "setDefaultPaymentMethod", "removePaymentMethod"),
    },
)
async def save_payment_method(request: Request, owner: Owner, body: SavePaymentMethod) -> Response:
    runtime = runtime_of(request)
    card = await anyio.to_thread.run_sync(
        payment_methods.save_card,
        runtime.db,
        runtime.payments,
        owner.id,
        body.payment_method_id,
        limiter=runtime.processor_lane.limiter,  # it waits on the processor
    )
    return flat_json(payment_methods.card_json(card), status_code=201)


@router.post(
    "/v1/payment_methods/{id}/default",
    response_model=PaymentMethod,
    tags=[TAG],
    operation_id="setDefaultPaymentMethod",
    summary="Choose the default card",
    responses=error_responses(404),
)
async def default_payment_method(request: Request, owner: Owner, id: CardId) -> Response:
    card = await anyio.to_thread.run_sync(payment_methods.set_default, runtime_of(request).db, owner.id, id)
    return flat_json(payment_methods.card_json(card))


@router.delete(
    "/v1/payment_methods/{id}",
    response_model=Success,
    tags=[TAG],
    operation_id="removePaymentMethod",
    summary="Remove a saved card",
    responses=error_responses(404, 502, 503),
)
async def delete_payment_method(request: Request, owner: Owner, id: CardId) -> Response:
    runtime = runtime_of(request)
    await anyio.to_thread.run_sync(
        payment_methods.remove_card,
        runtime.db,
        runtime.payments,
        owner.id,
        id,
        limiter=runtime.processor_lane.limiter,  # it waits on the processor
    )
    return flat_json({"success": True})


routes = router.routes
