"""Every error status of the gateway, in both API shapes, over raw HTTP and the SDKs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anthropic
import httpx
import openai
import pytest

from lava_mcp.core import wallet
from lava_mcp.store.models import RequestRecord, SpendKey, utc_now
from tests.fake_provider import FakeProvider
from tests.gateway.conftest import Gateway

SHAPES = {
    "openai": ("/v1/chat/completions", "cheap-1", "gpt-4o-mini"),
    "anthropic": ("/v1/messages", "claude-haiku-4-5", "claude-haiku-4-5"),
}


def body(shape: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": SHAPES[shape][1],
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


def call(
    gateway: Gateway, shape: str, key: str | None, payload: Any = None, **options: Any
) -> httpx.Response:
    headers = {"x-api-key": key} if key and shape == "anthropic" else {}
    if key and shape == "openai":
        headers["authorization"] = f"Bearer {key}"
    headers.update(options.pop("headers", {}))
    return httpx.post(
        f"{gateway.url}{SHAPES[shape][0]}",
        json=body(shape) if payload is None else payload,
        headers=headers,
        timeout=30,
        **options,
    )


def error_of(shape: str, response: httpx.Response) -> tuple[str, str]:
    """(type, message) from the API's own error shape, checking the shape itself."""
    payload = response.json()
    assert response.headers["x-lava-request-id"].startswith("req_")
    if shape == "anthropic":
        assert payload["type"] == "error" and set(payload["error"]) == {"type", "message"}
        return payload["error"]["type"], payload["error"]["message"]
    assert {"message", "type", "code"} <= set(payload["error"])
    return payload["error"]["type"], payload["error"]["message"]


def key_for(gateway: Gateway, shape: str, **options: Any) -> dict[str, Any]:
    return gateway.create_key(request_shape=shape, **options)


def refused_record(gateway: Gateway, response: httpx.Response) -> RequestRecord:
    with gateway.runtime.db.read() as session:
        record = session.get(RequestRecord, response.headers["x-lava-request-id"])
    assert record is not None
    assert (record.ran, record.status, record.cost_micros) == (False, "error", 0)
    return record


