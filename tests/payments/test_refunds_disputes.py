"""Refunds and disputes reach the ledger once each, never below zero: what the balance can't
cover is the wallet's shortfall, which blocks spending until a deposit covers it, and which
`ledger verify` reports and checks. Refunds are real ones made with the stripe SDK at
localstripe; the charge they leave is what the signed `charge.refunded` event carries.
Disputes (which localstripe lacks) are signed events shaped as Stripe's."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import anyio
import pytest
import stripe
from sqlmodel import select

from lava_mcp.core import funding, ledger, verify, wallet
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import LedgerEntry, Payment, Wallet
from tests.payments.conftest import (
    STRIPE_KEY,
    StripeFront,
    balance_micros,
    deliver,
    event,
    live_settings,
    payments_of,
    rest,
)


def sdk(front: StripeFront) -> stripe.StripeClient:
    return stripe.StripeClient(STRIPE_KEY, base_addresses={"api": front.url}, max_network_retries=0)


async def top_up(runtime: Runtime, owner: wallet.NewWallet, amount: int) -> Payment:
    """A saved card charged `amount` dollars; returns its (credited) payment."""
    async with rest(runtime, owner) as client:
        if not (await client.get("/v1/payment_methods")).json()["data"]:
            await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
        body = (
            await client.post(
                "/v1/wallet/fund", json={"amount": amount}, headers={"idempotency-key": secrets.token_hex(8)}
            )
        ).json()
    assert body["status"] == "completed", body
    [payment] = [p for p in payments_of(runtime, owner.wallet_id) if p.id == body["payment_id"]]
    return payment


def refund(front: StripeFront, payment: Payment, amount_cents: int | None = None) -> dict[str, Any]:
    """A real refund at localstripe; returns the charge as Stripe's `charge.refunded` carries it."""
    client = sdk(front)
    params: dict[str, Any] = {"payment_intent": payment.stripe_payment_intent_id}
    if amount_cents is not None:
        params["amount"] = amount_cents
    made = client.v1.refunds.create(params)  # type: ignore[arg-type]
    charge: dict[str, Any] = client.v1.charges.retrieve(str(made.charge)).to_dict()
    return charge


def entries(runtime: Runtime, wallet_id: str, *kinds: str) -> list[LedgerEntry]:
    with runtime.db.read() as session:
        return list(
            session.exec(
                select(LedgerEntry)
                .where(LedgerEntry.wallet_id == wallet_id, LedgerEntry.kind.in_(kinds))  # type: ignore[attr-defined]
                .order_by(LedgerEntry.id)  # type: ignore[arg-type]
            ).all()
        )


def shortfall(runtime: Runtime, wallet_id: str) -> int:
    with runtime.db.read() as session:
        row = session.get(Wallet, wallet_id)
        assert row is not None
        return row.shortfall_micros


def dispute(payment: Payment, amount_cents: int, status: str = "needs_response") -> dict[str, Any]:
    return {
        "id": "dp_" + secrets.token_hex(8),
        "object": "dispute",
        "amount": amount_cents,
        "currency": "usd",
        "charge": "ch_" + secrets.token_hex(8),
        "payment_intent": payment.stripe_payment_intent_id,
        "status": status,
        "reason": "fraudulent",
    }


