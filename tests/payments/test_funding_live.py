"""add_funds with the real stripe SDK: each outcome through MCP and REST, against
localstripe (cards, payment intents) and the Checkout boundary fake."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from tests.payments.conftest import (
    STRIPE_KEY,
    StripeFront,
    balance_micros,
    deposits,
    mcp,
    payments_of,
    rest,
    tool_error,
    tool_ok,
)


async def save(client: httpx.AsyncClient, payment_method_id: str = "pm_card_visa") -> dict[str, Any]:
    response = await client.post("/v1/payment_methods", json={"payment_method_id": payment_method_id})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def card_at_localstripe(front: StripeFront, number: str) -> str:
    """A tokenised card with a given test number (as Stripe.js would make it)."""
    with httpx.Client(base_url=front.url, headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as client:
        response = client.post(
            "/v1/payment_methods",
            data={
                "type": "card",
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2031",
                "card[cvc]": "123",
            },
        ).raise_for_status()
    identifier: str = response.json()["id"]
    return identifier


async def test_saved_card_is_charged_now_through_mcp(live: Runtime, live_wallet: wallet.NewWallet) -> None:
    async with rest(live, live_wallet) as client:
        await save(client)
    async with mcp(live, live_wallet) as chat:
        body = tool_ok(await chat.call_tool("add_funds", {"amount": 25}))
        assert body["status"] == "completed" and body["amount"] == "25.00" and body["balance"] == "25.00"
        assert body["payment_id"].startswith("pay_") and "sandbox" not in body
        assert tool_ok(await chat.call_tool("get_balance", {}))["balance"] == "25.00"
    [payment] = payments_of(live, live_wallet.wallet_id)
    assert payment.status == "succeeded" and payment.amount_micros == 25_000_000 and payment.mode == "test"
    assert payment.stripe_payment_intent_id and payment.stripe_payment_intent_id.startswith("pi_")
    assert [entry.reference for entry in deposits(live, live_wallet.wallet_id)] == [payment.id]


async def test_saved_card_is_charged_now_through_rest(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with rest(live, live_wallet) as client:
        first = await save(client)
        second = await save(client)
        response = await client.post("/v1/wallet/fund", json={"amount": "$40.50"})
        assert response.status_code == 200, response.text
        assert response.json() | {"payment_id": ""} == {
            "status": "completed",
            "amount": "40.50",
            "balance": "40.50",
            "payment_id": "",
        }
        # Named card; then the default changes what "no card named" charges.
        await client.post("/v1/wallet/fund", json={"amount": 10, "payment_method_id": second["id"]})
        await client.post(f"/v1/payment_methods/{second['id']}/default")
        await client.post("/v1/wallet/fund", json={"amount": 10})
        assert (await client.get("/v1/wallet")).json()["balance"] == "60.50"
    charged = [
        payment.payment_method_id
        for payment in sorted(payments_of(live, live_wallet.wallet_id), key=lambda p: p.id)
    ]
    assert charged == [first["id"], second["id"], second["id"]]
    assert stripe_front.count("POST", "/v1/payment_intents") == 3


async def test_decline_is_402_with_the_reason_and_moves_nothing(
    live: Runtime, live_wallet: wallet.NewWallet
) -> None:
    async with rest(live, live_wallet) as client:
        await save(client, "pm_card_chargeCustomerFail")  # attaches, then declines at charge
        response = await client.post("/v1/wallet/fund", json={"amount": 25})
        assert response.status_code == 402
        body = response.json()
        assert body["code"] == 402 and body["decline_code"] == "card_declined" and body["next_step"]
    async with mcp(live, live_wallet) as chat:
        tool_body = tool_error(await chat.call_tool("add_funds", {"amount": 25}), 402)
        assert tool_body["decline_code"] == "card_declined" and "use_checkout" in tool_body["next_step"]
    assert balance_micros(live, live_wallet.wallet_id) == 0 and deposits(live, live_wallet.wallet_id) == []
    payments = payments_of(live, live_wallet.wallet_id)
    assert len(payments) == 2
    assert all(
        p.status == "failed" and p.failure_code == "card_declined" and p.failure_message for p in payments
    )


async def test_3d_secure_hands_back_a_page_and_credits_once_when_paid(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with rest(live, live_wallet) as client:
        await save(client, card_at_localstripe(stripe_front, "4000002760003184"))
    async with mcp(live, live_wallet) as chat:
        body = tool_ok(await chat.call_tool("add_funds", {"amount": 30}))
    assert body["status"] == "requires_action"
    assert body["redirect_url"].startswith("https://checkout.stripe.test/") and body["payment_id"].startswith(
        "pay_"
    )
    assert balance_micros(live, live_wallet.wallet_id) == 0  # nothing on the strength of a redirect
    [payment] = payments_of(live, live_wallet.wallet_id)
    assert payment.status == "requires_action" and payment.failure_code == "authentication_required"
    session_id = payment.stripe_checkout_session_id
    assert session_id is not None

    stripe_front.pay(session_id)  # the card holder authenticates and pays on the hosted page
    async with rest(live, live_wallet) as client:
        page = await client.get("/fund/success", params={"session_id": session_id})
        assert page.status_code == 200 and "$30.00" in page.text and "SANDBOX" not in page.text
        assert (await client.get("/fund/success", params={"session_id": session_id})).status_code == 200
        assert (await client.get("/v1/wallet")).json()["balance"] == "30.00"
    assert len(deposits(live, live_wallet.wallet_id)) == 1


async def test_no_saved_card_opens_checkout_credited_when_the_success_page_sees_it_paid(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with mcp(live, live_wallet) as chat:
        body = tool_ok(await chat.call_tool("add_funds", {"amount": "25.00"}))
    assert body["status"] == "checkout_required" and body["amount"] == "25.00"
    assert body["checkout_url"].startswith("https://checkout.stripe.test/c/pay/cs_test_")
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    session = stripe_front.sessions[session_id]
    # Payment mode, saving the card for off-session use, our ids in the metadata, our pages.
    assert session["mode"] == "payment" and session["amount_total"] == 2500 and session["currency"] == "usd"
    assert session["payment_intent_data"]["setup_future_usage"] == "off_session"
    assert session["metadata"]["lava_payment_id"] == body["payment_id"]
    assert session["success_url"] == "http://lava.test:8787/fund/success?session_id={CHECKOUT_SESSION_ID}"

    async with rest(live, live_wallet) as client:
        pending = await client.get("/fund/success", params={"session_id": session_id})
        assert pending.status_code == 202 and "not confirmed yet" in pending.text
        assert balance_micros(live, live_wallet.wallet_id) == 0

        stripe_front.pay(session_id)
        paid = await client.get("/fund/success", params={"session_id": session_id})
        assert paid.status_code == 200 and "Payment received" in paid.text
        assert (await client.get("/v1/wallet")).json()["balance"] == "25.00"
        # The card paid with is saved, so the next top-up is charged without a page.
        [card] = (await client.get("/v1/payment_methods")).json()["data"]
        assert card["last4"] == "4242" and card["default"] is True
        again = (await client.post("/v1/wallet/fund", json={"amount": 10})).json()
        assert again["status"] == "completed" and again["balance"] == "35.00"
        unknown = await client.get("/fund/success", params={"session_id": "cs_test_unknown"})
        assert unknown.status_code == 404
    assert len(deposits(live, live_wallet.wallet_id)) == 2


async def test_reading_the_balance_reconciles_a_paid_checkout(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with rest(live, live_wallet) as client:
        body = (await client.post("/v1/wallet/fund", json={"amount": 50})).json()
        assert body["status"] == "checkout_required"
        assert (await client.get("/v1/wallet")).json()["balance"] == "0.00"
        stripe_front.pay(body["checkout_url"].rsplit("/", 1)[1])
    async with mcp(live, live_wallet) as chat:
        assert tool_ok(await chat.call_tool("get_balance", {}))["balance"] == "50.00"
        assert tool_ok(await chat.call_tool("get_balance", {}))["balance"] == "50.00"
    assert len(deposits(live, live_wallet.wallet_id)) == 1
    [payment] = payments_of(live, live_wallet.wallet_id)
    assert payment.status == "succeeded" and payment.payment_method_id is not None


async def test_expired_checkout_is_recorded_and_never_credited(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with rest(live, live_wallet) as client:
        body = (await client.post("/v1/wallet/fund", json={"amount": 50})).json()
        stripe_front.expire(body["checkout_url"].rsplit("/", 1)[1])
        assert (await client.get("/v1/wallet")).json()["balance"] == "0.00"
    [payment] = payments_of(live, live_wallet.wallet_id)
    assert payment.status == "failed" and payment.failure_code == "checkout_expired"


async def test_use_checkout_gives_a_link_even_with_a_saved_card(
    live: Runtime, live_wallet: wallet.NewWallet
) -> None:
    async with rest(live, live_wallet) as client:
        await save(client)
        response = await client.post("/v1/wallet/fund", json={"amount": 25, "use_checkout": True})
    assert response.json()["status"] == "checkout_required"
    async with mcp(live, live_wallet) as chat:
        assert tool_ok(await chat.call_tool("add_funds", {"amount": 25, "use_checkout": True}))["status"] == (
            "checkout_required"
        )
    assert balance_micros(live, live_wallet.wallet_id) == 0


async def test_no_amount_lists_cards_balance_and_bounds(live: Runtime, live_wallet: wallet.NewWallet) -> None:
    async with rest(live, live_wallet) as client:
        card = await save(client)
        await client.post("/v1/wallet/fund", json={"amount": "47.50"})
        via_rest = (await client.post("/v1/wallet/fund", json={"amount": None})).json()
        assert (await client.post("/v1/wallet/fund")).json() == via_rest
    async with mcp(live, live_wallet) as chat:
        via_mcp = tool_ok(await chat.call_tool("add_funds", {}))
    assert (
        via_mcp
        == via_rest
        == {
            "status": "amount_required",
            "balance": "47.50",
            "payment_methods": [card],
            "min": "10.00",
            "max": "10000.00",
        }
    )


async def test_fund_retried_ten_times_with_one_key_charges_once(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with rest(live, live_wallet) as client:
        await save(client)
        key = {"idempotency-key": "top-up-2026-11-23"}
        answers = [await client.post("/v1/wallet/fund", json={"amount": 25}, headers=key) for _ in range(10)]
        assert {answer.status_code for answer in answers} == {200}
        assert len({answer.text for answer in answers}) == 1  # the first result, every time
        assert answers[0].json()["balance"] == "25.00"
        conflict = await client.post("/v1/wallet/fund", json={"amount": 30}, headers=key)
        assert conflict.status_code == 409 and conflict.json()["code"] == 409
        other = await client.post(
            "/v1/wallet/fund", json={"amount": 25}, headers={"idempotency-key": "another"}
        )
        assert other.json()["balance"] == "50.00"
    assert stripe_front.count("POST", "/v1/payment_intents") == 2
    assert len(deposits(live, live_wallet.wallet_id)) == 2


async def test_concurrent_retries_with_one_key_charge_once(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with rest(live, live_wallet) as client:
        await save(client)
        key = {"idempotency-key": "burst"}
        answers = await asyncio.gather(
            *(client.post("/v1/wallet/fund", json={"amount": 25}, headers=key) for _ in range(10))
        )
        assert {answer.status_code for answer in answers} <= {200, 409}
        completed = {answer.text for answer in answers if answer.status_code == 200}
        assert len(completed) == 1
        retry = await client.post("/v1/wallet/fund", json={"amount": 25}, headers=key)
        assert retry.text in completed
    assert stripe_front.count("POST", "/v1/payment_intents") == 1
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000


async def test_a_declined_charge_retried_with_its_key_is_the_same_decline(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with rest(live, live_wallet) as client:
        await save(client, "pm_card_chargeCustomerFail")
        key = {"idempotency-key": "declined-once"}
        answers = [await client.post("/v1/wallet/fund", json={"amount": 25}, headers=key) for _ in range(3)]
    assert {answer.status_code for answer in answers} == {402}
    assert len({answer.text for answer in answers}) == 1
    assert stripe_front.count("POST", "/v1/payment_intents") == 1
    assert len(payments_of(live, live_wallet.wallet_id)) == 1


async def test_a_sandbox_wallet_is_never_funded_by_live_stripe(live: Runtime) -> None:
    sandbox_wallet = wallet.create_wallet(live.db, name="sandbox", mode="sandbox")
    async with rest(live, sandbox_wallet) as client:
        for body in ({"amount": 25}, {"amount": None}):
            response = await client.post("/v1/wallet/fund", json=body)
            assert response.status_code == 403 and "SANDBOX" in response.json()["error"]
        assert (
            await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
        ).status_code == 403
    assert payments_of(live, sandbox_wallet.wallet_id) == []
