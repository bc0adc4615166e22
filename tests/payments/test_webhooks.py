"""POST /v1/webhooks/stripe: signed deliveries credit exactly once, in any order and number;
bad signatures and bodies are 400 and change nothing."""

from __future__ import annotations

import json
import random
import time
from typing import Any

from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from tests.payments.conftest import (
    StripeFront,
    balance_micros,
    deliver,
    deposits,
    event,
    payments_of,
    rest,
    signed,
)


async def open_checkout(live: Runtime, owner: wallet.NewWallet, amount: int = 25) -> tuple[str, str]:
    """A pending Checkout: (payment id, session id)."""
    async with rest(live, owner) as client:
        body = (await client.post("/v1/wallet/fund", json={"amount": amount})).json()
    assert body["status"] == "checkout_required"
    return body["payment_id"], body["checkout_url"].rsplit("/", 1)[1]


def intent_of(front: StripeFront, session: dict[str, Any]) -> dict[str, Any]:
    """The PaymentIntent object of a paid session, as a payment_intent.* event carries it."""
    return {
        "id": session["payment_intent"],
        "object": "payment_intent",
        "amount": session["amount_total"],
        "amount_received": session["amount_total"],
        "currency": "usd",
        "status": "succeeded",
        "customer": session["customer"],
        "metadata": session["payment_intent_data"]["metadata"],
    }