async def test_a_full_refund_debits_once_with_its_payment(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    payment = await top_up(live, live_wallet, 25)
    charge = refund(stripe_front, payment)
    assert charge["amount_refunded"] == 2500 and charge["refunds"]["data"]
    async with rest(live) as webhook:
        for _ in range(3):  # redelivered, and as a new event about the same refund
            assert (await deliver(webhook, event("charge.refunded", charge))).status_code == 200
    [entry] = entries(live, live_wallet.wallet_id, "refund")
    assert entry.amount_micros == -25_000_000 and entry.payment_id == payment.id
    assert entry.reference == charge["refunds"]["data"][0]["id"] and entry.shortfall_micros == 0
    assert balance_micros(live, live_wallet.wallet_id) == 0
    assert verify.verify(live.db) == [] and verify.shortfalls(live.db) == []


async def test_partial_refunds_each_once_up_to_the_amount_refunded(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    payment = await top_up(live, live_wallet, 50)
    first = refund(stripe_front, payment, 1000)
    second = refund(stripe_front, payment, 500)
    assert second["amount_refunded"] == 1500
    async with rest(live) as webhook:
        # Out of order, twice each; and one event shaped as recent API versions send it,
        # without the `refunds` list: only the cumulative `amount_refunded`.
        without_list = {key: value for key, value in second.items() if key != "refunds"}
        for charge in (second, first, without_list, second, first):
            assert (await deliver(webhook, event("charge.refunded", charge))).status_code == 200
    refunds = entries(live, live_wallet.wallet_id, "refund")
    assert sorted(entry.amount_micros for entry in refunds) == [-10_000_000, -5_000_000]
    assert {entry.reference for entry in refunds} == {r["id"] for r in second["refunds"]["data"]}
    assert balance_micros(live, live_wallet.wallet_id) == 35_000_000
    assert verify.verify(live.db) == []


async def test_a_refund_without_the_list_is_one_entry_for_the_total(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    payment = await top_up(live, live_wallet, 40)
    charge = {key: value for key, value in refund(stripe_front, payment, 1500).items() if key != "refunds"}
    async with rest(live) as webhook:
        for _ in range(2):
            await deliver(webhook, event("charge.refunded", charge))
        # Then the full list arrives: the same refund, already taken, is not taken again.
        listed = sdk(stripe_front).v1.charges.retrieve(charge["id"]).to_dict()
        await deliver(webhook, event("charge.refunded", listed))
    [entry] = entries(live, live_wallet.wallet_id, "refund")
    assert entry.amount_micros == -15_000_000 and entry.payment_id == payment.id
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000


async def test_a_refund_of_money_already_spent_is_a_shortfall_that_blocks_until_covered(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    payment = await top_up(live, live_wallet, 25)
    # The wallet spent $20 of it (an operator's negative adjustment stands in for charges).
    wallet.adjust(live.db, live_wallet.wallet_id, "-20", reason="spent")
    charge = refund(stripe_front, payment)
    async with rest(live, live_wallet) as client:
        await deliver(client, event("charge.refunded", charge))
        [entry] = entries(live, live_wallet.wallet_id, "refund")
        assert entry.amount_micros == -5_000_000 and entry.shortfall_micros == 20_000_000
        assert balance_micros(live, live_wallet.wallet_id) == 0
        assert shortfall(live, live_wallet.wallet_id) == 20_000_000
        [owed] = verify.shortfalls(live.db)
        assert live_wallet.wallet_id in owed and "$20.00" in owed
        assert verify.verify(live.db) == []

        # The next top-up covers the shortfall first, in an entry that says so.
        body = (await client.post("/v1/wallet/fund", json={"amount": 30})).json()
    assert body["status"] == "completed" and body["balance"] == "10.00"
    [cover] = entries(live, live_wallet.wallet_id, "shortfall_cover")
    assert cover.amount_micros == -20_000_000 and cover.shortfall_micros == -20_000_000
    assert cover.payment_id == body["payment_id"] and "refunds or disputes" in cover.memo
    assert (
        shortfall(live, live_wallet.wallet_id) == 0
        and balance_micros(live, live_wallet.wallet_id) == 10_000_000
    )
    assert verify.verify(live.db) == [] and verify.shortfalls(live.db) == []


async def test_a_dispute_debits_once_and_its_reinstatement_credits_back_once(
    live: Runtime, live_wallet: wallet.NewWallet
) -> None:
    payment = await top_up(live, live_wallet, 25)
    disputed = dispute(payment, 2500)
    async with rest(live) as webhook:
        for kind in ("charge.dispute.created", "charge.dispute.funds_withdrawn", "charge.dispute.created"):
            assert (await deliver(webhook, event(kind, disputed))).status_code == 200
        [taken] = entries(live, live_wallet.wallet_id, "dispute")
        assert taken.amount_micros == -25_000_000 and taken.reference == disputed["id"]
        assert taken.payment_id == payment.id and balance_micros(live, live_wallet.wallet_id) == 0
        for _ in range(2):
            await deliver(webhook, event("charge.dispute.funds_reinstated", disputed | {"status": "won"}))
    [back] = entries(live, live_wallet.wallet_id, "dispute_reversal")
    assert back.amount_micros == 25_000_000 and back.payment_id == payment.id
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000
    assert verify.verify(live.db) == []


async def test_a_reinstatement_before_its_withdrawal_and_a_dispute_beyond_the_balance(
    live: Runtime, live_wallet: wallet.NewWallet
) -> None:
    payment = await top_up(live, live_wallet, 25)
    wallet.adjust(live.db, live_wallet.wallet_id, "-25", reason="spent")
    disputed = dispute(payment, 2500)
    async with rest(live) as webhook:
        # The reinstatement arrives first: the withdrawal is applied first, then reversed.
        await deliver(webhook, event("charge.dispute.funds_reinstated", disputed))
        await deliver(webhook, event("charge.dispute.funds_withdrawn", disputed))
    [taken] = entries(live, live_wallet.wallet_id, "dispute")
    [back] = entries(live, live_wallet.wallet_id, "dispute_reversal")
    # Nothing was there to take: all owed, then the reinstatement paid what was owed.
    assert (taken.amount_micros, taken.shortfall_micros) == (0, 25_000_000)
    assert (back.amount_micros, back.shortfall_micros) == (0, -25_000_000)
    assert balance_micros(live, live_wallet.wallet_id) == 0 and shortfall(live, live_wallet.wallet_id) == 0
    assert verify.verify(live.db) == []


async def test_an_inquiry_and_a_stranger_charge_move_nothing(
    live: Runtime, live_wallet: wallet.NewWallet
) -> None:
    payment = await top_up(live, live_wallet, 25)
    async with rest(live) as webhook:
        inquiry = await deliver(
            webhook, event("charge.dispute.created", dispute(payment, 2500, status="warning_needs_response"))
        )
        assert "inquiry" in inquiry.json()["outcome"]
        stranger = {"id": "ch_x", "object": "charge", "payment_intent": "pi_unknown", "amount_refunded": 100}
        assert (
            "not a lava-mcp payment"
            in (await deliver(webhook, event("charge.refunded", stranger))).json()["outcome"]
        )
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000
    assert entries(live, live_wallet.wallet_id, "refund", "dispute") == []


def test_each_kind_has_its_sign() -> None:
    assert ledger.sign_allowed("deposit", 1) and not ledger.sign_allowed("deposit", -1)
    assert ledger.sign_allowed("charge", -1) and not ledger.sign_allowed("charge", 0)
    # `refund` is money given back to the card holder: it takes from the wallet, never adds.
    assert ledger.sign_allowed("refund", -1) and ledger.sign_allowed("refund", 0)
    assert not ledger.sign_allowed("refund", 1)
    assert ledger.sign_allowed("dispute", 0) and not ledger.sign_allowed("dispute", 1)
    assert ledger.sign_allowed("dispute_reversal", 1) and not ledger.sign_allowed("dispute_reversal", -1)
    assert ledger.sign_allowed("shortfall_cover", -1) and not ledger.sign_allowed("shortfall_cover", 0)
    assert ledger.sign_allowed("adjustment", -1) and not ledger.sign_allowed("adjustment", 0)
    assert not ledger.sign_allowed("gift", 1)


async def test_verify_catches_a_wrong_shortfall_a_wrong_sign_and_a_stranger_payment(
    live: Runtime, live_wallet: wallet.NewWallet
) -> None:
    payment = await top_up(live, live_wallet, 25)
    other = wallet.create_wallet(live.db, mode="test")
    with live.db.write() as session:
        row = session.get(Wallet, live_wallet.wallet_id)
        assert row is not None
        row.shortfall_micros = 1  # owed, but no entry says why
        session.add(row)
        stranger = session.get(Wallet, other.wallet_id)
        assert stranger is not None
        stranger.balance_micros = 5_000_000
        session.add(stranger)
        # Written around the ledger's own functions (which assert): a refund that adds money,
        # naming another wallet's payment.
        session.add(
            LedgerEntry(
                wallet_id=other.wallet_id,
                kind="refund",
                amount_micros=5_000_000,
                balance_after_micros=5_000_000,
                reference="re_forged",
                payment_id=payment.id,
            )
        )
    problems = verify.verify(live.db)
    assert any(live_wallet.wallet_id in line and "shortfall" in line for line in problems), problems
    assert any("wrong sign" in line for line in problems), problems
    assert any("re_forged" in line and "not a payment of its wallet" in line for line in problems), problems


def test_the_ledger_refuses_a_refund_that_adds_money(live: Runtime, live_wallet: wallet.NewWallet) -> None:
    with pytest.raises(AssertionError), live.db.write() as session:
        ledger.insert_entry(
            session,
            wallet_id=live_wallet.wallet_id,
            kind="refund",
            amount_micros=1,
            balance_after_micros=1,
            reference="re_bad",
        )


async def test_concurrent_refund_deliveries_on_postgresql_take_exactly_the_amount_refunded(
    tmp_path: Path, stripe_front: StripeFront, postgres_url: str
) -> None:
    runtime = Runtime.build(live_settings(tmp_path, stripe_front.url, LAVA_DATABASE_URL=postgres_url))
    runtime.db.upgrade()
    try:
        owner = wallet.create_wallet(runtime.db, mode="test")
        payment = await top_up(runtime, owner, 50)
        after_first = refund(stripe_front, payment, 1000)
        after_second = refund(stripe_front, payment, 500)

        def bare(charge: dict[str, Any]) -> dict[str, Any]:
            return {key: value for key, value in charge.items() if key != "refunds"}

        # Every shape Stripe may deliver, at once, twice over: each a new event.
        shapes = [after_first, bare(after_first), after_second, bare(after_second)] * 2
        async with rest(runtime) as webhook, anyio.create_task_group() as tasks:
            statuses: list[int] = []

            async def one(charge: dict[str, Any]) -> None:
                statuses.append((await deliver(webhook, event("charge.refunded", charge))).status_code)

            for charge in shapes:
                tasks.start_soon(one, charge)
        assert statuses == [200] * len(shapes)
        taken = entries(runtime, owner.wallet_id, "refund")
        assert sum(entry.shortfall_micros - entry.amount_micros for entry in taken) == 15_000_000
        assert balance_micros(runtime, owner.wallet_id) == 35_000_000
        assert verify.verify(runtime.db) == []
    finally:
        await runtime.aclose()


async def test_a_pending_refund_that_fails_gives_its_money_back_once(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    payment = await top_up(live, live_wallet, 25)
    charge = refund(stripe_front, payment, 1000)
    [made] = charge["refunds"]["data"]
    pending = charge | {"refunds": {"object": "list", "data": [made | {"status": "pending"}]}}
    failed_refund = made | {"status": "failed", "failure_reason": "expired_or_canceled_card"}
    async with rest(live) as webhook:
        assert (await deliver(webhook, event("charge.refunded", pending))).status_code == 200
        assert balance_micros(live, live_wallet.wallet_id) == 15_000_000  # a pending refund takes its money
        for kind in ("charge.refund.updated", "refund.failed", "charge.refund.updated"):
            answer = await deliver(webhook, event(kind, failed_refund))
            assert answer.status_code == 200, answer.text
        # A later charge.refunded naming it failed (and refunding nothing) changes nothing more.
        after = charge | {"amount_refunded": 0, "refunds": {"object": "list", "data": [failed_refund]}}
        assert (await deliver(webhook, event("charge.refunded", after))).status_code == 200
    [given_back] = entries(live, live_wallet.wallet_id, "refund_reversal")
    assert given_back.reference == made["id"] and given_back.amount_micros == 10_000_000
    assert given_back.payment_id == payment.id
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000
    assert verify.verify(live.db) == [] and verify.shortfalls(live.db) == []


async def test_a_failed_refund_that_was_owed_reduces_the_shortfall(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    payment = await top_up(live, live_wallet, 25)
    wallet.adjust(live.db, live_wallet.wallet_id, "-20", reason="spent")
    charge = refund(stripe_front, payment, 1000)
    [made] = charge["refunds"]["data"]
    async with rest(live) as webhook:
        pending = charge | {"refunds": {"object": "list", "data": [made | {"status": "pending"}]}}
        await deliver(webhook, event("charge.refunded", pending))
        assert shortfall(live, live_wallet.wallet_id) == 5_000_000
        await deliver(webhook, event("charge.refund.updated", made | {"status": "canceled"}))
    assert shortfall(live, live_wallet.wallet_id) == 0
    assert balance_micros(live, live_wallet.wallet_id) == 5_000_000
    assert verify.verify(live.db) == []


async def test_a_refund_or_dispute_of_a_payment_never_credited_takes_nothing(
    live: Runtime, live_wallet: wallet.NewWallet
) -> None:
    with live.db.write() as session:
        session.add(
            Payment(
                id="pay_never_credited",
                wallet_id=live_wallet.wallet_id,
                amount_micros=25_000_000,
                status="failed",
                mode=live.settings.money_mode,
                stripe_payment_intent_id="pi_never_credited",
            )
        )
    wallet.adjust(live.db, live_wallet.wallet_id, "5", reason="other money")
    charge = {
        "id": "ch_never_credited",
        "object": "charge",
        "amount": 2500,
        "amount_refunded": 2500,
        "currency": "usd",
        "payment_intent": "pi_never_credited",
        "refunds": {"object": "list", "data": [{"id": "re_never", "amount": 2500, "status": "succeeded"}]},
    }
    [payment] = payments_of(live, live_wallet.wallet_id)
    async with rest(live) as webhook:
        answers = [
            await deliver(webhook, event("charge.refunded", charge)),
            await deliver(
                webhook,
                event(
                    "charge.refund.updated",
                    charge["refunds"]["data"][0] | {"payment_intent": "pi_never_credited"},
                ),
            ),
            await deliver(webhook, event("charge.dispute.created", dispute(payment, 2500))),
        ]
    for answer in answers:
        assert answer.status_code == 200 and answer.json()["outcome"].startswith("ignored: "), answer.text
    assert entries(live, live_wallet.wallet_id, "refund", "dispute") == []
    assert balance_micros(live, live_wallet.wallet_id) == 5_000_000
    assert shortfall(live, live_wallet.wallet_id) == 0


async def test_a_refund_of_a_payment_still_being_reconciled_waits_for_its_credit(
    live: Runtime, live_wallet: wallet.NewWallet
) -> None:
    """The card was charged but the answer was lost: the payment is pending, not credited.
    Its refund can't be judged yet: 503, nothing changes, and the event is not remembered,
    so Stripe delivers it again. Once the payment is credited, the redelivery takes it
    back, and the wallet never keeps refunded money."""
    with live.db.write() as session:
        session.add(
            Payment(
                id="pay_lost_answer",
                wallet_id=live_wallet.wallet_id,
                amount_micros=25_000_000,
                status="pending",
                mode=live.settings.money_mode,
                stripe_payment_intent_id="pi_lost_answer",
            )
        )
    charge = {
        "id": "ch_lost_answer",
        "object": "charge",
        "amount": 2500,
        "amount_refunded": 2500,
        "currency": "usd",
        "payment_intent": "pi_lost_answer",
        "refunds": {"object": "list", "data": [{"id": "re_lost", "amount": 2500, "status": "succeeded"}]},
    }
    refunded = event("charge.refunded", charge)
    async with rest(live) as webhook:
        early = await deliver(webhook, refunded)
        assert early.status_code == 503 and "being reconciled" in early.json()["error"], early.text
        assert entries(live, live_wallet.wallet_id, "refund") == []
        funding.credit_payment(live, "pay_lost_answer")  # what the sweep does once Stripe says paid
        again = await deliver(webhook, refunded)
    assert again.status_code == 200, again.text
    [taken] = entries(live, live_wallet.wallet_id, "refund")
    assert taken.amount_micros == -25_000_000 and taken.payment_id == "pay_lost_answer"
    assert balance_micros(live, live_wallet.wallet_id) == 0
    assert verify.verify(live.db) == []
