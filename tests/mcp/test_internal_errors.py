"""What the MCP tools answer when something breaks or the caller leaves: an internal
error is the documented JSON with a request id (never the SDK's "Error executing tool"
text), and a cancelled paid call that reached the provider is charged what it used."""

from __future__ import annotations

import asyncio
import logging
import threading

import anyio
import pytest
from sqlalchemy import text
from sqlmodel import select

from lava_mcp.core import verify
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import RequestRecord
from tests.conftest import fund, ledger_state
from tests.fake_provider import FakeProvider
from tests.mcp.conftest import connect, error

HELLO = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}


async def test_an_internal_error_is_the_500_json_with_a_request_id_and_is_logged(
    runtime: Runtime, new_wallet, caplog: pytest.LogCaptureFixture
) -> None:
    with runtime.db.write() as session:  # the database loses a table: a failure no rule expects
        session.execute(text("DROP TABLE request_record"))
    async with connect(runtime, new_wallet) as client:
        result = await client.call_tool("list_requests", {})
    body = error(result, 500)
    assert set(body) == {"error", "code", "request_id"}
    assert body["error"] == "internal error" and body["request_id"].startswith("req_")
    assert "Error executing tool" not in result.content[0].text  # type: ignore[union-attr]
    logged = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert any(body["request_id"] in record.getMessage() for record in logged)


async def test_a_cancelled_paid_call_that_reached_the_provider_is_charged_its_usage(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    """The client cancels while the provider works on the answer: the provider bills it,
    so the answer is still read (for up to LAVA_STREAM_DRAIN_S) and its usage charged."""
    fund(runtime, new_wallet.wallet_id, "1.00")
    fake.hold_answers = True
    resolved = threading.Event()
    # Once the server has noticed the cancel and reads on, the provider finishes the answer.
    runtime.metering.draining_listeners.append(lambda _request_id: fake.answer_gate.set())
    runtime.metering.resolved_listeners.append(lambda _request_id: resolved.set())
    async with connect(runtime, new_wallet) as client, anyio.create_task_group() as tasks:

        async def paid_call() -> None:
            await client.call_tool(
                "call_paid_service", {"service": "cheapchat", "model": "cheap-1", "input": HELLO}
            )

        tasks.start_soon(paid_call)
        assert await asyncio.to_thread(fake.answer_waiting.wait, 15)
        tasks.cancel_scope.cancel()  # the client abandons the call (notifications/cancelled)
    assert await asyncio.to_thread(resolved.wait, 15)
    with runtime.db.read() as session:
        [record] = session.exec(select(RequestRecord)).all()
    assert (record.status, record.charge_basis, record.cost_micros) == ("completed", "usage", 15)
    assert ledger_state(runtime.db, new_wallet.wallet_id).balance_micros == 1_000_000 - 15
    assert verify.verify(runtime.db) == []


async def test_a_cancelled_paid_call_whose_answer_never_comes_is_charged_its_hold(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    fake.hold_answers = True
    runtime.metering.stream_drain_s = 0
    resolved = threading.Event()
    runtime.metering.resolved_listeners.append(lambda _request_id: resolved.set())
    async with connect(runtime, new_wallet) as client, anyio.create_task_group() as tasks:

        async def paid_call() -> None:
            await client.call_tool(
                "call_paid_service", {"service": "cheapchat", "model": "cheap-1", "input": HELLO}
            )

        tasks.start_soon(paid_call)
        assert await asyncio.to_thread(fake.answer_waiting.wait, 15)
        tasks.cancel_scope.cancel()
    assert await asyncio.to_thread(resolved.wait, 15)
    fake.answer_gate.set()
    with runtime.db.read() as session:
        [record] = session.exec(select(RequestRecord)).all()
    assert (record.status, record.charge_basis) == ("completed", "hold")
    assert record.cost_micros == record.hold_micros > 0
    assert verify.verify(runtime.db) == []
