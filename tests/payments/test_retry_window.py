"""add_funds without an idempotency key: the server chooses one for `fund_retry_window_s`, so a
chat client's automatic retry replays the first answer (saying so) instead of charging again."""

from __future__ import annotations

from pathlib import Path

import anyio

from lava_mcp.core import funding, wallet
from lava_mcp.errors import Conflict
from lava_mcp.runtime import Runtime
from tests.payments.conftest import (
    INTENTS,
    StripeFront,
    balance_micros,
    deposits,
    live_settings,
    mcp,
    payments_of,
    rest,
    save_card,
    tool_error,
    tool_ok,
)


async def test_an_identical_add_funds_replays_and_says_how_to_top_up_again(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    await save_card(live, live_wallet)
    async with mcp(live, live_wallet) as chat:
        first = tool_ok(await chat.call_tool("add_funds", {"amount": 25}))
        again = tool_ok(await chat.call_tool("add_funds", {"amount": 25}))
        assert first["status"] == "completed" and "replayed" not in first
        assert again["replayed"] is True and again["payment_id"] == first["payment_id"]
        assert again["status"] == "completed" and again["balance"] == "25.00"
        assert "nothing new was charged" in again["next_step"] and "idempotency_key" in again["next_step"]
        # A second top-up on purpose: a key of the caller's own.
        second = tool_ok(await chat.call_tool("add_funds", {"amount": 25, "idempotency_key": "top-up-2"}))
        assert second["status"] == "completed" and second["balance"] == "50.00" and "replayed" not in second
        # A different request is a new top-up.
        third = tool_ok(await chat.call_tool("add_funds", {"amount": 10}))
        assert third["balance"] == "60.00"
    async with rest(live, live_wallet) as client:
        replay = (await client.post("/v1/wallet/fund", json={"amount": 10})).json()
        assert replay["replayed"] is True and replay["payment_id"] == third["payment_id"]
    assert stripe_front.count(*INTENTS) == 3
    assert len(deposits(live, live_wallet.wallet_id)) == 3
    assert balance_micros(live, live_wallet.wallet_id) == 60_000_000


async def test_concurrent_identical_requests_charge_once(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    await save_card(live, live_wallet)
    outcomes: list[object] = []

    async def one() -> None:
        try:
            outcomes.append(await funding.add_funds(live, live_wallet.wallet_id, amount=25))
        except Conflict as busy:
            outcomes.append(busy)

    async with anyio.create_task_group() as tasks:
        for _ in range(5):
            tasks.start_soon(one)
    answers = [outcome for outcome in outcomes if isinstance(outcome, dict)]
    assert len(answers) >= 1 and {answer["payment_id"] for answer in answers} == {answers[0]["payment_id"]}
    assert stripe_front.count(*INTENTS) == 1 and len(payments_of(live, live_wallet.wallet_id)) == 1
    assert balance_micros(live, live_wallet.wallet_id) == 25_000_000


async def test_a_decline_is_not_replayed(live: Runtime, live_wallet: wallet.NewWallet) -> None:
    await save_card(live, live_wallet, "pm_card_chargeCustomerFail")
    async with mcp(live, live_wallet) as chat:
        tool_error(await chat.call_tool("add_funds", {"amount": 25}), 402)
        tool_error(await chat.call_tool("add_funds", {"amount": 25}), 402)
    # Each try is a new attempt (nothing moved the first time), with its own payment.
    assert len(payments_of(live, live_wallet.wallet_id)) == 2


async def test_after_the_window_the_same_request_is_a_new_top_up(
    tmp_path: Path, stripe_front: StripeFront
) -> None:
    runtime = Runtime.build(live_settings(tmp_path, stripe_front.url, LAVA_FUND_RETRY_WINDOW_S=0))
    runtime.db.upgrade()
    try:
        owner = wallet.create_wallet(runtime.db, mode="test")
        await save_card(runtime, owner)
        for _ in range(2):
            assert (await funding.add_funds(runtime, owner.wallet_id, amount=25))["status"] == "completed"
        assert balance_micros(runtime, owner.wallet_id) == 50_000_000
        assert len(payments_of(runtime, owner.wallet_id)) == 2
    finally:
        await runtime.aclose()
