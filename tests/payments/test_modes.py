"""Stripe test mode is not live: the mode comes from the key, wallets are funded only by a
server of their own mode, and events whose `livemode` is not the server's are ignored."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlmodel import select

from lava_mcp.core import wallet
from lava_mcp.payments.stripe import mode_of_key
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import LedgerEntry
from tests.payments.conftest import (
    StripeFront,
    balance_micros,
    deliver,
    deposits,
    event,
    live_settings,
    mcp,
    payments_of,
    rest,
    tool_error,
)

LIVE_KEY = "sk_live_lava"  # localstripe takes any sk_ key; the SDK and we read the prefix


@pytest.fixture
async def really_live(tmp_path: Path, stripe_front: StripeFront) -> AsyncIterator[Runtime]:
    built = Runtime.build(live_settings(tmp_path, stripe_front.url, STRIPE_SECRET_KEY=LIVE_KEY))
    built.db.upgrade()
    yield built
    await built.aclose()


def test_the_mode_is_the_keys() -> None:
    assert mode_of_key("sk_test_abc") == mode_of_key("rk_test_abc") == "test"
    assert mode_of_key("sk_live_abc") == mode_of_key("rk_live_abc") == "live"


async def test_a_test_mode_server_funds_test_wallets_only(
    live: Runtime, live_wallet: wallet.NewWallet
) -> None:
    assert live.payments.mode == live.settings.money_mode == "test"
    async with rest(live, live_wallet) as client:
        await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
        body = (await client.post("/v1/wallet/fund", json={"amount": 25})).json()
    assert body["status"] == "completed"
    assert [payment.mode for payment in payments_of(live, live_wallet.wallet_id)] == ["test"]

    real_money = wallet.create_wallet(live.db, mode="live")
    async with mcp(live, real_money) as chat:
        refused = tool_error(await chat.call_tool("add_funds", {"amount": 25}), 403)
    assert "live-mode wallet" in refused["error"] and "test mode" in refused["error"]
    assert payments_of(live, real_money.wallet_id) == []


async def test_a_live_server_never_funds_a_test_wallet(really_live: Runtime) -> None:
    assert really_live.payments.mode == really_live.settings.money_mode == "live"
    test_money = wallet.create_wallet(really_live.db, mode="test")
    async with mcp(really_live, test_money) as chat:
        refused = tool_error(await chat.call_tool("add_funds", {"amount": 25}), 403)
    assert "test-mode wallet" in refused["error"] and "never mixes with live money" in refused["error"]
    assert payments_of(really_live, test_money.wallet_id) == []

    real_money = wallet.create_wallet(really_live.db, mode="live")
    async with rest(really_live, real_money) as client:
        await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
        assert (await client.post("/v1/wallet/fund", json={"amount": 25})).json()["status"] == "completed"
    assert [payment.mode for payment in payments_of(really_live, real_money.wallet_id)] == ["live"]


async def test_events_of_the_other_mode_are_ignored(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with rest(live, live_wallet) as client:
        body = (await client.post("/v1/wallet/fund", json={"amount": 25})).json()
        session = stripe_front.pay(body["checkout_url"].rsplit("/", 1)[1])
        live_event = event("checkout.session.completed", session) | {"livemode": True}
        ignored = (await deliver(client, live_event)).json()
        assert "ignored: livemode true" in ignored["outcome"]
        assert balance_micros(live, live_wallet.wallet_id) == 0
        # Stripe redelivering the same event changes nothing either.
        assert (await deliver(client, live_event)).json()["duplicate"] is True
        test_event = event("checkout.session.completed", session) | {"livemode": False}
        assert (await deliver(client, test_event)).json()["outcome"] == "succeeded"
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000
    assert len(deposits(live, live_wallet.wallet_id)) == 1


async def test_a_live_server_ignores_a_test_mode_refund(
    really_live: Runtime, stripe_front: StripeFront
) -> None:
    real_money = wallet.create_wallet(really_live.db, mode="live")
    async with rest(really_live, real_money) as client:
        await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
        body = (await client.post("/v1/wallet/fund", json={"amount": 25})).json()
        [payment] = payments_of(really_live, real_money.wallet_id)
        charge = {
            "id": "ch_x",
            "object": "charge",
            "payment_intent": payment.stripe_payment_intent_id,
            "amount_refunded": 2500,
            "currency": "usd",
        }
        outcome = (await deliver(client, event("charge.refunded", charge) | {"livemode": False})).json()
    assert body["status"] == "completed" and "ignored: livemode false" in outcome["outcome"]
    assert balance_micros(really_live, real_money.wallet_id) == 25_000_000
    with really_live.db.read() as db_session:
        refunds = db_session.exec(select(LedgerEntry).where(LedgerEntry.kind == "refund")).all()
    assert refunds == []


def test_the_cli_makes_a_test_wallet_for_a_test_key_and_reports_shortfalls(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "lava-mcp"
    database = tmp_path / "lava.db"
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LAVA_DATABASE_URL": f"sqlite:///{database}",
        "STRIPE_SECRET_KEY": "sk_test_cli",
        "COLUMNS": "200",
    }

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *arguments],
            env=environment,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    created = run("wallet", "create", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["mode"] == "test"
    wallet_id = json.loads(created.stdout)["wallet_id"]
    # A refund the balance could not take: owed, entry and wallet agreeing.
    connection = sqlite3.connect(database)
    with connection:
        connection.execute(
            "INSERT INTO payment (id, wallet_id, amount_micros, method, status, mode, created_at,"
            " updated_at) VALUES ('pay_1', ?, 10000000, 'card', 'succeeded', 'test', '2026-12-01',"
            " '2026-12-01')",
            (wallet_id,),
        )
        connection.execute(
            "INSERT INTO ledger_entry (wallet_id, kind, amount_micros, balance_after_micros, reference,"
            " payment_id, shortfall_micros, memo, created_at) VALUES (?, 'refund', 0, 0, 're_1',"
            " 'pay_1', 10000000, '', '2026-12-01')",
            (wallet_id,),
        )
        connection.execute("UPDATE wallet SET shortfall_micros = 10000000 WHERE id = ?", (wallet_id,))
    connection.close()
    report = run("ledger", "verify", "--json")
    assert report.returncode == 0, report.stdout + report.stderr
    body = json.loads(report.stdout)
    assert body["ok"] is True and body["problems"] == []
    [owed] = body["shortfalls"]
    assert wallet_id in owed and "$10.00" in owed
    assert "$10.00" in run("ledger", "verify").stdout
