"""Spend keys (DESIGN §6): what `POST`/`PUT /v1/spend_keys` take and every answer shows.

Create takes every field optionally (missing: no limits, the OpenAI shape, active). Update
changes only the fields given, and inside a limit only the parts given: `{"spend_limit":
{"amount": "5.00"}}` keeps the key's cycle; `null` removes a limit. Which fields a client
sent is the model's `model_fields_set`, so "left out" and "set to null" stay different.
The rules that need the catalog or the clock (a provider the catalog knows, an expiry in
the future) are the core's (`core.spend_keys`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from lava_mcp.contract.base import Amount, Body, Cost, Dollars, Moment, Shape

Cycle = Literal["daily", "weekly", "monthly", "total"]
RequestShape = Literal["openai", "anthropic"]
MAX_NAME_LENGTH = 200
MAX_LIST_ITEMS = 200
MAX_RPM = 1_000_000
MAX_REQUEST_COUNT = 1_000_000_000


def _name_in_list(name: str) -> str:
    if not name.strip():
        raise ValueError("must be a non-empty name")
    return name.strip()


def _distinct(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


NameList = Annotated[
    list[
        Annotated[
            str,
            Field(min_length=1, max_length=200, json_schema_extra={"pattern": r"\S"}),
            AfterValidator(_name_in_list),
        ]
    ],
    Field(max_length=MAX_LIST_ITEMS),
    AfterValidator(_distinct),
]


class SpendLimitInput(Body):
    """At most `amount` dollars per `cycle` (UTC; weeks from Monday). Create: cycle
    defaults to `total`; update: a part left out keeps the key's."""

    amount: Amount | None = None
    cycle: Cycle | None = None


class RequestLimitInput(Body):
    count: Annotated[int, Field(ge=1, le=MAX_REQUEST_COUNT)] | None = None
    cycle: Cycle | None = None


class RateLimitInput(Body):
    """A token bucket: `rpm` per minute, bursts of up to `burst` (default: rpm)."""

    rpm: Annotated[int, Field(ge=1, le=MAX_RPM)] | None = None
    burst: Annotated[int, Field(ge=1, le=MAX_RPM)] | None = None


class NewSpendLimit(SpendLimitInput):
    """A new key's spend limit: the amount is required; the cycle defaults to `total`."""

    amount: Amount


class NewRequestLimit(RequestLimitInput):
    """A new key's request limit: the count is required; the cycle defaults to `total`."""

    count: Annotated[int, Field(ge=1, le=MAX_REQUEST_COUNT)]


class NewRateLimit(RateLimitInput):
    """A new key's rate limit: rpm is required; burst defaults to rpm."""

    rpm: Annotated[int, Field(ge=1, le=MAX_RPM)]


class SpendKeyFields(Body):
    name: Annotated[str, Field(max_length=MAX_NAME_LENGTH)] | None = Field(
        default=None, examples=["Agent - Production"]
    )
    allowed_providers: NameList | None = Field(
        default=None, description="Services from the catalog; null: all.", examples=[["openai", "anthropic"]]
    )
    allowed_models: NameList | None = Field(
        default=None, description="null: all.", examples=[["gpt-4o-mini"]]
    )
    request_shape: RequestShape | None = None
    spend_limit: SpendLimitInput | None = None
    request_limit: RequestLimitInput | None = None
    rate_limit: RateLimitInput | None = None
    expires_at: (
        Annotated[str, Field(min_length=1, max_length=64, json_schema_extra={"format": "date-time"})] | None
    ) = Field(
        default=None, description="ISO 8601 date-time (UTC without an offset), in the future; null: never."
    )
    status: Literal["active", "paused"] | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _not_revoked(cls, value: object) -> object:
        if value == "revoked":
            raise ValueError("revoke a key with DELETE /v1/spend_keys/{id} (`lava-mcp keys revoke`)")
        return value

    @field_validator("expires_at")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        if value is not None:
            parse_expiry(value)
        return value


class SpendKeyCreate(SpendKeyFields):
    """`POST /v1/spend_keys`. Every field optional; a limit given is whole."""

    spend_limit: NewSpendLimit | None = None
    request_limit: NewRequestLimit | None = None
    rate_limit: NewRateLimit | None = None

    model_config = SpendKeyFields.model_config | {
        "json_schema_extra": {
            "examples": [
                {
                    "name": "Agent - Production",
                    "allowed_providers": ["openai", "anthropic"],
                    "allowed_models": ["gpt-4o-mini"],
                    "spend_limit": {"amount": "50.00", "cycle": "monthly"},
                    "rate_limit": {"rpm": 60},
                }
            ]
        }
    }


class SpendKeyUpdate(SpendKeyFields):
    """`PUT /v1/spend_keys/{id}`: only the fields (and limit parts) given change."""

    model_config = SpendKeyFields.model_config | {
        "json_schema_extra": {"examples": [{"spend_limit": {"amount": "5.00"}}, {"status": "paused"}]}
    }


def parse_expiry(value: str) -> datetime:
    """An ISO 8601 date-time, as UTC (no offset: UTC, like every time here)."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time, like 2026-12-31T23:59:59Z") from None
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# -- what the server answers -----------------------------------------------------------------


class SpendLimit(Shape):
    amount: Dollars
    cycle: Cycle


class RequestLimit(Shape):
    count: int
    cycle: Cycle


class RateLimit(Shape):
    rpm: int
    burst: int | None = None


class SpendKey(Shape):
    """A spend key. `key` is the secret: present only in the answer to create and rotate."""

    spend_key_id: str = Field(examples=["sk_id_01a2088fc5c4a4e635db3ed8a15d"])
    key_preview: str = Field(examples=["lava_sk_a1b2c3d4****"])
    wallet_id: str
    name: str
    allowed_providers: list[str] | None
    allowed_models: list[str] | None
    request_shape: RequestShape
    spend_limit: SpendLimit | None
    request_limit: RequestLimit | None
    rate_limit: RateLimit | None
    expires_at: Moment | None
    status: Literal["active", "paused", "revoked"]
    current_spend: Cost
    total_spend: Cost
    current_requests: int
    total_requests: int
    last_used_at: Moment | None
    created_at: Moment
    key: str | None = Field(default=None, description="The secret, shown once (create and rotate).")

    def __repr__(self) -> str:  # never print a secret by accident
        return f"SpendKey(spend_key_id={self.spend_key_id!r}, key_preview={self.key_preview!r}, name={self.name!r})"

    __str__ = __repr__


class SpendKeyList(Shape):
    data: list[SpendKey]
    has_more: bool
    next_cursor: str | None
