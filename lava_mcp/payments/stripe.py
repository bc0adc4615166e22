"""Payments through the real `stripe` SDK (stripe-python 16, `StripeClient`).

`STRIPE_API_BASE` points the SDK at a Stripe-compatible server (localstripe in the tests).
Such servers don't honour idempotency keys, so against them the SDK never retries on its
own; against api.stripe.com every POST carries an idempotency key and retries are safe.

The mode is the key's: `sk_test_`/`rk_test_` is Stripe's test mode, anything else live
(`Settings.money_mode`). Every request has a short timeout (`LAVA_STRIPE_TIMEOUT_S`): a slow
Stripe fails a top-up fast instead of holding a worker for the SDK's default 80 s.

A charge whose answer was lost is found again by its PaymentIntent id when we have it, else
by listing the customer's PaymentIntents created since the attempt and matching metadata
`lava_payment_id` (the list is consistent at once; Stripe's Search API can lag a minute).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import stripe

from lava_mcp.payments.base import (
    Card,
    CardDeclined,
    ChargeResult,
    CheckoutSession,
    CheckoutState,
    Event,
    IntentState,
    InvalidRequest,
    PaymentsError,
    ProcessorUnavailable,
    WalletMode,
    cents_of,
    checkout_state,
    intent_state,
)

T = TypeVar("T")

# How many of a customer's recent PaymentIntents are read looking for a lost one.
FIND_INTENT_PAGES = 3


class StripePayments:
    """The `Payments` interface over a `StripeClient`."""

    mode: WalletMode

    def __init__(
        self,
        secret_key: str,
        *,
        webhook_secret: str | None = None,
        api_base: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        assert timeout_s > 0, timeout_s
        self.mode = mode_of_key(secret_key)
        self.webhook_secret = webhook_secret
        # localstripe and other look-alikes reject parameters only real Stripe knows.
        self.real_stripe = api_base is None
        http_client = stripe.RequestsClient(timeout=timeout_s)
        if api_base is None:
            self.client = stripe.StripeClient(secret_key, max_network_retries=2, http_client=http_client)
        else:
            self.client = stripe.StripeClient(
                secret_key,
                base_addresses={"api": api_base.rstrip("/")},
                max_network_retries=0,
                http_client=http_client,
            )

    def create_customer(self, *, wallet_id: str) -> str:
        customer = _call(
            lambda: self.client.v1.customers.create(
                {"description": f"lava-mcp wallet {wallet_id}", "metadata": {"lava_wallet_id": wallet_id}},
                {"idempotency_key": f"lava-customer-{wallet_id}"},
            )
        )
        return str(customer.id)

    def attach_card(self, *, customer_id: str, payment_method_id: str) -> Card:
        method = _call(
            lambda: self.client.v1.payment_methods.attach(
                payment_method_id,
                {"customer": customer_id},
                {"idempotency_key": f"lava-attach-{customer_id}-{payment_method_id}"},
            )
        )
        return _card(method.to_dict())

    def detach_card(self, payment_method_id: str) -> None:
        _call(lambda: self.client.v1.payment_methods.detach(payment_method_id))

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
        params: dict[str, Any] = {
            "amount": amount_cents,
            "currency": "usd",
            "customer": customer_id,
            "payment_method": payment_method_id,
            "off_session": True,
            "confirm": True,
            "metadata": metadata,
        }
        if self.real_stripe:
            params["description"] = "lava-mcp wallet top-up"
            params["automatic_payment_methods"] = {"enabled": True, "allow_redirects": "never"}
        try:
            intent = _call(
                lambda: self.client.v1.payment_intents.create(
                    params,  # type: ignore[arg-type]
                    {"idempotency_key": idempotency_key},
                )
            )
        except CardDeclined as declined:
            if declined.code == "authentication_required" and declined.payment_intent_id:
                # Stripe's answer for a 3-D Secure card charged off-session.
                return ChargeResult("requires_action", declined.payment_intent_id, amount_cents)
            raise
        details = intent.to_dict()
        status, intent_id = str(details.get("status")), str(details.get("id"))
        if status == "succeeded":
            received = details.get("amount_received")
            if received is None:
                received = details.get("amount")  # look-alikes without `amount_received` (localstripe)
            received = cents_of(received)
            return ChargeResult("succeeded", intent_id, received)
        if status in ("requires_action", "requires_confirmation"):
            return ChargeResult("requires_action", intent_id, amount_cents)
        if status == "processing":
            return ChargeResult("processing", intent_id, amount_cents)
        error = details.get("last_payment_error") or {}
        raise CardDeclined(
            str(error.get("message") or f"the charge ended in status {status}"),
            code=str(error.get("code") or "card_declined"),
            decline_code=error.get("decline_code"),
            payment_intent_id=intent_id,
        )

    def cancel_payment_intent(self, payment_intent_id: str) -> None:
        _call(lambda: self.client.v1.payment_intents.cancel(payment_intent_id))

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
        assert amount_cents > 0, amount_cents
        params: dict[str, Any] = {
            "mode": "payment",
            "customer": customer_id,
            "line_items": [
                {
                    "price_data": {
                        "currency": "usd",
                        "product_data": {"name": description},
                        "unit_amount": amount_cents,
                    },
                    "quantity": 1,
                }
            ],
            # Save the card so the next top-up is charged off-session without a page.
            "payment_intent_data": {"setup_future_usage": "off_session", "metadata": metadata},
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": metadata,
        }
        session = _call(
            lambda: self.client.v1.checkout.sessions.create(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
        )
        return CheckoutSession(id=str(session.id), url=str(session.url))

    def retrieve_checkout(self, session_id: str) -> CheckoutState:
        session = _call(lambda: self.client.v1.checkout.sessions.retrieve(session_id))
        return checkout_state(session.to_dict())

    def card_of_payment_intent(self, payment_intent_id: str) -> Card | None:
        intent = _call(lambda: self.client.v1.payment_intents.retrieve(payment_intent_id)).to_dict()
        method = intent.get("payment_method")
        if isinstance(method, dict):
            return _card(method) if method.get("card") else None
        if not isinstance(method, str):
            return None
        details = _call(lambda: self.client.v1.payment_methods.retrieve(method)).to_dict()
        return _card(details) if details.get("card") else None

    def retrieve_payment_intent(self, payment_intent_id: str) -> IntentState:
        intent = _call(lambda: self.client.v1.payment_intents.retrieve(payment_intent_id))
        return intent_state(intent.to_dict())

    def find_payment_intent(
        self, *, customer_id: str, payment_id: str, created_after_s: int
    ) -> IntentState | None:
        params: dict[str, Any] = {"customer": customer_id, "created": {"gte": created_after_s}, "limit": 100}
        for _ in range(FIND_INTENT_PAGES):
            page = _call(
                lambda: self.client.v1.payment_intents.list(params)  # type: ignore[arg-type]
            )
            intents = [intent.to_dict() for intent in page.data]
            for intent in intents:
                if (intent.get("metadata") or {}).get("lava_payment_id") == payment_id:
                    return intent_state(intent)
            if not page.has_more or not intents:
                return None
            params["starting_after"] = intents[-1]["id"]
        return None

    def payment_intent_of_charge(self, charge_id: str) -> str | None:
        charge = _call(lambda: self.client.v1.charges.retrieve(charge_id)).to_dict()
        intent = charge.get("payment_intent")
        if isinstance(intent, dict):
            intent = intent.get("id")
        return intent if isinstance(intent, str) else None

    def verify_webhook(self, payload: bytes, signature: str | None) -> Event:
        if not self.webhook_secret:
            raise PaymentsError("STRIPE_WEBHOOK_SECRET is not set, so no webhook can be verified")
        return verify_signed_event(payload, signature, self.webhook_secret)


def verify_signed_event(payload: bytes, signature: str | None, secret: str) -> Event:
    """Check Stripe's `Stripe-Signature` header over the raw body, then parse the event.

    Raises: PaymentsError naming what is wrong (no signature, bad signature, bad body).
    """
    if not signature:
        raise PaymentsError("missing Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(payload.decode("utf-8"), signature, secret, 300)
    except stripe.SignatureVerificationError as error:
        raise PaymentsError(f"bad Stripe-Signature: {error.user_message or error}") from error
    except UnicodeDecodeError as error:
        raise PaymentsError("webhook body is not UTF-8") from error
    try:
        body = json.loads(payload)
    except ValueError as error:
        raise PaymentsError("webhook body is not JSON") from error
    if not isinstance(body, dict):
        raise PaymentsError("webhook body is not a JSON object")
    data = body.get("data")
    event_id, event_type = body.get("id"), body.get("type")
    if not (isinstance(event_id, str) and isinstance(event_type, str) and isinstance(data, dict)):
        raise PaymentsError("webhook body is not a Stripe event (id, type, data.object)")
    event_object = data.get("object")
    if not isinstance(event_object, dict):
        raise PaymentsError("webhook event has no data.object")
    livemode = body.get("livemode")
    return Event(
        id=event_id,
        type=event_type,
        object=event_object,
        livemode=livemode if isinstance(livemode, bool) else None,
    )


def mode_of_key(secret_key: str) -> WalletMode:
    """Stripe's mode is the key's: `sk_test_`/`rk_test_` is test mode, anything else live."""
    return "test" if secret_key.startswith(("sk_test_", "rk_test_")) else "live"


def _card(method: dict[str, Any]) -> Card:
    card = method.get("card") or {}
    return Card(
        id=str(method["id"]),
        brand=str(card.get("brand") or "card"),
        last4=str(card.get("last4") or ""),
        exp_month=int(card.get("exp_month") or 0),
        exp_year=int(card.get("exp_year") or 0),
    )


def _call(request: Callable[[], T]) -> T:
    """Run one SDK call, translating stripe's errors into the adapter's."""
    try:
        return request()
    except stripe.CardError as error:
        details = error.error
        intent = getattr(details, "payment_intent", None) if details is not None else None
        intent_id = intent.get("id") if isinstance(intent, dict) else getattr(intent, "id", None)
        raise CardDeclined(
            error.user_message or "the card was declined",
            code=str(error.code or "card_declined"),
            decline_code=getattr(details, "decline_code", None) if details is not None else None,
            payment_intent_id=str(intent_id) if intent_id else None,
        ) from error
    except stripe.InvalidRequestError as error:
        raise InvalidRequest(error.user_message or str(error)) from error
    except stripe.StripeError as error:
        # Connection failures, a bad API key, rate limits, Stripe's 5xx.
        raise ProcessorUnavailable(f"Stripe: {error.user_message or error}") from error
