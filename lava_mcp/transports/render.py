"""Rendering core results and errors into JSON: the one mapping every surface uses."""

from __future__ import annotations

from typing import Any

from lava_mcp.core import orgs
from lava_mcp.core.usage import Page, Summary
from lava_mcp.core.wallet import Balance
from lava_mcp.money import format_cost, format_dollars
from lava_mcp.store.models import RequestRecord


def list_json(data: list[Any], next_cursor: str | None = None) -> dict[str, Any]:
    """A REST list (DESIGN §5): `{"data", "has_more", "next_cursor"}`."""
    return {"data": data, "has_more": next_cursor is not None, "next_cursor": next_cursor}


def balance_json(balance: Balance) -> dict[str, Any]:
    """The balance every surface shows: what can be spent (balance less holds and any
    shortfall owed after a refund or dispute), what is held, and the money's mode."""
    body: dict[str, Any] = {
        "balance": format_dollars(balance.available_micros),
        "currency": "USD",
        "held": format_dollars(balance.held_micros),
    }
    if balance.shortfall_micros:
        body["shortfall"] = format_dollars(balance.shortfall_micros)
    if balance.mode == "sandbox":
        body["sandbox"] = True
    elif balance.mode == "test":
        body["test_mode"] = True
    return body


def balance_tool_json(balance: Balance, invitations: list[orgs.InvitationView]) -> dict[str, Any]:
    """The `get_balance` tool's JSON: the balance, and any org invitations awaiting an answer
    (`"org_invitations": [{"id", "org_id", "org_name", "role"}]`, only when there are some),
    so a chat can tell its user that an org asked them to join."""
    body = balance_json(balance)
    if invitations:
        body["org_invitations"] = [invitation.hint_json() for invitation in invitations]
    return body


def usage_summary_json(summary: Summary) -> dict[str, Any]:
    return {
        "since": summary.since.isoformat(),
        "until": summary.until.isoformat(),
        "days": [
            {
                "date": day.day.isoformat(),
                "spend": format_cost(day.spend_micros),
                "requests": day.requests,
                "by_service": {
                    service: {"spend": format_cost(total.spend_micros), "requests": total.requests}
                    for service, total in sorted(day.by_service.items())
                },
            }
            for day in summary.days
        ],
        "total_spend": format_cost(summary.total_spend_micros),
        "total_requests": summary.total_requests,
    }


def request_json(record: RequestRecord) -> dict[str, Any]:
    """A request in the MCP tool's shape (`list_requests`)."""
    body: dict[str, Any] = {
        "id": record.id,
        "created_at": iso(record.created_at),
        "service": record.service,
        "model": record.model,
        "cost": format_cost(record.cost_micros),
        "succeeded": record.status == "completed",
        "status": record.status,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
    }
    if record.error:
        body["error"] = record.error
    return body


def request_page_json(page: Page) -> dict[str, Any]:
    return {"requests": [request_json(r) for r in page.records], "next_cursor": page.next_cursor}


def iso(moment: Any) -> str | None:
    if moment is None:
        return None
    text: str = moment.isoformat().replace("+00:00", "Z")
    return text
