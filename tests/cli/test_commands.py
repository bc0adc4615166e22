"""The installed `lava-mcp` script (DESIGN §12): wallet, usage, requests, db, ledger."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from lava_mcp.core import wallet
from lava_mcp.store.db import Database
from lava_mcp.store.models import utc_now

SCRIPT = Path(sys.executable).parent / "lava-mcp"


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.database = tmp_path / "cli" / "lava.db"
        self.url = f"sqlite:///{self.database}"
        self.cwd = tmp_path  # no stray .env from the working directory
        self.environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "LAVA_DATABASE_URL": self.url,
            "LAVA_PAYMENTS": "sandbox",
            "COLUMNS": "200",  # rich tables unwrapped
        }

    def run(self, *arguments: str, wallet_key: str | None = None) -> subprocess.CompletedProcess[str]:
        environment = self.environment | ({"LAVA_WALLET_KEY": wallet_key} if wallet_key else {})
        return subprocess.run(
            [str(SCRIPT), *arguments],
            env=environment,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def new_wallet(self, credit: str | None = None) -> tuple[str, str]:
        """A wallet made in-process (quicker than two more CLI runs)."""
        database = Database(self.url)
        database.upgrade()
        created = wallet.create_wallet(database)
        if credit:
            wallet.adjust(database, created.wallet_id, credit, reason="test")
        database.dispose()
        return created.wallet_id, created.wallet_key

    def json(self, *arguments: str, wallet_key: str | None = None) -> Any:
        finished = self.run(*arguments, "--json", wallet_key=wallet_key)
        assert finished.returncode == 0, finished.stderr
        return json.loads(finished.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    assert SCRIPT.exists(), f"the lava-mcp script is not installed beside {sys.executable}"
    return Cli(tmp_path)


def test_db_upgrade_creates_the_database(cli: Cli) -> None:
    assert cli.json("db", "upgrade") == {"status": "ok", "database_url": cli.url}
    assert cli.database.exists()
    # Idempotent, and `python -m lava_mcp` is the same command line.
    again = subprocess.run(
        [sys.executable, "-m", "lava_mcp", "db", "upgrade", "--json"],
        env=cli.environment,
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "ok"


ERRORS: list[tuple[tuple[str, ...], str]] = [
    (("wallet", "credit", "WALLET", "1.234", "--reason", "x"), "not a dollar amount"),
    (("wallet", "credit", "WALLET", "0", "--reason", "x"), "greater than zero"),
    (("wallet", "credit", "WALLET", "-99.00", "--reason", "x"), "below zero"),
    (("wallet", "credit", "wal_missing", "1.00", "--reason", "x"), "unknown wallet"),
    (("wallet", "show", "wal_missing"), "unknown wallet"),
    (("requests", "--wallet", "WALLET", "--limit", "101"), "limit must be"),
    (("requests", "--wallet", "WALLET", "--before", "'; DROP TABLE wallet; --"), "cursor"),
    (("usage", "--wallet", "WALLET", "--since", "2026-11-20", "--until", "2026-11-01"), "after until"),
]


def test_wallet_create_credit_show(cli: Cli) -> None:
    created = cli.json("wallet", "create", "--name", "cli test")
    assert created["wallet_id"].startswith("wal_") and created["wallet_key"].startswith("lava_wk_")
    wallet_id, wallet_key = created["wallet_id"], created["wallet_key"]

    credited = cli.json("wallet", "credit", wallet_id, "25.00", "--reason", "welcome credit")
    assert (credited["wallet_id"], credited["balance"], credited["held"]) == (wallet_id, "25.00", "0.00")
    debited = cli.json("wallet", "credit", wallet_id, "-5.50", "--reason", "correction")
    assert debited["balance"] == "19.50"

    shown = cli.json("wallet", "show", wallet_id)
    assert (shown["wallet_id"], shown["balance"], shown["currency"]) == (wallet_id, "19.50", "USD")
    assert cli.json("wallet", "show", wallet_key=wallet_key)["balance"] == "19.50"  # from LAVA_WALLET_KEY

    human = cli.run("wallet", "show", wallet_id)
    assert human.returncode == 0 and "19.50" in human.stdout

    # Errors go to stderr as the flat error JSON, exit 1, and change nothing.
    for arguments, message in ERRORS:
        finished = cli.run(
            *(wallet_id if argument == "WALLET" else argument for argument in arguments), "--json"
        )
        assert finished.returncode == 1, arguments
        assert finished.stdout == ""
        error = json.loads(finished.stderr)
        assert message in error["error"] and error["code"] in (400, 404), (arguments, error)
    assert cli.json("wallet", "show", wallet_id)["balance"] == "19.50"
    assert cli.json("ledger", "verify") == {"ok": True, "problems": []}


def test_commands_without_a_wallet_key_say_how_to_get_one(cli: Cli) -> None:
    finished = cli.run("wallet", "show")
    assert finished.returncode == 1
    assert "wallet key" in finished.stderr and "lava-mcp wallet create" in finished.stderr


def add_requests(database: Path, wallet_id: str, count: int) -> list[str]:
    """Recorded calls, written as the metering core would (newest has the greatest id)."""
    ids = [f"req_{number:012x}{number:016x}" for number in range(1, count + 1)]
    now = utc_now()
    connection = sqlite3.connect(database)
    with connection:
        for number, request_id in enumerate(ids, start=1):
            connection.execute(
                "INSERT INTO request_record (id, wallet_id, service, model, endpoint, status, ran, input_tokens,"
                " output_tokens, input_cost_micros, cost_micros, hold_micros, created_at)"
                " VALUES (?, ?, 'openai', 'gpt-4o-mini', 'call_paid_service', 'completed', 1, 10, 5, 3, ?, 100, ?)",
                (
                    request_id,
                    wallet_id,
                    1_000 * number,
                    f"{now - timedelta(seconds=count - number):%Y-%m-%d %H:%M:%S.%f}",
                ),
            )
    connection.close()
    return ids


def test_usage_and_requests(cli: Cli) -> None:
    wallet_id, wallet_key = cli.new_wallet()
    assert cli.json("requests", wallet_key=wallet_key) == {"requests": [], "next_cursor": None}
    ids = add_requests(cli.database, wallet_id, 5)

    usage = cli.json("usage", wallet_key=wallet_key)
    assert len(usage["days"]) == 7 and usage["until"] == utc_now().date().isoformat()
    assert (usage["total_requests"], usage["total_spend"]) == (5, "0.015000")
    openai = [day["by_service"]["openai"] for day in usage["days"] if day["by_service"]]
    assert sum(total["requests"] for total in openai) == 5  # today (or yesterday, just after midnight)

    first = cli.json("requests", "--limit", "3", "--wallet", wallet_id)
    assert [r["id"] for r in first["requests"]] == ids[::-1][:3]
    assert first["requests"][0]["cost"] == "0.005000" and first["requests"][0]["succeeded"] is True
    rest = cli.json("requests", "--limit", "3", "--before", first["next_cursor"], "--wallet", wallet_id)
    assert [r["id"] for r in rest["requests"]] == ids[::-1][3:] and rest["next_cursor"] is None

    table = cli.run("requests", "--wallet", wallet_id)
    assert table.returncode == 0 and "gpt-4o-mini" in table.stdout


def test_ledger_verify_reports_a_corrupted_balance(cli: Cli) -> None:
    wallet_id, _ = cli.new_wallet(credit="10.00")
    sound = cli.run("ledger", "verify")
    assert sound.returncode == 0 and "ledger ok" in sound.stdout

    connection = sqlite3.connect(cli.database)
    with connection:
        connection.execute(
            "UPDATE wallet SET balance_micros = balance_micros + 1000000 WHERE id = ?", (wallet_id,)
        )
    connection.close()

    broken = cli.run("ledger", "verify")
    assert broken.returncode == 1
    assert f"wallet {wallet_id}: balance 11000000 != sum of entries 10000000" in broken.stdout
    report = cli.run("ledger", "verify", "--json")
    assert report.returncode == 1
    assert json.loads(report.stdout) == {
        "ok": False,
        "problems": [f"wallet {wallet_id}: balance 11000000 != sum of entries 10000000"],
    }
