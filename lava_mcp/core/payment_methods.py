"""Saved cards: one wallet's payment methods, its processor-side customer, the default.

A card is saved by attaching a tokenised payment method (`pm_…`) to the wallet's customer
at the processor, which is created on first use. Funding with no card named charges the
default card, or with no default the most recently saved one. Saving a card is never
gated by an org (only funding is). Another wallet's card is a 404, as is an unknown one.
"""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from lava_mcp.errors import BadRequest, Forbidden, NotFound, PaymentDeclined, UpstreamError
from lava_mcp.payments.base import Card, CardDeclined, InvalidRequest, Payments, ProcessorUnavailable
from lava_mcp.store.db import Database
from lava_mcp.store.models import PaymentMethod, Wallet


def card_json(method: PaymentMethod) -> dict[str, Any]:
    """A saved card as every surface shows it."""
    return {
        "id": method.id,
        "brand": method.brand,
        "last4": method.last4,
        "exp_month": method.exp_month,
        "exp_year": method.exp_year,
        "default": method.is_default,
    }


def list_cards(db: Database, wallet_id: str) -> list[PaymentMethod]:
    """The wallet's saved cards, the default first, then newest first."""
    with db.read() as session:
        return _cards(session, wallet_id)


def charge_target(session: Session, wallet_id: str, payment_method_id: str | None) -> PaymentMethod | None:
    """The card to charge: the one named, else the default, else the most recently saved.

    Returns None when the wallet has no saved card.
    Raises: NotFound when the named card is not this wallet's.
    """
    if payment_method_id is not None:
        return _owned(session, wallet_id, payment_method_id)
    cards = _cards(session, wallet_id)
    return cards[0] if cards else None


def wallet_for_payments(db: Database, payments: Payments, wallet_id: str) -> Wallet:
    """The wallet, checked to be of the kind this processor may fund (sandbox or live).

    Raises: NotFound; Forbidden when the wallet is sandbox and payments are live, or the reverse.
    """
    with db.read() as session:
        owner = session.get(Wallet, wallet_id)
    if owner is None:
        raise NotFound(f"unknown wallet {wallet_id!r}")
    if owner.mode != payments.mode:
        if owner.mode == "sandbox":
            raise Forbidden(
                f"this is a SANDBOX wallet and this server takes {payments.mode}-mode Stripe payments: "
                "sandbox money never mixes with Stripe money",
                next_step="create a wallet of this server's mode (`lava-mcp wallet create --live`) and fund that one",
            )
        if payments.mode == "sandbox":
            raise Forbidden(
                f"this is a {owner.mode}-mode wallet and this server runs the payments SANDBOX "
                "(no STRIPE_SECRET_KEY): sandbox money never mixes with Stripe money",
                next_step=f"set a {owner.mode}-mode STRIPE_SECRET_KEY to fund it, or use a sandbox wallet",
            )
        raise Forbidden(
            f"this is a {owner.mode}-mode wallet and this server's Stripe key is {payments.mode} mode: "
            "Stripe test-mode money never mixes with live money",
            next_step=f"fund it on a server with a {owner.mode}-mode key, or create a {payments.mode}-mode wallet",
        )
    return owner


def ensure_customer(db: Database, payments: Payments, owner: Wallet) -> str:
    """The wallet's customer at the processor, created (and remembered) on first use.

    Raises: UpstreamError when the processor can't be reached.
    """
    if owner.stripe_customer_id:
        return owner.stripe_customer_id
    try:
        customer_id = payments.create_customer(wallet_id=owner.id)
    except (ProcessorUnavailable, InvalidRequest) as error:
        raise UpstreamError(
            f"the payment processor could not be reached: {error.message}",
            next_step="try again in a minute; nothing was charged",
        ) from error
    with db.write() as session:
        # Only the first writer's customer is kept (the processor call is idempotent per wallet).
        session.execute(
            update(Wallet)
            .where(col(Wallet.id) == owner.id, col(Wallet.stripe_customer_id).is_(None))
            .values(stripe_customer_id=customer_id)
        )
        stored = session.get(Wallet, owner.id)
        assert stored is not None and stored.stripe_customer_id, owner.id
        return stored.stripe_customer_id


