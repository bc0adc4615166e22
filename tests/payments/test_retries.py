"""Retries and reconciliation never undo or double what happened: a retry of an attempt that
was credited meanwhile answers `completed` and leaves it credited; a retry after the
server's idempotency window of an attempt whose answer was lost is still that attempt (one
charge); the sweep never fails a payment retried while it was asking the processor. Real
stripe SDK against localstripe behind the fault-injecting front."""

from __future__ import annotations

from datetime import timedelta

import anyio
from sqlmodel import select

from lava_mcp.core import funding, wallet
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import IdempotencyRecord, Payment, utc_now
from tests.payments.conftest import (
    INTENTS,
    StripeFront,
    balance_micros,
    deposits,
    mcp,
    payments_of,
    rest,
    save_card,
    tool_error,
    tool_ok,
)

GUARD_S = 30


def only_payment(runtime: Runtime, owner: wallet.NewWallet) -> Payment:
    [payment] = payments_of(runtime, owner.wallet_id)
    return payment


async def test_a_retry_of_an_attempt_credited_meanwhile_answers_completed_and_stays_credited(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    await save_card(live, live_wallet)
    stripe_front.inject(*INTENTS, "drop")
    headers = {"idempotency-key": "top-up-1"}
    async with rest(live, live_wallet) as client:
        lost = await client.post("/v1/wallet/fund", json={"amount": 25}, headers=headers)
        assert lost.status_code == 502
        assert await funding.reconcile_payments(live) == 1  # the sweep found and credited it
        # The processor is unreachable now: the retry needs nothing from it.
        stripe_front.inject("GET", "/v1/payment_intents/", "unsent", times=10)
        stripe_front.inject(*INTENTS, "unsent", times=10)
        again = await client.post("/v1/wallet/fund", json={"amount": 25}, headers=headers)
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["status"] == "completed" and body["balance"] == "25.00"
    payment = only_payment(live, live_wallet)
    assert body["payment_id"] == payment.id and payment.status == "succeeded"
    assert stripe_front.count(*INTENTS) == 1 and len(deposits(live, live_wallet.wallet_id)) == 1


async def test_a_retry_after_the_window_of_a_lost_answer_is_the_same_attempt(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    await save_card(live, live_wallet)
    stripe_front.inject(*INTENTS, "drop")  # charged; the answer is lost
    async with mcp(live, live_wallet) as chat:
        tool_error(await chat.call_tool("add_funds", {"amount": 25}), 502)
        lost = only_payment(live, live_wallet)
        with live.db.write() as session:  # the server-chosen key's window has passed
            for record in session.exec(select(IdempotencyRecord)).all():
                record.created_at = utc_now() - timedelta(seconds=live.settings.fund_retry_window_s + 1)
                session.add(record)
        retried = tool_ok(await chat.call_tool("add_funds", {"amount": 25}))
    assert retried["status"] == "completed" and retried["payment_id"] == lost.id
    assert stripe_front.count(*INTENTS) == 1  # the card was charged once
    assert only_payment(live, live_wallet).status == "succeeded"
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000


async def test_the_sweep_never_fails_a_payment_retried_while_it_asked(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    await save_card(live, live_wallet)
    stripe_front.inject(*INTENTS, "unsent")  # the first request never reached the processor
    headers = {"idempotency-key": "top-up-1"}
    async with rest(live, live_wallet) as client:
        assert (await client.post("/v1/wallet/fund", json={"amount": 25}, headers=headers)).status_code == 502
    payment = only_payment(live, live_wallet)
    stale = stripe_front.inject("GET", "/v1/payment_intents", "stale")
    later = utc_now() + timedelta(hours=1)  # long past the first request's in-flight bound
    outcomes: list[str] = []

    async def sweep() -> None:
        outcomes.append(
            await anyio.to_thread.run_sync(
                lambda: funding.reconcile_card_payment(live, payment.id, now=later)
            )
        )

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(sweep)
        with anyio.fail_after(GUARD_S):
            await stale.wait_arrivals(1)  # the processor answered: no such charge (yet)
        stripe_front.inject(*INTENTS, "drop")  # the user's retry charges; its answer is lost
        async with rest(live, live_wallet) as client:
            retry = await client.post("/v1/wallet/fund", json={"amount": 25}, headers=headers)
            assert retry.status_code == 502
        stale.release.set()  # the sweep gets its (now stale) answer
    assert outcomes == ["pending"]
    assert only_payment(live, live_wallet).status == "pending"
    assert funding.reconcile_card_payment(live, payment.id) == "succeeded"
    assert stripe_front.count(*INTENTS) == 1 and balance_micros(live, live_wallet.wallet_id) == 25_000_000
