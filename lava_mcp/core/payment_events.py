"""Stripe's webhook events: verified, applied, remembered.

    checkout.session.completed / .async_payment_succeeded   paid → credit the payment (once)
    checkout.session.expired                                 → the payment failed
    payment_intent.succeeded                                 → credit the payment (once)
    payment_intent.payment_failed                            → record the reason on the payment
    charge.refunded                                          → a `refund` entry per refund id
    charge.refund.updated / refund.updated / refund.failed   → a failed or canceled refund's money
                                                               given back (`refund_reversal`, once)
    charge.dispute.created / .funds_withdrawn                → one `dispute` entry per dispute id
    charge.dispute.funds_reinstated                          → one `dispute_reversal` per dispute id

Events may arrive late, twice, or out of order. Crediting is idempotent on the payment
(see `funding.credit_payment`) and a credited payment never goes back to failed, so any
order of any number of deliveries credits exactly once. Refunds are idempotent on each
refund id and never exceed the charge's `amount_refunded` (when an event carries no
`refunds` list, the rest up to `amount_refunded` is one entry named after that total);
disputes on the dispute id, and a reinstatement arriving first applies its dispute first.
A refund that took money while `pending` and then failed or was canceled gives it back
once (idempotent on the refund id). A refund or dispute of a payment that was never
credited takes nothing: it is logged and answered "ignored".
A refund or dispute never takes the wallet below zero (`ledger.reverse`: the rest becomes
the wallet's shortfall). An event whose `livemode` is not this server's mode (a test-mode
event at a live server, or the reverse) is ignored and logged. An event id is remembered
only after it was applied: if applying fails, the 5xx makes Stripe deliver it again.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from lava_mcp.core import funding, ledger
from lava_mcp.errors import BadRequest, NotReadyYet
from lava_mcp.money import MICROS_PER_CENT
from lava_mcp.payments.base import (
    Event,
    IntentLookup,
    InvalidRequest,
    PaymentsError,
    cents_of,
    checkout_state,
)
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import LedgerEntry, Payment, WebhookEvent

logger = logging.getLogger("lava_mcp.payments")

CHECKOUT_PAID_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
DISPUTE_DEBIT_EVENTS = ("charge.dispute.created", "charge.dispute.funds_withdrawn")
# Refunds in these states took (or are taking) the money back from the card holder's side.
REFUND_MOVED = ("succeeded", "pending", "requires_action")
# Refunds in these states gave nothing back to the card holder: what they took is returned.
REFUND_UNDONE = ("failed", "canceled")
REFUND_UPDATED_EVENTS = ("charge.refund.updated", "refund.updated", "refund.failed")


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
    if event.livemode is not None and event.livemode != (runtime.payments.mode == "live"):
        logger.warning(
            "ignored %s event %s: livemode=%s but this server's payments are %s",
            event.type,
            event.id,
            event.livemode,
            runtime.payments.mode,
        )
        outcome = (
            f"ignored: livemode {str(event.livemode).lower()} event at a {runtime.payments.mode}-mode server"
        )
    else:
        try:
            outcome = apply(runtime, event)
        except (TypeError, ValueError, AttributeError, KeyError) as error:
            # Processor data of a shape nothing here expects: a logged, recorded refusal
            # (a 5xx would have Stripe deliver it again for ever), never a crash.
            logger.exception("ignored %s event %s: malformed %s", event.type, event.id, type(error).__name__)
            outcome = f"ignored: malformed {event.type} object"
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
    if event.type == "charge.refunded":
        return _charge_refunded(runtime, event.object)
    if event.type in REFUND_UPDATED_EVENTS:
        return _refund_updated(runtime, event.object)
    if event.type in DISPUTE_DEBIT_EVENTS:
        return _dispute_withdrawn(runtime, event.object)
    if event.type == "charge.dispute.funds_reinstated":
        return _dispute_reinstated(runtime, event.object)
    return "ignored"


def _intent_succeeded(runtime: Runtime, intent: dict[str, Any]) -> str:
    payment = _payment_of_intent(runtime, intent)
    if payment is None:
        return "ignored: not a lava-mcp payment"
    received = intent.get("amount_received")
    received_cents = cents_of(intent.get("amount") if received is None else received)
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


def _charge_refunded(runtime: Runtime, charge: dict[str, Any]) -> str:
    payment = _payment_of_charge(runtime, charge)
    if payment is None:
        return "ignored: not a lava-mcp payment"
    if str(charge.get("currency") or "usd").lower() != "usd":
        logger.error("charge %s of %s refunded in %s", charge.get("id"), payment.id, charge.get("currency"))
        return "ignored: not usd"
    charge_id = str(charge.get("id"))
    refunded_micros = min(_micros(charge.get("amount_refunded")), payment.amount_micros)
    listed = charge.get("refunds")
    refunds = listed.get("data") if isinstance(listed, dict) else None
    with runtime.db.write() as session:
        # Locked before reading what was taken: two deliveries at once never both take the rest.
        ledger.lock_wallet(session, payment.wallet_id)
        if not _credited(session, payment):
            return _refused_uncredited(
                f"payment {payment.id} was never credited: its refund takes nothing", charge, payment
            )
        for refund in refunds if isinstance(refunds, list) else []:
            if isinstance(refund, dict) and refund.get("status") in REFUND_UNDONE and refund.get("id"):
                _give_back(session, payment, str(refund.get("id")))
        taken = _reversed_micros(session, payment)
        for refund in refunds if isinstance(refunds, list) else []:
            if not isinstance(refund, dict) or refund.get("status", "succeeded") not in REFUND_MOVED:
                continue
            refund_id = str(refund.get("id"))
            room = refunded_micros - taken
            if room <= 0:
                break
            if (
                ledger.find(session, wallet_id=payment.wallet_id, kind="refund", reference=refund_id)
                is not None
            ):
                continue
            amount_micros = min(_micros(refund.get("amount")), room)
            if amount_micros <= 0:
                continue
            ledger.reverse(
                session,
                wallet_id=payment.wallet_id,
                kind="refund",
                amount_micros=amount_micros,
                reference=refund_id,
                payment_id=payment.id,
                memo=f"refund {refund_id} of top-up {payment.id}",
            )
            taken += amount_micros
        if refunded_micros > taken:
            # The event named no (or not every) refund: the rest up to the charge's total.
            ledger.reverse(
                session,
                wallet_id=payment.wallet_id,
                kind="refund",
                amount_micros=refunded_micros - taken,
                reference=f"{charge_id}:refunded:{refunded_micros}",
                payment_id=payment.id,
                memo=f"refund of top-up {payment.id} (charge {charge_id}, {refunded_micros} refunded in all)",
            )
    return "refunded"


def _refund_updated(runtime: Runtime, refund: dict[str, Any]) -> str:
    """One refund changed: failed or canceled → what it took is given back (once); moving →
    taken, if it was not yet (within what the payment paid)."""
    payment = _payment_of_dispute(runtime, refund)  # a refund names its charge and intent alike
    if payment is None:
        return "ignored: not a lava-mcp payment"
    refund_id, status = refund.get("id"), refund.get("status")
    if not isinstance(refund_id, str) or not refund_id:
        return _refused("refund without an id", refund, payment)
    if str(refund.get("currency") or "usd").lower() != "usd":
        return _refused(f"refund in {refund.get('currency')!r}, not usd", refund, payment)
    with runtime.db.write() as session:
        ledger.lock_wallet(session, payment.wallet_id)
        if not _credited(session, payment):
            return _refused_uncredited(
                f"payment {payment.id} was never credited: its refund takes nothing", refund, payment
            )
        if status in REFUND_UNDONE:
            return (
                "refund given back"
                if _give_back(session, payment, refund_id)
                else "ignored: nothing was taken"
            )
        if status not in REFUND_MOVED:
            return f"ignored: refund {status}"
        if ledger.find(session, wallet_id=payment.wallet_id, kind="refund", reference=refund_id) is not None:
            return "refunded"
        amount_micros = min(
            _micros(refund.get("amount")), payment.amount_micros - _reversed_micros(session, payment)
        )
        if amount_micros <= 0:
            return _refused(f"refund amount {refund.get('amount')!r} leaves nothing to take", refund, payment)
        ledger.reverse(
            session,
            wallet_id=payment.wallet_id,
            kind="refund",
            amount_micros=amount_micros,
            reference=refund_id,
            payment_id=payment.id,
            memo=f"refund {refund_id} of top-up {payment.id}",
        )
    return "refunded"


def _give_back(session: Session, payment: Payment, refund_id: str) -> bool:
    """A refund that failed or was canceled: return what its entry took (once). Returns
    whether anything was (or had been) given back."""
    entry = ledger.find(session, wallet_id=payment.wallet_id, kind="refund", reference=refund_id)
    taken_micros = 0 if entry is None else entry.shortfall_micros - entry.amount_micros
    if taken_micros <= 0:
        return False
    ledger.reinstate(
        session,
        wallet_id=payment.wallet_id,
        kind="refund_reversal",
        amount_micros=taken_micros,
        reference=refund_id,
        payment_id=payment.id,
        memo=f"refund {refund_id} of top-up {payment.id} failed: its money given back",
    )
    return True


def _credited(session: Session, payment: Payment) -> bool:
    """Whether the payment's deposit is in the ledger (only then can anything be taken back)."""
    return ledger.find(session, wallet_id=payment.wallet_id, kind="deposit", reference=payment.id) is not None


