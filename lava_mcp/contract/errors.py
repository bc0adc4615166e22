"""The flat error every REST answer uses, and how a validation failure becomes one.

`{"error": "<message>", "code": <status>}` plus the fields a caller may act on
(`next_step`, `decline_code`, `retry_after_s`, `min`, `max`, …): `LavaError.to_dict()`.
A body or query that fails its model is a 400 naming the field and what is wrong
(`"spend_limit.amount: the amount '5.001' is not a dollar amount: …"`), never pydantic's
list nor a 422: one shape for every refusal, whoever made it (the model or the core).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import Field, ValidationError

from lava_mcp.contract.base import Shape


class Error(Shape):
    """Every error: the message, the HTTP status again, and optional details."""

    error: str = Field(examples=["Insufficient wallet balance"])
    code: int = Field(examples=[402])
    next_step: str | None = Field(default=None, description="What to do about it, in plain words.")


# What each status means on this API (DESIGN §4 "Error codes used everywhere").
STATUS_MEANINGS: dict[int, str] = {
    400: "Bad input (malformed JSON, an unknown field, a value out of range); nothing changed.",
    401: "Missing, unknown or revoked wallet key.",
    402: "Insufficient wallet balance, or the card was declined (`decline_code`).",
    403: "Not allowed (for instance, funding before the org's admin enabled Lava).",
    404: "Unknown id, or one that belongs to another wallet.",
    408: "The request body did not arrive within the server's body timeout; nothing changed.",
    409: "Conflict: an idempotency key reused with another request, or a state that forbids it.",
    413: "The request body is over the server's size limit.",
    429: "Too many requests; `Retry-After` says when to try again.",
    500: "An unexpected failure; logged on the server.",
    502: "The payment processor failed; nothing was charged.",
    503: "Not decidable yet (a payment being reconciled): retry later.",
}

# Every route can answer these: bad input, auth, a slow or oversized body, a bug (the route
# class leaves out what cannot happen to it: 408 and 413 without a body, 400 without input).
COMMON_STATUSES = (400, 401, 408, 413, 500)

ERROR_EXAMPLES: dict[int, dict[str, Any]] = {
    400: {
        "error": "amount must be between 10.00 and 10000.00 USD",
        "code": 400,
        "min": "10.00",
        "max": "10000.00",
    },
    401: {"error": "unknown wallet key", "code": 401},
    402: {
        "error": "Your card was declined: insufficient funds.",
        "code": 402,
        "next_step": "Try a smaller amount, or pay with another saved card (payment_method_id),"
        " or use_checkout: true to pay with a new card.",
        "decline_code": "insufficient_funds",
    },
    403: {
        "error": "this org has not enabled Lava yet",
        "code": 403,
        "next_step": "ask an admin to enable it",
    },
    404: {"error": "no spend key 'sk_id_…' in this wallet", "code": 404},
    408: {
        "error": "the request body did not arrive within 30 s; nothing was done",
        "code": 408,
        "next_step": "send the whole body at once, then retry",
    },
    409: {"error": "this Idempotency-Key was used with a different request", "code": 409},
    413: {"error": "request body over 1000000 bytes", "code": 413},
    429: {"error": "too many requests", "code": 429, "retry_after_s": 1},
    500: {"error": "internal error", "code": 500},
    502: {"error": "the payment processor did not answer; nothing was charged", "code": 502},
    503: {"error": "this payment is being reconciled; retry shortly", "code": 503},
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for these statuses, each with the flat error model."""
    every = sorted(set(statuses))
    return {
        status: {
            "model": Error,
            "description": STATUS_MEANINGS[status],
            "content": {"application/json": {"example": ERROR_EXAMPLES[status]}},
        }
        for status in every
    }


def validation_message(errors: Sequence[Mapping[str, Any]], *, fields: Iterable[str] = ()) -> str:
    """One line for the first of pydantic's errors: `"<field>: <what is wrong>"`.

    `fields` (the body's known fields) is named in the message for an unknown one.
    """
    if not errors:
        return "the request is not valid"
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    # A union's branches add their type to the path ("function-plain[…]", "str"): not a field.
    location = [part for part in location if "[" not in part and part not in ("str", "int", "float")]
    name = ".".join(location)[:80] or "request body"
    kind = first.get("type", "")
    message = str(first.get("msg", "is not valid"))
    if kind == "extra_forbidden":
        known = sorted(fields)
        hint = f"; the fields are: {', '.join(known)}" if known and len(location) == 1 else ""
        return f"unknown field: {name}{hint}"
    if kind == "missing":
        return f"{name}: is required"
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if message.startswith(f"{name} "):  # the core's own words already name the field
        return message
    return f"{name}: {message}"


def validation_error_message(error: ValidationError, *, fields: Iterable[str] = ()) -> str:
    """`validation_message` for a `ValidationError` raised by `Model.model_validate`."""
    return validation_message(error.errors(include_url=False), fields=fields)
