"""The MCP Inspector's CLI as a second, independent client (issue 8): over stdio, as the
Inspector itself spawns `lava-mcp stdio`, and over streamable HTTP to the app's /mcp with a
bearer token in a header — an OAuth access token from the real sign-in flow, or the raw
wallet key (the non-OAuth path for scripts). Each lists the tools in strict mode (every
schema portable: no warnings, no errors) and calls `get_balance`; with no token, the
Inspector is refused with the server's 401 and does not start an OAuth flow of its own."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lava_mcp.config import Settings
from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from lava_mcp.transports.app import build_app
from tests.conftest import fund
from tests.fake_provider import FakeProvider, free_port, serve_in_thread
from tests.mcp import test_transports
from tests.mcp.node_tools import NPX_TIMEOUT_S, child_environment, inspector_command
from tests.mcp.oauth_helpers import MemoryStorage, Person
from tests.mcp.test_oauth import oauth_session
from tests.mcp.test_transports import installed_script

ALL_TOOLS = {
    "get_balance",
    "add_funds",
    "usage_summary",
    "list_requests",
    "list_services",
    "call_paid_service",
}


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
    assert set(tools) == ALL_TOOLS
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


# --- over streamable HTTP to /mcp, with a bearer token in a header --------------------


@dataclass
class Answer:
    method: str
    path: str
    status: int
    challenge: str | None  # the WWW-Authenticate header, if any


class RecordingApp:
    """The whole app, unchanged, noting the status of each answer it sends: the test sees
    what the server told the Inspector, not only what the Inspector made of it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.answers: list[Answer] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def noting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = {name.decode().lower(): value.decode() for name, value in message["headers"]}
                answer = Answer(
                    scope["method"], scope["path"], message["status"], headers.get("www-authenticate")
                )
                self.answers.append(answer)
            await send(message)

        await self.app(scope, receive, noting_send)


@dataclass
class RecordedServer:
    url: str
    recorder: RecordingApp


@pytest.fixture
def served(settings: Settings, runtime: Runtime) -> Iterator[RecordedServer]:
    """The app on loopback at the port its settings (hence its OAuth issuer and resource
    URLs) name, as `lava-mcp serve` runs it."""
    port = free_port()
    configured = settings.model_copy(update={"port": port})
    recorder = RecordingApp(build_app(Runtime.build(configured)))
    with serve_in_thread(recorder, port=port) as url:
        yield RecordedServer(url, recorder)


async def inspect_http(
    url: str, storage: Path, *arguments: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The Inspector's CLI against /mcp over streamable HTTP, sending `token` as the bearer.

    `--stored-auth-only`: it never starts its own interactive OAuth (a CI run has no one at a
    browser); its OAuth store is under `storage`, empty, so no token is the server's 401."""
    header = [] if token is None else ["--header", f"Authorization: Bearer {token}"]
    command = inspector_command(
        "--transport", "http", "--server-url", f"{url}/mcp", "--stored-auth-only", *header, *arguments
    )
    # In a thread, so this test's event loop stays free while the Inspector runs.
    return await asyncio.to_thread(
        subprocess.run,
        command,
        env=child_environment() | {"MCP_STORAGE_DIR": str(storage)},
        cwd=storage,
        capture_output=True,
        text=True,
        timeout=NPX_TIMEOUT_S,
    )


async def oauth_access_token(url: str, wallet_key: str) -> str:
    """An access token from the real flow: the SDK's OAuth client finds the authorization
    server from the 401, registers, the wallet owner signs in and approves every scope on
    the page, and the code is exchanged with PKCE."""
    storage = MemoryStorage()
    async with oauth_session(url, Person(url, wallet_key=wallet_key), storage) as client:
        await client.list_tools()
    assert storage.tokens is not None and storage.tokens.scope == "wallet:read wallet:fund wallet:spend"
    return storage.tokens.access_token


@pytest.mark.parametrize("credential", ["oauth access token", "wallet key"])
async def test_the_inspector_over_http_with_a_bearer_token(
    served: RecordedServer,
    runtime: Runtime,
    new_wallet: wallet.NewWallet,
    tmp_path: Path,
    credential: str,
) -> None:
    fund(runtime, new_wallet.wallet_id, "12.50")
    if credential == "oauth access token":
        token = await oauth_access_token(served.url, new_wallet.wallet_key)
        assert token != new_wallet.wallet_key
    else:
        token = new_wallet.wallet_key  # the documented non-OAuth path, for scripts
    before_the_inspector = len(served.recorder.answers)  # the OAuth flow's own 401 came first

    listed = await inspect_http(served.url, tmp_path, "--method", "tools/list", "--strict", token=token)
    assert listed.returncode == 0, listed.stderr
    assert problems(listed.stderr) == []  # strict mode found no portability problem at all
    tools = {tool["name"]: tool for tool in json.loads(listed.stdout)["tools"]}
    assert set(tools) == ALL_TOOLS
    assert all(tool["title"] and tool["outputSchema"] for tool in tools.values())

    called = await inspect_http(
        served.url, tmp_path, "--method", "tools/call", "--tool-name", "get_balance", token=token
    )
    assert called.returncode == 0, called.stderr
    answer = json.loads(called.stdout)
    assert answer["isError"] is False
    assert answer["structuredContent"]["balance"] == "12.50"  # this token's own wallet
    assert json.loads(answer["content"][0]["text"]) == answer["structuredContent"]
    by_the_inspector = served.recorder.answers[before_the_inspector:]
    assert by_the_inspector and all(seen.status < 400 for seen in by_the_inspector), by_the_inspector


async def test_the_inspector_without_a_token_gets_the_401(served: RecordedServer, tmp_path: Path) -> None:
    refused = await inspect_http(served.url, tmp_path, "--method", "tools/list", "--format", "json")
    assert refused.returncode == 3, refused.stderr  # the Inspector's exit code for auth_required
    [envelope] = problems(refused.stderr)
    assert json.loads(envelope)["error"]["code"] == "auth_required"
    assert "invalid_token" in json.loads(envelope)["error"]["message"]  # the server's 401 body
    answered = [seen for seen in served.recorder.answers if seen.path == "/mcp"]
    assert answered and all(seen.status == 401 for seen in answered), answered
    metadata = f"{served.url}/.well-known/oauth-protected-resource/mcp"
    assert all(f'resource_metadata="{metadata}"' in (seen.challenge or "") for seen in answered)
