"""Typed results of the REST API (pydantic). Money stays a decimal string, as on the wire."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    # Newer servers may add fields; an older client must still read their answers.
    model_config = ConfigDict(extra="allow")


class SpendLimit(_Model):
    amount: str  # dollars, 2 decimals: "50.00"
    cycle: Literal["daily", "weekly", "monthly", "total"]


class RequestLimit(_Model):
    count: int
    cycle: Literal["daily", "weekly", "monthly", "total"]


class RateLimit(_Model):
    rpm: int
    burst: int | None = None


class SpendKey(_Model):
    """A spend key. `key` is the secret: set only on the result of create and rotate."""

    spend_key_id: str
    key_preview: str
    wallet_id: str
    name: str
    allowed_providers: list[str] | None
    allowed_models: list[str] | None
    request_shape: Literal["openai", "anthropic"]
    spend_limit: SpendLimit | None
    request_limit: RequestLimit | None
    rate_limit: RateLimit | None
    expires_at: str | None
    status: Literal["active", "paused", "revoked"]
    current_spend: str
    total_spend: str
    current_requests: int
    total_requests: int
    last_used_at: str | None
    created_at: str
    key: str | None = None

    def __repr__(self) -> str:  # never print a secret by accident
        return f"SpendKey(spend_key_id={self.spend_key_id!r}, key_preview={self.key_preview!r}, name={self.name!r})"

    __str__ = __repr__


class SpendKeyList(_Model):
    data: list[SpendKey]
    has_more: bool
    next_cursor: str | None


class Wallet(_Model):
    wallet_id: str
    balance: str  # available, 2 decimals
    held: str
    currency: str


class ModelUsage(_Model):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_cost: str
    output_cost: str
    total_cost: str


class RequestRecord(_Model):
    request_id: str
    status: Literal["pending", "completed", "error"]
    provider: str
    model: str | None
    endpoint: str
    spend_key_id: str | None
    model_usage: ModelUsage
    cost: str
    error: str | None
    created_at: str


class RequestList(_Model):
    data: list[RequestRecord]
    has_more: bool
    next_cursor: str | None


class Usage(_Model):
    items: list[dict[str, Any]]
    totals: dict[str, Any]
