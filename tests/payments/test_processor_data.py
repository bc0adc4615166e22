"""Malformed or impossible processor data is a logged, recorded refusal, never a crash: a
charge answer reporting another amount than was asked credits nothing and answers 502 (the
sweep reads the charge again), and a dispute without a positive whole amount or an id is
answered 200 "ignored: …" and remembered, so Stripe does not deliver it for ever."""

from __future__ import annotations

from typing import Any

import pytest

from lava_mcp.core import funding, verify, wallet
from lava_mcp.runtime import Runtime
from tests.payments.conftest import StripeFront, balance_micros, deliver, event, payments_of, rest
from tests.payments.test_refunds_disputes import top_up


async def test_a_charge_answer_with_another_amount_credits_nothing_and_is_not_a_crash(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with rest(live, live_wallet) as client:
        await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
        stripe_front.inject("POST", "/v1/payment_intents", "underpaid")
        response = await client.post("/v1/wallet/fund", json={"amount": 25})
    assert response.status_code == 502, response.text
    assert "nothing was credited" in response.json()["error"]
    [payment] = payments_of(live, live_wallet.wallet_id)
    assert payment.status == "pending" and payment.failure_code == "amount_mismatch"
    assert balance_micros(live, live_wallet.wallet_id) == 0
    # The processor, asked again, reports what it really charged: credited once.
    assert await funding.reconcile_payments(live) == 1
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000


@pytest.mark.parametrize(
    "change",
    [{"amount": 0}, {"amount": "2500"}, {"amount": 2500.0}, {"amount": None}, {"id": None}],
    ids=["zero", "string", "float", "missing", "no-id"],
)
@pytest.mark.parametrize("kind", ["charge.dispute.created", "charge.dispute.funds_reinstated"])
async def test_a_malformed_dispute_is_answered_ignored_and_remembered(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront, kind: str, change: dict[str, Any]
) -> None:
    payment = await top_up(live, live_wallet, 25)
    dispute = {
        "id": "dp_malformed",
        "object": "dispute",
        "amount": 2500,
        "currency": "usd",
        "status": "needs_response",
        "payment_intent": payment.stripe_payment_intent_id,
    } | change
    delivery = event(kind, dispute)
    async with rest(live) as client:
        first = await deliver(client, delivery)
        again = await deliver(client, delivery)
    assert first.status_code == 200, first.text
    assert first.json()["outcome"].startswith("ignored: ")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000
    assert verify.verify(live.db) == []
