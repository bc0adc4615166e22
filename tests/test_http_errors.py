"""Every HTTP answer outside the gateway is the flat error JSON, routing errors included;
settings that would let a hold expire under a running call are refused at start."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from lava_mcp.config import Settings
from lava_mcp.runtime import Runtime
from lava_mcp.transports.app import build_app


async def test_unknown_routes_and_methods_answer_flat_json(runtime: Runtime) -> None:
    transport = httpx.ASGITransport(app=build_app(runtime, migrate=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        missing = await client.get("/v1/nothing-here")
        assert (missing.status_code, missing.json()) == (404, {"error": "Not Found", "code": 404})
        wrong = await client.delete("/v1/wallet")
        assert wrong.status_code == 405 and wrong.json()["code"] == 405


def test_a_hold_must_outlive_the_upstream_wait() -> None:
    with pytest.raises(ValidationError, match="LAVA_HOLD_TTL_S"):
        Settings(LAVA_HOLD_TTL_S=60, LAVA_UPSTREAM_TIMEOUT_S=120, _env_file=None)  # type: ignore[call-arg]
    assert Settings(LAVA_HOLD_TTL_S=600, _env_file=None).hold_ttl_s == 600  # type: ignore[call-arg]


async def test_get_wallet_has_the_documented_shape(runtime: Runtime) -> None:
    from lava_mcp.core import wallet

    created = wallet.create_wallet(runtime.db, name="shape")
    wallet.adjust(runtime.db, created.wallet_id, "47.50", reason="test")
    transport = httpx.ASGITransport(app=build_app(runtime, migrate=False))
    headers = {"authorization": f"Bearer {created.wallet_key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", headers=headers) as client:
        body = (await client.get("/v1/wallet")).json()
    assert body == {
        "wallet_id": created.wallet_id,
        "balance": "47.50",
        "held": "0.00",
        "currency": "USD",
        "sandbox": True,
    }
