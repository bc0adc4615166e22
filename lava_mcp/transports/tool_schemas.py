"""The JSON schemas the MCP tools publish: what each tool takes and what it answers.

Input schemas are written for every client's validator, not only for pydantic: a single
`type` per property (an alternative is an `anyOf`, never a type array), no `format`
keywords a strict validator does not know, `minimum`/`maximum` only beside `type:
integer`. Output schemas describe the success JSON of DESIGN §4 (errors are `isError`
results, which clients do not validate); they list the fields every answer has as
required and leave the object open, since answers may gain fields (`notice`, `sandbox`).
"""

from __future__ import annotations

from typing import Any

MONEY = {"type": "string", "description": 'US dollars, 2 decimals, e.g. "47.50".'}
COST = {"type": "string", "description": 'US dollars, 6 decimals, e.g. "0.000210".'}
NOTICE = {
    "type": "string",
    "description": "Something to tell the user once (e.g. where to find the wallet key).",
}
# A number or a decimal string: money arrives either way (DESIGN §2).
NUMBER_OR_STRING = [{"type": "number"}, {"type": "string"}]


def _open_object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


BALANCE_FIELDS: dict[str, Any] = {
    "balance": {**MONEY, "description": "What can be spent now: the balance less holds and any shortfall."},
    "currency": {"type": "string", "enum": ["USD"]},
    "held": {**MONEY, "description": "Held for paid calls in flight."},
    "shortfall": {**MONEY, "description": "Owed after a refund or dispute; blocks spending."},
    "sandbox": {"type": "boolean", "description": "True: SANDBOX money (test cards, no real money)."},
    "test_mode": {"type": "boolean", "description": "True: Stripe test-mode money."},
    "notice": NOTICE,
}

GET_BALANCE = _open_object(
    {
        **BALANCE_FIELDS,
        "org_invitations": {
            "type": "array",
            "items": _open_object(
                {
                    "id": {"type": "string"},
                    "org_id": {"type": "string"},
                    "org_name": {"type": "string"},
                    "role": {"type": "string"},
                },
                ["id", "org_id"],
            ),
        },
    },
    ["balance"],
)

CARD = _open_object(
    {
        "id": {"type": "string"},
        "brand": {"type": "string"},
        "last4": {"type": "string"},
        "exp_month": {"type": "integer"},
        "exp_year": {"type": "integer"},
        "default": {"type": "boolean"},
    },
    ["id", "brand", "last4"],
)

ADD_FUNDS = _open_object(
    {
        "status": {
            "type": "string",
            "enum": ["completed", "processing", "requires_action", "checkout_required", "amount_required"],
            "description": "completed: money added; processing: the card's bank has not decided yet "
            "(credited once it does); requires_action: the bank asks the user to confirm at "
            "redirect_url; checkout_required: the user pays at checkout_url; amount_required: no "
            "amount was given (see payment_methods, min, max).",
        },
        "amount": MONEY,
        "balance": MONEY,
        "payment_id": {"type": "string"},
        "checkout_url": {"type": "string", "description": "A page for the user to pay on."},
        "redirect_url": {"type": "string", "description": "The bank's confirmation page (3-D Secure)."},
        "payment_methods": {"type": "array", "items": CARD},
        "min": MONEY,
        "max": MONEY,
        "sandbox": BALANCE_FIELDS["sandbox"],
        "notice": NOTICE,
    },
    ["status"],
)

SERVICE_TOTAL = _open_object({"spend": COST, "requests": {"type": "integer"}}, ["spend", "requests"])

USAGE_SUMMARY = _open_object(
    {
        "since": {"type": "string", "description": "First day (YYYY-MM-DD, UTC)."},
        "until": {"type": "string", "description": "Last day (YYYY-MM-DD, UTC)."},
        "days": {
            "type": "array",
            "items": _open_object(
                {
                    "date": {"type": "string"},
                    "spend": COST,
                    "requests": {"type": "integer"},
                    "by_service": {"type": "object", "additionalProperties": SERVICE_TOTAL},
                },
                ["date", "spend", "requests", "by_service"],
            ),
        },
        "total_spend": COST,
        "total_requests": {"type": "integer"},
        "notice": NOTICE,
    },
    ["since", "until", "days", "total_spend", "total_requests"],
)

NULLABLE_STRING = {"anyOf": [{"type": "string"}, {"type": "null"}]}

LIST_REQUESTS = _open_object(
    {
        "requests": {
            "type": "array",
            "items": _open_object(
                {
                    "id": {"type": "string"},
                    "created_at": NULLABLE_STRING,
                    "service": {"type": "string"},
                    "model": NULLABLE_STRING,
                    "cost": COST,
                    "succeeded": {"type": "boolean"},
                    "status": {"type": "string", "enum": ["pending", "completed", "error"]},
                    "input_tokens": {"type": "integer"},
                    "output_tokens": {"type": "integer"},
                    "error": {"type": "string"},
                },
                ["id", "created_at", "service", "model", "cost", "succeeded"],
            ),
        },
        "next_cursor": {**NULLABLE_STRING, "description": "Pass as `before` for the next page."},
        "notice": NOTICE,
    },
    ["requests", "next_cursor"],
)

CALL_PAID_SERVICE = _open_object(
    {
        "result": {
            "description": "The provider's answer, in its own shape (JSON).",
            "anyOf": [{"type": kind} for kind in ("object", "array", "string", "number", "boolean", "null")],
        },
        "cost": {**COST, "description": "What the call was charged (6 decimals)."},
        "balance": {**MONEY, "description": "What can be spent after the call."},
        "request_id": {"type": "string"},
        "notice": NOTICE,
    },
    ["result", "cost", "balance", "request_id"],
)

PER_MILLION = {**NULLABLE_STRING, "description": "US dollars per million tokens (null: tiered price)."}

LIST_SERVICES = _open_object(
    {
        "services": {
            "type": "array",
            "items": _open_object(
                {
                    "id": {"type": "string", "description": "Pass as call_paid_service's `service`."},
                    "kind": {"type": "string", "enum": ["model", "data"]},
                    "shape": {"type": "string", "enum": ["openai", "anthropic", "http"]},
                    "pricing": {"type": "string", "enum": ["per_token", "per_call", "free"]},
                    "free": {"type": "boolean"},
                    "price_per_call": {**COST, "description": "Per-call services: US dollars per call."},
                    "description": {"type": "string"},
                    "models": {
                        "type": "array",
                        "items": _open_object(
                            {
                                "model": {"type": "string"},
                                "input_per_million_tokens": PER_MILLION,
                                "output_per_million_tokens": PER_MILLION,
                            },
                            ["model"],
                        ),
                    },
                },
                ["id", "kind", "shape", "pricing", "free", "models"],
            ),
        },
        "notice": NOTICE,
    },
    ["services"],
)

OUTPUT_SCHEMAS: dict[str, dict[str, Any]] = {
    "get_balance": GET_BALANCE,
    "add_funds": ADD_FUNDS,
    "usage_summary": USAGE_SUMMARY,
    "list_requests": LIST_REQUESTS,
    "call_paid_service": CALL_PAID_SERVICE,
    "list_services": LIST_SERVICES,
}
