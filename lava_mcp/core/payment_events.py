"""Stripe's webhook events: verified, applied, remembered.

    checkout.session.completed / .async_payment_succeeded   paid → credit the payment (once)
    checkout.session.expired                                 → the payment failed
    payment_intent.succeeded                                 → credit the payment (once)
    payment_intent.payment_failed                            → record the reason on the payment

Events may arrive late, twice, or out of order. Crediting is idempotent on the payment
(see `funding.credit_payment`) and a credited payment never goes back to failed, so any
order of any number of deliveries credits exactly once. An event id is remembered only
after it was applied: if applying fails, the 5xx makes Stripe deliver it again.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import IntegrityError

from lava_mcp.core import funding
from lava_mcp.errors import BadRequest
from lava_mcp.payments.base import Event, PaymentsError, checkout_state
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import WebhookEvent

logger = logging.getLogger("lava_mcp.payments")

CHECKOUT_PAID_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


def receive(runtime: Runtime, payload: bytes, signature: str | None) -> dict[str, Any]:
    """Verify a webhook delivery and apply it; returns what was done.

    Raises: BadRequest for a missing or bad signature, or a malformed body (nothing changes).
    """
    try:
        event = runtime.payments.verify_webhook(payload, signature)
    except PaymentsError as error:
        raise BadRequest(error.message) from error
    with runtime.db.read() as session:
        if session.get(WebhookEvent, event.id) is not None:
            return {"received": True, "id": event.id, "duplicate": True}
    outcome = apply(runtime, event)
    try:
        with runtime.db.write() as session:
            if session.get(WebhookEvent, event.id) is None:
                session.add(WebhookEvent(id=event.id, type=event.type))
    except IntegrityError:
        pass  # a concurrent delivery of the same event recorded it
    return {"received": True, "id": event.id, "outcome": outcome}


def apply(runtime: Runtime, event: Event) -> str:
    """Apply one verified event to its payment; returns a word for the log and the reply."""
    if event.type in CHECKOUT_PAID_EVENTS or event.type == "checkout.session.expired":
        state = checkout_state(event.object)
        payment = funding.settle_checkout(runtime, state)
        if payment is None:
            return "ignored: not a lava-mcp checkout"
        return payment.status
    if event.type == "payment_intent.succeeded":
        return _intent_succeeded(runtime, event.object)
    if event.type == "payment_intent.payment_failed":
        return _intent_failed(runtime, event.object)
    return "ignored"


def _intent_succeeded(runtime: Runtime, intent: dict[str, Any]) -> str:
    payment = _payment_of_intent(runtime, intent)
    if payment is None:
        return "ignored: not a lava-mcp payment"
    received_cents = int(intent.get("amount_received") or intent.get("amount") or 0)
    currency = str(intent.get("currency") or "").lower()
    if received_cents * 10_000 != payment.amount_micros or currency != "usd":
        logger.error(
            "payment intent %s received %s %s for %s", intent.get("id"), received_cents, currency, payment.id
        )
        funding.update_payment(
            runtime, payment.id, failure_code="amount_mismatch", failure_message="paid amount differs"
        )
        return "ignored: amount differs"
    intent_id = str(intent.get("id"))
    if payment.stripe_payment_intent_id is None or payment.method == "checkout":
        funding.update_payment(runtime, payment.id, stripe_payment_intent_id=intent_id)
    funding.credit_payment(runtime, payment.id)
    funding.save_paying_card(runtime, payment, intent_id)
    return "succeeded"


def _intent_failed(runtime: Runtime, intent: dict[str, Any]) -> str:
    payment = _payment_of_intent(runtime, intent)
    if payment is None:
        return "ignored: not a lava-mcp payment"
    if payment.status == "succeeded":
        return "succeeded"  # a late failure of an earlier attempt changes nothing
    error = intent.get("last_payment_error") or {}
    changes: dict[str, Any] = {
        "failure_code": error.get("code") or "payment_failed",
        "decline_code": error.get("decline_code"),
        "failure_message": error.get("message") or "the payment failed",
    }
    # An open Checkout page can still be paid (with another card); a card charge can't.
    if payment.status not in funding.PENDING_STATUSES:
        changes["status"] = "failed"
    funding.update_payment(runtime, payment.id, **changes)
    return str(changes.get("status", payment.status))


def _payment_of_intent(runtime: Runtime, intent: dict[str, Any]) -> Any:
    metadata = intent.get("metadata") or {}
    payment = funding.find_payment(runtime, payment_id=metadata.get("lava_payment_id"))
    if payment is None:
        payment = funding.find_payment_by_intent(runtime, str(intent.get("id")))
    if payment is None or payment.mode != runtime.payments.mode:
        return None
    return payment
