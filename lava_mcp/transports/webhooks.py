"""`POST /v1/webhooks/stripe`: Stripe's events, verified against STRIPE_WEBHOOK_SECRET.

A missing or bad signature, or a malformed body, is a 400 that changes nothing. The body
is read by the same bounded reader as every other route (`http.read_body`: at most
`LAVA_MAX_BODY_BYTES`, within the body timeout) and must parse as JSON within the nesting
limit before anything else looks at it. The rules for each event live in
`core.payment_events`.
"""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lava_mcp.core import payment_events
from lava_mcp.errors import LavaError
from lava_mcp.transports.http import error_response, parse_json, read_body, runtime_of


async def stripe_webhook(request: Request) -> Response:
    try:
        payload = await read_body(request)
        # Judged here so a deeply nested (signed) body is a 400, not a parser's crash; the
        # signature is then checked over the raw bytes, as Stripe signed them.
        parse_json(payload, exact_numbers=False)
        runtime = runtime_of(request)
        # In the processor lane: applying an event may ask the processor (a dispute's
        # charge, a Checkout's card), which must never hold the database's worker threads.
        outcome = await anyio.to_thread.run_sync(
            payment_events.receive,
            runtime,
            payload,
            request.headers.get("stripe-signature"),
            limiter=runtime.processor_lane.limiter,
        )
    except LavaError as error:
        return error_response(error)
    return JSONResponse(outcome)


routes = [Route("/v1/webhooks/stripe", stripe_webhook, methods=["POST"])]
