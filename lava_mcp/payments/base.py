"""The payments adapter: what the funding core needs from a card processor.

Two implementations, chosen by `Settings.payments_mode`:
  stripe.py   the real `stripe` SDK (Stripe, or a Stripe-compatible server at STRIPE_API_BASE)
  sandbox.py  offline, deterministic, driven by Stripe's documented test card numbers

Amounts cross this boundary in cents (Stripe's minor unit for USD); the core converts
from micro-dollars. Every state-changing call takes an idempotency key, so a retry moves
no money twice at the processor either.

    PaymentsError                   the processor said no, or could not be reached
    ├── CardDeclined                the card was declined (carries code, decline_code)
    ├── InvalidRequest              the processor refused the request (unknown card or session, bad parameters)
    └── ProcessorUnavailable        network failure, bad API key, 5xx: nothing is known to have moved
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

WalletMode = Literal["sandbox", "live"]


class PaymentsError(Exception):
    """Base of the adapter's errors; the core turns them into `lava_mcp.errors` classes."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CardDeclined(PaymentsError):
    """The issuer (or the processor) declined the card.

    `code` is Stripe's error code (`card_declined`, `expired_card`, `incorrect_cvc`, …);
    `decline_code` the issuer's reason (`insufficient_funds`, `generic_decline`, …) when known.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        decline_code: str | None = None,
        payment_intent_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.decline_code = decline_code
        self.payment_intent_id = payment_intent_id


class InvalidRequest(PaymentsError):
    """The processor refused the request: an unknown card or session, or bad parameters."""


class ProcessorUnavailable(PaymentsError):
    """The processor could not be reached or answered with a server-side error."""


@dataclass(frozen=True)
class Card:
    """A saved card as the processor describes it (never the number)."""

    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class ChargeResult:
    """The outcome of an off-session charge that was not declined.

    status: `succeeded` (money taken), `requires_action` (the bank wants the card holder
    to authenticate on-session: 3-D Secure), or `processing` (the processor will say later).
    """

    status: Literal["succeeded", "requires_action", "processing"]
    payment_intent_id: str
    amount_cents: int


@dataclass(frozen=True)
class CheckoutSession:
    """A hosted payment page for one top-up."""

    id: str
    url: str


@dataclass(frozen=True)
class CheckoutState:
    """What the processor says about a Checkout Session now."""

    id: str
    status: str  # open | complete | expired
    payment_status: str  # paid | unpaid | no_payment_required
    amount_cents: int
    currency: str
    payment_intent_id: str | None
    customer_id: str | None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def paid(self) -> bool:
        return self.status == "complete" and self.payment_status == "paid"


@dataclass(frozen=True)
class Event:
    """A verified webhook event: its id, type and the object it is about (as a dict)."""

    id: str
    type: str
    object: dict[str, Any]


def checkout_state(session: dict[str, Any]) -> CheckoutState:
    """A Checkout Session in Stripe's JSON shape (an API answer or a webhook's object),
    reduced to what the core reads. The sandbox speaks the same shape."""
    intent = session.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    customer = session.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    metadata = session.get("metadata") or {}
    return CheckoutState(
        id=str(session.get("id")),
        status=str(session.get("status") or "open"),
        payment_status=str(session.get("payment_status") or "unpaid"),
        amount_cents=int(session.get("amount_total") or 0),
        currency=str(session.get("currency") or "usd"),
        payment_intent_id=intent if isinstance(intent, str) else None,
        customer_id=customer if isinstance(customer, str) else None,
        metadata={str(key): str(value) for key, value in metadata.items()},
    )


class Payments(Protocol):
    """The card processor, as the funding core uses it."""

    mode: WalletMode  # the kind of wallet this processor may fund: never both

    def create_customer(self, *, wallet_id: str) -> str:
        """A processor-side customer for the wallet; returns its id.

        Raises: ProcessorUnavailable.
        """
        ...

    def attach_card(self, *, customer_id: str, payment_method_id: str) -> Card:
        """Save a tokenised card (`pm_…`) to the customer.

        Raises: CardDeclined (the card can't be saved), InvalidRequest, ProcessorUnavailable.
        """
        ...

    def detach_card(self, payment_method_id: str) -> None:
        """Forget a saved card at the processor.

        Raises: InvalidRequest, ProcessorUnavailable.
        """
        ...

    def charge(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        card_last4: str,
        amount_cents: int,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> ChargeResult:
        """Charge a saved card now, off-session.

        Raises: CardDeclined, InvalidRequest, ProcessorUnavailable.
        """
        ...

    def cancel_payment_intent(self, payment_intent_id: str) -> None:
        """Cancel an unfinished charge (best effort: raises ProcessorUnavailable)."""
        ...

    def create_checkout(
        self,
        *,
        customer_id: str,
        amount_cents: int,
        description: str,
        success_url: str,
        cancel_url: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> CheckoutSession:
        """A hosted page where the card holder pays `amount_cents` and saves the card.

        Raises: ProcessorUnavailable.
        """
        ...

    def retrieve_checkout(self, session_id: str) -> CheckoutState:
        """Raises: InvalidRequest (unknown session), ProcessorUnavailable."""
        ...

    def card_of_payment_intent(self, payment_intent_id: str) -> Card | None:
        """The card a payment was made with, if it is a card.

        Raises: ProcessorUnavailable.
        """
        ...

    def verify_webhook(self, payload: bytes, signature: str | None) -> Event:
        """Check a webhook's signature and parse it.

        Raises: PaymentsError with a reason when the signature or the body is bad.
        """
        ...
