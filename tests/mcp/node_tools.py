"""The Node tools some MCP tests drive: `npx` for the MCPB packer and the MCP Inspector.

The CI machines have `npx` (`.ci/run` sets LAVA_TEST_REQUIRE_NPX=1, so a missing one fails
there); on a development machine without Node those tests are skipped, saying why.
Versions are pinned, so every run drives the same tools. The Inspector's current CLI
needs Node ≥ 22.19: the npm package `node@22` supplies one beside the command, without
touching the machine's Node (npm prints EBADENGINE warnings about the system Node while
resolving; they are harmless).
"""

from __future__ import annotations

import os
import shutil

import pytest

MCPB = "@anthropic-ai/mcpb@2.1.2"
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
NODE_FOR_INSPECTOR = "node@22"
# The first run downloads the package (tens of seconds); later runs use npm's cache.
NPX_TIMEOUT_S = 600


def npx() -> str:
    """The `npx` executable. Skips the test where there is none, except in CI."""
    found = shutil.which("npx")
    if found is None:
        if os.environ.get("LAVA_TEST_REQUIRE_NPX"):
            pytest.fail("npx is required here (LAVA_TEST_REQUIRE_NPX is set) but is not on PATH")
        pytest.skip("npx (Node.js) is not installed: the MCPB and MCP Inspector tests need it")
    return found


def mcpb_command(*arguments: str) -> list[str]:
    return [npx(), "-y", MCPB, *arguments]


def inspector_command(*arguments: str) -> list[str]:
    return [
        npx(),
        "-y",
        "-p",
        NODE_FOR_INSPECTOR,
        "-p",
        INSPECTOR,
        "--",
        "mcp-inspector",
        "--cli",
        *arguments,
    ]


def child_environment() -> dict[str, str]:
    """This process's environment for a Node child (PATH, HOME, proxies, CA certificates),
    without lava-mcp's own variables, which each test sets itself."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("LAVA_") and name not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
