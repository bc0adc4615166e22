"""Many concurrent SDK clients against one key: limits and balances are never overrun."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import openai
import pytest

from lava_mcp.core import wallet
from lava_mcp.store.models import SpendKey
from tests.gateway.conftest import Gateway

CONCURRENT = 72
# ~4 KB of prompt: the fake reports ~1,000 input tokens, i.e. ~1,000 micro-dollars on cheap-1.
PROMPT = [{"role": "user", "content": "x" * 4000}]


async def _one_openai(client: openai.AsyncOpenAI, index: int) -> int | str:
    try:
        if index % 2:
            stream = await client.chat.completions.create(
                model="cheap-1", messages=PROMPT, max_tokens=10, stream=True
            )
            async for _ in stream:
                pass
        else:
            await client.chat.completions.create(model="cheap-1", messages=PROMPT, max_tokens=10)
    except openai.APIStatusError as error:
        retry_after = error.response.headers.get("retry-after")
        assert error.status_code != 429 or (retry_after is not None and retry_after.isdigit())
        return error.status_code
    return "ok"


async def hammer(gateway: Gateway, key: str, count: int = CONCURRENT) -> list[int | str]:
    """`count` concurrent calls; returns once every call that ran is settled.

    A stream is settled just after its last chunk is sent, so a client can see the end of
    its stream a moment before the settle commits: wait for the settles (an event each),
    then look at the ledger."""
    settled_before = len(gateway.resolved_ids)
    async with gateway.async_openai(key) as client:
        outcomes = list(await asyncio.gather(*(_one_openai(client, index) for index in range(count))))
    ran = outcomes.count("ok")
    with gateway.resolved_any:
        assert gateway.resolved_any.wait_for(lambda: len(gateway.resolved_ids) - settled_before >= ran, 30)
    return outcomes


def key_row(gateway: Gateway, key_id: str) -> SpendKey:
    with gateway.runtime.db.read() as session:
        row = session.get(SpendKey, key_id)
    assert row is not None
    return row


def settled_everything(gateway: Gateway) -> None:
    """Every request has been settled or failed, and the ledger's invariants hold."""
    assert gateway.verify() == []


async def test_spend_limit_is_never_exceeded(gateway: Gateway) -> None:
    key = gateway.create_key(spend_limit={"amount": "0.01", "cycle": "total"})
    before = gateway.balance_micros()
    outcomes = await hammer(gateway, key["key"])
    assert "ok" in outcomes and 402 in outcomes
    assert set(outcomes) <= {"ok", 402}
    row = key_row(gateway, key["spend_key_id"])
    assert row.total_spend_micros <= 10_000
    assert row.held_micros == 0
    assert gateway.balance_micros() == before - row.total_spend_micros
    assert row.total_requests == outcomes.count("ok")
    settled_everything(gateway)


async def test_wallet_never_goes_below_zero(gateway: Gateway) -> None:
    poor = wallet.create_wallet(gateway.runtime.db, name="poor")
    gateway.fund("0.01", poor.wallet_id)
    with gateway.rest(poor.wallet_key) as rest:
        key = rest.post("/v1/spend_keys", json={}).json()
    outcomes = await hammer(gateway, key["key"])
    assert "ok" in outcomes and 402 in outcomes
    balance = wallet.get_balance(gateway.runtime.db, poor.wallet_id)
    assert 0 <= balance.balance_micros < 10_000 and balance.held_micros == 0
    settled_everything(gateway)


async def test_request_limit_admits_exactly_its_count(gateway: Gateway) -> None:
    key = gateway.create_key(request_limit={"count": 10, "cycle": "daily"})
    outcomes = await hammer(gateway, key["key"])
    assert outcomes.count("ok") == 10
    assert outcomes.count(429) == CONCURRENT - 10
    row = key_row(gateway, key["spend_key_id"])
    assert (row.cycle_requests, row.total_requests) == (10, 10)
    settled_everything(gateway)


@pytest.mark.parametrize("limiter", ["in_process", "redis"], indirect=True)
async def test_rpm_burst_admits_exactly_the_burst(gateway: Gateway) -> None:
    # rpm 1 refills one request a minute: the run is far shorter, so exactly the burst passes.
    key = gateway.create_key(rate_limit={"rpm": 1, "burst": 8})
    outcomes = await hammer(gateway, key["key"])
    assert outcomes.count("ok") == 8
    assert outcomes.count(429) == CONCURRENT - 8
    settled_everything(gateway)


async def test_anthropic_concurrent_streams_respect_the_spend_limit(gateway: Gateway) -> None:
    key = gateway.create_key(request_shape="anthropic", spend_limit={"amount": "0.05", "cycle": "monthly"})

    async def one(client: anthropic.AsyncAnthropic) -> Any:
        try:
            async with client.messages.stream(
                model="claude-haiku-4-5",
                max_tokens=10,
                messages=PROMPT,  # type: ignore[arg-type]
            ) as stream:
                await stream.get_final_message()
        except anthropic.APIStatusError as error:
            return error.status_code
        return "ok"

    settled_before = len(gateway.resolved_ids)
    async with gateway.async_anthropic(key["key"]) as client:
        outcomes = await asyncio.gather(*(one(client) for _ in range(CONCURRENT)))
    assert "ok" in outcomes and set(outcomes) <= {"ok", 402}
    with gateway.resolved_any:  # a stream ends for its client a moment before its settle commits
        ran = outcomes.count("ok")
        assert gateway.resolved_any.wait_for(lambda: len(gateway.resolved_ids) - settled_before >= ran, 30)
    row = key_row(gateway, key["spend_key_id"])
    assert row.cycle_spend_micros <= 50_000
    settled_everything(gateway)
