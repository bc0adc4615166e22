"""What the wallet spent: daily totals (`GET /v1/usage`) and the per-request list
(`GET /v1/requests`), Lava's REST shapes (DESIGN §5)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lava_mcp.contract.base import Cost, Moment, Shape


class UsageTotals(Shape):
    total_requests: int
    total_usage_tokens: int
    total_cost: Cost


class UsageDay(UsageTotals):
    date: str = Field(examples=["2026-12-01"], json_schema_extra={"format": "date"})
    by_service: dict[str, UsageTotals]


class Usage(Shape):
    """Every day from `start` to `end` (default: the last 7 days), zero days included."""

    items: list[UsageDay]
    totals: UsageTotals


class ModelUsage(Shape):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_cost: Cost
    output_cost: Cost
    total_cost: Cost


class RequestRecord(Shape):
    request_id: str = Field(examples=["req_01a2088fc5c4a4e635db3ed8a15d"])
    status: Literal["pending", "completed", "error"]
    provider: str = Field(examples=["openai"])
    model: str | None = Field(examples=["gpt-4o-mini"])
    endpoint: str = Field(examples=["/v1/chat/completions"])
    spend_key_id: str | None
    model_usage: ModelUsage
    cost: Cost
    error: str | None
    created_at: Moment


class RequestList(Shape):
    data: list[RequestRecord]
    has_more: bool
    next_cursor: str | None