def save_card(db: Database, payments: Payments, wallet_id: str, payment_method_id: object) -> PaymentMethod:
    """Attach a tokenised card to the wallet's customer and keep it (the first becomes default).

    Raises: BadRequest (missing id, or the processor refuses it), PaymentDeclined (the card
    can't be saved), Forbidden (sandbox/live mismatch), UpstreamError, NotFound.
    """
    if not isinstance(payment_method_id, str) or not payment_method_id.strip():
        raise BadRequest('payment_method_id is required: a Stripe PaymentMethod id such as "pm_card_visa"')
    owner = wallet_for_payments(db, payments, wallet_id)
    customer_id = ensure_customer(db, payments, owner)
    try:
        card = payments.attach_card(customer_id=customer_id, payment_method_id=payment_method_id.strip())
    except CardDeclined as declined:
        raise PaymentDeclined(
            declined.message,
            next_step="try another card",
            extra={"decline_code": declined.decline_code or declined.code},
        ) from declined
    except InvalidRequest as error:
        raise BadRequest(f"that payment method can't be saved: {error.message}") from error
    except ProcessorUnavailable as error:
        raise UpstreamError(error.message, next_step="try again in a minute") from error
    with db.write() as session:
        return store_card(session, wallet_id, card)


def store_card(session: Session, wallet_id: str, card: Card) -> PaymentMethod:
    """Keep a card the processor saved for this wallet; the wallet's first card is its default."""
    existing = session.get(PaymentMethod, card.id)
    if existing is not None:
        if existing.wallet_id != wallet_id:
            raise NotFound(f"unknown payment method {card.id!r}")
        return existing
    has_default = (
        session.exec(
            select(PaymentMethod).where(PaymentMethod.wallet_id == wallet_id, col(PaymentMethod.is_default))
        ).first()
        is not None
    )
    method = PaymentMethod(
        id=card.id,
        wallet_id=wallet_id,
        brand=card.brand,
        last4=card.last4,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        is_default=not has_default,
    )
    session.add(method)
    session.flush()
    return method


def set_default(db: Database, wallet_id: str, payment_method_id: str) -> PaymentMethod:
    """Make a saved card the one charged when none is named.

    Raises: NotFound for an unknown card or another wallet's.
    """
    with db.write() as session:
        method = _owned(session, wallet_id, payment_method_id)
        session.execute(
            update(PaymentMethod)
            .where(col(PaymentMethod.wallet_id) == wallet_id, col(PaymentMethod.id) != method.id)
            .values(is_default=False)
        )
        method.is_default = True
        session.add(method)
        return method


def remove_card(db: Database, payments: Payments, wallet_id: str, payment_method_id: str) -> None:
    """Forget a saved card here and at the processor (best effort there).

    Raises: NotFound for an unknown card or another wallet's.
    """
    with db.write() as session:
        method = _owned(session, wallet_id, payment_method_id)
        session.delete(method)
    # Removed here, it will never be charged by lava-mcp again; the processor may lag.
    with contextlib.suppress(InvalidRequest, ProcessorUnavailable):
        payments.detach_card(payment_method_id)


def _owned(session: Session, wallet_id: str, payment_method_id: str) -> PaymentMethod:
    method = session.get(PaymentMethod, payment_method_id)
    if method is None or method.wallet_id != wallet_id:
        raise NotFound(
            f"unknown payment method {payment_method_id[:60]!r}",
            next_step="list saved cards with add_funds (no amount) or GET /v1/payment_methods",
        )
    return method


def _cards(session: Session, wallet_id: str) -> list[PaymentMethod]:
    return list(
        session.exec(
            select(PaymentMethod)
            .where(PaymentMethod.wallet_id == wallet_id)
            .order_by(col(PaymentMethod.is_default).desc(), col(PaymentMethod.created_at).desc())
        ).all()
    )
