"""The MCP server: five wallet tools over stdio, SSE and streamable HTTP.

Each tool parses its arguments, calls the core and renders the result. Arguments are
declared loosely (`Any` with a JSON schema) so that bad input reaches our own parsing and
comes back as the documented `{"error", "code"}` JSON, not as the SDK's validation text.
Any other failure (a bug, a database gone) is `{"error": "internal error", "code": 500,
"request_id": ...}`, logged with that id — never the SDK's "Error executing tool" text.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio.to_thread
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from lava_mcp.core import funding, oauth, usage
from lava_mcp.errors import BadRequest, InternalError, LavaError, Unauthorized
from lava_mcp.ids import new_id
from lava_mcp.money import format_cost, format_dollars, parse_amount
from lava_mcp.runtime import Runtime
from lava_mcp.transports import render
from lava_mcp.transports.oauth import require_scope, wallet_of

INSTRUCTIONS = """\
Lava is the user's prepaid wallet for AI usage. Amounts are US dollars as decimal strings.
get_balance shows what is available; add_funds tops the wallet up (call it without an
amount first to see saved cards and limits); usage_summary and list_requests explain
spending; call_paid_service runs a paid model or data service, holding its maximum cost
first and charging only what it used. Errors come back as {"error", "code"} JSON."""


READ_ONLY = ToolAnnotations(read_only_hint=True)

logger = logging.getLogger("lava_mcp.mcp")


def _arg(description: str, schema: dict[str, Any]) -> Any:
    return Field(description=description, json_schema_extra=schema)


def result(body: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(body))], structured_content=body)


def error_result(error: LavaError) -> CallToolResult:
    body = error.to_dict()
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(body))],
        structured_content=body,
        is_error=True,
    )


async def offer_payment_page(ctx: Context, body: dict[str, Any]) -> None:
    """Where the client supports URL elicitation, ask it to open the Checkout (or 3-D Secure)
    page. The URL is in the tool result either way: a client that can't be asked, or a user
    who declines, changes nothing."""
    url = body.get("checkout_url") or body.get("redirect_url")
    capabilities = ctx.client_capabilities
    if not isinstance(url, str) or capabilities is None or capabilities.elicitation is None:
        return
    if capabilities.elicitation.url is None:
        return
    label = " (SANDBOX: test cards only)" if body.get("sandbox") else ""
    # NoBackChannelError (an MCPError): this connection can't carry server-initiated requests.
    with contextlib.suppress(MCPError):
        await ctx.elicit_url(
            f"Open this page to pay ${body.get('amount')} into your Lava wallet{label}.",
            url,
            elicitation_id=str(body.get("payment_id")),
        )


def build_server(runtime: Runtime, *, default_wallet_id: str | None = None, **options: Any) -> MCPServer:
    """The MCP server for `runtime`.

    Over HTTP the caller is the wallet that owns the bearer token (an OAuth access token or
    the wallet key itself); over stdio (and
    in memory) it is `default_wallet_id`, from `LAVA_WALLET_KEY`.
    """
    server = MCPServer("lava-mcp", instructions=INSTRUCTIONS, version=_version(), **options)

    def caller() -> str:
        token = get_access_token()
        if token is not None:
            return wallet_of(token)
        if default_wallet_id is None:
            raise Unauthorized(
                "no wallet configured for this MCP server",
                next_step="set LAVA_WALLET_KEY to your wallet key (lava-mcp wallet create prints one)",
            )
        return default_wallet_id

    async def run(
        work: Callable[[str], Awaitable[dict[str, Any]]], *, request_id: str | None = None
    ) -> CallToolResult:
        request_id = request_id or new_id("req")
        try:
            return result(await work(caller()))
        except LavaError as error:
            return error_result(error)
        except Exception:
            logger.exception("MCP tool call %s failed", request_id)
            return error_result(InternalError("internal error", extra={"request_id": request_id}))

    async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(function, *args)

    @server.tool(annotations=READ_ONLY)
    async def get_balance() -> CallToolResult:
        """The wallet's available balance in USD (balance minus money held for calls in flight)."""

        async def work(wallet_id: str) -> dict[str, Any]:
            balance = await funding.balance(runtime, wallet_id)
            return await anyio.to_thread.run_sync(render.balance_tool_json, runtime.db, balance)

        return await run(work)

    @server.tool()
    async def add_funds(
        amount: Annotated[
            Any,
            _arg(
                'US dollars to add, 10.00 to 10000.00 (a number or a string like "25.00"). '
                "Omit it to see saved cards, the balance and the limits.",
                {"type": ["number", "string", "null"]},
            ),
        ] = None,
        payment_method_id: Annotated[
            Any, _arg("A saved card's id; default: the default card.", {"type": ["string", "null"]})
        ] = None,
        use_checkout: Annotated[
            Any,
            _arg(
                "True for a Stripe Checkout link even when a card is saved.",
                {"type": ["boolean", "null"]},
            ),
        ] = None,
        idempotency_key: Annotated[
            Any,
            _arg(
                "Optional: any unique string for this top-up. Retrying with the same key returns "
                "the first result and never charges twice.",
                {"type": ["string", "null"]},
            ),
        ] = None,
        ctx: Context | None = None,
    ) -> CallToolResult:
        """Add money to the wallet: charges a saved card now, or returns a Checkout link to pay."""

        async def work(wallet_id: str) -> dict[str, Any]:
            require_scope(get_access_token(), oauth.FUND)
            if use_checkout is not None and not isinstance(use_checkout, bool):
                raise BadRequest("use_checkout must be true or false")
            if payment_method_id is not None and not isinstance(payment_method_id, str):
                raise BadRequest("payment_method_id must be a string")
            if idempotency_key is not None and not isinstance(idempotency_key, str):
                raise BadRequest("idempotency_key must be a string")
            body = await funding.add_funds(
                runtime,
                wallet_id,
                amount=amount,
                payment_method_id=payment_method_id,
                use_checkout=bool(use_checkout),
                idempotency_key=idempotency_key,
            )
            if ctx is not None:
                await offer_payment_page(ctx, body)
            return body

        return await run(work)

    @server.tool(annotations=READ_ONLY)
    async def usage_summary(
        since: Annotated[
            Any,
            _arg(
                "First day, ISO date (default: 6 days before today, UTC).",
                {"type": ["string", "null"], "format": "date"},
            ),
        ] = None,
        until: Annotated[
            Any,
            _arg(
                "Last day, ISO date (default: today, UTC).",
                {"type": ["string", "null"], "format": "date"},
            ),
        ] = None,
    ) -> CallToolResult:
        """Spend and request counts per day (every day listed) and per service."""

        async def work(wallet_id: str) -> dict[str, Any]:
            summary = await in_thread(lambda: usage.summary(runtime.db, wallet_id, since=since, until=until))
            return render.usage_summary_json(summary)

        return await run(work)

    @server.tool(annotations=READ_ONLY)
    async def list_requests(
        limit: Annotated[
            Any,
            _arg(
                "How many, 1 to 100 (default 20).",
                {"type": ["integer", "null"], "minimum": 1, "maximum": 100},
            ),
        ] = None,
        before: Annotated[
            Any, _arg("The next_cursor of the previous page.", {"type": ["string", "null"]})
        ] = None,
    ) -> CallToolResult:
        """Recent metered calls, newest first: service, model, cost, success, tokens, error."""

        async def work(wallet_id: str) -> dict[str, Any]:
            page = await in_thread(
                lambda: usage.list_requests(runtime.db, wallet_id, limit=limit, before=before)
            )
            return render.request_page_json(page)

        return await run(work)

    @server.tool()
    async def call_paid_service(
        service: Annotated[
            Any, _arg("A catalog service id, e.g. openai, anthropic, ollama.", {"type": "string"})
        ] = None,
        input: Annotated[
            Any,
            _arg(
                'The provider\'s request body in its own shape, e.g. {"messages": [...], '
                '"max_tokens": 200} for openai.',
                {"type": "object"},
            ),
        ] = None,
        model: Annotated[Any, _arg("The model, e.g. gpt-4o-mini.", {"type": ["string", "null"]})] = None,
        max_cost: Annotated[
            Any,
            _arg(
                "Refuse (402) before running if the call could cost more than this many USD.",
                {"type": ["number", "string", "null"]},
            ),
        ] = None,
    ) -> CallToolResult:
        """Run a paid (or free) service: holds its maximum cost, calls it, charges what it used."""

        request_id = new_id("req")

        async def work(wallet_id: str) -> dict[str, Any]:
            require_scope(get_access_token(), oauth.SPEND)
            max_cost_micros = (
                parse_amount(max_cost, field="max_cost", decimals=6) if max_cost is not None else None
            )
            outcome = await runtime.metering.call(
                wallet_id=wallet_id,
                service_id=service,
                model=model,
                body=input,
                max_cost_micros=max_cost_micros,
                request_id=request_id,
            )
            return {
                "result": outcome.result,
                "cost": format_cost(outcome.settlement.cost.total_micros),
                "balance": format_dollars(outcome.settlement.available_micros),
                "request_id": outcome.settlement.request_id,
            }

        return await run(work, request_id=request_id)

    _declare_required(server, "call_paid_service", ["service", "input"])
    return server


def _declare_required(server: MCPServer, tool_name: str, names: list[str]) -> None:
    """Mark arguments required in the published schema while the function defaults them to
    None: a call that omits them then reaches our parsing and gets the documented 400 JSON
    instead of the SDK's validation text."""
    tool = server._tool_manager.get_tool(tool_name)  # no public accessor in mcp 2.3
    assert tool is not None, tool_name
    tool.parameters["required"] = names
    for name in names:
        tool.parameters["properties"][name].pop("default", None)


def _version() -> str:
    from lava_mcp import __version__

    return __version__
