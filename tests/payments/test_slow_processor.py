"""Stripe being slow or down stalls nothing else: the Stripe client gives up after
`LAVA_STRIPE_TIMEOUT_S`, a balance read answers while the processor still hangs, and processor
calls run in their own lane of worker threads, so a gateway call answers while every top-up
hangs. Ordering, not timing: each check runs while a request the front holds is still held
(`anyio.fail_after` is only a guard against the old behaviour hanging the suite)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from lava_mcp.core import funding, wallet
from lava_mcp.errors import UpstreamError
from lava_mcp.payments import ProcessorLane
from lava_mcp.runtime import Runtime
from lava_mcp.transports.app import build_app
from tests.fake_provider import FakeProvider
from tests.payments.conftest import (
    StripeFront,
    deliver,
    event,
    live_settings,
    payments_of,
    rest,
    save_card,
)

GUARD_S = 30


async def test_a_hanging_processor_fails_a_top_up_after_the_stripe_timeout(
    tmp_path: Path, stripe_front: StripeFront
) -> None:
    runtime = Runtime.build(live_settings(tmp_path, stripe_front.url, LAVA_STRIPE_TIMEOUT_S=0.5))
    runtime.db.upgrade()
    try:
        owner = wallet.create_wallet(runtime.db, mode="test")
        await save_card(runtime, owner)
        hang = stripe_front.inject("POST", "/v1/payment_intents", "hang")  # held until released
        answered = anyio.Event()

        async def top_up() -> None:
            with pytest.raises(UpstreamError):
                await funding.add_funds(runtime, owner.wallet_id, amount=25)
            answered.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(top_up)
            with anyio.move_on_after(GUARD_S):  # the hang is for ever: only the client's timeout ends it
                await answered.wait()
            answered_while_hanging = answered.is_set()
            hang.release.set()
        assert answered_while_hanging and hang.seen == 1
        [payment] = payments_of(runtime, owner.wallet_id)
        assert payment.status == "pending"  # to be reconciled: the charge may yet go through
    finally:
        stripe_front.reset()
        await runtime.aclose()


async def test_a_balance_read_answers_while_the_processor_hangs(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with rest(live, live_wallet) as client:
        opened = (await client.post("/v1/wallet/fund", json={"amount": 25})).json()
        assert opened["status"] == "checkout_required"  # a pending Checkout to reconcile
        hang = stripe_front.inject("GET", "/v1/checkout/sessions/", "hang", times=100)
        with anyio.fail_after(GUARD_S):
            first = await client.get("/v1/wallet")
            await hang.wait_arrivals(1)
            second = await client.get("/v1/wallet")  # the first read's reconciliation still runs
        assert first.status_code == second.status_code == 200 and first.json()["balance"] == "0.00"
        assert not hang.release.is_set() and hang.seen == 1  # one reconciliation per wallet at a time
        stripe_front.pay(opened["checkout_url"].rsplit("/", 1)[1])
        hang.release.set()
        hang.times = 0
        # Once Stripe answers again, a read credits what was paid.
        with anyio.fail_after(GUARD_S):
            while (await client.get("/v1/wallet")).json()["balance"] != "25.00":
                await anyio.sleep(0.05)


async def test_a_gateway_call_answers_while_every_top_up_hangs(
    tmp_path: Path, stripe_front: StripeFront, fake: FakeProvider
) -> None:
    runtime = Runtime.build(
        live_settings(
            tmp_path,
            stripe_front.url,
            OPENAI_API_KEY="sk-upstream-openai",
            OPENAI_BASE_URL=f"{fake.url}/v1",
            LAVA_STRIPE_TIMEOUT_S=60,
        )
    )
    runtime.db.upgrade()
    owner = wallet.create_wallet(runtime.db, mode="test")
    wallet.adjust(runtime.db, owner.wallet_id, "5", reason="test funding")
    await save_card(runtime, owner)
    # More hanging top-ups than anyio's default worker threads (40), which database work uses.
    count = 41
    hang = stripe_front.inject("POST", "/v1/payment_intents", "hang", times=count)
    outcomes: list[Any] = []

    async def top_up() -> None:
        outcomes.append(
            await funding.add_funds(runtime, owner.wallet_id, amount=10, idempotency_key=secrets.token_hex(8))
        )

    app = build_app(runtime, migrate=False)
    try:
        async with anyio.create_task_group() as tasks:
            for _ in range(count):
                tasks.start_soon(top_up)
            with anyio.fail_after(GUARD_S):
                await hang.wait_arrivals(runtime.processor_lane.limiter.total_tokens)  # the lane is full
                async with rest(runtime, owner) as client:
                    key = (await client.post("/v1/spend_keys", json={"name": "agent"})).json()["key"]
                    assert (await client.get("/v1/wallet")).status_code == 200
                async with openai.AsyncOpenAI(
                    api_key=key,
                    base_url="http://testserver/v1",
                    max_retries=0,
                    http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),
                ) as chat:
                    answer = await chat.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=16
                    )
                assert answer.choices[0].message.content
                assert not hang.release.is_set()  # every top-up was still hanging
            hang.release.set()
        assert len(outcomes) == count and all(outcome["status"] == "completed" for outcome in outcomes)
    finally:
        stripe_front.reset()
        await runtime.aclose()


@pytest.mark.parametrize("surface", ["webhook", "success page"])
async def test_webhooks_and_success_pages_on_a_hanging_processor_stall_no_balance_read(
    tmp_path: Path, stripe_front: StripeFront, surface: str
) -> None:
    runtime = Runtime.build(live_settings(tmp_path, stripe_front.url, LAVA_STRIPE_TIMEOUT_S=60))
    runtime.db.upgrade()
    # More deliveries than anyio's default worker threads (40), which database work uses; a
    # lane wide enough that every one of them reaches the processor either way.
    count = 41
    runtime.processor_lane = ProcessorLane(capacity=count)
    payer = wallet.create_wallet(runtime.db, name="payer", mode="test")
    reader = wallet.create_wallet(runtime.db, name="reader", mode="test")
    if surface == "webhook":
        # A dispute naming only its charge: applying it asks the processor for the charge.
        hang = stripe_front.inject("GET", "/v1/charges/", "hang", times=count)
        payloads = [
            event("charge.dispute.created", {"id": f"dp_{n}", "amount": 1000, "charge": f"ch_hanging_{n}"})
            for n in range(count)
        ]
    else:
        async with rest(runtime, payer) as client:
            opened = (await client.post("/v1/wallet/fund", json={"amount": 25})).json()
        session_id = opened["checkout_url"].rsplit("/", 1)[1]
        hang = stripe_front.inject("GET", f"/v1/checkout/sessions/{session_id}", "hang", times=count)
    answers: list[int] = []

    async def load(client: httpx.AsyncClient, n: int) -> None:
        if surface == "webhook":
            answers.append((await deliver(client, payloads[n])).status_code)
        else:
            answers.append((await client.get("/fund/success", params={"session_id": session_id})).status_code)

    try:
        async with rest(runtime) as visitors, anyio.create_task_group() as tasks:
            for n in range(count):
                tasks.start_soon(load, visitors, n)
            with anyio.fail_after(GUARD_S):
                await hang.wait_arrivals(count - 1)  # at least the default pool's worth is hanging
                async with rest(runtime, reader) as client:
                    read = await client.get("/v1/wallet")  # authenticates, reads: database work
                assert read.status_code == 200 and read.json()["balance"] == "0.00"
                assert not hang.release.is_set()  # every delivery was still hanging
            hang.release.set()
        assert len(answers) == count and all(code in (200, 202) for code in answers), answers
    finally:
        stripe_front.reset()
        await runtime.aclose()
