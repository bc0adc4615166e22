"""The fuzzers use the gateway suite's app-on-loopback fixture (`tests/gateway/conftest.py`)."""

from tests.gateway.conftest import gateway, limiter

__all__ = ["gateway", "limiter"]
