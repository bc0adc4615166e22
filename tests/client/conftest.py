"""The client tests use the gateway's served app and its helpers."""

from tests.gateway.conftest import Gateway, gateway

__all__ = ["Gateway", "gateway"]