def _dispute_withdrawn(runtime: Runtime, dispute: dict[str, Any]) -> str:
    payment = _payment_of_dispute(runtime, dispute)
    if payment is None:
        return "ignored: not a lava-mcp payment"
    if str(dispute.get("status") or "").startswith("warning_"):
        return "ignored: an inquiry withdraws no funds"
    refused = _malformed_dispute(dispute)
    if refused:
        return _refused(refused, dispute, payment)
    with runtime.db.write() as session:
        ledger.lock_wallet(session, payment.wallet_id)
        if not _credited(session, payment):
            return _refused_uncredited(
                f"payment {payment.id} was never credited: its dispute takes nothing", dispute, payment
            )
        _debit_dispute(session, payment, dispute)
    return "disputed"


def _dispute_reinstated(runtime: Runtime, dispute: dict[str, Any]) -> str:
    payment = _payment_of_dispute(runtime, dispute)
    if payment is None:
        return "ignored: not a lava-mcp payment"
    refused = _malformed_dispute(dispute)
    if refused:
        return _refused(refused, dispute, payment)
    dispute_id = str(dispute.get("id"))
    with runtime.db.write() as session:
        ledger.lock_wallet(session, payment.wallet_id)
        if not _credited(session, payment):
            return _refused_uncredited(
                f"payment {payment.id} was never credited: its dispute takes nothing", dispute, payment
            )
        # Out of order: the reinstatement came first, so the withdrawal it reverses is applied first.
        entry = _debit_dispute(session, payment, dispute)
        amount_micros = entry.shortfall_micros - entry.amount_micros  # what the dispute took, owed or debited
        if amount_micros > 0:
            ledger.reinstate(
                session,
                wallet_id=payment.wallet_id,
                amount_micros=amount_micros,
                reference=dispute_id,
                payment_id=payment.id,
                memo=f"dispute {dispute_id} of top-up {payment.id} won: funds reinstated",
            )
    return "reinstated"


