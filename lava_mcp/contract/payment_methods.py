"""Saved cards (`/v1/payment_methods`, DESIGN §5): a Stripe PaymentMethod attached to the
wallet's Stripe customer."""

from __future__ import annotations

from pydantic import Field

from lava_mcp.contract.base import Body, Shape


class PaymentMethod(Shape):
    id: str = Field(examples=["pm_1Q…"])
    brand: str = Field(examples=["visa"])
    last4: str = Field(examples=["4242"])
    exp_month: int = Field(examples=[12])
    exp_year: int = Field(examples=[2030])
    default: bool


class PaymentMethodList(Shape):
    data: list[PaymentMethod]
    has_more: bool
    next_cursor: str | None


class SavePaymentMethod(Body):
    """A PaymentMethod tokenised by Stripe (in tests a Stripe test method, `pm_card_visa`)."""

    payment_method_id: str = Field(min_length=1, max_length=255, examples=["pm_card_visa"])
