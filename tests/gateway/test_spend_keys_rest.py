"""`/v1/spend_keys`: every field, the lifecycle, wallet isolation, and where secrets may appear."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from lava_mcp.core import spend_keys, wallet
from lava_mcp.ids import hash_secret
from tests.gateway.conftest import Gateway

FULL = {
    "name": "Agent - Production",
    "allowed_providers": ["openai", "anthropic"],
    "allowed_models": ["gpt-4o-mini", "gpt-4o"],
    "request_shape": "openai",
    "spend_limit": {"amount": "50.00", "cycle": "monthly"},
    "request_limit": {"count": 1000, "cycle": "daily"},
    "rate_limit": {"rpm": 60, "burst": 10},
    "expires_at": "2099-12-31T23:59:59Z",
}


def test_create_returns_every_field_and_the_secret_once(gateway: Gateway) -> None:
    created = gateway.create_key(**FULL)
    assert created["key"].startswith("lava_sk_") and len(created["key"]) >= 8 + 43
    assert created["key_preview"] == created["key"][:16] + "****"
    for field, value in FULL.items():
        if field != "expires_at":
            assert created[field] == value, field
    assert created["expires_at"] == "2099-12-31T23:59:59Z"
    assert created["status"] == "active" and created["wallet_id"] == gateway.wallet_id
    assert (created["current_spend"], created["total_spend"]) == ("0.000000", "0.000000")
    assert (created["current_requests"], created["total_requests"], created["last_used_at"]) == (0, 0, None)
    with gateway.rest() as rest:
        again = rest.get(f"/v1/spend_keys/{created['spend_key_id']}").json()
        listed = rest.get("/v1/spend_keys").json()
    assert "key" not in again
    assert listed["has_more"] is False and listed["next_cursor"] is None
    assert [key["spend_key_id"] for key in listed["data"]] == [created["spend_key_id"]]
    assert created["key"] not in str(listed) and created["key"] not in str(again)


def test_defaults_are_no_limits(gateway: Gateway) -> None:
    with gateway.rest() as rest:
        response = rest.post("/v1/spend_keys")
    assert response.status_code == 201
    created = response.json()
    assert created["allowed_providers"] is None and created["allowed_models"] is None
    assert (
        created["spend_limit"] is None and created["request_limit"] is None and created["rate_limit"] is None
    )
    assert created["request_shape"] == "openai" and created["expires_at"] is None


def test_rate_limit_burst_defaults_to_rpm(gateway: Gateway) -> None:
    assert gateway.create_key(rate_limit={"rpm": 60})["rate_limit"] == {"rpm": 60, "burst": 60}


def test_update_changes_limits_but_not_the_secret(gateway: Gateway) -> None:
    created = gateway.create_key(**FULL)
    key_id = created["spend_key_id"]
    with gateway.rest() as rest:
        updated = rest.put(
            f"/v1/spend_keys/{key_id}",
            json={"name": "renamed", "spend_limit": {"amount": "5", "cycle": "weekly"}, "rate_limit": None},
        ).json()
        assert updated["name"] == "renamed"
        assert updated["spend_limit"] == {"amount": "5.00", "cycle": "weekly"}
        assert updated["rate_limit"] is None
        assert updated["request_limit"] == FULL["request_limit"]  # untouched
        assert "key" not in updated and updated["key_preview"] == created["key_preview"]
        cleared = rest.put(
            f"/v1/spend_keys/{key_id}", json={"allowed_models": None, "expires_at": None}
        ).json()
        assert cleared["allowed_models"] is None and cleared["expires_at"] is None
    client = gateway.openai(created["key"])
    assert client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}]).choices


def test_list_pages_with_a_cursor_and_filters_by_status(gateway: Gateway) -> None:
    ids = [gateway.create_key(name=f"k{index}")["spend_key_id"] for index in range(5)]
    with gateway.rest() as rest:
        first = rest.get("/v1/spend_keys", params={"limit": 2}).json()
        assert first["has_more"] is True
        second = rest.get("/v1/spend_keys", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        third = rest.get("/v1/spend_keys", params={"limit": 2, "cursor": second["next_cursor"]}).json()
        seen = [key["spend_key_id"] for page in (first, second, third) for key in page["data"]]
        assert seen == list(reversed(ids)) and third["has_more"] is False
        rest.delete(f"/v1/spend_keys/{ids[0]}")
        revoked = rest.get("/v1/spend_keys", params={"status": "revoked"}).json()
        assert [key["spend_key_id"] for key in revoked["data"]] == [ids[0]]
        for bad in ({"limit": 0}, {"limit": 101}, {"cursor": "nope"}, {"status": "gone"}):
            assert rest.get("/v1/spend_keys", params=bad).status_code == 400


def test_revoke_is_permanent(gateway: Gateway) -> None:
    key_id = gateway.create_key()["spend_key_id"]
    with gateway.rest() as rest:
        assert rest.delete(f"/v1/spend_keys/{key_id}").json() == {"success": True}
        assert rest.delete(f"/v1/spend_keys/{key_id}").json() == {"success": True}
        assert rest.get(f"/v1/spend_keys/{key_id}").json()["status"] == "revoked"
        for attempt in (
            rest.put(f"/v1/spend_keys/{key_id}", json={"status": "active"}),
            rest.post(f"/v1/spend_keys/{key_id}/rotate"),
        ):
            assert attempt.status_code == 400 and "revoked" in attempt.json()["error"]
        assert (
            rest.put(
                f"/v1/spend_keys/{gateway.create_key()['spend_key_id']}", json={"status": "revoked"}
            ).status_code
            == 400
        )


@pytest.mark.parametrize(
    "options",
    [
        {"spend_limt": {"amount": "5.00", "cycle": "daily"}},
        {"name": 5},
        {"allowed_providers": "openai"},
        {"allowed_providers": ["nope"]},
        {"allowed_models": [1]},
        {"request_shape": "cohere"},
        {"spend_limit": {"amount": "5.001", "cycle": "daily"}},
        {"spend_limit": {"amount": "-5", "cycle": "daily"}},
        {"spend_limit": {"amount": "5", "cycle": "hourly"}},
        {"spend_limit": {"amount": "5", "cycle": "daily", "currency": "EUR"}},
        {"spend_limit": "5"},
        {"request_limit": {"count": 0, "cycle": "daily"}},
        {"request_limit": {"count": True}},
        {"rate_limit": {"rpm": "60"}},
        {"rate_limit": {"rpm": 60, "burst": 0}},
        {"expires_at": "tomorrow"},
        {"expires_at": "2001-01-01T00:00:00Z"},
        {"status": "revoked"},
        {"status": "frozen"},
    ],
)
def test_bad_fields_are_400_and_create_nothing(gateway: Gateway, options: dict[str, Any]) -> None:
    with gateway.rest() as rest:
        response = rest.post("/v1/spend_keys", json=options)
        assert response.status_code == 400, response.text
        assert set(response.json()) >= {"error", "code"} and response.json()["code"] == 400
        assert rest.get("/v1/spend_keys").json()["data"] == []


@pytest.mark.parametrize(
    ("raw", "status"), [(b"{bad json", 400), (b"[]", 400), (b'"text"', 400), (b"x" * 1_000_001, 413)]
)
def test_malformed_bodies_are_400_and_oversized_ones_413(gateway: Gateway, raw: bytes, status: int) -> None:
    with gateway.rest() as rest:
        response = rest.post("/v1/spend_keys", content=raw, headers={"content-type": "application/json"})
        assert (response.status_code, response.json()["code"]) == (status, status)
        assert rest.get("/v1/spend_keys").json()["data"] == []


def test_wallet_auth_is_required(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/v1/spend_keys").status_code == 401
    key = gateway.create_key()
    # a spend key is not a wallet key
    response = httpx.get(f"{gateway.url}/v1/spend_keys", headers={"authorization": f"Bearer {key['key']}"})
    assert response.status_code == 401 and response.json()["code"] == 401


def test_another_wallet_can_neither_read_nor_change_a_key(gateway: Gateway) -> None:
    mine = gateway.create_key(name="mine")
    other = wallet.create_wallet(gateway.runtime.db, name="other")
    key_id = mine["spend_key_id"]
    with gateway.rest(other.wallet_key) as rest:
        assert rest.get("/v1/spend_keys").json()["data"] == []
        for response in (
            rest.get(f"/v1/spend_keys/{key_id}"),
            rest.put(f"/v1/spend_keys/{key_id}", json={"name": "stolen"}),
            rest.post(f"/v1/spend_keys/{key_id}/rotate"),
            rest.delete(f"/v1/spend_keys/{key_id}"),
        ):
            assert response.status_code == 404 and response.json()["code"] == 404
    with gateway.rest() as rest:
        unchanged = rest.get(f"/v1/spend_keys/{key_id}").json()
    assert (unchanged["name"], unchanged["status"], unchanged["key_preview"]) == (
        "mine",
        "active",
        mine["key_preview"],
    )


def test_keys_are_hashed_at_rest(gateway: Gateway) -> None:
    created = gateway.create_key()
    rotated_id = gateway.create_key()["spend_key_id"]
    with gateway.rest() as rest:
        rotated = rest.post(f"/v1/spend_keys/{rotated_id}/rotate").json()
    with gateway.runtime.db.read() as session:
        rows = session.execute(text("SELECT * FROM spend_key")).all()
    dump = repr(rows)
    for secret in (created["key"], rotated["key"]):
        assert secret not in dump and secret[8:] not in dump
        assert hash_secret(secret) in dump


def test_secrets_never_reach_the_logs_or_errors(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    created = gateway.create_key(allowed_models=["cheap-1"])
    secret = created["key"]
    client = gateway.openai(secret)
    client.chat.completions.create(model="cheap-1", messages=[{"role": "user", "content": "x"}])
    bodies = []
    for model in ("gpt-4o", "no-such-model"):
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": f"Bearer {secret}"},
        )
        bodies.append(response.text)
    with gateway.rest() as rest:
        rest.post(f"/v1/spend_keys/{created['spend_key_id']}/rotate")
        bodies.append(rest.get("/v1/spend_keys").text)
    bodies.append(
        httpx.post(f"{gateway.url}/v1/chat/completions", json={}, headers={"x-api-key": secret}).text
    )
    requests_list = httpx.get(
        f"{gateway.url}/v1/requests", headers={"authorization": f"Bearer {gateway.wallet_key}"}
    ).text
    assert caplog.records  # the app did log (httpx, uvicorn …): the assertion below means something
    for line in [record.getMessage() for record in caplog.records] + bodies + [requests_list]:
        assert secret not in line
        assert gateway.wallet_key not in line


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"allowed_models": ["gpt-4o-mini", "claude-haiku-4-5"]}, ("'claude-haiku-4-5'", "anthropic shape", "'openai'")),
        ({"request_shape": "anthropic", "allowed_models": ["gpt-4o-mini"]}, ("'gpt-4o-mini'", "openai shape", "'anthropic'")),
        ({"allowed_providers": ["cheapchat"], "allowed_models": ["cheap-1", "gpt-4o-mini"]}, ("'gpt-4o-mini'", "provider 'openai'", "allowed_providers (cheapchat)")),
        ({"allowed_providers": [], "allowed_models": ["cheap-1"]}, ("'cheap-1'", "provider 'cheapchat'", "allowed_providers (none)")),
    ],
)  # fmt: skip
def test_create_refuses_an_allowed_model_the_key_could_never_call(
    gateway: Gateway, options: dict[str, Any], named: tuple[str, ...]
) -> None:
    """Such a key would answer 403 to every call to that model: it is refused at create."""
    with gateway.rest() as rest:
        response = rest.post("/v1/spend_keys", json={"name": "never", **options})
        assert response.status_code == 400, response.text
        answer = response.json()
        assert answer["code"] == 400 and set(answer) == {"error", "code", "next_step"}
        assert answer["error"].startswith("allowed_models: model ")
        assert all(part in answer["error"] for part in named), answer["error"]
        assert rest.get("/v1/spend_keys").json()["data"] == []


def test_a_key_whose_every_allowed_model_it_can_call_is_created(gateway: Gateway) -> None:
    claude = gateway.create_key(
        request_shape="anthropic", allowed_providers=["anthropic"], allowed_models=["claude-haiku-4-5"]
    )
    assert (claude["request_shape"], claude["allowed_models"]) == ("anthropic", ["claude-haiku-4-5"])
    # A model no catalog service claims is left alone (a catalog file may add it later).
    unknown = gateway.create_key(allowed_models=["gpt-4o-mini", "made-up-model"])
    assert unknown["allowed_models"] == ["gpt-4o-mini", "made-up-model"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"allowed_models": ["gpt-4o-mini", "claude-haiku-4-5"]}, ("'claude-haiku-4-5'", "'openai'")),
        ({"request_shape": "anthropic"}, ("'gpt-4o-mini'", "'anthropic'")),
        ({"allowed_providers": ["cheapchat"]}, ("'gpt-4o-mini'", "provider 'openai'", "(cheapchat)")),
        ({"name": "renamed", "allowed_providers": ["anthropic"], "request_shape": "anthropic"}, ("'gpt-4o-mini'",)),
    ],
)  # fmt: skip
def test_update_refuses_an_allowed_model_the_key_could_never_call_and_changes_nothing(
    gateway: Gateway, change: dict[str, Any], named: tuple[str, ...]
) -> None:
    """Judged on the key as the update would leave it: a new shape or narrower providers
    against the models it already allows, new models against its shape and providers."""
    created = gateway.create_key(name="scoped", allowed_models=["gpt-4o-mini"])
    key_id = created["spend_key_id"]
    with gateway.rest() as rest:
        before = rest.get(f"/v1/spend_keys/{key_id}").json()
        response = rest.put(f"/v1/spend_keys/{key_id}", json=change)
        assert response.status_code == 400, response.text
        answer = response.json()
        assert answer["code"] == 400 and answer["error"].startswith("allowed_models: model ")
        assert all(part in answer["error"] for part in named), answer["error"]
        assert rest.get(f"/v1/spend_keys/{key_id}").json() == before
    assert spend_keys.get(gateway.runtime.db, gateway.wallet_id, key_id).version == 1
    served = gateway.openai(created["key"]).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert served.choices[0].message.content  # the key still works as it was


def test_an_update_that_moves_shape_and_models_together_is_accepted(gateway: Gateway) -> None:
    key_id = gateway.create_key(allowed_models=["gpt-4o-mini"])["spend_key_id"]
    with gateway.rest() as rest:
        response = rest.put(
            f"/v1/spend_keys/{key_id}",
            json={"request_shape": "anthropic", "allowed_models": ["claude-haiku-4-5"]},
        )
        assert response.status_code == 200, response.text
        assert (response.json()["request_shape"], response.json()["allowed_models"]) == (
            "anthropic",
            ["claude-haiku-4-5"],
        )


def test_a_key_stored_before_the_rule_can_still_be_renamed_and_paused(gateway: Gateway) -> None:
    """Only a change of the models, shape or providers is judged: a key the old code let
    through stays manageable (and its allowed models can be fixed)."""
    key_id = gateway.create_key(allowed_models=["gpt-4o-mini"])["spend_key_id"]
    with gateway.runtime.db.write() as session:
        session.execute(
            text("UPDATE spend_key SET allowed_models = :models WHERE id = :id"),
            {"models": '["gpt-4o-mini", "claude-haiku-4-5"]', "id": key_id},
        )
    with gateway.rest() as rest:
        renamed = rest.put(f"/v1/spend_keys/{key_id}", json={"name": "old", "status": "paused"})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["allowed_models"] == ["gpt-4o-mini", "claude-haiku-4-5"]
        assert rest.put(f"/v1/spend_keys/{key_id}", json={"request_shape": "openai"}).status_code == 400
        fixed = rest.put(f"/v1/spend_keys/{key_id}", json={"allowed_models": ["gpt-4o-mini"]})
        assert fixed.status_code == 200 and fixed.json()["allowed_models"] == ["gpt-4o-mini"]
