"""The REST tests use the gateway's served app (a funded wallet, the fake provider)."""

from tests.gateway.conftest import Gateway, gateway, limiter

__all__ = ["Gateway", "gateway", "limiter"]
