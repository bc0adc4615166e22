"""The MCP server: six wallet tools over stdio, SSE and streamable HTTP.

Each tool parses its arguments, calls the core and renders the result. Arguments are
declared loosely (`Any` with a JSON schema) so that bad input reaches our own parsing and
comes back as the documented `{"error", "code"}` JSON, not as the SDK's validation text.
Any other failure (a bug, a database gone) is `{"error": "internal error", "code": 500,
"request_id": ...}`, logged with that id — never the SDK's "Error executing tool" text.

What the model reads is part of the contract: every tool has a title, annotations that
say truthfully what it does to the world, and an `outputSchema` for its success JSON
(`tool_schemas`); descriptions say when to ask the user first (a card is charged at once)
and what to tell them (SANDBOX money, a shortfall).
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

from lava_mcp.core import funding, oauth, orgs, services, usage
from lava_mcp.errors import BadRequest, InternalError, LavaError, Unauthorized
from lava_mcp.ids import new_id
from lava_mcp.money import float_as_written, format_cost, format_dollars, parse_amount
from lava_mcp.runtime import Runtime
from lava_mcp.store.db import unavailable
from lava_mcp.transports import render
from lava_mcp.transports.oauth import require_scope, wallet_of
from lava_mcp.transports.tool_schemas import NUMBER_OR_STRING, OUTPUT_SCHEMAS

INSTRUCTIONS = """\
Lava is the user's prepaid wallet for AI usage. Amounts are US dollars as decimal strings.
get_balance shows what is available; add_funds tops the wallet up (call it without an
amount first to see saved cards and limits, and confirm the amount and card with the user
before charging); usage_summary and list_requests explain spending; list_services shows
what can be bought and its prices; call_paid_service runs a paid model or data service,
holding its maximum cost first and charging only what it used. When an answer has
"sandbox": true, tell the user it is SANDBOX money (test cards, no real money). When an
answer has a "notice", pass it on to the user. Errors come back as {"error", "code"} JSON."""

# Reading the ledger changes nothing and reaches nothing outside this server.
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
# add_funds charges the user's card: money leaves it at once and the tool cannot take it
# back (a refund is the processor's). A retry with the same idempotency_key (or an identical
# call within the retry window) charges once, but in general a repeat charges again.
MOVES_CARD_MONEY = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
)
# call_paid_service spends wallet money on a third-party provider, once per call.
SPENDS_WALLET_MONEY = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
)
# Keys of a paid call's result `_meta` (the amounts are 6-decimal US dollar strings).
META_REQUEST_ID = "lava-mcp/request_id"
META_HELD = "lava-mcp/held"
META_CHARGED = "lava-mcp/charged"

logger = logging.getLogger("lava_mcp.mcp")


def _arg(description: str, schema: dict[str, Any]) -> Any:
    return Field(description=description, json_schema_extra=schema)


def result(body: dict[str, Any], *, meta: dict[str, Any] | None = None) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(body))], structured_content=body, meta=meta
    )


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


def build_server(
    runtime: Runtime,
    *,
    default_wallet_id: str | None = None,
    notice: str | None = None,
    **options: Any,
) -> MCPServer:
    """The MCP server for `runtime`.

    Over HTTP the caller is the wallet that owns the bearer token (an OAuth access token or
    the wallet key itself); over stdio (and in memory) it is `default_wallet_id`, from
    `LAVA_WALLET_KEY`. A `notice` (something the user should hear once, such as where a
    wallet made for them keeps its key) is added to the first successful tool answer as
    `"notice"`.
    """
    server = MCPServer("lava-mcp", instructions=INSTRUCTIONS, version=_version(), **options)
    pending_notice = [notice] if notice else []

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
        work: Callable[[str], Awaitable[dict[str, Any]]],
        *,
        request_id: str | None = None,
        meta: Callable[[], dict[str, Any] | None] = lambda: None,
    ) -> CallToolResult:
        request_id = request_id or new_id("req")
        try:
            body = await work(caller())
            if pending_notice:
                body = {**body, "notice": pending_notice.pop()}
            return result(body, meta=meta())
        except LavaError as error:
            return error_result(error)
        except Exception as failure:
            if (busy := unavailable(failure)) is not None:
                logger.warning("MCP tool call %s: %s (%s)", request_id, busy.message, failure)
                return error_result(busy)
            logger.exception("MCP tool call %s failed", request_id)
            return error_result(InternalError("internal error", extra={"request_id": request_id}))

    async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(function, *args)

    @server.tool(title="Lava wallet balance", annotations=READ_ONLY)
    async def get_balance() -> CallToolResult:
        """The Lava wallet's balance in US dollars: `balance` is what can be spent now (the
        money in the wallet less what is held for paid calls in flight, shown in `held`). When
        the answer has "sandbox": true, tell the user it is SANDBOX money (test cards, no real
        money). When it has a "notice", pass it on to the user."""

        async def work(wallet_id: str) -> dict[str, Any]:
            # One raw statement, read on the event loop on SQLite (`funding.balance_and_invited`);
            # the invitations themselves only when some await an answer (rarely).
            balance, invited = await funding.balance_and_invited(runtime, wallet_id)
            pending = await in_thread(orgs.pending_invitations, runtime.db, wallet_id) if invited else []
            return render.balance_tool_json(balance, pending)

        return await run(work)

    @server.tool(title="Add funds to the Lava wallet", annotations=MOVES_CARD_MONEY)
    async def add_funds(
        amount: Annotated[
            Any,
            _arg(
                'US dollars to add, 10.00 to 10000.00 (a number or a string like "25.00"). '
                "Omit it to see saved cards, the balance and the limits.",
                {"anyOf": [*NUMBER_OR_STRING, {"type": "null"}]},
            ),
        ] = None,
        payment_method_id: Annotated[
            Any,
            _arg("A saved card's id (from payment_methods); default: the default card.", {"type": "string"}),
        ] = None,
        use_checkout: Annotated[
            Any,
            _arg(
                "True for a Checkout link to pay with a new card, even when a card is saved.",
                {"type": "boolean"},
            ),
        ] = None,
        idempotency_key: Annotated[
            Any,
            _arg(
                "Optional: any unique string for this top-up. Retrying with the same key returns "
                "the first result and never charges twice.",
                {"type": "string"},
            ),
        ] = None,
        ctx: Context | None = None,
    ) -> CallToolResult:
        """Add money to the user's Lava wallet. With a saved card, this CHARGES THE CARD
        IMMEDIATELY: before calling it with an amount, confirm the amount and the card (brand
        and last 4 digits) with the user. Call it without an amount first to see the saved
        cards, the balance and the limits (10.00 to 10000.00 USD). Outcomes, by `status`:
        "completed" (money added, new balance shown); "checkout_required" (no saved card, or
        use_checkout: give the user `checkout_url` to pay on; the balance rises once they have
        paid, so call get_balance afterwards); "requires_action" (the bank wants the user to
        confirm at `redirect_url`); "processing" (the bank has not decided yet: the money is
        added once it does, so check get_balance later rather than charging again). A decline is a 402 error with the bank's reason and a next
        step: tell the user both. When the answer has "sandbox": true, tell the user it is
        SANDBOX money: only test cards work and no real money moves."""

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

    @server.tool(title="Lava usage by day", annotations=READ_ONLY)
    async def usage_summary(
        since: Annotated[
            Any,
            _arg("First day, YYYY-MM-DD (default: 6 days before today, UTC).", {"type": "string"}),
        ] = None,
        until: Annotated[
            Any,
            _arg("Last day, YYYY-MM-DD (default: today, UTC).", {"type": "string"}),
        ] = None,
    ) -> CallToolResult:
        """Spend (US dollars, 6 decimals) and request counts per day, every day of the window
        listed (zero days included), and per service. Only calls that ran count; refused
        calls are in list_requests."""

        async def work(wallet_id: str) -> dict[str, Any]:
            summary = await in_thread(lambda: usage.summary(runtime.db, wallet_id, since=since, until=until))
            return render.usage_summary_json(summary)

        return await run(work)

    @server.tool(title="Recent Lava requests", annotations=READ_ONLY)
    async def list_requests(
        limit: Annotated[
            Any,
            _arg("How many, 1 to 100 (default 20).", {"type": "integer", "minimum": 1, "maximum": 100}),
        ] = None,
        before: Annotated[Any, _arg("The next_cursor of the previous page.", {"type": "string"})] = None,
    ) -> CallToolResult:
        """Recent metered calls, newest first: service, model, cost, success, tokens, and why
        a refused or failed call did not run. Page with `before` = the previous next_cursor."""

        async def work(wallet_id: str) -> dict[str, Any]:
            page = await in_thread(
                lambda: usage.list_requests(runtime.db, wallet_id, limit=limit, before=before)
            )
            return render.request_page_json(page)

        return await run(work)

    @server.tool(title="List Lava services and prices", annotations=READ_ONLY)
    async def list_services(
        service: Annotated[
            Any, _arg("Only this service (an id from an earlier answer); default: all.", {"type": "string"})
        ] = None,
    ) -> CallToolResult:
        """What call_paid_service can run: each service's id, whether it is free, how it is
        priced (per token, per call, free) and its models with prices in US dollars per
        million input and output tokens. Call it before call_paid_service to choose a service
        and model and to tell the user what a call may cost."""

        async def work(wallet_id: str) -> dict[str, Any]:
            listings = services.list_services(runtime.catalog, service)
            return {"services": [services.listing_json(listing) for listing in listings]}

        return await run(work)

    @server.tool(title="Call a paid model or data service", annotations=SPENDS_WALLET_MONEY)
    async def call_paid_service(
        service: Annotated[
            Any,
            _arg("A service id from list_services, e.g. openai, anthropic, ollama.", {"type": "string"}),
        ] = None,
        input: Annotated[
            Any,
            _arg(
                'The provider\'s request body in its own shape, e.g. {"messages": [...], '
                '"max_tokens": 200} for openai and anthropic; the JSON parameters for a data service.',
                {"type": "object"},
            ),
        ] = None,
        model: Annotated[
            Any, _arg("A model from list_services, e.g. gpt-4o-mini.", {"type": "string"})
        ] = None,
        max_cost: Annotated[
            Any,
            _arg(
                'The most this call may cost, in US dollars (a number such as 0.05 or a string such as "0.05", '
                "up to 6 decimals): the call is refused with 402 before it runs if its hold would exceed it.",
                {"anyOf": NUMBER_OR_STRING},
            ),
        ] = None,
    ) -> CallToolResult:
        """Run a model or data service, paid from the Lava wallet (free services cost nothing
        but are still recorded). Call list_services first to see the services, their models
        and prices. Before it runs, the call holds the most it could cost (from the prompt's
        size and max_tokens: set max_tokens to keep the hold small); afterwards it is charged
        what the provider reports it used, never more than the hold, and the rest is released.
        A 402 "Insufficient wallet balance" means the wallet cannot cover the hold: nothing
        ran and nothing was charged; tell the user their balance (get_balance) is short of
        what the call needs and offer to add funds with add_funds. `max_cost` caps the hold."""

        request_id = new_id("req")
        settled: list[Any] = []

        async def work(wallet_id: str) -> dict[str, Any]:
            require_scope(get_access_token(), oauth.SPEND)
            max_cost_micros = (
                parse_amount(float_as_written(max_cost), field="max_cost", decimals=6)
                if max_cost is not None
                else None
            )
            outcome = await runtime.metering.call(
                wallet_id=wallet_id,
                service_id=service,
                model=model,
                body=input,
                max_cost_micros=max_cost_micros,
                request_id=request_id,
            )
            settled.append(outcome.settlement)
            return {
                "result": outcome.result,
                "cost": format_cost(outcome.settlement.cost.total_micros),
                "balance": format_dollars(outcome.settlement.available_micros),
                "request_id": outcome.settlement.request_id,
            }

        def meta() -> dict[str, Any] | None:
            if not settled:
                return None
            settlement = settled[0]
            return {
                META_REQUEST_ID: settlement.request_id,
                META_HELD: format_cost(settlement.held_micros),
                META_CHARGED: format_cost(settlement.cost.total_micros),
            }

        return await run(work, request_id=request_id, meta=meta)

    _declare_required(server, "call_paid_service", ["service", "input"])
    for name, schema in OUTPUT_SCHEMAS.items():
        _publish_output_schema(server, name, schema)
    return server


def _publish_output_schema(server: MCPServer, tool_name: str, schema: dict[str, Any]) -> None:
    """Advertise the tool's success JSON. Tools return their own `CallToolResult` (errors
    must be exact JSON), so the schema is published without a model to validate against:
    the tests validate every answer against it through the SDK's client instead."""
    tool = server._tool_manager.get_tool(tool_name)  # no public accessor in mcp 2.3
    assert tool is not None, tool_name
    tool.fn_metadata.output_schema = schema
    # Docstrings are indented source text; the model reads one paragraph.
    tool.description = " ".join((tool.description or "").split())


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