async def test_the_same_events_ten_times_in_any_order_credit_once(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    payment_id, session_id = await open_checkout(live, live_wallet)
    session = stripe_front.pay(session_id)
    completed = event("checkout.session.completed", session)
    succeeded = event("payment_intent.succeeded", intent_of(stripe_front, session))
    failed_earlier = event(
        "payment_intent.payment_failed",
        intent_of(stripe_front, session)
        | {
            "status": "requires_payment_method",
            "last_payment_error": {"code": "card_declined", "message": "no"},
        },
    )
    deliveries = [completed] * 10 + [succeeded] * 10 + [failed_earlier] * 3
    random.Random(7).shuffle(deliveries)
    async with rest(live) as client:
        for payload in deliveries:
            response = await deliver(client, payload)
            assert response.status_code == 200, response.text
    assert [entry.reference for entry in deposits(live, live_wallet.wallet_id)] == [payment_id]
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000
    [payment] = payments_of(live, live_wallet.wallet_id)
    assert payment.status == "succeeded"  # a late failure never un-credits
    # The success page and a balance read afterwards find it credited.
    async with rest(live, live_wallet) as client:
        assert (await client.get("/fund/success", params={"session_id": session_id})).status_code == 200
        assert (await client.get("/v1/wallet")).json()["balance"] == "25.00"
    assert len(deposits(live, live_wallet.wallet_id)) == 1


async def test_payment_intent_succeeded_alone_credits_and_saves_the_card(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    _, session_id = await open_checkout(live, live_wallet, 100)
    session = stripe_front.pay(session_id)
    async with rest(live) as client:
        response = await deliver(client, event("payment_intent.succeeded", intent_of(stripe_front, session)))
        assert response.json()["outcome"] == "succeeded"
    assert balance_micros(live, live_wallet.wallet_id) == 100_000_000
    async with rest(live, live_wallet) as client:
        [card] = (await client.get("/v1/payment_methods")).json()["data"]
        assert card["last4"] == "4242"


async def test_a_failure_is_recorded_then_a_later_success_still_credits(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    payment_id, session_id = await open_checkout(live, live_wallet)
    failure = {
        "id": "pi_first_try",
        "object": "payment_intent",
        "amount": 2500,
        "currency": "usd",
        "status": "requires_payment_method",
        "metadata": {"lava_payment_id": payment_id, "lava_wallet_id": live_wallet.wallet_id},
        "last_payment_error": {
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        },
    }
    async with rest(live) as client:
        assert (await deliver(client, event("payment_intent.payment_failed", failure))).status_code == 200
        [payment] = payments_of(live, live_wallet.wallet_id)
        assert payment.decline_code == "insufficient_funds" and payment.failure_code == "card_declined"
        assert payment.status == "checkout_pending"  # the page can still be paid with another card
        assert balance_micros(live, live_wallet.wallet_id) == 0
        session = stripe_front.pay(session_id)
        await deliver(client, event("checkout.session.completed", session))
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000


async def test_a_failed_off_session_charge_is_recorded(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with rest(live, live_wallet) as client:
        await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_chargeCustomerFail"})
        declined = await client.post("/v1/wallet/fund", json={"amount": 25})
    payment_id = declined.json()["payment_id"]
    intent = {
        "id": "pi_declined_at_charge",  # localstripe's decline does not name its intent; Stripe's does
        "object": "payment_intent",
        "amount": 2500,
        "currency": "usd",
        "metadata": {"lava_payment_id": payment_id},
        "last_payment_error": {
            "code": "card_declined",
            "decline_code": "do_not_honor",
            "message": "Declined.",
        },
    }
    async with rest(live) as client:
        assert (await deliver(client, event("payment_intent.payment_failed", intent))).json()[
            "outcome"
        ] == "failed"
    [payment] = payments_of(live, live_wallet.wallet_id)
    assert payment.status == "failed" and payment.decline_code == "do_not_honor"


async def test_unpaid_mismatched_and_foreign_events_credit_nothing(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    _payment_id, session_id = await open_checkout(live, live_wallet)
    session = dict(stripe_front.sessions[session_id])
    async with rest(live) as client:
        unpaid = session | {"status": "complete", "payment_status": "unpaid"}
        assert (await deliver(client, event("checkout.session.completed", unpaid))).status_code == 200
        short = session | {"status": "complete", "payment_status": "paid", "amount_total": 100}
        assert (await deliver(client, event("checkout.session.completed", short))).status_code == 200
        foreign = session | {
            "id": "cs_test_other",
            "metadata": {},
            "status": "complete",
            "payment_status": "paid",
        }
        response = await deliver(client, event("checkout.session.completed", foreign))
        assert response.status_code == 200 and response.json()["outcome"].startswith("ignored")
        ignored = await deliver(client, event("customer.created", {"id": "cus_x", "object": "customer"}))
        assert ignored.json()["outcome"] == "ignored"
    assert balance_micros(live, live_wallet.wallet_id) == 0 and deposits(live, live_wallet.wallet_id) == []
    [payment] = payments_of(live, live_wallet.wallet_id)
    assert payment.status == "checkout_pending" and payment.failure_code == "amount_mismatch"


async def test_forged_missing_stale_and_malformed_deliveries_are_400(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    _payment_id, session_id = await open_checkout(live, live_wallet)
    paid = event("checkout.session.completed", stripe_front.pay(session_id))
    body, good_signature = signed(paid)
    _, forged_signature = signed(paid, secret="whsec_attacker")
    _, stale_signature = signed(paid, timestamp=int(time.time()) - 3600)
    not_json, not_json_signature = b"{not json", signed_raw(b"{not json")
    not_event = json.dumps({"hello": "world"}).encode()
    cases = [
        (body, None),
        (body, ""),
        (body, forged_signature),
        (body, stale_signature),
        (body, "t=1,v1=deadbeef"),
        (body, "garbage"),
        (body[: len(body) // 2], good_signature),  # truncated after signing
        (body + b" ", good_signature),  # tampered
        (not_json, not_json_signature),
        (not_event, signed_raw(not_event)),
        (json.dumps([1, 2]).encode(), signed_raw(json.dumps([1, 2]).encode())),
        (b"\xff\xfe", signed_raw(b"\xff\xfe")),
    ]
    async with rest(live) as client:
        for content, signature in cases:
            headers = {"content-type": "application/json"}
            if signature is not None:
                headers["stripe-signature"] = signature
            response = await client.post("/v1/webhooks/stripe", content=content, headers=headers)
            assert response.status_code == 400, (content[:40], signature, response.text)
            assert response.json()["code"] == 400 and response.json()["error"]
        assert balance_micros(live, live_wallet.wallet_id) == 0
        # The genuine delivery still works afterwards.
        genuine = await client.post(
            "/v1/webhooks/stripe", content=body, headers={"stripe-signature": good_signature}
        )
        assert genuine.status_code == 200
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000


async def test_the_sandbox_refuses_stripe_webhooks(sandbox: Runtime) -> None:
    async with rest(sandbox) as client:
        response = await deliver(client, event("payment_intent.succeeded", {"id": "pi_x", "metadata": {}}))
    assert response.status_code == 400 and "SANDBOX" in response.json()["error"]


def signed_raw(body: bytes) -> str:
    import hashlib
    import hmac

    from tests.payments.conftest import WEBHOOK_SECRET

    moment = int(time.time())
    signature = hmac.new(WEBHOOK_SECRET.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={signature}"
