"""An in-memory MCP client for the wallet tools (the SDK's own `Client(server)`)."""

from __future__ import annotations

import json
from typing import Any

from mcp.client import Client
from mcp_types import CallToolResult

from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from lava_mcp.transports.mcp_server import build_server


def connect(runtime: Runtime, owner: wallet.NewWallet) -> Client:
    """`async with connect(...) as client` inside the test: the SDK's client runs a task
    group, which must be entered and left in one task (an async fixture is not)."""
    return Client(build_server(runtime, default_wallet_id=owner.wallet_id))


def body_of(result: CallToolResult) -> dict[str, Any]:
    """The tool's JSON: the text content, which must agree with the structured content."""
    assert len(result.content) == 1 and result.content[0].type == "text"
    parsed: dict[str, Any] = json.loads(result.content[0].text)
    assert result.structured_content == parsed
    return parsed


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    return body_of(result)


def error(result: CallToolResult, code: int) -> dict[str, Any]:
    assert result.is_error, result.content
    body = body_of(result)
    assert body["code"] == code and isinstance(body["error"], str) and body["error"], body
    return body
