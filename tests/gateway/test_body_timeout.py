"""A request body must arrive whole within LAVA_BODY_TIMEOUT_S: a client that trickles it
gets 408 in the API's own error shape (flat JSON on REST), and nothing is done."""

from __future__ import annotations

import json

import pytest

from lava_mcp.config import Settings
from tests.fake_provider import FakeProvider
from tests.gateway.conftest import Gateway
from tests.gateway.test_key_changes import read_response, send_headers


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"body_timeout_s": 0.5})


@pytest.mark.parametrize(
    ("path", "header", "expected"),
    [
        ("/v1/chat/completions", "Authorization", "openai"),
        ("/v1/messages", "x-api-key", "anthropic"),
    ],
)
def test_a_body_slower_than_the_timeout_is_408_in_each_shape(
    gateway: Gateway, fake: FakeProvider, path: str, header: str, expected: str
) -> None:
    key = gateway.create_key(request_shape=expected)
    secret = key["key"] if header == "x-api-key" else f"Bearer {key['key']}"
    body = json.dumps({"model": "cheap-1", "max_tokens": 8, "messages": []}).encode()
    with send_headers(gateway.url, path, {header: secret}, len(body)) as sock:
        sock.sendall(body[:10])  # and never the rest
        status, payload = read_response(sock)
    assert status == 408
    if expected == "anthropic":
        assert payload["type"] == "error" and payload["error"]["type"] == "timeout_error"
        message = payload["error"]["message"]
    else:
        assert (payload["error"]["type"], payload["error"]["code"]) == (
            "invalid_request_error",
            "request_timeout",
        )
        message = payload["error"]["message"]
    assert "did not arrive within 0.5 s" in message
    assert fake.received == []
    with gateway.rest() as rest:
        assert rest.get(f"/v1/spend_keys/{key['spend_key_id']}").json()["total_requests"] == 0


def test_a_slow_rest_body_is_408_flat_and_changes_nothing(gateway: Gateway) -> None:
    body = json.dumps({"name": "never"}).encode()
    headers = {"Authorization": f"Bearer {gateway.wallet_key}"}
    with send_headers(gateway.url, "/v1/spend_keys", headers, len(body)) as sock:
        sock.sendall(body[:5])
        status, payload = read_response(sock)
    assert (status, payload["code"]) == (408, 408)
    assert "did not arrive" in payload["error"]
    with gateway.rest() as rest:
        assert rest.get("/v1/spend_keys").json()["data"] == []
