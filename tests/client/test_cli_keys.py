"""`lava-mcp keys …` against a local database, identity from LAVA_WALLET_KEY or --wallet."""

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


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Database, wallet.NewWallet]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    for name in ("LAVA_CATALOG", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAVA_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)  # no stray .env
    database = Database(url)
    database.upgrade()
    created = wallet.create_wallet(database, name="cli")
    monkeypatch.setenv("LAVA_WALLET_KEY", created.wallet_key)
    return database, created


def run(*args: str) -> tuple[int, Any, str]:
    result = CliRunner().invoke(app, list(args))
    try:
        body = json.loads(result.stdout) if "--json" in args and result.stdout.strip() else None
    except ValueError:
        body = None
    return result.exit_code, body, result.stdout + result.stderr


def test_keys_lifecycle_with_json(cli_env: tuple[Database, wallet.NewWallet]) -> None:
    code, created, _ = run(
        "keys", "create", "--name", "ci", "--provider", "openai", "--model", "gpt-4o-mini",
        "--spend-limit", "50.00", "--spend-cycle", "monthly", "--request-limit", "100", "--request-cycle",
        "daily", "--rpm", "60", "--burst", "5", "--expires-at", "2099-01-01T00:00:00Z", "--json",
    )  # fmt: skip
    assert code == 0
    assert created["key"].startswith("lava_sk_")
    assert created["spend_limit"] == {"amount": "50.00", "cycle": "monthly"}
    assert created["request_limit"] == {"count": 100, "cycle": "daily"}
    assert created["rate_limit"] == {"rpm": 60, "burst": 5}
    assert created["allowed_providers"] == ["openai"] and created["allowed_models"] == ["gpt-4o-mini"]
    key_id = created["spend_key_id"]

    code, listed, output = run("keys", "list", "--json")
    assert code == 0 and [key["spend_key_id"] for key in listed["data"]] == [key_id]
    assert created["key"] not in output

    code, shown, _ = run("keys", "show", key_id, "--json")
    assert code == 0 and "key" not in shown and shown["name"] == "ci"

    code, updated, _ = run(
        "keys", "update", key_id, "--no-spend-limit", "--all-models", "--status", "paused", "--json"
    )
    assert code == 0
    assert (updated["spend_limit"], updated["allowed_models"], updated["status"]) == (None, None, "paused")
    assert updated["key_preview"] == created["key_preview"]

    code, rotated, _ = run("keys", "rotate", key_id, "--json")
    assert code == 0 and rotated["key"] != created["key"] and rotated["spend_key_id"] == key_id

    code, revoked, _ = run("keys", "revoke", key_id, "--json")
    assert code == 0 and revoked == {"success": True}
    assert run("keys", "show", key_id, "--json")[1]["status"] == "revoked"


def test_human_output_shows_the_secret_once_with_a_warning(
    cli_env: tuple[Database, wallet.NewWallet],
) -> None:
    code, _, output = run("keys", "create", "--name", "human")
    assert code == 0 and "lava_sk_" in output and "Shown once" in output
    secret = output.split("key  ", 1)[1].split()[0]
    code, _, listing = run("keys", "list")
    assert code == 0 and secret not in listing


def test_errors_go_to_stderr_with_a_non_zero_exit(cli_env: tuple[Database, wallet.NewWallet]) -> None:
    code, _, output = run("keys", "create", "--spend-limit", "1.234", "--json")
    assert code == 1 and '"code": 400' in output
    code, _, output = run("keys", "show", "sk_id_nope", "--json")
    assert code == 1 and '"code": 404' in output
    code, _, output = run("keys", "update", "sk_id_nope")
    assert code == 1 and "nothing to update" in output


def test_wallet_option_names_another_wallet(cli_env: tuple[Database, wallet.NewWallet]) -> None:
    database, _ = cli_env
    other = wallet.create_wallet(database, name="other")
    code, created, _ = run("keys", "create", "--wallet", other.wallet_id, "--json")
    assert code == 0 and created["wallet_id"] == other.wallet_id
    assert run("keys", "list", "--json")[1]["data"] == []  # LAVA_WALLET_KEY's wallet has none
    assert run("keys", "show", created["spend_key_id"], "--json")[0] == 1  # not this wallet's key


def test_an_allowed_model_the_key_could_never_call_is_refused(
    cli_env: tuple[Database, wallet.NewWallet],
) -> None:
    """The CLI runs the same core rule as REST: a Claude model on an `openai` key is a 400,
    and nothing is created or changed."""
    code, _, output = run("keys", "create", "--name", "mixed", "--model", "claude-haiku-4-5", "--json")
    assert code == 1 and '"code": 400' in output and "'claude-haiku-4-5'" in output and "anthropic" in output
    code, listed, _ = run("keys", "list", "--json")
    assert code == 0 and listed["data"] == []

    code, created, _ = run("keys", "create", "--name", "gpt", "--model", "gpt-4o-mini", "--json")
    assert code == 0
    code, _, output = run("keys", "update", created["spend_key_id"], "--shape", "anthropic", "--json")
    assert code == 1 and '"code": 400' in output and "'gpt-4o-mini'" in output
    code, shown, _ = run("keys", "show", created["spend_key_id"], "--json")
    assert code == 0 and shown["request_shape"] == "openai"
