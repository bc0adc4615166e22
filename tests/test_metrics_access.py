"""`/metrics` is not public: a bearer token when LAVA_METRICS_TOKEN is set, otherwise
loopback clients only (the client's address is set in the ASGI scope, as a server sets it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from lava_mcp.config import Settings
from lava_mcp.core.stats import is_loopback
from lava_mcp.runtime import Runtime
from lava_mcp.transports.app import build_app

TOKEN = "metrics-token-for-the-tests"


def client_from(runtime: Runtime, host: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(runtime, migrate=False), client=(host, 50_000)),
        base_url="http://testserver",
    )


@pytest.fixture
async def token_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    built = Runtime.build(settings.model_copy(update={"metrics_token": TOKEN}))
    built.db.upgrade()
    yield built
    await built.aclose()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
async def test_without_a_token_loopback_clients_read_metrics(runtime: Runtime, host: str) -> None:
    async with client_from(runtime, host) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200 and "lava_wallets 0" in response.text


@pytest.mark.parametrize("host", ["203.0.113.9", "10.0.0.5", "::2", "2001:db8::1", "localhost.evil.test"])
async def test_without_a_token_other_clients_get_403(runtime: Runtime, host: str) -> None:
    async with client_from(runtime, host) as client:
        response = await client.get("/metrics", headers={"authorization": "Bearer anything"})
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == 403 and "LAVA_METRICS_TOKEN" in body["next_step"]
    assert "lava_wallets" not in response.text


async def test_with_a_token_it_is_required_even_on_loopback(token_runtime: Runtime) -> None:
    for host in ("127.0.0.1", "203.0.113.9"):
        async with client_from(token_runtime, host) as client:
            for headers in (
                {},
                {"authorization": "Bearer wrong"},
                {"authorization": f"Bearer {TOKEN}x"},
                {"authorization": f"Basic {TOKEN}"},
                {"authorization": "Bearer \u00e9t\u00e9".encode("latin-1")},  # type: ignore[dict-item]
            ):
                refused = await client.get("/metrics", headers=headers)
                assert refused.status_code == 401, (host, headers)
                assert refused.json()["code"] == 401
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert "lava_wallets" not in refused.text
            allowed = await client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
            assert allowed.status_code == 200 and "lava_open_holds 0" in allowed.text


def test_loopback_is_exactly_127_0_0_0_8_and_ipv6_one() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.255.255.254") and is_loopback("::1")
    for host in (None, "", "128.0.0.1", "0.0.0.0", "::", "localhost", "192.168.1.1", "fe80::1%eth0"):
        assert not is_loopback(host), host
