"""Reconciliation is never lost: a balance read that gave up waiting for a full processor
lane leaves no job claimed (the next read reconciles), and the background sweep settles
paid Checkouts and 3-D Secure pages as well as card charges, so an install with no webhook
and no success-page visit still credits what was paid. Real stripe SDK, localstripe behind
the fault-injecting front; ordering, not timing (`anyio.fail_after` only guards a hang)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from lava_mcp.core import funding, wallet
from lava_mcp.payments import ProcessorLane
from lava_mcp.runtime import Runtime
from tests.payments.conftest import StripeFront, balance_micros, deposits, live_settings, payments_of, rest
from tests.payments.test_funding_live import card_at_localstripe

GUARD_S = 30


async def open_checkout(runtime: Runtime, owner: wallet.NewWallet, amount: int) -> dict[str, Any]:
    async with rest(runtime, owner) as client:
        body: dict[str, Any] = (
            await client.post("/v1/wallet/fund", json={"amount": amount, "use_checkout": True})
        ).json()
    assert body["status"] == "checkout_required", body
    return body


def session_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def lane_idle(lane: ProcessorLane) -> None:
    with anyio.fail_after(GUARD_S):
        while lane.limiter.borrowed_tokens:
            await anyio.sleep(0.01)


async def test_a_read_that_gave_up_on_a_full_lane_leaves_the_wallet_reconcilable(
    tmp_path: Path, stripe_front: StripeFront
) -> None:
    runtime = Runtime.build(live_settings(tmp_path, stripe_front.url))
    runtime.db.upgrade()
    try:
        runtime.processor_lane = lane = ProcessorLane(capacity=1, read_wait_s=0.05)
        busy = wallet.create_wallet(runtime.db, name="busy", mode="test")
        reader = wallet.create_wallet(runtime.db, name="reader", mode="test")
        async with rest(runtime, busy) as client:
            saved = await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
            assert saved.status_code == 201, saved.text
        opened = await open_checkout(runtime, reader, 25)
        hang = stripe_front.inject("POST", "/v1/payment_intents", "hang")
        async with anyio.create_task_group() as tasks:
            # A top-up on a hanging processor holds the lane's only slot.
            tasks.start_soon(lambda: funding.add_funds(runtime, busy.wallet_id, amount=10))
            with anyio.fail_after(GUARD_S):
                await hang.wait_arrivals(1)
            async with rest(runtime, reader) as client:
                # This read's reconciliation never gets a slot: the read answers without it.
                assert (await client.get("/v1/wallet")).json()["balance"] == "0.00"
                assert not hang.release.is_set()
                hang.release.set()
        await lane_idle(lane)
        stripe_front.pay(session_of(opened["checkout_url"]))
        lane.read_wait_s = GUARD_S  # now wait for the reconciliation: it must run
        async with rest(runtime, reader) as client:
            assert (await client.get("/v1/wallet")).json()["balance"] == "25.00"
        assert len(deposits(runtime, reader.wallet_id)) == 1
    finally:
        stripe_front.reset()
        await runtime.aclose()


async def test_the_sweep_credits_a_paid_checkout_nobody_came_back_from(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    opened = await open_checkout(live, live_wallet, 25)
    stripe_front.pay(session_of(opened["checkout_url"]))  # no webhook, no success page, no read
    assert await funding.reconcile_payments(live) == 1
    assert await funding.reconcile_payments(live) == 0
    [payment] = payments_of(live, live_wallet.wallet_id)
    assert payment.status == "succeeded" and payment.reconciled_at is not None
    assert payment.payment_method_id is not None  # the page's card is kept, as the success page does
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000
    assert len(deposits(live, live_wallet.wallet_id)) == 1


async def test_the_sweep_credits_a_paid_3d_secure_page_and_fails_an_expired_checkout(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with rest(live, live_wallet) as client:
        saved = await client.post(
            "/v1/payment_methods",
            json={"payment_method_id": card_at_localstripe(stripe_front, "4000002760003184")},
        )
        assert saved.status_code == 201, saved.text
        body = (await client.post("/v1/wallet/fund", json={"amount": 30})).json()
    assert body["status"] == "requires_action", body
    expired = await open_checkout(live, live_wallet, 10)
    stripe_front.pay(session_of(body["redirect_url"]))
    stripe_front.expire(session_of(expired["checkout_url"]))
    assert await funding.reconcile_payments(live) == 1
    by_amount = {payment.amount_micros: payment for payment in payments_of(live, live_wallet.wallet_id)}
    assert by_amount[30_000_000].status == "succeeded"
    assert (
        by_amount[10_000_000].status == "failed" and by_amount[10_000_000].failure_code == "checkout_expired"
    )
    assert balance_micros(live, live_wallet.wallet_id) == 30_000_000
