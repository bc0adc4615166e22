"""The same tools over real transports: `lava-mcp stdio` as a child process, and
streamable HTTP at /mcp with the wallet key as the bearer token (DESIGN §4, §12)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from lava_mcp.config import Settings
from lava_mcp.core import verify, wallet
from lava_mcp.runtime import Runtime
from lava_mcp.transports.app import build_app
from tests.conftest import fund, ledger_state
from tests.fake_provider import FakeProvider, serve_in_thread
from tests.mcp.conftest import error, ok

HELLO = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}
CHEAP = {"service": "cheapchat", "model": "cheap-1", "input": HELLO}
INSUFFICIENT = '{"error": "Insufficient wallet balance", "code": 402}'
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}


def installed_script() -> str:
    script = Path(sys.executable).parent / "lava-mcp"
    assert script.exists(), f"the lava-mcp script is not installed beside {sys.executable}"
    return str(script)


def child_environment(settings: Settings, wallet_key: str, fake: FakeProvider) -> dict[str, str]:
    """Everything the child needs: it gets only a minimal environment otherwise."""
    return {
        "LAVA_WALLET_KEY": wallet_key,
        "LAVA_DATABASE_URL": settings.database_url,
        "LAVA_CATALOG": str(settings.catalog_path),
        "LAVA_PAYMENTS": "sandbox",
        "OPENAI_BASE_URL": f"{fake.url}/v1",
        "OPENAI_API_KEY": "sk-upstream-openai",
        "FAKE_DATA_URL": f"{fake.url}/data",
        "OLLAMA_BASE_URL": f"{fake.url}/v1",
    }


async def test_the_tools_over_stdio(
    runtime: Runtime, settings: Settings, new_wallet, fake: FakeProvider, tmp_path: Path
) -> None:
    fund(runtime, new_wallet.wallet_id, "0.01")
    parameters = StdioServerParameters(
        command=installed_script(),
        args=["stdio"],
        env=child_environment(settings, new_wallet.wallet_key, fake),
        cwd=tmp_path,  # no stray .env from the working directory
    )
    async with Client(parameters) as client:
        assert ok(await client.call_tool("get_balance", {}))["balance"] == "0.01"
        paid = ok(await client.call_tool("call_paid_service", CHEAP))
        assert (paid["cost"], paid["balance"]) == ("0.000015", "0.00")  # 0.009985 shown rounded down
        assert fake.received[0].headers["authorization"] == "Bearer sk-upstream-openai"

        # 100,000 output tokens could cost $0.20: the hold can't be taken.
        refused = await client.call_tool(
            "call_paid_service", {**CHEAP, "input": {**HELLO, "max_tokens": 100_000}}
        )
        assert refused.is_error is True
        [text] = [content.text for content in refused.content]  # type: ignore[union-attr]
        assert {key: json.loads(text)[key] for key in ("error", "code")} == json.loads(INSUFFICIENT)
        assert len(fake.received) == 1

        listed = ok(await client.call_tool("list_requests", {}))["requests"]
        assert [(r["succeeded"], r["cost"]) for r in listed] == [(False, "0.000000"), (True, "0.000015")]
        assert ok(await client.call_tool("usage_summary", {}))["total_requests"] == 1
        error(await client.call_tool("list_requests", {"limit": 101}), 400)
    assert ledger_state(runtime.db, new_wallet.wallet_id).balance_micros == 10_000 - 15
    assert verify.verify(runtime.db) == []


async def test_stdio_without_a_valid_wallet_key_exits_with_an_error(
    settings: Settings, tmp_path: Path
) -> None:
    import subprocess

    environment = {"LAVA_DATABASE_URL": settings.database_url, "LAVA_WALLET_KEY": "lava_wk_wrong"}
    finished = subprocess.run(
        [installed_script(), "stdio"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 1
    assert "unknown wallet key" in finished.stderr


@pytest.fixture
def http_server(settings: Settings) -> Iterator[str]:
    """The whole ASGI app on loopback; its own runtime over the test's database."""
    served = Runtime.build(settings)
    with serve_in_thread(build_app(served)) as url:
        yield url


def test_mcp_over_http_needs_a_bearer_token(http_server: str, new_wallet) -> None:
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    for authorization in (None, "Bearer lava_wk_wrong", f"Basic {new_wallet.wallet_key}", "Bearer lava_sk_x"):
        sent = headers | ({"authorization": authorization} if authorization else {})
        response = httpx.post(f"{http_server}/mcp", json=INITIALIZE, headers=sent, timeout=30)
        assert response.status_code == 401, (authorization, response.text)
        assert response.headers["www-authenticate"].lower().startswith("bearer")


async def test_the_tools_over_streamable_http(
    http_server: str, runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    other = wallet.create_wallet(runtime.db, name="other")
    fund(runtime, new_wallet.wallet_id, "47.50")
    fund(runtime, other.wallet_id, "1.00")  # less than a 1,000,000-token hold (~$2)

    @asynccontextmanager
    async def connect(wallet_key: str) -> AsyncIterator[Client]:
        headers = {"Authorization": f"Bearer {wallet_key}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http_client,  # the SDK leaves it open
            Client(streamable_http_client(f"{http_server}/mcp", http_client=http_client)) as client,
        ):
            yield client

    async with connect(new_wallet.wallet_key) as client:
        assert ok(await client.call_tool("get_balance", {}))["balance"] == "47.50"
        paid = ok(await client.call_tool("call_paid_service", CHEAP))
        assert (paid["cost"], paid["balance"]) == ("0.000015", "47.49")
        [listed] = ok(await client.call_tool("list_requests", {}))["requests"]
        assert listed["id"] == paid["request_id"]
    # The bearer token decides whose wallet the tools act on.
    async with connect(other.wallet_key) as client:
        assert ok(await client.call_tool("get_balance", {}))["balance"] == "1.00"
        assert ok(await client.call_tool("list_requests", {}))["requests"] == []
        refused = await client.call_tool(
            "call_paid_service", {**CHEAP, "input": {**HELLO, "max_tokens": 1_000_000}}
        )
        [text] = [content.text for content in refused.content]  # type: ignore[union-attr]
        assert {key: json.loads(text)[key] for key in ("error", "code")} == json.loads(INSUFFICIENT)
    assert len(fake.received) == 1
    assert verify.verify(runtime.db) == []


async def test_the_tools_over_sse(http_server: str, runtime: Runtime, new_wallet, fake: FakeProvider) -> None:
    fund(runtime, new_wallet.wallet_id, "2.00")
    headers = {"Authorization": f"Bearer {new_wallet.wallet_key}"}
    async with Client(sse_client(f"{http_server}/sse", headers=headers, timeout=30)) as client:
        assert ok(await client.call_tool("get_balance", {}))["balance"] == "2.00"
        paid = ok(await client.call_tool("call_paid_service", CHEAP))
        assert paid["cost"] == "0.000015"
    unauthorized = httpx.get(f"{http_server}/sse", timeout=30)
    assert unauthorized.status_code == 401
