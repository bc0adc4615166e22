"""`lava-mcp stdio` as a thin client of a lava-mcp server (`LAVA_SERVER_URL`, a team's).

No local database is opened. Each MCP request that arrives on stdin is forwarded to the
server's own MCP endpoint (`<LAVA_SERVER_URL>/mcp`, streamable HTTP) with the wallet key
as the bearer token, and its answer is passed back unchanged — so the tools, their
schemas, their exact JSON (errors included) and every link in them are the server's, and
its webhooks credit the balance the chat reads. Forwarding whole MCP requests rather than
re-building each tool on the REST API keeps one implementation of every tool's contract.

If the server can't be reached or refuses a call mid-session, the tool answers the
documented error JSON with code 502 and what to check; nothing was done locally.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
)

from lava_mcp.config import Settings
from lava_mcp.errors import Unauthorized, UpstreamError

logger = logging.getLogger("lava_mcp.thin_client")

# A paid call may wait on its provider for the upstream timeout; the hop to the server adds little.
FORWARD_TIMEOUT_MARGIN_S = 30.0


def require_wallet_key(settings: Settings) -> str:
    """The key the server knows this wallet by.

    Raises: Unauthorized when LAVA_SERVER_URL is set without LAVA_WALLET_KEY.
    """
    if not settings.wallet_key:
        raise Unauthorized(
            "LAVA_SERVER_URL needs the wallet key that server gave you",
            next_step="set LAVA_WALLET_KEY (lava_wk_…) to your wallet key on that server",
        )
    return settings.wallet_key


async def run_thin_client(settings: Settings) -> None:
    """Serve MCP on stdin/stdout by forwarding every tool request to the server."""
    from lava_mcp import __version__
    from lava_mcp.transports.mcp_server import INSTRUCTIONS

    assert settings.server_url, "run_thin_client needs LAVA_SERVER_URL"
    endpoint = settings.server_url.rstrip("/") + "/mcp"
    headers = {"Authorization": f"Bearer {require_wallet_key(settings)}"}
    timeout_s = settings.upstream_timeout_s + FORWARD_TIMEOUT_MARGIN_S
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout_s) as http_client,
        Client(streamable_http_client(endpoint, http_client=http_client)) as upstream,
    ):

        async def list_tools(context: Any, params: PaginatedRequestParams | None) -> ListToolsResult:
            return await upstream.list_tools(cursor=params.cursor if params else None)

        async def call_tool(context: Any, params: CallToolRequestParams) -> CallToolResult:
            try:
                return await upstream.call_tool(params.name, params.arguments or {})
            except (MCPError, httpx2.HTTPError, RuntimeError) as error:
                logger.warning("forwarding %s to %s failed: %r", params.name, endpoint, error)
                failure = UpstreamError(
                    f"the lava-mcp server at {settings.server_url} did not answer this call",
                    next_step="check LAVA_SERVER_URL and that the server is running, then try again",
                )
                body = failure.to_dict()
                return CallToolResult(
                    content=[TextContent(type="text", text=json.dumps(body))],
                    structured_content=body,
                    is_error=True,
                )

        server: Server[Any] = Server(
            "lava-mcp",
            version=__version__,
            instructions=INSTRUCTIONS,
            on_list_tools=list_tools,
            on_call_tool=call_tool,
        )
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
