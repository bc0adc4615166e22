"""The wallet (`GET /v1/wallet`) and funding it (`POST /v1/wallet/fund`), DESIGN §4–§5.

The fund body is the `add_funds` tool's arguments; its answer is the tool's JSON, one of
the statuses below. The amount's bounds ($10.00 to $10,000.00) are the core's, whose
refusal carries `min` and `max` (README "Out of range").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lava_mcp.contract.base import Body, Dollars, RawAmount, Shape
from lava_mcp.contract.payment_methods import PaymentMethod


class Wallet(Shape):
    wallet_id: str = Field(examples=["wal_01a2088fc5c4a4e635db3ed8a15d"])
    balance: Dollars = Field(description="Available to spend: the balance less holds (and any shortfall).")
    held: Dollars = Field(description="Held by calls in flight.")
    currency: Literal["USD"]
    shortfall: Dollars | None = Field(
        default=None, description="Owed after a refund or dispute; only when > 0."
    )
    sandbox: bool | None = Field(default=None, description="true on a sandbox wallet (simulated payments).")
    test_mode: bool | None = Field(default=None, description="true on a Stripe test-mode wallet.")


class FundRequest(Body):
    """`POST /v1/wallet/fund`. No amount: the answer is `amount_required` (the cards, the bounds)."""

    amount: RawAmount | None = None
    payment_method_id: str | None = Field(
        default=None, description="A saved card; default: the default card."
    )
    use_checkout: bool | None = Field(default=None, description="A Checkout link even when a card is saved.")

    model_config = Body.model_config | {
        "json_schema_extra": {"examples": [{"amount": "25.00"}, {"amount": 25, "use_checkout": True}]}
    }


class FundResult(Shape):
    """One of: `completed` (charged now), `processing`, `requires_action` (3-D Secure: open
    `redirect_url`), `checkout_required` (open `checkout_url`), `amount_required`."""

    status: Literal["completed", "processing", "requires_action", "checkout_required", "amount_required"]
    amount: Dollars | None = None
    balance: Dollars | None = None
    payment_id: str | None = None
    redirect_url: str | None = None
    checkout_url: str | None = None
    payment_methods: list[PaymentMethod] | None = None
    min: Dollars | None = None
    max: Dollars | None = None
    next_step: str | None = None
    replayed: bool | None = Field(
        default=None, description="true: the answer to an identical earlier request."
    )
    sandbox: bool | None = Field(default=None, description="true on a sandbox wallet (simulated payments).")
    test_mode: bool | None = Field(default=None, description="true on a Stripe test-mode wallet.")

    model_config = Shape.model_config | {
        "json_schema_extra": {
            "examples": [
                {
                    "status": "completed",
                    "amount": "25.00",
                    "balance": "72.50",
                    "payment_id": "pay_01a2088fc5c4a4e635db3ed8a15d",
                },
                {
                    "status": "checkout_required",
                    "checkout_url": "https://checkout.stripe.com/c/pay/cs_…",
                    "amount": "25.00",
                    "payment_id": "pay_01a2088fc49236730ced9bf41038",
                    "next_step": "open checkout_url to pay; the card is saved for next time and the wallet is credited once paid",
                },
                {
                    "status": "amount_required",
                    "balance": "47.50",
                    "payment_methods": [
                        {
                            "id": "pm_1Q…",
                            "brand": "visa",
                            "last4": "4242",
                            "exp_month": 12,
                            "exp_year": 2030,
                            "default": True,
                        }
                    ],
                    "min": "10.00",
                    "max": "10000.00",
                },
            ]
        }
    }
