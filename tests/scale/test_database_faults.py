"""PostgreSQL connections killed under load (`pg_terminate_backend`, this cluster's servers'
connections only): a request that lost its connection is answered 503 with a retry hint
in its surface's shape — never a 500, never half-written — and the service resumes by
itself (the pool reconnects; a settle retries until it commits).

What a 503 may leave behind is what a lost answer leaves: a transaction the server rolled
back (nothing), or one whose commit landed before the connection went (a hold with its
request pending, released by a sweep at its expiry). So the test waits for every hold to
be resolved, then judges the ledger.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlmodel import select

from lava_mcp.runtime import HOLD_SWEEP_INTERVAL_S
from lava_mcp.store.models import RequestRecord
from tests.scale.conftest import Cluster, wait_until
from tests.scale.ledger_facts import charged_once, statuses, wallet_balance
from tests.scale.load import (
    AnthropicClients,
    McpClients,
    OpenAIClients,
    Outcome,
    Outcomes,
    RestClients,
    hammer,
)

HOLD_TTL_S = 16  # the shortest the settings allow with a 5 s upstream timeout and no drain
FAULT_ENV = {"LAVA_HOLD_TTL_S": str(HOLD_TTL_S), "LAVA_UPSTREAM_TIMEOUT_S": "5", "LAVA_STREAM_DRAIN_S": "0"}
CALLS_PER_SURFACE = 240
MAX_KILL_ROUNDS = 60


def _is_retry_hint(outcome: Outcome) -> bool:
    return outcome.retry_after is not None and int(outcome.retry_after) >= 1


def test_killed_database_connections_are_503_with_a_retry_hint_and_service_resumes(
    cluster_factory: Any,
) -> None:
    cluster: Cluster = cluster_factory(3, **FAULT_ENV)
    owner = cluster.create_wallet("50.00")
    openai_key = cluster.create_spend_key(owner.wallet_key)
    anthropic_key = cluster.create_spend_key(owner.wallet_key, request_shape="anthropic")
    funded, _ = wallet_balance(cluster.db, owner.wallet_id)

    async def load() -> tuple[Outcomes, Outcomes, Outcomes, Outcomes, int, Outcomes]:
        chats = OpenAIClients(cluster.urls, openai_key["key"])
        messages = AnthropicClients(cluster.urls, anthropic_key["key"])
        rest = RestClients(cluster.urls, owner.wallet_key)
        mcp = await McpClients(cluster.urls, owner.wallet_key).__aenter__()
        chat_outcomes, message_outcomes, rest_outcomes, mcp_outcomes = (Outcomes() for _ in range(4))
        loads = asyncio.gather(
            hammer(
                lambda: mcp.call("get_balance", {}),
                calls=CALLS_PER_SURFACE // 2,
                concurrency=1,  # one at a time: McpClients judges a refusal by its last answer
                into=mcp_outcomes,
            ),
            hammer(chats.call, calls=CALLS_PER_SURFACE, concurrency=8, into=chat_outcomes),
            hammer(messages.call, calls=CALLS_PER_SURFACE, concurrency=8, into=message_outcomes),
            hammer(
                lambda: rest.get("/v1/wallet"), calls=CALLS_PER_SURFACE, concurrency=4, into=rest_outcomes
            ),
        )
        rounds = 0
        try:
            # Kill every server connection each time the load has moved on a little, for as
            # long as it runs.
            seen = 0
            while not loads.done() and rounds < MAX_KILL_ROUNDS:
                done = sum(
                    len(o.items) for o in (chat_outcomes, message_outcomes, rest_outcomes, mcp_outcomes)
                )
                if done >= seen + 20:
                    seen = done
                    await asyncio.to_thread(cluster.terminate_server_backends)
                    rounds += 1
                await asyncio.wait({loads}, timeout=0.05)
            await loads
            # Nothing killed any more: every server serves every surface again by itself.
            after = Outcomes()
            for _ in range(len(cluster.urls) * 3):
                after.items += [await chats.call(), await messages.call(), await rest.get("/v1/wallet")]
                after.items.append(await mcp.call("get_balance", {}))
            return chat_outcomes, message_outcomes, rest_outcomes, mcp_outcomes, rounds, after
        finally:
            loads.cancel()
            for clients in (chats, messages, rest):
                await clients.aclose()
            await mcp.__aexit__(None, None, None)

    chat_outcomes, message_outcomes, rest_outcomes, mcp_outcomes, rounds, after = asyncio.run(load())
    assert rounds >= 5, rounds

    # Each call: answered, or refused 503 with a retry hint in its surface's shape.
    for outcomes in (chat_outcomes, message_outcomes, rest_outcomes, mcp_outcomes):
        assert outcomes.statuses().keys() <= {200, 503}, (outcomes.statuses(), outcomes.with_status(0)[:3])
    for outcomes in (chat_outcomes, message_outcomes, rest_outcomes):
        assert all(_is_retry_hint(item) for item in outcomes.with_status(503))
    unavailable = sum(len(o.with_status(503)) for o in (chat_outcomes, message_outcomes, rest_outcomes))
    assert unavailable > 0, "no request lost its connection: the faults were never exercised"
    for item in chat_outcomes.with_status(503):
        assert (
            item.body["error"]["type"] == "api_error" and item.body["error"]["code"] == "service_unavailable"
        )
    for item in message_outcomes.with_status(503):
        assert item.body["type"] == "error" and item.body["error"]["type"] == "api_error"
    for item in rest_outcomes.with_status(503) + mcp_outcomes.with_status(503):
        assert item.body["code"] == 503 and item.body["retry_after_s"] >= 1, item.body
    assert after.statuses() == {200: len(after.items)}, after.statuses()

    # Nothing half-written: once every hold a lost answer left is released at its expiry,
    # each answered call is completed and charged once, each refused one charged nothing.
    def nothing_pending() -> bool:
        records, holds = statuses(cluster.db)
        return records["pending"] == 0 and holds["pending"] == 0

    wait_until(
        nothing_pending, timeout_s=HOLD_TTL_S + 2 * HOLD_SWEEP_INTERVAL_S + 30, what="every hold resolved"
    )
    gateway = chat_outcomes.items + message_outcomes.items + after.items
    answered = {item.request_id for item in gateway if item.status == 200 and item.request_id}
    refused = {item.request_id for item in gateway if item.status == 503 and item.request_id}
    with cluster.db.read() as session:
        records = {
            record.id: record
            for record in session.exec(
                select(RequestRecord).where(RequestRecord.wallet_id == owner.wallet_id)
            ).all()
        }
    completed = {request_id for request_id, record in records.items() if record.status == "completed"}
    assert completed == answered
    assert all(records[request_id].status == "error" for request_id in refused if request_id in records)
    assert charged_once(cluster.db) == []
    balance, held = wallet_balance(cluster.db, owner.wallet_id)
    assert held == 0 and balance == funded - sum(records[request_id].cost_micros for request_id in completed)
    cluster.ledger_verify()
