"""The offline sandbox: payments simulated with Stripe's documented test cards.

With no STRIPE_SECRET_KEY, `lava-mcp serve` funds sandbox wallets end to end without a
network: saved test cards are charged here, and the Checkout path is a local page served by
the app (`/sandbox/checkout/{session_id}`). Nothing here is real money, every response
and page says SANDBOX, and a sandbox wallet can never be funded by live Stripe (nor the
reverse): the adapter's `mode` is checked against the wallet's.

The outcome of a card is decided by its number, as in Stripe's test mode
(https://docs.stripe.com/testing). The sandbox keeps no state of its own: a saved card's
behaviour follows from its last 4 digits, which the ledger keeps, and a Checkout session
is a `Payment` row until its page is paid. Its one secret is the key its pages' forms are
signed with (`page_token`): random per process, so a page opened before a restart must be
reloaded before it can be submitted.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from lava_mcp.payments.base import (
    Card,
    CardDeclined,
    ChargeResult,
    CheckoutSession,
    CheckoutState,
    Event,
    InvalidRequest,
    PaymentsError,
    WalletMode,
)


@dataclass(frozen=True)
class TestCard:
    number: str
    brand: str
    outcome: str  # succeeded | requires_action | a Stripe error code (card_declined, expired_card, …)
    decline_code: str | None = None
    message: str = ""


# Stripe's test card numbers (https://docs.stripe.com/testing), keyed by number.
TEST_CARDS: dict[str, TestCard] = {
    card.number: card
    for card in (
        TestCard("4242424242424242", "visa", "succeeded"),
        TestCard("4000056655665556", "visa", "succeeded"),
        TestCard("5555555555554444", "mastercard", "succeeded"),
        TestCard("378282246310005", "amex", "succeeded"),
        TestCard("4000000000000002", "visa", "card_declined", "generic_decline", "Your card was declined."),
        TestCard(
            "4000000000009995",
            "visa",
            "card_declined",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
        TestCard("4000000000009987", "visa", "card_declined", "lost_card", "Your card was declined."),
        TestCard("4000000000009979", "visa", "card_declined", "stolen_card", "Your card was declined."),
        TestCard("4000000000000069", "visa", "expired_card", "expired_card", "Your card has expired."),
        TestCard(
            "4000000000000127",
            "visa",
            "incorrect_cvc",
            "incorrect_cvc",
            "Your card's security code is incorrect.",
        ),
        TestCard("4000000000000341", "visa", "card_declined", "generic_decline", "Your card was declined."),
        TestCard("4000002760003184", "visa", "requires_action"),
        TestCard("4000002500003155", "visa", "requires_action"),
    )
}

# Stripe's test PaymentMethod tokens (`pm_card_visa`, …), as accepted by POST /v1/payment_methods.
TEST_TOKENS: dict[str, str] = {
    "pm_card_visa": "4242424242424242",
    "pm_card_visa_debit": "4000056655665556",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_amex": "378282246310005",
    "pm_card_visa_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_chargeDeclinedLostCard": "4000000000009987",
    "pm_card_chargeDeclinedStolenCard": "4000000000009979",
    "pm_card_chargeDeclinedExpiredCard": "4000000000000069",
    "pm_card_chargeDeclinedIncorrectCvc": "4000000000000127",
    "pm_card_chargeCustomerFail": "4000000000000341",
    "pm_card_authenticationRequired": "4000002760003184",
    "pm_card_threeDSecure2Required": "4000002760003184",
}

SANDBOX_EXP_YEAR = 2034


def card_for_last4(last4: str) -> TestCard | None:
    """The test card a saved sandbox card stands for (the ledger keeps only last4)."""
    matches = [card for number, card in TEST_CARDS.items() if number.endswith(last4)]
    return matches[0] if len(matches) == 1 else None


class SandboxPayments:
    """The `Payments` interface, offline. Ids carry `_sbx_` so they can't pass for Stripe's."""

    mode: WalletMode = "sandbox"

    def __init__(self, *, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        # Signs the forms of the local pages: another site can't read a page, so can't post its token.
        self._page_key = secrets.token_bytes(32)

    def page_token(self, session_id: str) -> str:
        """The token a sandbox page's forms carry: HMAC-SHA256 of its session id under this server's key."""
        return hmac.new(self._page_key, b"sandbox-page:" + session_id.encode(), hashlib.sha256).hexdigest()

    def page_token_matches(self, session_id: str, token: str) -> bool:
        """Whether a submitted form carries this page's token (compared in constant time)."""
        return hmac.compare_digest(self.page_token(session_id).encode(), token.encode())

    def create_customer(self, *, wallet_id: str) -> str:
        return "cus_sbx_" + hashlib.sha256(wallet_id.encode()).hexdigest()[:24]

    def attach_card(self, *, customer_id: str, payment_method_id: str) -> Card:
        number = TEST_TOKENS.get(payment_method_id)
        if number is None:
            raise InvalidRequest(
                f"SANDBOX: no such test payment method {payment_method_id[:60]!r}; use one of "
                + ", ".join(sorted(TEST_TOKENS))
            )
        # Every test card can be saved here, so each decline can be seen from add_funds.
        return self.new_card(number, exp_month=12, exp_year=SANDBOX_EXP_YEAR)

    def new_card(self, number: str, *, exp_month: int, exp_year: int) -> Card:
        card = TEST_CARDS[number]
        return Card(
            id="pm_sbx_" + secrets.token_hex(12),
            brand=card.brand,
            last4=number[-4:],
            exp_month=exp_month,
            exp_year=exp_year,
        )

    def detach_card(self, payment_method_id: str) -> None:
        return None

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
        assert amount_cents > 0, amount_cents
        intent_id = "pi_sbx_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        card = card_for_last4(card_last4)
        if card is None:
            raise CardDeclined(
                "SANDBOX: this card is not one of Stripe's test cards",
                code="card_declined",
                decline_code="test_mode_live_card",
                payment_intent_id=intent_id,
            )
        if card.outcome == "requires_action":
            return ChargeResult("requires_action", intent_id, amount_cents)
        if card.outcome != "succeeded":
            raise CardDeclined(
                card.message, code=card.outcome, decline_code=card.decline_code, payment_intent_id=intent_id
            )
        return ChargeResult("succeeded", intent_id, amount_cents)

    def pay_on_page(self, *, number: str, exp_month: int, exp_year: int, cvc: str) -> Card:
        """The sandbox Checkout page's payment: the card as entered, or a decline.

        3-D Secure cards pass (the page stands for the on-session challenge).
        Raises: CardDeclined, InvalidRequest (not a test card or malformed entry).
        """
        digits = "".join(character for character in number if character.isdigit())
        card = TEST_CARDS.get(digits)
        if card is None:
            raise CardDeclined(
                "SANDBOX accepts only Stripe's test card numbers, such as 4242 4242 4242 4242",
                code="card_declined",
                decline_code="test_mode_live_card",
            )
        if not (1 <= exp_month <= 12 and 2000 <= exp_year <= 2100):
            raise InvalidRequest("enter the expiry as MM / YY")
        if not (cvc.isdigit() and len(cvc) in (3, 4)):
            raise InvalidRequest("enter the 3 or 4 digit security code")
        if card.outcome not in ("succeeded", "requires_action"):
            raise CardDeclined(card.message, code=card.outcome, decline_code=card.decline_code)
        return self.new_card(digits, exp_month=exp_month, exp_year=exp_year)

    def cancel_payment_intent(self, payment_intent_id: str) -> None:
        return None

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
        session_id = "cs_sbx_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        return CheckoutSession(id=session_id, url=f"{self.base_url}/sandbox/checkout/{session_id}")

    def retrieve_checkout(self, session_id: str) -> CheckoutState:
        raise InvalidRequest("SANDBOX sessions are paid on the local page, not retrieved")

    def card_of_payment_intent(self, payment_intent_id: str) -> Card | None:
        return None

    def verify_webhook(self, payload: bytes, signature: str | None) -> Event:
        raise PaymentsError("SANDBOX: payments are simulated here, Stripe webhooks are not accepted")
