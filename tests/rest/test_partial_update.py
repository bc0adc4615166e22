"""`PUT /v1/spend_keys/{id}` and `lava-mcp keys update` change only what they are given:
a new amount keeps the key's cycle (`--spend-limit` once reset a monthly key to `total`),
and every field left out keeps its value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lava_mcp.cli import app
from lava_mcp.cli import keys as _keys  # noqa: F401  (registers the commands)
from lava_mcp.core import wallet
from lava_mcp.store.db import Database
from tests.rest.conftest import Gateway

FULL = {
    "name": "budgeted",
    "allowed_providers": ["openai"],
    "allowed_models": ["gpt-4o-mini"],
    "spend_limit": {"amount": "50.00", "cycle": "monthly"},
    "request_limit": {"count": 1000, "cycle": "weekly"},
    "rate_limit": {"rpm": 60, "burst": 10},
    "expires_at": "2099-01-01T00:00:00Z",
}
KEPT = ("name", "allowed_providers", "allowed_models", "request_shape", "spend_limit", "request_limit",
        "rate_limit", "expires_at", "status")  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"spend_limit": {"amount": "5"}}, {"spend_limit": {"amount": "5.00", "cycle": "monthly"}}),
        ({"spend_limit": {"cycle": "daily"}}, {"spend_limit": {"amount": "50.00", "cycle": "daily"}}),
        ({"request_limit": {"count": 7}}, {"request_limit": {"count": 7, "cycle": "weekly"}}),
        ({"rate_limit": {"rpm": 30}}, {"rate_limit": {"rpm": 30, "burst": 10}}),
        ({"name": "renamed"}, {"name": "renamed"}),
        ({"spend_limit": None}, {"spend_limit": None}),
        ({}, {}),
    ],
)
def test_rest_update_changes_only_the_fields_and_parts_given(
    gateway: Gateway, change: dict[str, Any], expected: dict[str, Any]
) -> None:
    created = gateway.create_key(**FULL)
    with gateway.rest() as rest:
        response = rest.put(f"/v1/spend_keys/{created['spend_key_id']}", json=change)
        assert response.status_code == 200, response.text
        stored = rest.get(f"/v1/spend_keys/{created['spend_key_id']}").json()
    for view in (response.json(), stored):
        assert {field: view[field] for field in KEPT} == {field: created[field] for field in KEPT} | expected


def test_a_part_of_a_limit_the_key_does_not_have_is_refused(gateway: Gateway) -> None:
    created = gateway.create_key(name="unlimited")
    with gateway.rest() as rest:
        response = rest.put(
            f"/v1/spend_keys/{created['spend_key_id']}", json={"spend_limit": {"cycle": "daily"}}
        )
        assert response.status_code == 400 and "spend_limit.amount is required" in response.json()["error"]
        assert rest.get(f"/v1/spend_keys/{created['spend_key_id']}").json()["spend_limit"] is None


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Database:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    for name in ("LAVA_CATALOG", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAVA_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)  # no stray .env
    database = Database(url)
    database.upgrade()
    monkeypatch.setenv("LAVA_WALLET_KEY", wallet.create_wallet(database, name="cli").wallet_key)
    return database


def cli(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def test_cli_spend_limit_keeps_the_monthly_cycle(cli_database: Database) -> None:
    created = cli("keys", "create", "--name", "ci", "--spend-limit", "50.00", "--spend-cycle", "monthly",
                  "--request-limit", "100", "--request-cycle", "daily", "--rpm", "60", "--burst", "5")  # fmt: skip
    key_id = created["spend_key_id"]
    updated = cli("keys", "update", key_id, "--spend-limit", "5")
    assert updated["spend_limit"] == {"amount": "5.00", "cycle": "monthly"}
    assert updated["request_limit"] == {"count": 100, "cycle": "daily"}
    assert updated["rate_limit"] == {"rpm": 60, "burst": 5}
    assert updated["name"] == "ci"
    assert cli("keys", "update", key_id, "--request-limit", "9")["request_limit"] == {
        "count": 9,
        "cycle": "daily",
    }
    assert cli("keys", "update", key_id, "--rpm", "30")["rate_limit"] == {"rpm": 30, "burst": 5}
    assert cli("keys", "show", key_id)["spend_limit"] == {"amount": "5.00", "cycle": "monthly"}
