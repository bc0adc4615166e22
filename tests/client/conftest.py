"""The client tests use the gateway's served app and its helpers."""

from tests.gateway.conftest import Gateway, gateway, limiter

__all__ = ["Gateway", "gateway", "limiter"]
