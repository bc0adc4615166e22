"""Funding a wallet: a saved card charged now, or a Checkout page, credited exactly once.

    add_funds(amount=None)            → amount_required: balance, saved cards, min and max
    add_funds(amount) with a card     → completed (charged off-session, credited now)
                                      → requires_action (3-D Secure: finish on a hosted page)
                                      → 402 PaymentDeclined (decline_code, next_step)
    add_funds(amount) with no card,   → checkout_required (a Checkout page that also saves the card)
      or use_checkout=True

Every attempt is a `Payment` row. Money moves only through `credit_payment`: one ledger
`deposit` referencing the payment id, so whichever path sees a payment succeed first (the
charge's answer, a webhook, the success page, a balance read retrieving the session from
the processor, the reconciliation sweep) credits it, and every later path finds it
credited. Nothing is credited on the strength of a redirect alone, and nothing that the
processor did not report paid for exactly the recorded amount. A deposit first covers the
wallet's shortfall (refunds and disputes the balance could not take: `ledger.reverse`).

Lost answers. A card charge whose answer never arrived (the connection dropped after the
processor charged, the SDK raised, a timeout) leaves its payment `pending`. It is found
again by its PaymentIntent (by id, or by metadata `lava_payment_id` when the id never came
back) on a retry of the same attempt, on balance reads (bounded: `ProcessorLane.read_wait_s`)
and by the runtime's sweep every `reconcile_interval_s` (`payment.reconciled_at`): paid →
credited once; failed at the processor → failed; unknown to the processor once the
request can no longer be in flight, and unchanged while the processor was asked → failed
(nothing was charged). The sweep also settles pending Checkouts and 3-D Secure pages from
their session, so a paid page is credited with no webhook and no success-page visit.

Retries. Without an `idempotency_key`, the server chooses one for `fund_retry_window_s`:
the fingerprint of (wallet, amount, card named, use_checkout). An identical request within
the window replays the first outcome, marked `"replayed": true` with a next_step saying how
to make a second top-up on purpose; a decline is not replayed (nothing moved). The
processor-side idempotency key is per payment id, and a retry of an attempt reuses its
payment id (even after the window, when the first try ended without an answer), so the
processor charges at most once per attempt. A retry of an attempt credited meanwhile
answers `completed` and leaves it credited.

Processor calls run in the runtime's processor lane (`payments.ProcessorLane`), apart from
the worker threads database work uses: a slow or hanging processor stalls nothing else.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from lava_mcp.core import idempotency, ledger, orgs, payment_methods, wallet
from lava_mcp.errors import BadRequest, Conflict, Forbidden, NotFound, PaymentDeclined, UpstreamError
from lava_mcp.ids import new_id
from lava_mcp.money import (
    MAX_FUNDING_MICROS,
    MICROS_PER_CENT,
    MIN_FUNDING_MICROS,
    format_dollars,
    parse_funding_amount,
)
from lava_mcp.payments.base import (
    Card,
    CardDeclined,
    CheckoutSession,
    CheckoutState,
    IntentLookup,
    IntentState,
    InvalidRequest,
    PaymentsError,
    ProcessorUnavailable,
)
from lava_mcp.payments.sandbox import SandboxPayments
from lava_mcp.runtime import Runtime
from lava_mcp.store.db import Database
from lava_mcp.store.fast import WouldWait
from lava_mcp.store.models import Payment, PaymentMethod, Wallet, utc_now

logger = logging.getLogger("lava_mcp.funding")

FUND_SCOPE = "wallet.fund"
# Keys the server chose for a request that came without one (see the module docstring).
AUTO_FUND_SCOPE = "wallet.fund.auto"
# Card payments the sweep asks about per pass (oldest-asked first).
RECONCILE_BATCH = 50
# A PaymentIntent is looked for among those created from this long before its payment row
# (the two clocks may disagree a little).
CLOCK_SKEW_S = 300
# Checkout Sessions live at most 24 hours; older pending ones are not worth asking about.
RECONCILE_WINDOW = timedelta(hours=24)
RECONCILE_MAX_SESSIONS = 5
PENDING_STATUSES = ("checkout_pending", "requires_action")


# --- the two entry points the transports call ----------------------------------------


async def balance(runtime: Runtime, wallet_id: str) -> wallet.Balance:
    """The wallet's balance, after crediting what the processor reports paid.

    A local install has no public webhook URL, so reading the balance is one of the moments
    pending Checkouts and card payments are reconciled: in the processor lane, waited for
    at most `ProcessorLane.read_wait_s` (half a second: a slow processor never stalls the
    read; the work goes on and a later read sees it). Errors reaching the processor are logged, not raised.
    Raises: NotFound for an unknown wallet.
    """
    await _reconcile_before_reading(runtime, wallet_id)
    return await runtime.db.run(wallet.get_balance, runtime.db, wallet_id)


async def balance_and_invited(runtime: Runtime, wallet_id: str) -> tuple[wallet.Balance, bool]:
    """`balance`, and whether an org invitation awaits the wallet's answer, from one
    statement (`wallet.get_balance_and_invited`): what `get_balance` answers on every call.
    On a SQLite file the event loop reads it itself (a WAL read waits for no writer; see
    `store.fast.LoopReads`), unless SQLite says the read would wait: then, as on
    PostgreSQL, in a worker thread.
    Raises: NotFound for an unknown wallet.
    """
    await _reconcile_before_reading(runtime, wallet_id)
    if runtime.loop_reads is not None:
        with contextlib.suppress(WouldWait):
            return wallet.balance_and_invited_now(runtime.loop_reads, wallet_id)
    return await runtime.db.run(wallet.get_balance_and_invited, runtime.db, wallet_id)


async def _reconcile_before_reading(runtime: Runtime, wallet_id: str) -> None:
    lane = runtime.processor_lane
    job = f"reconcile:{wallet_id}"
    if runtime.payments.mode != "sandbox":
        await lane.run_once(job, lambda: reconcile_pending(runtime, wallet_id), wait_s=lane.read_wait_s)


async def add_funds(
    runtime: Runtime,
    wallet_id: str,
    *,
    amount: object,
    payment_method_id: str | None = None,
    use_checkout: bool = False,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Add money to a wallet (see the module docstring for the outcomes).

    With an `idempotency_key`, a retry returns the first attempt's result (or its decline)
    and moves no money twice; the same key with a different request is a Conflict.
    Without one, the server chooses a key for `fund_retry_window_s` (module docstring).
    Runs in the processor lane.
    Raises: BadRequest (amount malformed or out of range), PaymentDeclined (402), Forbidden
    (org not enabled; a wallet of another mode), NotFound (unknown or another wallet's card),
    Conflict (idempotency), UpstreamError (the processor can't be reached).
    """
    return await anyio.to_thread.run_sync(
        lambda: fund(
            runtime,
            wallet_id,
            amount=amount,
            payment_method_id=payment_method_id,
            use_checkout=use_checkout,
            idempotency_key=idempotency_key,
        ),
        limiter=runtime.processor_lane.limiter,
    )