@pytest.fixture(params=sorted(SHAPES))
def shape(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


# -- 401 -------------------------------------------------------------------------------------


def test_missing_unknown_and_wallet_keys_are_401(gateway: Gateway, shape: str, fake: FakeProvider) -> None:
    for key in (None, "lava_sk_unknown", "sk-something-else"):
        response = call(gateway, shape, key)
        assert response.status_code == 401
        assert error_of(shape, response)[0] == "authentication_error"
    response = call(gateway, shape, gateway.wallet_key)
    assert response.status_code == 401
    assert "use a spend key" in error_of(shape, response)[1]
    assert fake.received == []


def test_revoked_key_is_401_and_rotation_kills_the_old_secret_at_once(gateway: Gateway, shape: str) -> None:
    key = key_for(gateway, shape)
    assert call(gateway, shape, key["key"]).status_code == 200
    with gateway.rest() as rest:
        rotated = rest.post(f"/v1/spend_keys/{key['spend_key_id']}/rotate").json()
        assert rotated["spend_key_id"] == key["spend_key_id"] and rotated["key"] != key["key"]
        assert call(gateway, shape, key["key"]).status_code == 401
        assert call(gateway, shape, rotated["key"]).status_code == 200
        assert rest.delete(f"/v1/spend_keys/{key['spend_key_id']}").json() == {"success": True}
    response = call(gateway, shape, rotated["key"])
    assert response.status_code == 401 and "revoked" in error_of(shape, response)[1]


# -- 403 -------------------------------------------------------------------------------------


def test_model_and_provider_not_allowed_are_403_and_recorded(
    gateway: Gateway, shape: str, fake: FakeProvider
) -> None:
    other_model = "gpt-4o" if shape == "openai" else "claude-sonnet-4-5"
    key = key_for(gateway, shape, allowed_models=[SHAPES[shape][1]])
    response = call(gateway, shape, key["key"], body(shape, model=other_model))
    assert response.status_code == 403
    kind, message = error_of(shape, response)
    assert kind == "permission_error" and "not allowed" in message
    refused_record(gateway, response)
    provider_key = key_for(gateway, shape, allowed_providers=["ollama"])
    response = call(gateway, shape, provider_key["key"])
    assert response.status_code == 403 and "provider" in error_of(shape, response)[1]
    assert fake.received == []


def test_paused_and_expired_keys_are_403(gateway: Gateway, shape: str) -> None:
    key = key_for(gateway, shape)
    with gateway.rest() as rest:
        paused = rest.put(f"/v1/spend_keys/{key['spend_key_id']}", json={"status": "paused"})
        assert paused.json()["status"] == "paused"
        response = call(gateway, shape, key["key"])
        assert response.status_code == 403 and "paused" in error_of(shape, response)[1]
        rest.put(f"/v1/spend_keys/{key['spend_key_id']}", json={"status": "active"})
    assert call(gateway, shape, key["key"]).status_code == 200
    with gateway.runtime.db.write() as session:
        row = session.get(SpendKey, key["spend_key_id"])
        assert row is not None
        row.expires_at = utc_now() - timedelta(seconds=1)
        row.version += 1  # as every writer of a key does: the hold (and so the key cache) relies on it
        session.add(row)
    response = call(gateway, shape, key["key"])
    assert response.status_code == 403 and "expired" in error_of(shape, response)[1]


def test_request_shape_is_enforced_naming_the_right_one(gateway: Gateway, shape: str) -> None:
    other = "anthropic" if shape == "openai" else "openai"
    key = key_for(gateway, other)
    response = call(gateway, shape, key["key"])
    assert response.status_code == 403
    message = error_of(shape, response)[1]
    assert other in message and SHAPES[other][0] in message


# -- 402 -------------------------------------------------------------------------------------


def test_empty_wallet_is_402_insufficient_balance(gateway: Gateway, shape: str, fake: FakeProvider) -> None:
    empty = wallet.create_wallet(gateway.runtime.db, name="empty")
    with gateway.rest(empty.wallet_key) as rest:
        key = rest.post("/v1/spend_keys", json={"request_shape": shape}).json()
    response = call(gateway, shape, key["key"])
    assert response.status_code == 402
    assert error_of(shape, response)[1].startswith("Insufficient wallet balance")
    refused_record(gateway, response)
    assert fake.received == []


def test_spend_limit_is_402_naming_the_reset(gateway: Gateway, shape: str) -> None:
    key = key_for(gateway, shape, spend_limit={"amount": "0.01", "cycle": "daily"})
    response = call(gateway, shape, key["key"], body(shape, model=SHAPES[shape][2], max_tokens=200_000))
    assert response.status_code == 402
    kind, message = error_of(shape, response)
    assert kind == ("billing_error" if shape == "anthropic" else "insufficient_quota")
    assert "spend limit" in message and "resets at" in message


# -- 429 -------------------------------------------------------------------------------------


def test_request_limit_is_429_with_retry_after(gateway: Gateway, shape: str) -> None:
    key = key_for(gateway, shape, request_limit={"count": 1, "cycle": "daily"})
    assert call(gateway, shape, key["key"]).status_code == 200
    response = call(gateway, shape, key["key"])
    assert response.status_code == 429
    assert error_of(shape, response)[0] == "rate_limit_error"
    assert 1 <= int(response.headers["retry-after"]) <= 86_400
    refused_record(gateway, response)


def test_rpm_two_lets_two_quick_requests_through_then_429(gateway: Gateway, shape: str) -> None:
    key = key_for(gateway, shape, rate_limit={"rpm": 2})
    assert [call(gateway, shape, key["key"]).status_code for _ in range(2)] == [200, 200]
    response = call(gateway, shape, key["key"])
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 30  # whole seconds
    assert "rate limit" in error_of(shape, response)[1]


# -- 502 and upstream refusals ------------------------------------------------------------------


def test_upstream_failure_is_502_and_charges_nothing(
    gateway: Gateway, shape: str, fake: FakeProvider
) -> None:
    key = key_for(gateway, shape)
    before = gateway.balance_micros()
    fake.fail_status = 500
    for stream in (False, True):
        response = call(gateway, shape, key["key"], body(shape, stream=stream))
        assert response.status_code == 502, response.text
        assert error_of(shape, response)[0] == "api_error"
        gateway.wait_resolved(response.headers["x-lava-request-id"])
    assert gateway.balance_micros() == before
    with gateway.rest() as rest:
        listed = rest.get(f"/v1/spend_keys/{key['spend_key_id']}").json()
    assert listed["total_spend"] == "0.000000"
    assert gateway.verify() == []


def test_an_answer_nested_past_the_parser_is_502_and_charges_nothing(
    gateway: Gateway, fake: FakeProvider
) -> None:
    """A provider's 200 whose JSON nests deeper than Python's parser can go is an invalid
    answer (502, nothing charged), not an internal error."""
    key = key_for(gateway, "openai")
    before = gateway.balance_micros()
    fake.raw_answer = b"[" * 100_000 + b"]" * 100_000
    response = call(gateway, "openai", key["key"], body("openai"))
    assert response.status_code == 502, response.text
    assert "invalid JSON" in response.json()["error"]["message"]
    gateway.wait_resolved(response.headers["x-lava-request-id"])
    assert gateway.balance_micros() == before
    assert gateway.verify() == []


def test_upstream_unreachable_is_502(gateway: Gateway, shape: str) -> None:
    from lava_mcp.providers.catalog import Service

    service_id = "openai" if shape == "openai" else "anthropic"
    service = gateway.runtime.catalog.services[service_id]
    gateway.runtime.catalog.services[service_id] = Service(
        **{**service.__dict__, "base_url": "http://127.0.0.1:9", "model_prefixes": service.model_prefixes}
    )
    key = key_for(gateway, shape)
    response = call(gateway, shape, key["key"], body(shape, model=SHAPES[shape][2]))
    assert response.status_code == 502
    assert gateway.verify() == []


def test_upstream_rejection_is_400_and_charges_nothing(
    gateway: Gateway, shape: str, fake: FakeProvider
) -> None:
    key = key_for(gateway, shape)
    before = gateway.balance_micros()
    fake.fail_status = 400
    response = call(gateway, shape, key["key"])
    assert response.status_code == 400
    assert error_of(shape, response)[0] == "invalid_request_error"
    assert gateway.balance_micros() == before


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[1, 2]",
        b"",
        b'{"model": 5, "messages": []}',
        b'{"model": "cheap-1", "messages": "hi"}',
        b'{"model": "cheap-1", "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}',
        b'{"model": "cheap-1", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
        # Not JSON, though Python's parser reads them: forwarded to the provider before
        # (found by fuzzing).
        b'{"model": "cheap-1", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        b'{"model": "cheap-1", "messages": [{"role": "user", "content": "x"}], "temperature": -Infinity}',
        b'{"model": "cheap-1", "messages": [{"role": "user", "content": "x"}], "temperature": 1e400}',
        # The routing prefix and nothing after it: sent upstream as model "" before.
        b'{"model": "ollama/", "messages": [{"role": "user", "content": "x"}]}',
    ],
)
def test_malformed_bodies_are_400(gateway: Gateway, payload: bytes, fake: FakeProvider) -> None:
    key = key_for(gateway, "openai")
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=payload,
        headers={"authorization": f"Bearer {key['key']}", "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert error_of("openai", response)[0] == "invalid_request_error"
    assert fake.received == []


def test_one_megabyte_body_is_refused_before_anything_runs(
    gateway: Gateway, shape: str, fake: FakeProvider
) -> None:
    key = key_for(gateway, shape)
    huge = body(shape, messages=[{"role": "user", "content": "x" * 1_000_001}])
    response = call(gateway, shape, key["key"], huge)
    assert response.status_code == 413 and "bytes" in error_of(shape, response)[1]
    # also when the client does not say how long the body is (chunked upload)
    chunks = iter(
        [b'{"model": "cheap-1", "messages": [{"role": "user", "content": "', b"x" * 1_100_000, b'"}]}']
    )
    streamed = httpx.post(
        f"{gateway.url}{SHAPES[shape][0]}",
        content=chunks,
        headers={"x-api-key": key["key"], "content-type": "application/json"},
    )
    assert streamed.status_code == 413
    assert fake.received == []


def test_unknown_fields_are_passed_to_the_provider_but_unknown_models_are_404(
    gateway: Gateway, shape: str
) -> None:
    key = key_for(gateway, shape)
    assert call(gateway, shape, key["key"], body(shape, temperature=0.2, user="someone")).status_code == 200
    response = call(gateway, shape, key["key"], body(shape, model="no-such-model"))
    assert response.status_code == 404
    assert "no-such-model" in error_of(shape, response)[1]


def test_a_model_of_the_other_shape_is_400(gateway: Gateway, shape: str) -> None:
    key = key_for(gateway, shape)
    other_model = "claude-haiku-4-5" if shape == "openai" else "gpt-4o-mini"
    response = call(gateway, shape, key["key"], body(shape, model=other_model))
    assert response.status_code == 400
    assert "shape" in error_of(shape, response)[1]


# -- the SDKs see the right exception types --------------------------------------------------------


def test_sdks_raise_their_own_error_types(gateway: Gateway) -> None:
    openai_client = gateway.openai("lava_sk_wrong")
    with pytest.raises(openai.AuthenticationError):
        openai_client.chat.completions.create(model="cheap-1", messages=[{"role": "user", "content": "x"}])
    limited = gateway.create_key(rate_limit={"rpm": 1})
    limited_client = gateway.openai(limited["key"])
    limited_client.chat.completions.create(model="cheap-1", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as rate_error:
        limited_client.chat.completions.create(model="cheap-1", messages=[{"role": "user", "content": "x"}])
    assert rate_error.value.response.headers["retry-after"].isdigit()
    anthropic_key = gateway.create_key(request_shape="anthropic", allowed_models=["claude-opus-4-5"])
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        gateway.anthropic(anthropic_key["key"]).messages.create(
            model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert "not allowed" in str(denied.value)
