"""A card charge whose answer was lost is found and credited exactly once: on a retry of the
same attempt, on a balance read, and by the reconciliation sweep. The real stripe SDK talks to
localstripe through the fault-injecting `StripeFront` (the charge happens, the answer doesn't
come back)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import anyio

from lava_mcp.core import funding, verify, wallet
from lava_mcp.runtime import Runtime, running
from lava_mcp.store.models import Payment, Wallet, utc_now
from tests.payments.conftest import (
    INTENTS,
    StripeFront,
    balance_micros,
    deposits,
    live_settings,
    mcp,
    payments_of,
    rest,
    save_card,
    tool_error,
    tool_ok,
)


def only_payment(runtime: Runtime, owner: wallet.NewWallet) -> Payment:
    [payment] = payments_of(runtime, owner.wallet_id)
    return payment


async def test_a_dropped_answer_then_a_retry_charges_once_and_credits_once(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    await save_card(live, live_wallet)
    stripe_front.inject(*INTENTS, "drop")  # localstripe charges the card; the answer is cut off
    async with mcp(live, live_wallet) as chat:
        lost = tool_error(await chat.call_tool("add_funds", {"amount": 25}), 502)
        assert "looked up before anything is charged again" in lost["next_step"]
        assert balance_micros(live, live_wallet.wallet_id) == 0
        pending = only_payment(live, live_wallet)
        assert pending.status == "pending" and pending.stripe_payment_intent_id is None
        # The chat retries the same call, without an idempotency key: the same attempt.
        retried = tool_ok(await chat.call_tool("add_funds", {"amount": 25}))
    assert retried["status"] == "completed" and retried["balance"] == "25.00"
    assert retried["payment_id"] == pending.id
    assert stripe_front.count(*INTENTS) == 1  # charged once at the processor
    assert [entry.reference for entry in deposits(live, live_wallet.wallet_id)] == [pending.id]
    assert only_payment(live, live_wallet).stripe_payment_intent_id is not None
    assert verify.verify(live.db) == []


async def test_an_answer_lost_to_a_500_is_credited_by_the_next_balance_read(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    await save_card(live, live_wallet)
    stripe_front.inject(*INTENTS, "error")  # charged, then the SDK raises on the 500
    async with rest(live, live_wallet) as client:
        response = await client.post("/v1/wallet/fund", json={"amount": 40})
        assert response.status_code == 502
        assert balance_micros(live, live_wallet.wallet_id) == 0
        assert (await client.get("/v1/wallet")).json()["balance"] == "40.00"
        assert (await client.get("/v1/wallet")).json()["balance"] == "40.00"
    async with mcp(live, live_wallet) as chat:
        assert tool_ok(await chat.call_tool("get_balance", {}))["balance"] == "40.00"
    payment = only_payment(live, live_wallet)
    assert payment.status == "succeeded" and payment.reconciled_at is not None
    assert len(deposits(live, live_wallet.wallet_id)) == 1 and stripe_front.count(*INTENTS) == 1


async def test_the_sweep_credits_a_lost_answer_once_and_records_when(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    await save_card(live, live_wallet)
    stripe_front.inject(*INTENTS, "drop")
    async with rest(live, live_wallet) as client:
        assert (await client.post("/v1/wallet/fund", json={"amount": 30})).status_code == 502
    assert await funding.reconcile_payments(live) == 1
    assert await funding.reconcile_payments(live) == 0  # nothing left pending: nothing twice
    payment = only_payment(live, live_wallet)
    assert payment.status == "succeeded" and payment.reconciled_at is not None
    assert balance_micros(live, live_wallet.wallet_id) == 30_000_000
    assert len(deposits(live, live_wallet.wallet_id)) == 1


async def test_the_running_server_sweeps_on_its_own(tmp_path: Path, stripe_front: StripeFront) -> None:
    runtime = Runtime.build(live_settings(tmp_path, stripe_front.url, LAVA_RECONCILE_INTERVAL_S=0.05))
    async with running(runtime):
        owner = wallet.create_wallet(runtime.db, mode="test")
        await save_card(runtime, owner)
        stripe_front.inject(*INTENTS, "drop")
        async with rest(runtime, owner) as client:
            assert (await client.post("/v1/wallet/fund", json={"amount": 20})).status_code == 502
        with anyio.fail_after(30):  # a guard against a sweep that never runs, not a timing claim
            while only_payment(runtime, owner).status != "succeeded":
                await anyio.sleep(0.05)
        assert only_payment(runtime, owner).reconciled_at is not None
        assert len(deposits(runtime, owner.wallet_id)) == 1


async def test_a_charge_the_processor_never_received_becomes_failed_not_pending_forever(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    await save_card(live, live_wallet)
    stripe_front.inject(*INTENTS, "unsent")  # the connection drops before the processor sees it
    async with rest(live, live_wallet) as client:
        assert (await client.post("/v1/wallet/fund", json={"amount": 25})).status_code == 502
    assert stripe_front.count(*INTENTS) == 0
    payment = only_payment(live, live_wallet)
    # While the request might still be on its way, not knowing is not failing.
    assert funding.reconcile_card_payment(live, payment.id) == "pending"
    later = utc_now() + timedelta(hours=1)
    assert funding.reconcile_card_payment(live, payment.id, now=later) == "failed"
    payment = only_payment(live, live_wallet)
    assert payment.failure_code == "not_charged" and payment.reconciled_at is not None
    assert balance_micros(live, live_wallet.wallet_id) == 0 and deposits(live, live_wallet.wallet_id) == []
    # `ledger verify` reports card payments nobody reconciled (none left here).
    assert verify.verify(live.db) == []


async def test_a_decline_whose_answer_was_lost_becomes_failed(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    await save_card(live, live_wallet, "pm_card_chargeCustomerFail")  # attaches, declines at charge
    stripe_front.inject(*INTENTS, "drop")
    async with rest(live, live_wallet) as client:
        assert (await client.post("/v1/wallet/fund", json={"amount": 25})).status_code == 502
        assert (await client.get("/v1/wallet")).json()["balance"] == "0.00"
    payment = only_payment(live, live_wallet)
    assert payment.status == "failed" and payment.failure_code == "card_declined"
    assert deposits(live, live_wallet.wallet_id) == []


async def test_a_processing_answer_is_credited_once_the_processor_says_succeeded(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    await save_card(live, live_wallet)
    stripe_front.inject(*INTENTS, "processing")
    async with mcp(live, live_wallet) as chat:
        body = tool_ok(await chat.call_tool("add_funds", {"amount": 15}))
        assert body["status"] == "processing"
        assert balance_micros(live, live_wallet.wallet_id) == 0
        # By id this time: the answer brought the PaymentIntent's id back.
        assert only_payment(live, live_wallet).stripe_payment_intent_id is not None
        assert tool_ok(await chat.call_tool("get_balance", {}))["balance"] == "15.00"
    assert only_payment(live, live_wallet).status == "succeeded"
    assert len(deposits(live, live_wallet.wallet_id)) == 1


async def test_verify_reports_a_card_payment_left_pending_past_the_window(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    await save_card(live, live_wallet)
    stripe_front.inject(*INTENTS, "unsent")
    async with rest(live, live_wallet) as client:
        assert (await client.post("/v1/wallet/fund", json={"amount": 25})).status_code == 502
    payment = only_payment(live, live_wallet)
    assert verify.verify(live.db) == []  # just now: the sweep has not had its chance
    with live.db.write() as session:
        row = session.get(Payment, payment.id)
        assert row is not None
        row.updated_at = utc_now() - timedelta(hours=2)
        session.add(row)
    [problem] = verify.verify(live.db)
    assert payment.id in problem and "still pending" in problem


async def test_an_unreachable_processor_never_fails_a_balance_read(tmp_path: Path) -> None:
    from tests.fake_provider import free_port

    runtime = Runtime.build(live_settings(tmp_path, f"http://127.0.0.1:{free_port()}"))  # nobody listens
    runtime.db.upgrade()
    try:
        owner = wallet.create_wallet(runtime.db, mode="test")
        with runtime.db.write() as session:
            stored = session.get(Wallet, owner.wallet_id)
            assert stored is not None
            stored.stripe_customer_id = "cus_known"
            session.add(stored)
            session.add(
                Payment(id="pay_lost", wallet_id=owner.wallet_id, amount_micros=25_000_000, mode="test")
            )
        async with rest(runtime, owner) as client:
            response = await client.get("/v1/wallet")
        assert response.status_code == 200 and response.json()["balance"] == "0.00"
        assert only_payment(runtime, owner).status == "pending"  # asked again later, not failed
    finally:
        await runtime.aclose()


async def test_a_lost_3d_secure_request_is_canceled_and_the_retry_gets_the_page(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    from tests.payments.test_funding_live import card_at_localstripe

    await save_card(live, live_wallet, card_at_localstripe(stripe_front, "4000002760003184"))
    stripe_front.inject(*INTENTS, "drop")  # the bank's "authenticate" never reaches us
    async with mcp(live, live_wallet) as chat:
        tool_error(await chat.call_tool("add_funds", {"amount": 30}), 502)
        assert await funding.reconcile_payments(live) == 0
        payment = only_payment(live, live_wallet)
        assert payment.status == "failed" and payment.failure_code == "authentication_required"
        retried = tool_ok(await chat.call_tool("add_funds", {"amount": 30}))
    assert retried["status"] == "requires_action" and retried["payment_id"] == payment.id
    assert retried["redirect_url"].startswith("https://checkout.stripe.test/")
    assert stripe_front.count(*INTENTS) == 1 and balance_micros(live, live_wallet.wallet_id) == 0


async def test_asking_again_does_not_restart_the_in_flight_clock(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    await save_card(live, live_wallet)
    stripe_front.inject(*INTENTS, "unsent")
    async with rest(live, live_wallet) as client:
        assert (await client.post("/v1/wallet/fund", json={"amount": 25})).status_code == 502
    payment = only_payment(live, live_wallet)
    sent_at = utc_now() - timedelta(seconds=50)  # the charge request went out 50 s ago
    with live.db.write() as session:
        row = session.get(Payment, payment.id)
        assert row is not None
        row.updated_at = sent_at
        session.add(row)
    # In flight for at most 3 × LAVA_STRIPE_TIMEOUT_S + 30 s = 60 s after it was sent.
    assert funding.reconcile_card_payment(live, payment.id) == "pending"
    assert funding.reconcile_card_payment(live, payment.id, now=sent_at + timedelta(seconds=61)) == "failed"
