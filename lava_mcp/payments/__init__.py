"""Payments adapters behind one interface (`base.Payments`), chosen by configuration."""

from __future__ import annotations

from lava_mcp.config import Settings
from lava_mcp.payments.base import Payments


def build_payments(settings: Settings) -> Payments:
    """Stripe when `payments_mode` is "stripe" (STRIPE_SECRET_KEY set), else the offline sandbox.

    Raises: ValueError when Stripe is asked for without a secret key.
    """
    if settings.payments_mode == "stripe":
        if not settings.stripe_secret_key:
            raise ValueError("LAVA_PAYMENTS=stripe needs STRIPE_SECRET_KEY")
        from lava_mcp.payments.stripe import StripePayments

        return StripePayments(
            settings.stripe_secret_key,
            webhook_secret=settings.stripe_webhook_secret,
            api_base=settings.stripe_api_base,
        )
    from lava_mcp.payments.sandbox import SandboxPayments

    return SandboxPayments(base_url=settings.base_url)
