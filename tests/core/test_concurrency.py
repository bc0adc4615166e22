"""Concurrent paid calls can never take a wallet past its balance (DESIGN §3, §11).

Each test runs on SQLite and on PostgreSQL (a fresh schema per test; an unreachable
PostgreSQL fails the test rather than skipping it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from mcp.client import Client
from sqlalchemy import func
from sqlmodel import select

from lava_mcp.config import Settings
from lava_mcp.core import verify, wallet
from lava_mcp.errors import InsufficientBalance
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import Hold, LedgerEntry, RequestRecord
from lava_mcp.transports.mcp_server import build_server
from tests.conftest import fund, ledger_state
from tests.fake_provider import FakeProvider

CALLS = 64


@pytest.fixture
async def backend_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """A migrated runtime on the database of the test's parameter (`[sqlite]`, `[postgresql]`)."""
    built = Runtime.build(settings)
    built.db.upgrade()
    yield built
    await built.aclose()


def assert_sound(runtime: Runtime, wallet_id: str, start_micros: int, succeeded_costs: list[int]) -> None:
    """The invariants every concurrent run must end with."""
    state = ledger_state(runtime.db, wallet_id)
    with runtime.db.read() as session:
        charges = session.exec(
            select(func.count(), func.coalesce(func.sum(LedgerEntry.amount_micros), 0)).where(
                LedgerEntry.kind == "charge"
            )
        ).one()
        completed = session.exec(
            select(func.count()).select_from(RequestRecord).where(RequestRecord.status == "completed")
        ).one()
        open_holds = session.exec(
            select(func.count()).select_from(Hold).where(Hold.status == "pending")
        ).one()
    charged = -int(charges[1])
    assert state.balance_micros >= 0
    assert state.held_micros == 0 and open_holds == 0  # every hold resolved
    assert charged <= start_micros
    assert charged == sum(succeeded_costs) == start_micros - state.balance_micros  # successes match the money
    assert completed == len(succeeded_costs)
    assert verify.verify(runtime.db) == []


async def test_64_per_call_requests_through_mcp_take_exactly_what_the_balance_covers(
    backend_runtime: Runtime, fake: FakeProvider
) -> None:
    runtime = backend_runtime
    created = wallet.create_wallet(runtime.db, name="concurrent")
    fund(runtime, created.wallet_id, "0.05")  # covers 25 calls at $0.002
    async with Client(build_server(runtime, default_wallet_id=created.wallet_id)) as client:
        results = await asyncio.gather(
            *(
                client.call_tool("call_paid_service", {"service": "weather", "input": {"call": number}})
                for number in range(CALLS)
            )
        )
    succeeded = [r for r in results if not r.is_error]
    refused = [r for r in results if r.is_error]
    assert len(succeeded) == 25 and len(refused) == CALLS - 25
    for result in refused:
        refusal = json.loads(result.content[0].text)
        assert (refusal["error"], refusal["code"]) == ("Insufficient wallet balance", 402)
    assert {r.structured_content["cost"] for r in succeeded} == {"0.002000"}
    assert len(fake.received) == 25  # refused calls never reached the provider
    assert sorted(received.body["call"] for received in fake.received) == sorted(
        json.loads(r.content[0].text)["result"]["echo"]["call"] for r in succeeded
    )
    assert_sound(runtime, created.wallet_id, 50_000, [2_000] * 25)
    assert ledger_state(runtime.db, created.wallet_id).balance_micros == 0


