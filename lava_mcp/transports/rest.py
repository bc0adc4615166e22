"""Management REST API: the wallet, usage and requests. (Funding, payment methods, orgs,
spend keys and OAuth clients have their own route modules; `transports.api` is how they
all run: wallet-key auth, bodies, the flat errors, `/openapi.json`.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query
from pydantic import AfterValidator
from starlette.requests import Request
from starlette.responses import Response

from lava_mcp.contract.errors import error_responses
from lava_mcp.contract.usage import RequestList, Usage
from lava_mcp.contract.wallet import Wallet
from lava_mcp.core import funding, usage
from lava_mcp.errors import BadRequest
from lava_mcp.money import format_cost
from lava_mcp.store.models import RequestRecord
from lava_mcp.transports import render
from lava_mcp.transports.api import Limit, Owner, RequestCursor, WalletRoute, flat_json
from lava_mcp.transports.http import runtime_of
from lava_mcp.transports.render import iso

router = APIRouter(route_class=WalletRoute)


def _day(name: str) -> Callable[[str | None], str | None]:
    """A date query parameter checked by the core's rule, named as the caller sent it."""

    def check(value: str | None) -> str | None:
        try:
            usage.parse_day(value, name)
        except BadRequest as error:
            raise ValueError(error.message) from None
        return value

    return check


DATE_SCHEMA: dict[str, Any] = {"format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
Start = Annotated[
    str | None,
    Query(
        description="ISO date (YYYY-MM-DD), UTC; default: 6 days before `end`.",
        examples=["2026-11-25"],
        json_schema_extra=DATE_SCHEMA,
    ),
    AfterValidator(_day("start")),
]
End = Annotated[
    str | None,
    Query(
        description="ISO date (YYYY-MM-DD), UTC, included; default: today.",
        examples=["2026-12-01"],
        json_schema_extra=DATE_SCHEMA,
    ),
    AfterValidator(_day("end")),
]


@router.get(
    "/v1/wallet",
    response_model=Wallet,
    tags=["wallet"],
    operation_id="getWallet",
    summary="The balance",
    description="What can be spent (the balance less holds), what is held, and the money's mode.",
    responses=error_responses(503),
)
async def get_wallet(request: Request, owner: Owner) -> Response:
    balance = await funding.balance(runtime_of(request), owner.id)
    rendered = render.balance_json(balance)
    return flat_json({"wallet_id": owner.id, **rendered})


@router.get(
    "/v1/usage",
    response_model=Usage,
    tags=["usage"],
    operation_id="getUsage",
    summary="Daily totals",
    description="Every day from `start` to `end` with its requests, tokens and cost, by service.",
)
async def get_usage(request: Request, owner: Owner, start: Start = None, end: End = None) -> Response:
    """Daily totals, Lava's `/v1/usage` shape."""
    summary = await anyio.to_thread.run_sync(
        lambda: usage.summary(
            runtime_of(request).db, owner.id, since=start, until=end, names=("start", "end")
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
    return flat_json({"items": items, "totals": totals})


@router.get(
    "/v1/requests",
    response_model=RequestList,
    tags=["usage"],
    operation_id="listRequests",
    summary="The per-request list, newest first",
)
async def get_requests(
    request: Request,
    owner: Owner,
    limit: Limit = None,
    cursor: RequestCursor = None,
    spend_key_id: Annotated[str | None, Query(description="Only this key's requests.")] = None,
) -> Response:
    page = await anyio.to_thread.run_sync(
        lambda: usage.list_requests(
            runtime_of(request).db, owner.id, limit=limit, before=cursor, spend_key_id=spend_key_id
        )
    )
    return flat_json(render.list_json([request_record_json(r) for r in page.records], page.next_cursor))


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


routes = router.routes
