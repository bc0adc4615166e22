"""Management REST API: the wallet, usage and requests. (Funding, payment methods, orgs
and spend keys have their own route modules.)"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lava_mcp.core import funding, usage
from lava_mcp.money import format_cost
from lava_mcp.store.models import RequestRecord, Wallet
from lava_mcp.transports import render
from lava_mcp.transports.http import runtime_of, wallet_endpoint
from lava_mcp.transports.render import iso


@wallet_endpoint
async def get_wallet(request: Request, owner: Wallet) -> Response:
    balance = await funding.balance(runtime_of(request), owner.id)
    rendered = render.balance_json(balance)
    return JSONResponse({"wallet_id": owner.id, **rendered})


@wallet_endpoint
async def get_usage(request: Request, owner: Wallet) -> Response:
    """Daily totals, Lava's `/v1/usage` shape."""
    params = request.query_params
    summary = await anyio.to_thread.run_sync(
        lambda: usage.summary(
            runtime_of(request).db, owner.id, since=params.get("start"), until=params.get("end")
        )
    )
    items = [
        {
            "date": day.day.isoformat(),
            "total_requests": day.requests,
            "total_usage_tokens": day.input_tokens + day.output_tokens,
            "total_cost": format_cost(day.spend_micros),
            "by_service": {
                service: {
                    "total_requests": total.requests,
                    "total_usage_tokens": total.input_tokens + total.output_tokens,
                    "total_cost": format_cost(total.spend_micros),
                }
                for service, total in sorted(day.by_service.items())
            },
        }
        for day in summary.days
    ]
    totals = {
        "total_requests": summary.total_requests,
        "total_usage_tokens": sum(day.input_tokens + day.output_tokens for day in summary.days),
        "total_cost": format_cost(summary.total_spend_micros),
    }
    return JSONResponse({"items": items, "totals": totals})


@wallet_endpoint
async def get_requests(request: Request, owner: Wallet) -> Response:
    params = request.query_params
    page = await anyio.to_thread.run_sync(
        lambda: usage.list_requests(
            runtime_of(request).db,
            owner.id,
            limit=params.get("limit"),
            before=params.get("cursor"),
            spend_key_id=params.get("spend_key_id"),
        )
    )
    return JSONResponse(render.list_json([request_record_json(r) for r in page.records], page.next_cursor))


def request_record_json(record: RequestRecord) -> dict[str, Any]:
    """A request record in Lava's REST shape."""
    return {
        "request_id": record.id,
        "status": record.status,
        "provider": record.service,
        "model": record.model,
        "endpoint": record.endpoint,
        "spend_key_id": record.spend_key_id,
        "model_usage": {
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "total_tokens": record.input_tokens + record.output_tokens,
            "input_cost": format_cost(record.input_cost_micros),
            "output_cost": format_cost(record.cost_micros - record.input_cost_micros),
            "total_cost": format_cost(record.cost_micros),
        },
        "cost": format_cost(record.cost_micros),
        "error": record.error,
        "created_at": iso(record.created_at),
    }


routes = [
    Route("/v1/wallet", get_wallet, methods=["GET"]),
    Route("/v1/usage", get_usage, methods=["GET"]),
    Route("/v1/requests", get_requests, methods=["GET"]),
]
