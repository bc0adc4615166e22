"""The one balance rendering every surface shows (REST, MCP, CLI)."""

from __future__ import annotations

from lava_mcp.core.wallet import Balance
from lava_mcp.transports import render


def test_the_balance_shown_is_what_can_be_spent_less_holds_and_any_shortfall() -> None:
    # $30 in the wallet, $4 held by a call in flight, $20 owed after a refund of spent money.
    owed = Balance("wal_x", 30_000_000, 4_000_000, "live", shortfall_micros=20_000_000)
    assert render.balance_json(owed) == {
        "balance": "6.00",
        "currency": "USD",
        "held": "4.00",
        "shortfall": "20.00",
    }


def test_a_shortfall_larger_than_the_balance_shows_nothing_to_spend() -> None:
    body = render.balance_json(Balance("wal_x", 5_000_000, 0, "test", shortfall_micros=20_000_000))
    assert body["balance"] == "0.00" and body["shortfall"] == "20.00" and body["test_mode"] is True


def test_sandbox_money_is_labelled_and_no_shortfall_means_no_field() -> None:
    assert render.balance_json(Balance("wal_x", 47_509_999, 0, "sandbox")) == {
        "balance": "47.50",
        "currency": "USD",
        "held": "0.00",
        "sandbox": True,
    }
