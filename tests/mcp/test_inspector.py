"""The MCP Inspector's CLI as a second, independent client of `lava-mcp stdio` (issue 8):
it lists the tools in strict mode (every schema portable: no warnings, no errors) and calls
`get_balance` and `list_services`, over stdio, as the Inspector itself spawns the server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lava_mcp.config import Settings
from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from tests.conftest import fund
from tests.fake_provider import FakeProvider
from tests.mcp import test_transports
from tests.mcp.node_tools import NPX_TIMEOUT_S, child_environment, inspector_command
from tests.mcp.test_transports import installed_script


def inspect(
    settings: Settings, wallet_key: str, fake: FakeProvider, cwd: Path, *arguments: str
) -> subprocess.CompletedProcess[str]:
    """The Inspector's CLI, which spawns `lava-mcp stdio` with these variables itself."""
    server_environment = test_transports.child_environment(settings, wallet_key, fake)
    flags = [part for name, value in server_environment.items() for part in ("-e", f"{name}={value}")]
    return subprocess.run(
        inspector_command(*flags, installed_script(), "stdio", *arguments),
        env=child_environment(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=NPX_TIMEOUT_S,
    )


def problems(stderr: str) -> list[str]:
    """The Inspector's own reports, without npm's engine warnings about the system Node."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("npm warn")]


def test_the_inspector_lists_the_tools_in_strict_mode(
    runtime: Runtime, settings: Settings, new_wallet: wallet.NewWallet, fake: FakeProvider, tmp_path: Path
) -> None:
    listed = inspect(settings, new_wallet.wallet_key, fake, tmp_path, "--method", "tools/list", "--strict")
    assert listed.returncode == 0, listed.stderr
    assert problems(listed.stderr) == []  # strict mode found no portability problem at all
    tools = {tool["name"]: tool for tool in json.loads(listed.stdout)["tools"]}
    assert set(tools) == {
        "get_balance",
        "add_funds",
        "usage_summary",
        "list_requests",
        "list_services",
        "call_paid_service",
    }
    assert all(tool["title"] and tool["outputSchema"] for tool in tools.values())


def test_the_inspector_calls_tools(
    runtime: Runtime, settings: Settings, new_wallet: wallet.NewWallet, fake: FakeProvider, tmp_path: Path
) -> None:
    fund(runtime, new_wallet.wallet_id, "12.50")
    called = inspect(
        settings,
        new_wallet.wallet_key,
        fake,
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "get_balance",
    )
    assert called.returncode == 0, called.stderr
    answer = json.loads(called.stdout)
    assert answer["isError"] is False
    assert answer["structuredContent"]["balance"] == "12.50"
    assert json.loads(answer["content"][0]["text"]) == answer["structuredContent"]

    services = inspect(
        settings,
        new_wallet.wallet_key,
        fake,
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "list_services",
        "--tool-arg",
        "service=cheapchat",
    )
    assert services.returncode == 0, services.stderr
    [cheapchat] = json.loads(services.stdout)["structuredContent"]["services"]
    assert cheapchat["models"][0]["model"] == "cheap-1"
