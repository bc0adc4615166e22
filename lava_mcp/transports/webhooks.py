"""`POST /v1/webhooks/stripe`: Stripe's events, verified against STRIPE_WEBHOOK_SECRET.

A missing or bad signature, or a malformed body, is a 400 that changes nothing. The rules
for each event live in `core.payment_events`.
"""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lava_mcp.core import payment_events
from lava_mcp.errors import BadRequest, LavaError
from lava_mcp.transports.http import MAX_BODY_BYTES, error_response, runtime_of


async def stripe_webhook(request: Request) -> Response:
    try:
        payload = await request.body()
        if len(payload) > MAX_BODY_BYTES:
            raise BadRequest(f"webhook body over {MAX_BODY_BYTES} bytes")
        outcome = await anyio.to_thread.run_sync(
            payment_events.receive, runtime_of(request), payload, request.headers.get("stripe-signature")
        )
    except LavaError as error:
        return error_response(error)
    return JSONResponse(outcome)


routes = [Route("/v1/webhooks/stripe", stripe_webhook, methods=["POST"])]
