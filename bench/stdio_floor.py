"""The floor under `lava-mcp stdio`'s get_balance round trip: the same MCP SDK, a server
with one tool that returns a constant, nothing else. The tool is named `get_balance` and
publishes lava-mcp's `get_balance` output schema, so the client does the same work (it
validates every answer's structured content against the tool's schema).

    uv run python bench/stdio_floor.py [--transport sdk|lava]

`bench/core.py` spawns this as the server and drives it with the same client loop it
drives `lava-mcp stdio` with, so the difference between the two figures is what lava-mcp
adds above the SDK's own pipeline (client, JSON-RPC session, stdio transport, server).

`--transport sdk` (the default) serves stdin/stdout with the SDK's `run_stdio_async()`, as
any MCP server written with it would; `--transport lava` serves them with lava-mcp's own
stdio streams (`lava_mcp.transports.stdio_streams`), to show what the transport alone costs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent

from lava_mcp.transports.tool_schemas import OUTPUT_SCHEMAS

# The same answer get_balance gives the bench's wallet.
BODY: dict[str, Any] = {"balance": "47.50", "currency": "USD", "held": "0.00", "sandbox": True}


def build() -> MCPServer:
    server = MCPServer("stdio-floor")

    @server.tool()
    async def get_balance() -> CallToolResult:
        """A constant balance."""
        return CallToolResult(
            content=[TextContent(type="text", text=json.dumps(BODY))], structured_content=BODY
        )

    tool = server._tool_manager.get_tool("get_balance")  # as lava-mcp publishes it (no public accessor)
    assert tool is not None
    tool.fn_metadata.output_schema = OUTPUT_SCHEMAS["get_balance"]
    return server


async def serve(transport: str) -> None:
    server = build()
    if transport == "sdk":
        await server.run_stdio_async()
        return
    from lava_mcp.transports.stdio_streams import run_stdio

    await run_stdio(server)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transport", choices=("sdk", "lava"), default="sdk")
    anyio.run(serve, parser.parse_args().transport)


if __name__ == "__main__":
    main()
