"""`lava-mcp stdio` as a thin client of a lava-mcp server (`LAVA_SERVER_URL`, a team's).

No local database is opened. Each MCP request that arrives on stdin is forwarded to the
server's own MCP endpoint (`<LAVA_SERVER_URL>/mcp`, streamable HTTP) with the wallet key
as the bearer token, and its answer is passed back unchanged — so the tools, their
schemas, their exact JSON (errors included) and every link in them are the server's, and
its webhooks credit the balance the chat reads. Forwarding whole MCP requests rather than
re-building each tool on the REST API keeps one implementation of every tool's contract.

The wallet key is a bearer secret: it is sent only to an `https://` server, or over plain
`http://` to this computer (a loopback host). Any other LAVA_SERVER_URL is refused at
start, and every tool call answers that refusal. A trailing `/mcp` in it is accepted.

The stdio server starts first and each request opens its own session with the server, so
the chat's handshake works while the server is down or restarting. If the server can't be
reached, the tool answers the documented error JSON with code 502 and what to check (and
the tool list is this version's own); if it refuses the key, code 401. Nothing was done
locally either way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    Tool,
)

from lava_mcp.config import Settings
from lava_mcp.errors import BadRequest, LavaError, Unauthorized, UpstreamError

logger = logging.getLogger("lava_mcp.thin_client")

# A paid call may wait on its provider for the upstream timeout; the hop to the server adds little.
FORWARD_TIMEOUT_MARGIN_S = 30.0
# What a forwarded request can fail with (the SDK's client raises groups of them, too).
FORWARDING_FAILURES = (MCPError, httpx2.HTTPError, OSError, RuntimeError, LavaError, BaseExceptionGroup)


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


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_endpoint(server_url: str) -> str:
    """The server's MCP endpoint for LAVA_SERVER_URL (with or without its `/mcp`).

    Raises: BadRequest unless the URL is https://, or http:// to a loopback host (the
    wallet key would cross the network in the clear).
    """
    parts = urlsplit(server_url.strip())
    host = parts.hostname or ""
    secure = parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host))
    if not host or not secure or parts.query or parts.fragment:
        raise BadRequest(
            f"LAVA_SERVER_URL {server_url!r} is refused: the wallet key is sent only to an https:// "
            "server (or to http:// on this computer: 127.0.0.1, ::1, localhost)",
            next_step="set LAVA_SERVER_URL to the server's https:// address, e.g. https://lava.example.com",
        )
    path = parts.path.rstrip("/")
    if path.endswith("/mcp") or path == "/mcp":
        path = path[: -len("/mcp")]
    return f"{parts.scheme}://{parts.netloc}{path}/mcp"


def _error_result(error: LavaError) -> CallToolResult:
    body = error.to_dict()
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(body))], structured_content=body, is_error=True
    )


def _leaves(error: BaseException) -> list[BaseException]:
    """The errors inside (nested) exception groups, or the error itself."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


class ThinClient:
    """Forwards MCP requests to the server, one upstream session per request."""

    def __init__(self, settings: Settings) -> None:
        assert settings.server_url, "a thin client needs LAVA_SERVER_URL"
        self.server_url = settings.server_url
        self.wallet_key = settings.wallet_key or ""
        self.timeout_s = settings.upstream_timeout_s + FORWARD_TIMEOUT_MARGIN_S
        self.fallback_tools: list[Tool] | None = None

    @contextlib.asynccontextmanager
    async def session(self, refused: list[int]) -> AsyncIterator[Client]:
        """An upstream session; HTTP 401 answers are noted in `refused` (the SDK's client
        reports them only as a generic error)."""
        endpoint = server_endpoint(self.server_url)

        async def note_refusal(response: httpx2.Response) -> None:
            if response.status_code == 401:
                refused.append(401)

        async with (
            httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {self.wallet_key}"},
                timeout=self.timeout_s,
                event_hooks={"response": [note_refusal]},
            ) as http_client,
            Client(streamable_http_client(endpoint, http_client=http_client)) as upstream,
        ):
            yield upstream

    def failure(self, error: BaseException, refused: list[int], what: str) -> LavaError:
        """The documented error for a request the server did not answer."""
        for leaf in _leaves(error):
            if isinstance(leaf, LavaError):
                return leaf
        logger.warning("forwarding %s to %s failed: %r", what, self.server_url, error)
        if refused:
            return Unauthorized(
                f"the lava-mcp server at {self.server_url} refused the wallet key",
                next_step="set LAVA_WALLET_KEY to your wallet key on that server (lava_wk_…)",
            )
        return UpstreamError(
            f"the lava-mcp server at {self.server_url} did not answer this call",
            next_step="check LAVA_SERVER_URL and that the server is running, then try again",
        )

    async def list_tools(self, context: Any, params: PaginatedRequestParams | None) -> ListToolsResult:
        refused: list[int] = []
        try:
            async with self.session(refused) as upstream:
                return await upstream.list_tools(cursor=params.cursor if params else None)
        except Exception as error:
            self.failure(error, refused, "tools/list")  # logged; the chat still gets the tools
            return ListToolsResult(tools=await self.local_tools())

    async def call_tool(self, context: Any, params: CallToolRequestParams) -> CallToolResult:
        refused: list[int] = []
        try:
            async with self.session(refused) as upstream:
                return await upstream.call_tool(params.name, params.arguments or {})
        except Exception as error:  # MCPError, httpx2 errors, groups of them, a refused URL
            if isinstance(error, FORWARDING_FAILURES):
                return _error_result(self.failure(error, refused, params.name))
            raise

    async def local_tools(self) -> list[Tool]:
        """This version's own tool list, for a chat that starts while the server is away
        (a tool call then answers 502 until it is back)."""
        if self.fallback_tools is None:
            from lava_mcp.runtime import Runtime
            from lava_mcp.transports.mcp_server import build_server

            # Listing builds the tools' schemas only: the ledger is never connected to.
            with tempfile.TemporaryDirectory(prefix="lava-mcp-tools-") as folder:
                unused = f"sqlite:///{Path(folder) / 'unused.db'}"
                runtime = Runtime.build(Settings(LAVA_DATABASE_URL=unused, _env_file=None))
                try:
                    self.fallback_tools = list(await build_server(runtime).list_tools())
                finally:
                    await runtime.aclose()
        return self.fallback_tools


def build_thin_server(settings: Settings) -> Server[Any]:
    """The stdio-side MCP server that forwards to LAVA_SERVER_URL (no network until a request)."""
    from lava_mcp import __version__
    from lava_mcp.transports.mcp_server import INSTRUCTIONS

    thin = ThinClient(settings)
    return Server(
        "lava-mcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=thin.list_tools,
        on_call_tool=thin.call_tool,
    )


async def run_thin_client(settings: Settings) -> None:
    """Serve MCP on stdin/stdout by forwarding every tool request to the server."""
    try:
        server_endpoint(settings.server_url or "")
    except BadRequest as error:
        logger.error("%s", error.message)  # the chat hears it from every tool call too
    server = build_thin_server(settings)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