async def test_64_per_token_calls_through_the_core_never_overdraw(
    backend_runtime: Runtime, fake: FakeProvider
) -> None:
    runtime = backend_runtime
    created = wallet.create_wallet(runtime.db, name="concurrent")
    fund(runtime, created.wallet_id, "0.01")
    # ~2 KB prompts: each call's hold is ~3,000 micro-dollars and its charge ~520, so the
    # $0.01 balance covers a few calls at once and at most 19 in all: some must be refused.
    body = {"messages": [{"role": "user", "content": "x" * 2_000}], "max_tokens": 400}

    async def one(number: int) -> int | None:
        try:
            outcome = await runtime.metering.call(
                wallet_id=created.wallet_id, service_id="cheapchat", model="cheap-1", body=body
            )
        except InsufficientBalance:
            return None
        return outcome.settlement.cost.total_micros

    outcomes = await asyncio.gather(*(one(number) for number in range(CALLS)))
    costs = [cost for cost in outcomes if cost is not None]
    assert 3 <= len(costs) <= 19
    assert len(fake.received) == len(costs)
    assert_sound(runtime, created.wallet_id, 10_000, costs)
    with runtime.db.read() as session:
        refused = session.exec(
            select(func.count()).select_from(RequestRecord).where(RequestRecord.ran == False)  # noqa: E712
        ).one()
    assert refused == CALLS - len(costs)


async def test_64_calls_on_one_spend_key_never_pass_its_limit_or_deadlock(
    backend_runtime: Runtime, fake: FakeProvider
) -> None:
    """Holds lock the spend key before the wallet, and settlements do too: on PostgreSQL,
    concurrent calls on one key once deadlocked, leaving holds pending and calls unbilled."""
    from lava_mcp.core import spend_keys
    from lava_mcp.errors import PaymentRequired

    runtime = backend_runtime
    created = wallet.create_wallet(runtime.db, name="key-concurrent")
    fund(runtime, created.wallet_id, "10.00")
    # $0.002 a call; the key's limit covers 20 of the 64.
    secret = spend_keys.create(
        runtime.db, created.wallet_id, {"name": "k", "spend_limit": {"amount": "0.04", "cycle": "daily"}}
    ).secret
    key = spend_keys.authenticate(runtime.db, secret)

    async def one(number: int) -> int | None:
        try:
            outcome = await runtime.metering.call(
                wallet_id=created.wallet_id,
                service_id="weather",
                model=None,
                body={"call": number},
                spend_key=key,
            )
        except PaymentRequired:
            return None
        return outcome.settlement.cost.total_micros

    results = await asyncio.gather(*(one(number) for number in range(CALLS)))
    costs = [cost for cost in results if cost is not None]
    assert len(costs) == 20
    assert_sound(runtime, created.wallet_id, 10_000_000, costs)
    current = spend_keys.authenticate(runtime.db, secret)
    assert (current.cycle_spend_micros, current.held_micros) == (40_000, 0)


def test_holds_and_settlements_on_one_key_from_many_threads_never_deadlock(
    backend_runtime: Runtime,
) -> None:
    """Reserve (key, then wallet) racing post (hold, key, wallet) from four threads."""
    import threading

    from lava_mcp.core import holds, spend_keys
    from lava_mcp.ids import new_id
    from lava_mcp.store.models import utc_now

    runtime = backend_runtime
    created = wallet.create_wallet(runtime.db, name="threads")
    fund(runtime, created.wallet_id, "100.00")
    secret = spend_keys.create(runtime.db, created.wallet_id, {"name": "k"}).secret
    key = spend_keys.authenticate(runtime.db, secret)
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(40):
                with runtime.db.write() as session:
                    spend_keys.reserve(session, key, hold_micros=1_000, now=utc_now())
                    hold = holds.reserve(
                        session,
                        wallet_id=created.wallet_id,
                        amount_micros=1_000,
                        request_id=new_id("req"),
                        ttl_s=600,
                        spend_key_id=key.id,
                    )
                with runtime.db.write() as session:
                    holds.post(session, hold.id, 600)
        except BaseException as error:  # collected and asserted below
            failures.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    state = ledger_state(runtime.db, created.wallet_id)
    assert (state.held_micros, state.balance_micros) == (0, 100_000_000 - 160 * 600)
    assert spend_keys.authenticate(runtime.db, secret).total_spend_micros == 160 * 600
    assert verify.verify(runtime.db) == []
