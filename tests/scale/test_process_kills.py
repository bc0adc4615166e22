"""One of three `lava-mcp serve` processes SIGKILLed under load, with one of its calls in the
middle of a stream and another in the middle of its settle transaction: nothing is lost.

- Mid-stream: the fake provider stalls a stream after two words; the client has read them;
  the process dies holding the call's hold.
- Mid-settle: the provider has answered and the settle transaction has locked the hold and
  the key, and waits for the wallet row (which the test holds locked); the process dies
  before it can commit. PostgreSQL rolls the transaction back when it finds its client gone.

Each hold then outlives its expiry with nobody extending it, and a surviving process's sweep
releases it: the money is back, the request is resolved as an error, nothing is charged. The
load that ran through all three meanwhile is charged exactly once per answered call, and
`ledger verify` passes. (A settle that did commit before the kill is charged once: posting
is idempotent, and a charge entry is unique per request.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
from sqlalchemy import text
from sqlmodel import select

from lava_mcp.runtime import HOLD_SWEEP_INTERVAL_S
from lava_mcp.store.models import Hold, RequestRecord
from tests.fake_provider import FakeProvider
from tests.scale.conftest import Cluster, wait_until
from tests.scale.ledger_facts import charged_once, statuses, wallet_balance
from tests.scale.load import CHAT, OpenAIClients, Outcome, Outcomes, hammer
from tests.scale.test_database_faults import FAULT_ENV, HOLD_TTL_S

STALL = "STALL"
LOAD_CALLS = 300


@contextmanager
def wallet_row_locked(cluster: Cluster, wallet_id: str) -> Iterator[int]:
    """The wallet's row locked by the test's own transaction (rolled back on exit); yields
    the PostgreSQL process id that holds the lock."""
    with cluster.db.engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(text("SELECT id FROM wallet WHERE id = :id FOR UPDATE"), {"id": wallet_id})
        try:
            yield int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
        finally:
            transaction.rollback()


def _a_server_waits_on(cluster: Cluster, locker_pid: int) -> bool:
    """Is one of the cluster's connections blocked by the test's lock?"""
    with cluster.db.engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"
                " AND CAST(:locker AS integer) = ANY(pg_blocking_pids(pid))"
            ),
            {"name": cluster.application_name, "locker": locker_pid},
        ).scalar_one()
    return int(waiting) > 0


def _request_of(cluster: Cluster, wallet_id: str) -> tuple[RequestRecord, Hold]:
    with cluster.db.read() as session:
        record = session.exec(select(RequestRecord).where(RequestRecord.wallet_id == wallet_id)).one()
        hold = session.exec(select(Hold).where(Hold.request_id == record.id)).one()
    return record, hold


def test_a_process_killed_mid_stream_and_mid_settle_loses_nothing(
    cluster_factory: Any, fake: FakeProvider
) -> None:
    cluster: Cluster = cluster_factory(3, **FAULT_ENV)
    victim, *survivors = cluster.servers
    streaming, settling, loaded = (cluster.create_wallet("5.00") for _ in range(3))
    stream_key = cluster.create_spend_key(streaming.wallet_key)
    settle_key = cluster.create_spend_key(settling.wallet_key)
    load_key = cluster.create_spend_key(loaded.wallet_key)
    funded = {w.wallet_id: wallet_balance(cluster.db, w.wallet_id)[0] for w in (streaming, settling, loaded)}
    fake.stall_only = STALL
    fake.pause_after_words = 2
    fake.hold_answers = True
    stall = {"messages": [{"role": "user", "content": f"{STALL} here"}]}

    async def scenario() -> tuple[Outcomes, list[str]]:
        load = OpenAIClients(cluster.urls, load_key["key"])
        victim_stream = openai.AsyncOpenAI(
            api_key=stream_key["key"], base_url=f"{victim.url}/v1", max_retries=0
        )
        victim_settle = openai.AsyncOpenAI(
            api_key=settle_key["key"], base_url=f"{victim.url}/v1", max_retries=0
        )
        outcomes = Outcomes()

        async def mixed() -> Outcome:
            return await load.call(stream=len(outcomes.items) % 2 == 1)

        background = asyncio.ensure_future(hammer(mixed, calls=LOAD_CALLS, concurrency=6, into=outcomes))
        try:
            # Mid-stream: two words read, the provider stalls the rest.
            stream = await victim_stream.chat.completions.create(**{**CHAT, **stall}, stream=True)
            words = []
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    words.append(chunk.choices[0].delta.content)
                if len(words) == 2:
                    break
            assert await asyncio.to_thread(fake.stream_paused.wait, 30)
            # Mid-settle: the provider has the call; then its answer comes while the test
            # holds the wallet's row, so the settle transaction waits inside, uncommitted.
            settle = asyncio.ensure_future(victim_settle.chat.completions.create(**{**CHAT, **stall}))
            assert await asyncio.to_thread(fake.answer_waiting.wait, 30)
            with wallet_row_locked(cluster, settling.wallet_id) as locker_pid:
                fake.answer_gate.set()
                await asyncio.to_thread(
                    wait_until,
                    lambda: _a_server_waits_on(cluster, locker_pid),
                    timeout_s=60,
                    what="the settle to wait for the wallet",
                )
                while len(outcomes.items) < LOAD_CALLS // 3:  # the load is well under way
                    await asyncio.sleep(0.05)
                victim.kill()
            fake.stream_gate.set()
            try:
                await settle
                raise AssertionError("the killed process answered")
            except openai.APIConnectionError:
                pass
            await background
            return outcomes, words
        finally:
            background.cancel()
            for client in (victim_stream, victim_settle):
                await client.close()
            await load.aclose()

    outcomes, words = asyncio.run(scenario())
    assert words == ["Hello", " from"]

    # The survivors answered every call sent to them; calls sent to the dead process failed
    # to connect (or were answered before it died).
    for item in outcomes.items:
        allowed = {200} if item.server != victim.url else {200, 0}
        assert item.status in allowed, item
    assert len(outcomes.with_status(200)) > LOAD_CALLS // 2

    # Nobody extends the dead process's holds: past their expiry a survivor's sweep
    # releases them, and every request is resolved.
    def nothing_pending() -> bool:
        records, holds = statuses(cluster.db)
        return records["pending"] == 0 and holds["pending"] == 0

    wait_until(
        nothing_pending, timeout_s=HOLD_TTL_S + 2 * HOLD_SWEEP_INTERVAL_S + 30, what="every hold resolved"
    )
    assert any("released" in server.log.read_text() for server in survivors)
    for stalled in (streaming, settling):
        record, hold = _request_of(cluster, stalled.wallet_id)
        assert (record.status, record.error_code, hold.status) == ("error", 504, "expired"), record
        assert wallet_balance(cluster.db, stalled.wallet_id) == (funded[stalled.wallet_id], 0)

    # The load: each answered call charged exactly once. A stream's last event and the end
    # of its body are sent only once its settlement committed (core/relay.py), so a client
    # that got the whole answer was charged for it, even from the process that was killed.
    with cluster.db.read() as session:
        records = {
            record.id: record
            for record in session.exec(
                select(RequestRecord).where(RequestRecord.wallet_id == loaded.wallet_id)
            ).all()
        }
    for item in outcomes.with_status(200):
        assert records[str(item.request_id)].status == "completed", item
    assert all(record.status in ("completed", "error") for record in records.values())
    balance, held = wallet_balance(cluster.db, loaded.wallet_id)
    assert held == 0 and balance == funded[loaded.wallet_id] - sum(
        r.cost_micros for r in records.values() if r.status == "completed"
    )
    assert charged_once(cluster.db) == []
    cluster.ledger_verify()
