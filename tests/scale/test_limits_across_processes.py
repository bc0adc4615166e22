"""Three `lava-mcp serve` processes on one PostgreSQL: a key's spend limit, a key's request
limit and a wallet's balance are global, exact, under concurrent load through all three.

Why it can hold: every limit is checked and taken by one conditional UPDATE in the database
(the hold), never by a counter a process keeps, so N processes are N clients of one
ledger. What would break it — a per-process budget, a cache trusted without the hold's
check, a counter in Redis — shows here as a spend above the limit, a request count above
it, a balance below zero, or a call left pending.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lava_mcp.money import MICROS_PER_CENT, format_dollars, parse_amount
from tests.scale.conftest import Cluster
from tests.scale.ledger_facts import charged_once, key_facts, statuses, wallet_balance
from tests.scale.load import AnthropicClients, OpenAIClients, Outcome, Outcomes, hammer, until_refused

SPEND_CALLS = 400
REQUEST_CALLS = 300
REQUEST_LIMIT = 200
BALANCE_CALLS = 400
CONCURRENCY_PER_KEY = 12


def _probe(cluster: Cluster, wallet_key: str) -> tuple[int, int]:
    """(cost, hold) in micros of one `load.CHAT` call, measured through a key of its own."""
    from sqlmodel import select

    from lava_mcp.store.models import RequestRecord

    key = cluster.create_spend_key(wallet_key)

    async def one() -> Outcome:
        clients = OpenAIClients(cluster.urls[:1], key["key"])
        try:
            return await clients.call()
        finally:
            await clients.aclose()

    outcome = asyncio.run(one())
    assert outcome.status == 200, outcome
    with cluster.db.read() as session:
        record = session.exec(
            select(RequestRecord).where(RequestRecord.spend_key_id == key["spend_key_id"])
        ).one()
    assert record.status == "completed" and 0 < record.cost_micros < record.hold_micros, record
    return record.cost_micros, record.hold_micros


def _cents_off_the_call(micros: int, cost: int) -> int:
    """At least `micros`, in whole cents (what limits and funding take), and not a whole
    number of calls of `cost`."""
    cents = -(-micros // MICROS_PER_CENT)
    while (cents * MICROS_PER_CENT) % cost == 0:
        cents += 1
    return cents * MICROS_PER_CENT


def test_spend_request_and_balance_limits_hold_across_three_processes(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3)
    rich = cluster.create_wallet("100.00")
    cost, hold = _probe(cluster, rich.wallet_key)
    # Limits (whole cents) that are not a whole number of calls, so "exact" means something.
    spend_limit_micros = _cents_off_the_call(250 * cost, cost)
    spend_key = cluster.create_spend_key(
        rich.wallet_key,
        spend_limit={"amount": format_dollars(spend_limit_micros), "cycle": "total"},
    )
    request_key = cluster.create_spend_key(
        rich.wallet_key,
        request_shape="anthropic",
        request_limit={"count": REQUEST_LIMIT, "cycle": "total"},
    )
    poor_funds_micros = _cents_off_the_call(300 * cost, cost)
    poor = cluster.create_wallet(format_dollars(poor_funds_micros))
    balance_key = cluster.create_spend_key(poor.wallet_key)
    assert parse_amount(spend_key["spend_limit"]["amount"]) == spend_limit_micros

    async def load() -> tuple[Outcomes, Outcomes, Outcomes, tuple[int, Outcome], tuple[int, Outcome]]:
        spending = OpenAIClients(cluster.urls, spend_key["key"])
        requesting = AnthropicClients(cluster.urls, request_key["key"])
        draining = OpenAIClients(cluster.urls, balance_key["key"])
        try:
            spent, requested, drained = await asyncio.gather(
                hammer(spending.call, calls=SPEND_CALLS, concurrency=CONCURRENCY_PER_KEY),
                hammer(requesting.call, calls=REQUEST_CALLS, concurrency=CONCURRENCY_PER_KEY),
                hammer(draining.call, calls=BALANCE_CALLS, concurrency=CONCURRENCY_PER_KEY),
            )
            # With nothing in flight, one call after another until the first refusal: the
            # limit refuses a call only when what is left can't cover its hold.
            spend_tail = await until_refused(spending.call)
            balance_tail = await until_refused(draining.call)
            return spent, requested, drained, spend_tail, balance_tail
        finally:
            for clients in (spending, requesting, draining):
                await clients.aclose()

    spent, requested, drained, (spend_more, spend_refusal), (drain_more, drain_refusal) = asyncio.run(load())
    every = spent.items + requested.items + drained.items
    assert len(every) >= 1000

    # Every call was answered, by a limit or by the provider: never a 5xx, never a dropped connection.
    assert spent.statuses().keys() <= {200, 402}, spent.statuses()
    assert requested.statuses().keys() <= {200, 429}, requested.statuses()
    assert drained.statuses().keys() <= {200, 402}, drained.statuses()
    for outcomes in (spent, requested, drained):
        assert {item.server for item in outcomes.with_status(200)} == set(cluster.urls)

    # The spend limit: never above it, and used up to within one hold of it.
    facts = key_facts(cluster.db, spend_key["spend_key_id"])
    answered = len(spent.with_status(200)) + spend_more
    assert spend_refusal.status == 402 and "spend limit" in spend_refusal.body["error"]["message"]
    assert facts.completed == answered
    assert facts.total_spend_micros == facts.cycle_spend_micros == facts.charged_micros == answered * cost
    assert facts.total_spend_micros <= spend_limit_micros
    assert spend_limit_micros - facts.total_spend_micros < hold
    assert facts.held_micros == 0
    assert all("spend limit" in item.body["error"]["message"] for item in spent.with_status(402))

    # The request limit: exactly the limit answered, every other call refused with 429.
    facts = key_facts(cluster.db, request_key["spend_key_id"])
    assert len(requested.with_status(200)) == REQUEST_LIMIT
    assert len(requested.with_status(429)) == REQUEST_CALLS - REQUEST_LIMIT
    assert facts.cycle_requests == facts.completed == REQUEST_LIMIT
    assert all("request limit" in item.body["error"]["message"] for item in requested.with_status(429))

    # The wallet's balance: never below zero, drained to less than one hold.
    balance, held = wallet_balance(cluster.db, poor.wallet_id)
    drained_calls = len(drained.with_status(200)) + drain_more
    assert (
        drain_refusal.status == 402
        and "Insufficient wallet balance" in drain_refusal.body["error"]["message"]
    )
    assert key_facts(cluster.db, balance_key["spend_key_id"]).completed == drained_calls
    assert balance == poor_funds_micros - drained_calls * cost
    assert 0 <= balance < hold and held == 0

    # Every request resolved, every hold resolved, each charge made once; the ledger sound.
    records, holds = statuses(cluster.db)
    assert records["pending"] == 0 and holds["pending"] == 0, (records, holds)
    assert charged_once(cluster.db) == []
    cluster.ledger_verify()
