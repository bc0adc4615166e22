"""Bodies and queries are judged by the contract's models, and every refusal is the flat
400 naming the field: never a 422, never pydantic's list, and nothing changes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.rest.conftest import Gateway


def key_count(gateway: Gateway) -> int:
    with gateway.rest() as rest:
        return len(rest.get("/v1/spend_keys", params={"limit": 100}).json()["data"])


def assert_flat_400(response: httpx.Response, *names: str) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 400 and isinstance(body["error"], str), body
    assert set(body) <= {"error", "code", "next_step", "min", "max"}, body  # never pydantic's list
    for name in names:
        assert name in body["error"], body
    message: str = body["error"]
    return message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"spend_limt": {"amount": "5.00", "cycle": "daily"}}, "spend_limt"),
        ({"spend_limit": {"amount": "5.00", "cycle": "daily", "currency": "EUR"}}, "spend_limit.currency"),
        ({"spend_limit": {"amount": "5.001"}}, "spend_limit.amount"),
        ({"spend_limit": {"amount": "25", "cycle": "hourly"}}, "spend_limit.cycle"),
        ({"rate_limit": {"rpm": "60"}}, "rate_limit.rpm"),
        ({"rate_limit": {"rpm": 60, "burst": 0}}, "rate_limit.burst"),
        ({"request_limit": {"count": True}}, "request_limit.count"),
        ({"allowed_models": ["gpt-4o-mini", " "]}, "allowed_models"),
        ({"allowed_providers": [""]}, "allowed_providers"),
        ({"spend_limit": {}}, "spend_limit.amount"),
        ({"request_limit": {"count": None, "cycle": "weekly"}}, "request_limit.count"),
        ({"rate_limit": {}}, "rate_limit.rpm"),
        ({"name": ["a list"]}, "name"),
        ({"expires_at": "next tuesday"}, "expires_at"),
        ({"status": "revoked"}, "DELETE /v1/spend_keys"),
    ],
)
def test_a_bad_spend_key_body_is_a_flat_400_naming_the_field_and_creates_nothing(
    gateway: Gateway, body: dict[str, Any], field: str
) -> None:
    with gateway.rest() as rest:
        response = rest.post("/v1/spend_keys", json=body)
    assert_flat_400(response, field)
    assert key_count(gateway) == 0


def test_the_unknown_field_message_lists_the_fields(gateway: Gateway) -> None:
    with gateway.rest() as rest:
        message = assert_flat_400(rest.post("/v1/spend_keys", json={"spend_limt": {"amount": "5"}}))
    assert message.startswith("unknown field: spend_limt") and "spend_limit" in message


@pytest.mark.parametrize(
    "raw", [b'{"spend_limit": {"amount": 1e1}}', b'{"spend_limit": {"amount": 19.9999999999999999}}']
)
def test_an_amount_is_judged_on_the_text_sent_not_on_a_float(gateway: Gateway, raw: bytes) -> None:
    with gateway.rest() as rest:
        response = rest.post("/v1/spend_keys", content=raw, headers={"content-type": "application/json"})
    assert_flat_400(response, "spend_limit.amount")
    assert key_count(gateway) == 0


def test_a_fund_amount_with_an_exponent_is_refused_and_charges_nothing(gateway: Gateway) -> None:
    before = gateway.balance_micros()
    with gateway.rest() as rest:
        rest.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"}).raise_for_status()
        refused = rest.post(
            "/v1/wallet/fund", content=b'{"amount": 1e1}', headers={"content-type": "application/json"}
        )
        typed = rest.post("/v1/wallet/fund", json={"amount": "25", "use_checkout": "yes"})
    assert_flat_400(refused, "amount")
    assert_flat_400(typed, "use_checkout")
    assert gateway.balance_micros() == before


@pytest.mark.parametrize("amount", [25, "25", "25.00", "$25", 25.5])
def test_the_accepted_amounts_still_fund(gateway: Gateway, amount: Any) -> None:
    before = gateway.balance_micros()
    with gateway.rest() as rest:
        rest.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"}).raise_for_status()
        response = rest.post("/v1/wallet/fund", json={"amount": amount})
    assert response.status_code == 200 and response.json()["status"] == "completed", response.text
    assert gateway.balance_micros() - before == round(float(str(amount).lstrip("$")) * 100) * 10_000


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/spend_keys", {"limit": "0"}, "limit"),
        ("/v1/spend_keys", {"limit": "101"}, "limit"),
        ("/v1/spend_keys", {"limit": "ten"}, "limit"),
        ("/v1/spend_keys", {"cursor": "sk_id_not-one-of-ours"}, "cursor"),
        ("/v1/spend_keys", {"status": "frozen"}, "status"),
        ("/v1/requests", {"limit": "1000"}, "limit"),
        ("/v1/requests", {"cursor": "sk_id_0123456789abcdef0123456789ab"}, "cursor"),
        ("/v1/usage", {"start": "yesterday"}, "start"),
        ("/v1/usage", {"end": "2026-02-30"}, "end"),
    ],
)
def test_a_bad_query_parameter_is_a_flat_400_naming_it(
    gateway: Gateway, path: str, params: dict[str, str], field: str
) -> None:
    with gateway.rest() as rest:
        assert_flat_400(rest.get(path, params=params), field)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "2026-11-20", "end": "2026-11-10"}, "start must not be after end"),
        ({"start": "yesterday"}, "start must be an ISO date like 2026-11-23"),
        ({"end": "2026-02-30"}, "end '2026-02-30' is not a real date"),
    ],
)
def test_usage_errors_name_the_query_parameters_start_and_end(
    gateway: Gateway, params: dict[str, str], message: str
) -> None:
    """`/v1/usage` takes `start` and `end`: its errors never speak of the core's (and MCP's)
    `since` and `until`."""
    with gateway.rest() as rest:
        assert (
            assert_flat_400(rest.get("/v1/usage", params=params), "start" if "start" in params else "end")
            == message
        )


def test_a_page_limit_in_range_is_honoured(gateway: Gateway) -> None:
    for _ in range(3):
        gateway.create_key()
    with gateway.rest() as rest:
        first = rest.get("/v1/spend_keys", params={"limit": "2"}).json()
        rest_of = rest.get("/v1/spend_keys", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert len(first["data"]) == 2 and first["has_more"] is True
    assert len(rest_of["data"]) == 1 and rest_of["next_cursor"] is None


def test_the_wallet_key_is_checked_before_the_body(gateway: Gateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/spend_keys", content=b"{not json")
    assert response.status_code == 401 and response.json()["code"] == 401


def test_a_json_body_is_read_whatever_its_content_type_says(gateway: Gateway) -> None:
    with gateway.rest() as rest:
        response = rest.post(
            "/v1/spend_keys", content=b'{"name": "plain"}', headers={"content-type": "text/plain"}
        )
        bare = rest.post("/v1/spend_keys", content=b'{"name": "bare"}')
    assert response.status_code == 201 and response.json()["name"] == "plain"
    assert bare.status_code == 201 and bare.json()["name"] == "bare"


@pytest.mark.parametrize(("method", "path"), [("PUT", "/v1/spend_keys/{key}"), ("POST", "/v1/orgs")])
def test_a_required_body_left_out_is_a_flat_400(gateway: Gateway, method: str, path: str) -> None:
    key_id = gateway.create_key()["spend_key_id"]
    with gateway.rest() as rest:
        response = rest.request(method, path.format(key=key_id))
    assert assert_flat_400(response) == "request body must be a JSON object"


def test_an_org_body_is_typed(gateway: Gateway) -> None:
    with gateway.rest() as rest:
        assert_flat_400(rest.post("/v1/orgs", json={"name": "Acme", "plan": "galactic"}), "plan")
        assert_flat_400(rest.post("/v1/orgs", json={"plan": "team"}), "name")
        assert_flat_400(rest.post("/v1/orgs", json={"name": "Acme", "admins": []}), "admins")
        created = rest.post("/v1/orgs", json={"name": "Acme", "plan": "team"})
    assert created.status_code == 201 and created.json()["plan"] == "team"


def test_unknown_routes_and_methods_stay_flat(gateway: Gateway) -> None:
    with gateway.rest() as rest:
        missing = rest.get("/v1/nothing_here")
        wrong_method = rest.patch("/v1/spend_keys")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found", "code": 404}
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == 405
    assert set(wrong_method.headers["allow"].split(", ")) == {"GET", "POST"}  # RFC 9110


@pytest.mark.parametrize("raw", [b"null", b"[]", b'"text"', b"5"])
def test_a_body_that_is_not_an_object_is_a_flat_400(gateway: Gateway, raw: bytes) -> None:
    with gateway.rest() as rest:
        for path in ("/v1/spend_keys", "/v1/wallet/fund"):
            response = rest.post(path, content=raw, headers={"content-type": "application/json"})
            assert assert_flat_400(response) == "request body must be a JSON object"
    assert key_count(gateway) == 0


def test_an_empty_body_takes_every_default(gateway: Gateway) -> None:
    with gateway.rest() as rest:
        created = rest.post("/v1/spend_keys")
        asked = rest.post("/v1/wallet/fund")
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["request_shape"], body["status"], body["spend_limit"]) == (
        "",
        "openai",
        "active",
        None,
    )
    assert asked.status_code == 200 and asked.json()["status"] == "amount_required"
