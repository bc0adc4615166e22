"""The payments adapter: what the funding core needs from a card processor.

Two implementations, chosen by `Settings.payments_mode`:
  stripe.py   the real `stripe` SDK (Stripe, or a Stripe-compatible server at STRIPE_API_BASE)
  sandbox.py  offline, deterministic, driven by Stripe's documented test card numbers

An adapter's `mode` is the kind of money it moves (`Settings.money_mode`): `sandbox`
(simulated), `test` (Stripe test mode: an `sk_test_`/`rk_test_` key) or `live`. It funds
wallets of its own mode only, and applies only events whose `livemode` matches it.

Processors whose answers can be lost on the wire (Stripe) also implement `IntentLookup`,
so that the funding core can ask, later, what became of a charge it never heard back from.

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
from typing import Any, Literal, Protocol, runtime_checkable

WalletMode = Literal["sandbox", "test", "live"]


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
class IntentState:
    """What the processor says about one PaymentIntent (an off-session card charge) now.

    status: Stripe's (`succeeded`, `processing`, `requires_action`, `requires_payment_method`,
    `canceled`, …). `failure_*` come from its `last_payment_error`, when it has one.
    """

    id: str
    status: str
    amount_cents: int
    amount_received_cents: int
    currency: str
    metadata: dict[str, str] = field(default_factory=dict)
    failure_code: str | None = None
    decline_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class Event:
    """A verified webhook event: its id, type, the object it is about (as a dict), and
    `livemode` (None when the event does not say)."""

    id: str
    type: str
    object: dict[str, Any]
    livemode: bool | None = None


def intent_state(intent: dict[str, Any]) -> IntentState:
    """A PaymentIntent in Stripe's JSON shape, reduced to what the core reads."""
    error = intent.get("last_payment_error") or {}
    decline_code = error.get("decline_code") if isinstance(error, dict) else None
    status = str(intent.get("status") or "")
    received = intent.get("amount_received")
    if received is None and status == "succeeded":
        received = intent.get("amount")  # look-alikes without `amount_received` (localstripe)
    return IntentState(
        id=str(intent.get("id")),
        status=status,
        amount_cents=cents_of(intent.get("amount")),
        amount_received_cents=0 if received is None else cents_of(received),
        currency=str(intent.get("currency") or "usd"),
        metadata=_text_map(intent.get("metadata")),
        failure_code=str(error["code"]) if isinstance(error, dict) and error.get("code") else None,
        decline_code=str(decline_code) if decline_code else None,
        failure_message=str(error["message"]) if isinstance(error, dict) and error.get("message") else None,
    )


def cents_of(value: object) -> int:
    """A processor's amount in cents, read strictly: a non-negative integer (never a bool, a
    float or a string), else -1, which matches no amount, so the core refuses it as a
    mismatch instead of crediting a guess or crashing."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return -1
    return value


def _text_map(value: object) -> dict[str, str]:
    """Processor metadata as strings; anything but an object is no metadata."""
    return {str(key): str(item) for key, item in value.items()} if isinstance(value, dict) else {}


def checkout_state(session: dict[str, Any]) -> CheckoutState:
    """A Checkout Session in Stripe's JSON shape (an API answer or a webhook's object),
    reduced to what the core reads. The sandbox speaks the same shape."""
    intent = session.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    customer = session.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    return CheckoutState(
        id=str(session.get("id")),
        status=str(session.get("status") or "open"),
        payment_status=str(session.get("payment_status") or "unpaid"),
        amount_cents=cents_of(session.get("amount_total")),
        currency=str(session.get("currency") or "usd"),
        payment_intent_id=intent if isinstance(intent, str) else None,
        customer_id=customer if isinstance(customer, str) else None,
        metadata=_text_map(session.get("metadata")),
    )


class Payments(Protocol):
    """The card processor, as the funding core uses it."""

    mode: WalletMode  # the only kind of wallet this processor funds (sandbox, test or live)

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


@runtime_checkable
class IntentLookup(Protocol):
    """Asking a processor, later, about charges whose answer may have been lost."""

    def retrieve_payment_intent(self, payment_intent_id: str) -> IntentState:
        """Raises: InvalidRequest (unknown intent), ProcessorUnavailable."""
        ...

    def find_payment_intent(
        self, *, customer_id: str, payment_id: str, created_after_s: int
    ) -> IntentState | None:
        """The customer's PaymentIntent whose metadata `lava_payment_id` is `payment_id`,
        created after `created_after_s` (Unix seconds), or None when the processor has none.

        Raises: ProcessorUnavailable.
        """
        ...

    def payment_intent_of_charge(self, charge_id: str) -> str | None:
        """The PaymentIntent a charge (`ch_…`) belongs to, if any.

        Raises: InvalidRequest (unknown charge), ProcessorUnavailable.
        """
        ...
