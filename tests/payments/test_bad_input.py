"""Bad funding input over REST and MCP: a clear 4xx, and no money or payment moved."""

from __future__ import annotations

from typing import Any

import pytest

from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import PaymentMethod, Wallet
from tests.payments.conftest import StripeFront, balance_micros, mcp, payments_of, rest, tool_error

BAD_AMOUNTS: list[Any] = [
    -25,
    0,
    "0.00",
    9.99,
    "9.99",
    "10000.01",
    10001,
    "25.001",
    25.001,
    "2.5e1",
    "NaN",
    "Infinity",
    "twenty",
    "",
    " ",
    "$",
    "25 USD",
    "1,000",
    True,
    False,
    [25],
    {"value": 25},
    "'; DROP TABLE payment; --",
    "٢٥",  # Arabic-Indic digits
]


@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=[repr(a)[:20] for a in BAD_AMOUNTS])
async def test_bad_amounts_are_400_and_charge_nothing(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront, amount: Any
) -> None:
    async with rest(live, live_wallet) as client:
        await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
        stripe_front.forwarded.clear()
        response = await client.post(
            "/v1/wallet/fund", json={"amount": amount}, headers={"idempotency-key": "k"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["code"] == 400 and response.json()["error"]
    async with mcp(live, live_wallet) as chat:
        tool_error(await chat.call_tool("add_funds", {"amount": amount}), 400)
    assert stripe_front.forwarded == []
    assert payments_of(live, live_wallet.wallet_id) == [] and balance_micros(live, live_wallet.wallet_id) == 0


async def test_bounds_are_inclusive(sandbox: Runtime, sandbox_wallet: wallet.NewWallet) -> None:
    async with rest(sandbox, sandbox_wallet) as client:
        await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
        assert (await client.post("/v1/wallet/fund", json={"amount": "10.00"})).json()["balance"] == "10.00"
        assert (await client.post("/v1/wallet/fund", json={"amount": 10000})).json()["balance"] == "10010.00"
        over = await client.post("/v1/wallet/fund", json={"amount": "10000.01"})
        assert over.json() | {"error": ""} == {"error": "", "code": 400, "min": "10.00", "max": "10000.00"}


async def test_malformed_requests(live: Runtime, live_wallet: wallet.NewWallet) -> None:
    async with rest(live, live_wallet) as client:
        cases: list[tuple[dict[str, Any], int]] = [
            ({"content": b"{not json"}, 400),
            ({"content": b"[25]"}, 400),
            ({"json": {"amount": 25, "payment_method_id": 42}}, 400),
            ({"json": {"amount": 25, "use_checkout": "yes"}}, 400),
            ({"json": {"amount": 25, "payment_method_id": "pm_unknown"}}, 404),
            ({"json": {"amount": 25}, "headers": {"idempotency-key": "x" * 256}}, 400),
        ]
        for request, status in cases:
            response = await client.post("/v1/wallet/fund", **request)
            assert response.status_code == status, (request, response.text)
            assert response.json()["code"] == status
        unauthenticated = await client.post(
            "/v1/wallet/fund", json={"amount": 25}, headers={"authorization": ""}
        )
        assert unauthenticated.status_code == 401
    async with mcp(live, live_wallet) as chat:
        tool_error(await chat.call_tool("add_funds", {"amount": 25, "payment_method_id": "pm_unknown"}), 404)
    assert payments_of(live, live_wallet.wallet_id) == [] and balance_micros(live, live_wallet.wallet_id) == 0


async def test_an_unreachable_processor_is_502_and_a_retry_reuses_the_payment(tmp_path: Any) -> None:
    from tests.fake_provider import free_port
    from tests.payments.conftest import live_settings

    runtime = Runtime.build(live_settings(tmp_path, f"http://127.0.0.1:{free_port()}"))  # nobody listens
    runtime.db.upgrade()
    try:
        owner = wallet.create_wallet(runtime.db, mode="test")
        async with rest(runtime, owner) as client:
            # No customer yet: creating it fails first.
            response = await client.post("/v1/wallet/fund", json={"amount": 25})
            assert response.status_code == 502 and response.json()["code"] == 502
            # A wallet with a customer and a saved card: the charge itself can't be sent.
            with runtime.db.write() as session:
                stored = session.get(Wallet, owner.wallet_id)
                assert stored is not None
                stored.stripe_customer_id = "cus_known"
                session.add(stored)
                session.add(
                    PaymentMethod(id="pm_known", wallet_id=owner.wallet_id, last4="4242", is_default=True)
                )
            for _ in range(3):
                response = await client.post(
                    "/v1/wallet/fund", json={"amount": 25}, headers={"idempotency-key": "k"}
                )
                assert response.status_code == 502 and "Idempotency-Key" in response.json()["next_step"]
            assert (await client.get("/v1/wallet")).json()["balance"] == "0.00"
            # The default card changes; a retry under the same key still charges the card
            # the first attempt chose (the processor may already have charged it).
            with runtime.db.write() as session:
                known = session.get(PaymentMethod, "pm_known")
                assert known is not None
                known.is_default = False
                session.add(known)
                session.add(
                    PaymentMethod(id="pm_other", wallet_id=owner.wallet_id, last4="1881", is_default=True)
                )
            response = await client.post(
                "/v1/wallet/fund", json={"amount": 25}, headers={"idempotency-key": "k"}
            )
            assert response.status_code == 502
        # One attempt, retried under its own id (and so its Stripe idempotency key).
        [payment] = payments_of(runtime, owner.wallet_id)
        assert payment.status == "pending" and payment.failure_code == "processor_unavailable"
        assert payment.payment_method_id == "pm_known"
    finally:
        await runtime.aclose()
