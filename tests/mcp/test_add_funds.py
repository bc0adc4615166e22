"""add_funds without Stripe: the amount rules and the "no amount" reply (DESIGN §2, §4).
Charging cards and Checkout are tested with the payments adapters (tests/payments)."""

from __future__ import annotations

import pytest

from lava_mcp.runtime import Runtime
from tests.conftest import fund, ledger_state
from tests.mcp.conftest import connect, error, ok


@pytest.mark.parametrize("arguments", [{}, {"amount": None}])
async def test_no_amount_answers_amount_required(
    runtime: Runtime, new_wallet, arguments: dict[str, object]
) -> None:
    fund(runtime, new_wallet.wallet_id, "47.50")
    async with connect(runtime, new_wallet) as client:
        body = ok(await client.call_tool("add_funds", arguments))
    assert body == {
        "status": "amount_required",
        "balance": "47.50",
        "payment_methods": [],
        "min": "10.00",
        "max": "10000.00",
        "sandbox": True,  # no STRIPE_SECRET_KEY in the tests: payments are simulated
    }


async def test_amounts_outside_the_funding_range_are_400_with_the_bounds(
    runtime: Runtime, new_wallet
) -> None:
    before = ledger_state(runtime.db, new_wallet.wallet_id)
    async with connect(runtime, new_wallet) as client:
        for amount in ("9.99", 10000.01, "$10000.01", "0.50"):
            body = error(await client.call_tool("add_funds", {"amount": amount}), 400)
            assert (body["min"], body["max"]) == ("10.00", "10000.00")
    assert ledger_state(runtime.db, new_wallet.wallet_id) == before