def fund(
    runtime: Runtime,
    wallet_id: str,
    *,
    amount: object,
    payment_method_id: str | None = None,
    use_checkout: bool = False,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """`add_funds`, synchronous (it waits on the database and the processor)."""
    db, payments = runtime.db, runtime.payments
    if idempotency_key is not None:  # judged even when no amount means it is never claimed
        idempotency.check_key(idempotency_key)
    owner = payment_methods.wallet_for_payments(db, payments, wallet_id)
    amount_micros = None if amount is None else parse_funding_amount(amount)
    if amount_micros is None:
        with db.read() as session:
            orgs.require_funding_allowed(session, wallet_id)
        return amount_required(runtime, owner)
    fingerprint = idempotency.request_hash(
        {"amount_micros": amount_micros, "payment_method_id": payment_method_id, "use_checkout": use_checkout}
    )
    chosen_by_server = idempotency_key is None
    if chosen_by_server:
        # A replay of an identical request is still a new call: it passes today's gates first.
        with db.read() as session:
            orgs.require_funding_allowed(session, wallet_id)
    try:
        claim = idempotency.begin(
            db,
            wallet_id=wallet_id,
            scope=AUTO_FUND_SCOPE if chosen_by_server else FUND_SCOPE,
            key=f"auto-{fingerprint}" if idempotency_key is None else idempotency_key,
            fingerprint=fingerprint,
            new_reference=lambda: new_id("pay"),
            window_s=runtime.settings.fund_retry_window_s if chosen_by_server else None,
        )
    except Conflict as busy:
        if not chosen_by_server:
            raise
        raise Conflict(
            "an identical add_funds is still being processed",
            next_step="wait a few seconds, then call get_balance or retry the same request (it is not charged twice)",
        ) from busy
    if isinstance(claim, idempotency.Replay):
        if claim.status_code == PaymentDeclined.code:
            raise _declined_from(claim.body)
        return _replayed(claim, amount_micros) if chosen_by_server else claim.body
    try:
        result = _fund(runtime, owner, amount_micros, payment_method_id, use_checkout, claim.reference)
    except PaymentDeclined as declined:
        if chosen_by_server:
            idempotency.forget(db, claim)  # a decline moved nothing: the next try is a new attempt
        else:
            idempotency.finish(db, claim, status_code=declined.code, body=declined.to_dict())
        raise
    except BaseException:
        idempotency.release(db, claim)
        raise
    idempotency.finish(db, claim, status_code=200, body=result)
    return result


def _replayed(replay: idempotency.Replay, amount_micros: int) -> dict[str, Any]:
    """The first answer to an identical request, saying plainly that nothing new happened."""
    body = dict(replay.body)
    first_at = replay.first_at or utc_now()
    if first_at.tzinfo is None:
        first_at = first_at.replace(tzinfo=UTC)
    seconds = max(0, int((utc_now() - first_at).total_seconds()))
    body["replayed"] = True
    body["next_step"] = (
        f"this is the answer to the identical add_funds made {seconds} s ago: nothing new was charged. "
        f"To add another {format_dollars(amount_micros)} now, call add_funds again with a new idempotency_key."
    )
    return body


def amount_required(runtime: Runtime, owner: Wallet) -> dict[str, Any]:
    """What a chat needs to ask for an amount: the balance, saved cards, the bounds."""
    current = wallet.get_balance(runtime.db, owner.id)
    cards = payment_methods.list_cards(runtime.db, owner.id)
    return _labelled(
        owner,
        {
            "status": "amount_required",
            "balance": format_dollars(current.available_micros),
            "payment_methods": [payment_methods.card_json(card) for card in cards],
            "min": format_dollars(MIN_FUNDING_MICROS),
            "max": format_dollars(MAX_FUNDING_MICROS),
        },
    )


# --- charging a card, or opening a Checkout --------------------------------------------


def _fund(
    runtime: Runtime,
    owner: Wallet,
    amount_micros: int,
    payment_method_id: str | None,
    use_checkout: bool,
    payment_id: str,
) -> dict[str, Any]:
    db = runtime.db
    with db.read() as session:
        orgs.require_funding_allowed(session, owner.id)
        # Resolved even for Checkout, so that naming a stranger's card is a 404 either way.
        card = payment_methods.charge_target(session, owner.id, payment_method_id)
        # A retry under the same Idempotency-Key charges the card the first attempt chose
        # (the default card may have changed since): the processor then sees the same
        # request under the same key, and charges at most once.
        earlier = session.get(Payment, payment_id)
        if earlier is not None and earlier.status == "succeeded":
            # A retry of an attempt credited meanwhile (webhook, sweep, balance read): its
            # outcome, with nothing asked of the processor and the payment left as it is.
            return _completed(runtime, owner, earlier)
        if earlier is not None and earlier.method == "card" and earlier.payment_method_id:
            pinned = session.get(PaymentMethod, earlier.payment_method_id)
            if pinned is not None and pinned.wallet_id == owner.id:
                card = pinned
    if use_checkout:
        card = None
    customer_id = payment_methods.ensure_customer(db, runtime.payments, owner)
    if card is None:
        return _open_checkout(runtime, owner, customer_id, amount_micros, payment_id)
    return _charge_card(runtime, owner, customer_id, card, amount_micros, payment_id)


def _charge_card(
    runtime: Runtime,
    owner: Wallet,
    customer_id: str,
    card: PaymentMethod,
    amount_micros: int,
    payment_id: str,
) -> dict[str, Any]:
    payments = runtime.payments
    retried = _payment_for(runtime, payment_id, session_id=None)
    _record(runtime, owner, payment_id, amount_micros, method="card", payment_method_id=card.id)
    if retried is not None:
        # A retry of an attempt whose answer was lost: ask before charging again, so that even
        # a processor that ignores idempotency keys charges this attempt once.
        known = _lookup_intent(runtime, retried, customer_id)
        if (
            known is not None
            and known.status == "canceled"
            and retried.failure_code == "authentication_required"
        ):
            # The sweep canceled a 3-D Secure request nobody saw: this retry gets its page.
            known = replace(known, status="requires_action")
        if known is not None:
            return _charge_outcome(runtime, owner, customer_id, payment_id, amount_micros, known)
    try:
        outcome = payments.charge(
            customer_id=customer_id,
            payment_method_id=card.id,
            card_last4=card.last4,
            amount_cents=_cents(amount_micros),
            metadata=_metadata(owner.id, payment_id),
            idempotency_key=f"lava-charge-{payment_id}",
        )
    except CardDeclined as declined:
        _update(
            runtime,
            payment_id,
            status="failed",
            stripe_payment_intent_id=declined.payment_intent_id,
            failure_code=declined.code,
            decline_code=declined.decline_code,
            failure_message=declined.message,
        )
        raise _declined(owner, payment_id, declined) from declined
    except InvalidRequest as error:
        _update(
            runtime,
            payment_id,
            status="failed",
            failure_code="invalid_request",
            failure_message=error.message,
        )
        raise BadRequest(
            f"the card {card.id} can't be charged: {error.message}",
            next_step="save the card again, or pay with use_checkout: true",
        ) from error
    except ProcessorUnavailable as error:
        # The charge may have gone through: the payment stays pending, to be reconciled.
        _update(runtime, payment_id, failure_code="processor_unavailable", failure_message=error.message)
        raise _unavailable(error) from error
    return _charge_outcome(
        runtime,
        owner,
        customer_id,
        payment_id,
        amount_micros,
        IntentState(
            id=outcome.payment_intent_id,
            status=outcome.status,
            amount_cents=_cents(amount_micros),
            amount_received_cents=outcome.amount_cents if outcome.status == "succeeded" else 0,
            currency="usd",
        ),
    )


def _charge_outcome(
    runtime: Runtime,
    owner: Wallet,
    customer_id: str,
    payment_id: str,
    amount_micros: int,
    intent: IntentState,
) -> dict[str, Any]:
    """The answer to a card charge, from what the processor says about its PaymentIntent."""
    if intent.status == "succeeded":
        if intent.amount_received_cents != _cents(amount_micros) or intent.currency.lower() != "usd":
            # Impossible processor data is a recorded refusal, never a crash nor a guess:
            # nothing is credited; the payment stays pending for the sweep to read again.
            logger.error(
                "payment intent %s received %s %s for %s of %s cents",
                intent.id,
                intent.amount_received_cents,
                intent.currency,
                payment_id,
                _cents(amount_micros),
            )
            _update(
                runtime,
                payment_id,
                stripe_payment_intent_id=intent.id,
                failure_code="amount_mismatch",
                failure_message="the processor reported a different amount paid",
            )
            raise UpstreamError(
                f"the payment processor reported a charge of {intent.amount_received_cents} cents for a top-up"
                f" of {_cents(amount_micros)} cents; nothing was credited",
                next_step="call get_balance later (the charge is checked again with the processor), or contact the operator",
            )
        _update(runtime, payment_id, stripe_payment_intent_id=intent.id)
        current = credit_payment(runtime, payment_id)
        return _labelled(
            owner,
            {
                "status": "completed",
                "amount": format_dollars(amount_micros),
                "balance": format_dollars(current.available_micros),
                "payment_id": payment_id,
            },
        )
    if intent.status == "processing":
        _update(runtime, payment_id, stripe_payment_intent_id=intent.id)
        return _labelled(
            owner, {"status": "processing", "amount": format_dollars(amount_micros), "payment_id": payment_id}
        )
    if intent.status not in ("requires_action", "requires_confirmation"):
        declined = CardDeclined(
            intent.failure_message or f"the charge ended in status {intent.status}",
            code=intent.failure_code or "card_declined",
            decline_code=intent.decline_code,
            payment_intent_id=intent.id,
        )
        _update(
            runtime,
            payment_id,
            status="failed",
            stripe_payment_intent_id=intent.id,
            failure_code=declined.code,
            decline_code=declined.decline_code,
            failure_message=declined.message,
        )
        raise _declined(owner, payment_id, declined)
    # 3-D Secure: the bank wants the card holder present. Drop the off-session attempt and
    # hand back a hosted page where they pay on-session (and authenticate there).
    try:
        runtime.payments.cancel_payment_intent(intent.id)
    except PaymentsError:
        logger.warning("could not cancel payment intent %s", intent.id)
    session = _create_checkout(runtime, owner, customer_id, amount_micros, payment_id, "authenticate")
    _update(
        runtime,
        payment_id,
        status="requires_action",
        stripe_payment_intent_id=intent.id,
        stripe_checkout_session_id=session.id,
        redirect_url=session.url,
        failure_code="authentication_required",
        failure_message="the bank asked the card holder to authenticate (3-D Secure)",
    )
    return _labelled(
        owner,
        {
            "status": "requires_action",
            "redirect_url": session.url,
            "payment_id": payment_id,
            "amount": format_dollars(amount_micros),
            "next_step": "open redirect_url to confirm the payment with your bank; the wallet is credited once it is paid",
        },
    )


def _completed(runtime: Runtime, owner: Wallet, payment: Payment) -> dict[str, Any]:
    """The answer to an attempt that is credited."""
    current = wallet.get_balance(runtime.db, owner.id)
    return _labelled(
        owner,
        {
            "status": "completed",
            "amount": format_dollars(payment.amount_micros),
            "balance": format_dollars(current.available_micros),
            "payment_id": payment.id,
        },
    )


def _open_checkout(
    runtime: Runtime, owner: Wallet, customer_id: str, amount_micros: int, payment_id: str
) -> dict[str, Any]:
    _record(runtime, owner, payment_id, amount_micros, method="checkout")
    session = _create_checkout(runtime, owner, customer_id, amount_micros, payment_id, "checkout")
    _update(
        runtime,
        payment_id,
        status="checkout_pending",
        stripe_checkout_session_id=session.id,
        redirect_url=session.url,
    )
    return _labelled(
        owner,
        {
            "status": "checkout_required",
            "checkout_url": session.url,
            "amount": format_dollars(amount_micros),
            "payment_id": payment_id,
            "next_step": "open checkout_url to pay; the card is saved for next time and the wallet is credited once paid",
        },
    )


def _create_checkout(
    runtime: Runtime, owner: Wallet, customer_id: str, amount_micros: int, payment_id: str, purpose: str
) -> CheckoutSession:
    base_url = runtime.settings.base_url
    try:
        return runtime.payments.create_checkout(
            customer_id=customer_id,
            amount_cents=_cents(amount_micros),
            description=f"lava-mcp wallet top-up ({format_dollars(amount_micros)} USD)",
            success_url=f"{base_url}/fund/success?session_id={{CHECKOUT_SESSION_ID}}",
            cancel_url=f"{base_url}/fund/cancel?payment_id={payment_id}",
            metadata=_metadata(owner.id, payment_id),
            idempotency_key=f"lava-{purpose}-{payment_id}",
        )
    except PaymentsError as error:
        _update(
            runtime,
            payment_id,
            status="failed",
            failure_code="checkout_failed",
            failure_message=error.message,
        )
        raise _unavailable(error) from error


# --- crediting, and reconciling what the processor reports -------------------------------


def credit_payment(runtime: Runtime, payment_id: str) -> wallet.Balance:
    """Credit a payment the processor reported paid: one `deposit`, however often called,
    which first covers the wallet's shortfall (one `shortfall_cover` entry, if any is owed).

    Raises: NotFound for an unknown payment.
    """
    try:
        with runtime.db.write() as session:
            payment = _locked(session, payment_id)
            _, created = ledger.credit(
                session,
                wallet_id=payment.wallet_id,
                kind="deposit",
                amount_micros=payment.amount_micros,
                reference=payment.id,
                memo=f"top-up by {payment.method} ({payment.mode})",
            )
            if created:
                ledger.cover_shortfall(
                    session,
                    wallet_id=payment.wallet_id,
                    deposit_micros=payment.amount_micros,
                    payment_id=payment.id,
                )
            payment.status = "succeeded"
            payment.updated_at = utc_now()
            session.add(payment)
            wallet_id = payment.wallet_id
    except IntegrityError:
        # A concurrent path (webhook and success page at once) credited it first.
        found = _payment_for(runtime, payment_id, session_id=None)
        assert found is not None
        wallet_id = found.wallet_id
    return wallet.get_balance(runtime.db, wallet_id)


def save_paying_card(runtime: Runtime, payment: Payment, payment_intent_id: str | None) -> None:
    """Keep the card a hosted page was paid with (Checkout saves it for off-session use).

    Best effort: the money is credited whether or not the card can be read.
    """
    if payment.method != "checkout" or payment.payment_method_id or not payment_intent_id:
        return
    try:
        card = runtime.payments.card_of_payment_intent(payment_intent_id)
    except PaymentsError as error:
        logger.warning("could not read the card of %s: %s", payment_intent_id, error.message)
        return
    if card is None:
        return
    try:
        with runtime.db.write() as session:
            payment_methods.store_card(session, payment.wallet_id, card)
            row = _locked(session, payment.id)
            row.payment_method_id = card.id
            session.add(row)
    except (NotFound, IntegrityError):
        logger.warning("card %s of payment %s not saved", card.id, payment.id)


def settle_checkout(runtime: Runtime, state: CheckoutState) -> Payment | None:
    """Apply what the processor says about a Checkout Session to its payment.

    Paid for exactly the recorded amount → credited (once); expired → failed; otherwise
    unchanged. Returns the payment, or None when the session is not one of ours.
    """
    payment = _payment_for(runtime, state.metadata.get("lava_payment_id"), session_id=state.id)
    if payment is None or payment.mode != runtime.payments.mode:
        return None
    if state.paid:
        if state.amount_cents != _cents(payment.amount_micros) or state.currency.lower() != "usd":
            logger.error(
                "checkout %s paid %s %s, expected %s",
                state.id,
                state.amount_cents,
                state.currency,
                payment.id,
            )
            _update(
                runtime, payment.id, failure_code="amount_mismatch", failure_message="paid amount differs"
            )
            return payment
        if state.payment_intent_id:
            _update(runtime, payment.id, stripe_payment_intent_id=state.payment_intent_id)
        credit_payment(runtime, payment.id)
        save_paying_card(runtime, payment, state.payment_intent_id)
    elif state.status == "expired" and payment.status in PENDING_STATUSES:
        _update(
            runtime,
            payment.id,
            status="failed",
            failure_code="checkout_expired",
            failure_message="expired unpaid",
        )
    return _payment_for(runtime, payment.id, session_id=None)


def reconcile_checkout(runtime: Runtime, session_id: str) -> Payment | None:
    """Ask the processor about one Checkout Session and settle it (the success page).

    Returns our payment for the session, or None when it is not ours.
    Raises: UpstreamError when the processor can't be reached.
    """
    payment = _payment_for(runtime, None, session_id=session_id)
    if payment is None:
        return None
    if payment.status not in PENDING_STATUSES or payment.mode != runtime.payments.mode:
        return payment
    try:
        state = runtime.payments.retrieve_checkout(session_id)
    except PaymentsError as error:
        raise _unavailable(error) from error
    return settle_checkout(runtime, state) or payment


def reconcile_pending(runtime: Runtime, wallet_id: str, *, now: datetime | None = None) -> int:
    """Settle the wallet's recent pending Checkouts and card payments with what the processor
    reports; returns how many were credited. Errors reaching the processor are logged."""
    if runtime.payments.mode == "sandbox":
        return 0  # sandbox payments are decided on our own pages, in our own ledger
    moment = now or utc_now()
    since = moment - RECONCILE_WINDOW
    with runtime.db.read() as session:
        pending = session.exec(
            select(Payment)
            .where(
                Payment.wallet_id == wallet_id,
                col(Payment.status).in_(PENDING_STATUSES),
                col(Payment.stripe_checkout_session_id).is_not(None),
                col(Payment.created_at) >= since,
            )
            .order_by(col(Payment.created_at).desc())
            .limit(RECONCILE_MAX_SESSIONS)
        ).all()
        cards = session.exec(
            select(Payment)
            .where(
                Payment.wallet_id == wallet_id,
                Payment.status == "pending",
                Payment.method == "card",
                Payment.mode == runtime.payments.mode,
            )
            .order_by(col(Payment.created_at).desc())
            .limit(RECONCILE_MAX_SESSIONS)
        ).all()
    settled = 0
    for payment in pending:
        assert payment.stripe_checkout_session_id is not None
        try:
            state = runtime.payments.retrieve_checkout(payment.stripe_checkout_session_id)
        except PaymentsError as error:
            logger.warning("could not reconcile %s: %s", payment.id, error.message)
            continue
        settled_payment = settle_checkout(runtime, state)
        settled += settled_payment is not None and settled_payment.status == "succeeded"
    for payment in cards:
        settled += reconcile_card_payment(runtime, payment.id, now=moment) == "succeeded"
    return settled


async def reconcile_payments(runtime: Runtime, *, now: datetime | None = None) -> int:
    """The sweep: reconcile pending card payments, Checkouts and 3-D Secure pages of every
    wallet, least recently asked first, in the processor lane. Returns how many were credited."""
    if runtime.payments.mode == "sandbox":
        return 0  # sandbox payments are decided on our own pages, in our own ledger
    return await anyio.to_thread.run_sync(
        lambda: reconcile_checkouts(runtime, now=now) + reconcile_cards(runtime, now=now),
        limiter=runtime.processor_lane.limiter,
    )


def reconcile_checkouts(runtime: Runtime, *, now: datetime | None = None) -> int:
    """Settle pending Checkouts and 3-D Secure pages (every wallet) with their session at
    the processor, so that a paid page is credited with no webhook and no success-page
    visit. Returns how many were credited; errors reaching the processor are logged."""
    moment = now or utc_now()
    with runtime.db.read() as session:
        pending = session.exec(
            select(Payment.id, Payment.stripe_checkout_session_id)
            .where(
                col(Payment.status).in_(PENDING_STATUSES),
                col(Payment.stripe_checkout_session_id).is_not(None),
                Payment.mode == runtime.payments.mode,
                col(Payment.created_at) >= moment - RECONCILE_WINDOW,
            )
            .order_by(
                col(Payment.reconciled_at).is_not(None), col(Payment.reconciled_at), col(Payment.created_at)
            )
            .limit(RECONCILE_BATCH)
        ).all()
    credited = 0
    for payment_id, session_id in pending:
        assert session_id is not None
        try:
            state = runtime.payments.retrieve_checkout(session_id)
        except PaymentsError as error:
            logger.warning("could not reconcile %s: %s", payment_id, error.message)
            continue
        _mark_reconciled(runtime, payment_id, moment)
        settled = settle_checkout(runtime, state)
        credited += settled is not None and settled.status == "succeeded"
    return credited


def reconcile_cards(runtime: Runtime, *, now: datetime | None = None) -> int:
    """Settle pending card charges (every wallet) with their PaymentIntent. Returns how many
    were credited."""
    if not isinstance(runtime.payments, IntentLookup):
        return 0
    moment = now or utc_now()
    with runtime.db.read() as session:
        pending = session.exec(
            select(Payment.id)
            .where(
                Payment.status == "pending",
                Payment.method == "card",
                Payment.mode == runtime.payments.mode,
            )
            .order_by(
                col(Payment.reconciled_at).is_not(None), col(Payment.reconciled_at), col(Payment.created_at)
            )
            .limit(RECONCILE_BATCH)
        ).all()
    return sum(
        reconcile_card_payment(runtime, payment_id, now=moment) == "succeeded" for payment_id in pending
    )


def reconcile_card_payment(runtime: Runtime, payment_id: str, *, now: datetime | None = None) -> str:
    """Ask the processor what became of one pending card payment, and apply it.

    Paid for the recorded amount → credited (once); failed or canceled at the processor →
    failed; `requires_action` (3-D Secure asked for, but its answer never reached the card
    holder) → canceled and failed, so that the next add_funds hands out a page; unknown to
    the processor once the charge request can no longer be in flight → failed (nothing was
    charged); `processing`, or unknown but maybe still in flight → still pending. Records
    `reconciled_at`. Returns the payment's status afterwards; errors are logged.
    """
    moment = now or utc_now()
    payment = _payment_for(runtime, payment_id, session_id=None)
    if payment is None or payment.status != "pending" or payment.method != "card":
        return payment.status if payment is not None else "unknown"
    with runtime.db.read() as session:
        owner = session.get(Wallet, payment.wallet_id)
    customer_id = owner.stripe_customer_id if owner is not None else None
    try:
        intent = _lookup_intent(runtime, payment, customer_id)
    except UpstreamError as error:
        logger.warning("could not reconcile %s: %s", payment.id, error.message)
        return payment.status
    if intent is None:
        if _aware(payment.updated_at) + _in_flight_bound(runtime) < moment:
            _fail_not_charged(runtime, payment, moment)
        else:
            _mark_reconciled(runtime, payment.id, moment)
    else:
        _apply_intent(runtime, payment, intent, moment)
    found = _payment_for(runtime, payment.id, session_id=None)
    assert found is not None
    return found.status


def _apply_intent(runtime: Runtime, payment: Payment, intent: IntentState, moment: datetime) -> None:
    if intent.status == "succeeded":
        if intent.amount_received_cents != _cents(payment.amount_micros) or intent.currency.lower() != "usd":
            logger.error(
                "payment intent %s received %s %s for %s",
                intent.id,
                intent.amount_received_cents,
                intent.currency,
                payment.id,
            )
            _update(
                runtime,
                payment.id,
                failure_code="amount_mismatch",
                failure_message="paid amount differs",
                reconciled_at=moment,
            )
            return
        _update(runtime, payment.id, stripe_payment_intent_id=intent.id, reconciled_at=moment)
        credit_payment(runtime, payment.id)
        return
    if intent.status in ("processing", "requires_confirmation", "requires_capture"):
        if payment.stripe_payment_intent_id != intent.id:
            _update(runtime, payment.id, stripe_payment_intent_id=intent.id)
        _mark_reconciled(runtime, payment.id, moment)
        return
    if intent.status == "requires_action":
        try:
            runtime.payments.cancel_payment_intent(intent.id)
        except PaymentsError as error:
            logger.warning("could not cancel payment intent %s: %s", intent.id, error.message)
            if payment.stripe_payment_intent_id != intent.id:
                _update(runtime, payment.id, stripe_payment_intent_id=intent.id)
            _mark_reconciled(runtime, payment.id, moment)
            return
        _update(
            runtime,
            payment.id,
            status="failed",
            stripe_payment_intent_id=intent.id,
            failure_code="authentication_required",
            failure_message="the bank asked the card holder to authenticate; add funds again for a page to do it",
            reconciled_at=moment,
        )
        return
    _update(
        runtime,
        payment.id,
        status="failed",
        stripe_payment_intent_id=intent.id,
        failure_code=intent.failure_code or f"payment_{intent.status}",
        decline_code=intent.decline_code,
        failure_message=intent.failure_message or f"the processor reports the charge {intent.status}",
        reconciled_at=moment,
    )


def _fail_not_charged(runtime: Runtime, seen: Payment, moment: datetime) -> None:
    """Fail a card payment the processor has no record of, unless it changed since it was
    read before asking (a retry of the attempt sent a new charge request meanwhile, or
    another path settled it): then the answer is stale, and the next pass asks again."""
    with runtime.db.write() as session:
        payment = _locked(session, seen.id)
        if payment.status != "pending" or _aware(payment.updated_at) != _aware(seen.updated_at):
            session.execute(update(Payment).where(col(Payment.id) == seen.id).values(reconciled_at=moment))
            return
        payment.status = "failed"
        payment.failure_code = "not_charged"
        payment.failure_message = "the processor has no record of this charge: nothing was charged"
        payment.reconciled_at = moment
        payment.updated_at = utc_now()
        session.add(payment)


def _mark_reconciled(runtime: Runtime, payment_id: str, moment: datetime) -> None:
    """Note that the processor was asked, leaving `updated_at` (the last attempt or change,
    which bounds how long a request may be in flight, and which `ledger verify` ages) alone."""
    with runtime.db.write() as session:
        session.execute(update(Payment).where(col(Payment.id) == payment_id).values(reconciled_at=moment))


def _lookup_intent(runtime: Runtime, payment: Payment, customer_id: str | None) -> IntentState | None:
    """What the processor says about a card payment's PaymentIntent: by id when it came
    back, else by metadata `lava_payment_id` among the customer's recent ones.

    Raises: UpstreamError when the processor can't be reached.
    """
    lookup = runtime.payments
    if not isinstance(lookup, IntentLookup):
        return None
    try:
        if payment.stripe_payment_intent_id:
            return lookup.retrieve_payment_intent(payment.stripe_payment_intent_id)
        if not customer_id:
            return None
        return lookup.find_payment_intent(
            customer_id=customer_id,
            payment_id=payment.id,
            created_after_s=int(_aware(payment.created_at).timestamp()) - CLOCK_SKEW_S,
        )
    except InvalidRequest:
        return None  # the processor knows no such intent
    except ProcessorUnavailable as error:
        raise _unavailable(error) from error


def _in_flight_bound(runtime: Runtime) -> timedelta:
    """How long after its last update a charge request may still be on its way (the SDK's
    timeout, with its retries against real Stripe, and a margin)."""
    return timedelta(seconds=3 * runtime.settings.stripe_timeout_s + 30)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def find_payment(
    runtime: Runtime, *, payment_id: str | None = None, session_id: str | None = None
) -> Payment | None:
    """A payment by our id or by its Checkout Session id."""
    return _payment_for(runtime, payment_id, session_id=session_id)


def find_payment_by_intent(runtime: Runtime, payment_intent_id: str) -> Payment | None:
    """The payment a processor-side charge (PaymentIntent) belongs to."""
    with runtime.db.read() as session:
        return session.exec(
            select(Payment).where(Payment.stripe_payment_intent_id == payment_intent_id)
        ).first()


def update_payment(runtime: Runtime, payment_id: str, **changes: Any) -> None:
    """Record what became of a payment attempt (status, failure reason, processor ids)."""
    _update(runtime, payment_id, **changes)


# --- relabelling Stripe test and live money (upgrading from before modes came from the key) ---
#
# Before the payments mode came from the key, every Stripe wallet and payment was labelled
# `live`, even on an `sk_test_` key. After the upgrade such a server is in `test` mode and
# those wallets can neither spend, be funded nor be reconciled. Only the operator knows
# which key made them, so the server warns at startup and `lava-mcp db relabel-mode` moves
# them, wallets and payments together. Sandbox money is never relabelled as Stripe money,
# nor the reverse: it was never paid for, or was paid for real.

STRIPE_MODES = ("test", "live")


def other_stripe_mode(database: Database, money_mode: str) -> tuple[str, int, int] | None:
    """For a Stripe server: the other Stripe mode and how many wallets and payments carry
    it (money this server can't use), or None when there are none (or in sandbox mode)."""
    if money_mode not in STRIPE_MODES:
        return None
    other = "live" if money_mode == "test" else "test"
    with database.read() as session:
        wallets = len(session.exec(select(Wallet.id).where(Wallet.mode == other)).all())
        payments = len(session.exec(select(Payment.id).where(Payment.mode == other)).all())
    return (other, wallets, payments) if wallets or payments else None


def other_mode_warning(database: Database, money_mode: str) -> str | None:
    """The startup warning for wallets of the other Stripe mode (see above), or None."""
    found = other_stripe_mode(database, money_mode)
    if found is None:
        return None
    other, wallets, payments = found
    return (
        f"{wallets} wallet(s) and {payments} payment(s) are labelled Stripe {other} mode, but this server's"
        f" payments are Stripe {money_mode} mode (from the key): they can't spend, be funded or be reconciled here."
        f" If they were made with this server's {money_mode}-mode key (before the mode came from the key),"
        f" relabel them: lava-mcp db relabel-mode --from {other} --to {money_mode}"
    )


def relabel_mode(database: Database, *, from_mode: str, to_mode: str) -> tuple[int, int]:
    """Relabel every wallet and payment of Stripe mode `from_mode` as `to_mode`, in one
    transaction. Returns how many wallets and payments were relabelled.

    Raises: BadRequest unless it is test → live or live → test.
    """
    check_relabel(from_mode, to_mode)
    with database.write() as session:
        wallets = session.execute(
            update(Wallet).where(col(Wallet.mode) == from_mode).values(mode=to_mode)
        ).rowcount  # type: ignore[attr-defined]
        payments = session.execute(
            update(Payment).where(col(Payment.mode) == from_mode).values(mode=to_mode)
        ).rowcount  # type: ignore[attr-defined]
    return int(wallets), int(payments)


def check_relabel(from_mode: str, to_mode: str) -> None:
    """Raises: BadRequest unless (from_mode, to_mode) is (test, live) or (live, test)."""
    if {from_mode, to_mode} != set(STRIPE_MODES):
        raise BadRequest(
            f"can't relabel {from_mode!r} money as {to_mode!r}: only Stripe test and live are relabelled,"
            " into each other (sandbox money was never paid for; Stripe money was)",
            next_step="use --from live --to test, or --from test --to live",
        )


# --- the sandbox's own Checkout page ------------------------------------------------------
#
# The page is reached by its URL alone, so its forms carry a token only this server can
# make (`SandboxPayments.page_token`): a form posted from another site is refused before
# anything is read or written. However many submissions of one page race, the payment row
# is locked while the first one keeps its card: one card is saved and one deposit made.


def sandbox_session(runtime: Runtime, session_id: str) -> Payment:
    """The payment a sandbox Checkout page is for.

    Raises: NotFound unless it is a sandbox session of this server.
    """
    payment = _payment_for(runtime, None, session_id=session_id) if session_id.startswith("cs_sbx_") else None
    if payment is None or payment.mode != "sandbox" or not isinstance(runtime.payments, SandboxPayments):
        raise NotFound(f"unknown SANDBOX checkout session {session_id[:80]!r}")
    return payment


def sandbox_page_token(runtime: Runtime, session_id: str) -> str:
    """The token the forms of a sandbox page carry (see `SandboxPayments.page_token`).

    Raises: NotFound unless it is a sandbox session of this server.
    """
    sandbox_session(runtime, session_id)
    payments = runtime.payments
    assert isinstance(payments, SandboxPayments)
    return payments.page_token(session_id)


def pay_sandbox_checkout(
    runtime: Runtime, session_id: str, *, number: str, expiry: str, cvc: str, page_token: str
) -> Payment:
    """Pay a sandbox Checkout page with a test card: credit the wallet and save the card.

    Paying a page that is already paid changes nothing. A decline is recorded on the
    payment, whose page can be paid again with another card.
    Raises: NotFound (unknown session), Forbidden (the form is not this page's),
    BadRequest (malformed entry, or a page no longer payable), PaymentDeclined.
    """
    payment = _submitted_page(runtime, session_id, page_token)
    if payment.status == "succeeded":
        return payment
    if payment.status not in PENDING_STATUSES:
        raise BadRequest(f"this SANDBOX payment is {payment.status} and can't be paid any more")
    if payment.method == "card" and payment.payment_method_id is not None:
        raise BadRequest("this SANDBOX page asks the card holder to authenticate, not for a card")
    payments = runtime.payments
    assert isinstance(payments, SandboxPayments)
    exp_month, exp_year = _parse_expiry(expiry)
    try:
        card = payments.pay_on_page(number=number, exp_month=exp_month, exp_year=exp_year, cvc=cvc.strip())
    except CardDeclined as declined:
        _update(
            runtime,
            payment.id,
            failure_code=declined.code,
            decline_code=declined.decline_code,
            failure_message=declined.message,
        )
        with runtime.db.read() as session:
            owner = session.get(Wallet, payment.wallet_id)
        assert owner is not None
        raise _declined(owner, payment.id, declined) from declined
    except InvalidRequest as error:
        raise BadRequest(error.message) from error
    if _keep_page_card(runtime, payment.id, card):
        credit_payment(runtime, payment.id)
    return sandbox_session(runtime, session_id)


def authenticate_sandbox_payment(
    runtime: Runtime, session_id: str, *, approve: bool, page_token: str
) -> Payment:
    """The sandbox's 3-D Secure challenge for a saved card: approve (credit) or fail.

    Raises: NotFound (unknown session), Forbidden (the form is not this page's),
    BadRequest (not waiting for authentication).
    """
    payment = _submitted_page(runtime, session_id, page_token)
    if payment.status == "succeeded":
        return payment
    if payment.status != "requires_action" or payment.method != "card" or payment.payment_method_id is None:
        raise BadRequest(f"this SANDBOX payment is {payment.status}, not waiting for authentication")
    if approve:
        credit_payment(runtime, payment.id)
    else:
        _update(
            runtime,
            payment.id,
            status="failed",
            failure_code="payment_intent_authentication_failure",
            failure_message="the card holder failed authentication",
        )
    return sandbox_session(runtime, session_id)


def _submitted_page(runtime: Runtime, session_id: str, page_token: str) -> Payment:
    """The page's payment, if the form posted to it is the page's own.

    Raises: NotFound (unknown session), Forbidden (missing or wrong token).
    """
    payment = sandbox_session(runtime, session_id)
    payments = runtime.payments
    assert isinstance(payments, SandboxPayments)
    if not payments.page_token_matches(session_id, page_token):
        raise Forbidden(
            "this form was not sent by this SANDBOX payment page; nothing was charged",
            next_step="open the payment link again and submit the form on that page",
        )
    return payment


def _keep_page_card(runtime: Runtime, payment_id: str, card: Card) -> bool:
    """Under the payment's row lock: keep the card a Checkout page is paid with, once.

    Returns whether the payment is still to be credited (False: already credited). A
    concurrent submission that finds a card already kept saves none of its own.
    Raises: BadRequest when the payment stopped being payable meanwhile.
    """
    with runtime.db.write() as session:
        row = _locked(session, payment_id)
        if row.status == "succeeded":
            return False
        if row.status not in PENDING_STATUSES:
            raise BadRequest(f"this SANDBOX payment is {row.status} and can't be paid any more")
        if row.method == "checkout" and row.payment_method_id is None:
            payment_methods.store_card(session, row.wallet_id, card)
            row.payment_method_id = card.id
            row.updated_at = utc_now()
            session.add(row)
    return True


def _parse_expiry(expiry: str) -> tuple[int, int]:
    parts = [part.strip() for part in expiry.replace(" ", "").split("/")]
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise BadRequest("enter the expiry as MM / YY")
    month, year = int(parts[0]), int(parts[1])
    if year < 100:
        year += 2000
    return month, year


# --- helpers --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decline:
    message: str
    next_step: str


def _declined(owner: Wallet, payment_id: str, declined: CardDeclined) -> PaymentDeclined:
    reason = declined.decline_code or declined.code
    advice = _decline_advice(declined.code, reason)
    extra: dict[str, Any] = {"decline_code": reason, "payment_id": payment_id}
    if owner.mode == "sandbox":
        extra["sandbox"] = True
    return PaymentDeclined(advice.message or declined.message, next_step=advice.next_step, extra=extra)


def _decline_advice(code: str, reason: str) -> _Decline:
    other = "pay with another saved card (payment_method_id), or use_checkout: true to pay with a new card"
    if reason == "insufficient_funds":
        return _Decline("Your card was declined: insufficient funds.", f"Try a smaller amount, or {other}.")
    if code == "expired_card" or reason == "expired_card":
        return _Decline("Your card has expired.", f"Save a card that is still valid, or {other}.")
    if code == "incorrect_cvc" or reason == "incorrect_cvc":
        return _Decline("Your card's security code is incorrect.", f"Save the card again, or {other}.")
    if reason in ("lost_card", "stolen_card", "pickup_card", "fraudulent"):
        return _Decline("Your card was declined by the bank.", f"Contact your bank, or {other}.")
    if reason == "test_mode_live_card":
        return _Decline("", "Use one of Stripe's test cards (4242 4242 4242 4242) in the sandbox.")
    return _Decline("", f"Your bank declined the charge; {other}, or ask your bank why.")


def _declined_from(body: dict[str, Any]) -> PaymentDeclined:
    """The first attempt's decline, exactly as it was answered."""
    extra = {key: value for key, value in body.items() if key not in ("error", "code", "next_step")}
    return PaymentDeclined(str(body.get("error")), next_step=body.get("next_step"), extra=extra)


def _unavailable(error: PaymentsError) -> UpstreamError:
    return UpstreamError(
        f"the payment processor could not be reached: {error.message}",
        next_step=(
            "retry the same request, with the same Idempotency-Key (idempotency_key) if you sent one: the"
            " charge is looked up before anything is charged again, and the wallet is credited once if it went through"
        ),
    )


def _labelled(owner: Wallet, body: dict[str, Any]) -> dict[str, Any]:
    if owner.mode == "sandbox":
        body["sandbox"] = True
    return body


def _cents(amount_micros: int) -> int:
    assert amount_micros > 0 and amount_micros % MICROS_PER_CENT == 0, amount_micros
    return amount_micros // MICROS_PER_CENT


def _metadata(wallet_id: str, payment_id: str) -> dict[str, str]:
    return {"lava_payment_id": payment_id, "lava_wallet_id": wallet_id}


def _record(
    runtime: Runtime,
    owner: Wallet,
    payment_id: str,
    amount_micros: int,
    *,
    method: str,
    payment_method_id: str | None = None,
) -> None:
    """The attempt's row (a retry under the same Idempotency-Key reuses it). A credited
    payment is left as it is: its status never goes back from `succeeded`."""
    with runtime.db.write() as session:
        payment = session.get(Payment, payment_id, with_for_update=True)
        if payment is None:
            payment = Payment(id=payment_id, wallet_id=owner.id, mode=owner.mode)
        elif payment.status == "succeeded":
            return
        payment.amount_micros = amount_micros
        payment.method = method
        payment.payment_method_id = payment_method_id
        payment.status = "pending"
        payment.updated_at = utc_now()
        session.add(payment)


def _update(runtime: Runtime, payment_id: str, **changes: Any) -> None:
    with runtime.db.write() as session:
        payment = _locked(session, payment_id)
        if payment.status == "succeeded" and changes.get("status") not in (None, "succeeded"):
            changes.pop("status")  # a credited payment stays credited, whatever arrives late
        for name, value in changes.items():
            setattr(payment, name, value)
        payment.updated_at = utc_now()
        session.add(payment)


def _locked(session: Session, payment_id: str) -> Payment:
    payment = session.get(Payment, payment_id, with_for_update=True)
    if payment is None:
        raise NotFound(f"unknown payment {payment_id!r}")
    return payment


def _payment_for(runtime: Runtime, payment_id: str | None, *, session_id: str | None) -> Payment | None:
    with runtime.db.read() as session:
        if payment_id:
            found = session.get(Payment, payment_id)
            if found is not None:
                return found
        if session_id:
            return session.exec(
                select(Payment).where(Payment.stripe_checkout_session_id == session_id)
            ).first()
    return None