def _debit_dispute(session: Session, payment: Payment, dispute: dict[str, Any]) -> LedgerEntry:
    dispute_id = str(dispute.get("id"))
    amount_micros = min(_micros(dispute.get("amount")), payment.amount_micros)
    existing = ledger.find(session, wallet_id=payment.wallet_id, kind="dispute", reference=dispute_id)
    if existing is not None:
        return existing
    entry, _ = ledger.reverse(
        session,
        wallet_id=payment.wallet_id,
        kind="dispute",
        amount_micros=amount_micros,
        reference=dispute_id,
        payment_id=payment.id,
        memo=f"dispute {dispute_id} of top-up {payment.id}: funds withdrawn",
    )
    return entry


def _malformed_dispute(dispute: dict[str, Any]) -> str:
    """Why a dispute can't be applied (no id, no positive whole amount in cents), or ""."""
    if not isinstance(dispute.get("id"), str) or not dispute.get("id"):
        return "dispute without an id"
    if _micros(dispute.get("amount")) <= 0:
        return f"dispute amount {dispute.get('amount')!r} is not a positive whole number of cents"
    return ""


def _refused_uncredited(reason: str, data_object: dict[str, Any], payment: Payment) -> str:
    """A refund or dispute of a payment with no deposit. If the payment may still turn out
    paid (its charge's answer was lost and it is being reconciled), the event can't be
    judged yet: NotReadyYet (503) makes Stripe deliver it again, after the sweep has
    credited the payment. A payment that failed takes nothing: refused.

    Raises: NotReadyYet while the payment is not yet known to have failed.
    """
    if payment.status != "failed":
        raise NotReadyYet(f"payment {payment.id} is still being reconciled; deliver this event again later")
    return _refused(reason, data_object, payment)


def _refused(reason: str, data_object: dict[str, Any], payment: Payment) -> str:
    """A refusal of impossible processor data: logged, answered 200 (and the event recorded)
    so that Stripe does not deliver it for ever; nothing is changed."""
    logger.error(
        "ignored %s %r of payment %s: %s",
        data_object.get("object"),
        data_object.get("id"),
        payment.id,
        reason,
    )
    return f"ignored: {reason}"


def _reversed_micros(session: Session, payment: Payment) -> int:
    """What refunds have taken back for the payment so far (debited or owed), less what
    failed refunds gave back."""
    entries = session.exec(
        select(LedgerEntry).where(
            LedgerEntry.wallet_id == payment.wallet_id,
            col(LedgerEntry.kind).in_(("refund", "refund_reversal")),
            col(LedgerEntry.payment_id) == payment.id,
        )
    ).all()
    return int(sum(entry.shortfall_micros - entry.amount_micros for entry in entries))


def _micros(cents: object) -> int:
    """A processor's amount in cents (an integer, never a float) as micro-dollars; else 0."""
    if isinstance(cents, bool) or not isinstance(cents, int):
        return 0
    return max(0, cents) * MICROS_PER_CENT


def _payment_of_charge(runtime: Runtime, charge: dict[str, Any]) -> Payment | None:
    intent = charge.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    return _payment_of_intent(
        runtime, {"id": intent if isinstance(intent, str) else "", "metadata": charge.get("metadata")}
    )


def _payment_of_dispute(runtime: Runtime, dispute: dict[str, Any]) -> Payment | None:
    intent = dispute.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    charge = dispute.get("charge")
    if isinstance(charge, dict):
        return _payment_of_charge(runtime, charge)
    lookup = runtime.payments
    if not isinstance(intent, str) and isinstance(charge, str) and isinstance(lookup, IntentLookup):
        try:
            intent = lookup.payment_intent_of_charge(charge)
        except InvalidRequest:
            return None  # the processor knows no such charge: not one of ours
        except PaymentsError as error:
            # Raised, not ignored: the 5xx makes Stripe deliver the event again.
            raise RuntimeError(f"could not read charge {charge}: {error.message}") from error
    return _payment_of_intent(runtime, {"id": intent if isinstance(intent, str) else "", "metadata": {}})


def _payment_of_intent(runtime: Runtime, intent: dict[str, Any]) -> Payment | None:
    metadata = intent.get("metadata")
    named = metadata.get("lava_payment_id") if isinstance(metadata, dict) else None
    payment = funding.find_payment(runtime, payment_id=named if isinstance(named, str) else None)
    if payment is None and intent.get("id"):
        payment = funding.find_payment_by_intent(runtime, str(intent.get("id")))
    if payment is None or payment.mode != runtime.payments.mode:
        return None
    return payment
