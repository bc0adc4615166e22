"""`get_balance` on a SQLite ledger is read by the event loop itself, and never waits there
(`store.fast.LoopReads`, `funding.balance_and_invited`):

- while another connection holds the write lock mid-write, get_balance answers the last
  commit, read on the loop's own connection: no pooled connection (no worker thread) used;
- when SQLite would make a read wait (another connection holds the file in exclusive
  locking mode), the read goes to a worker thread, and the event loop serves `/healthz`
  meanwhile; once the lock is gone the balance is answered.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx

from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from lava_mcp.transports.app import build_app
from tests.conftest import fund
from tests.mcp.conftest import connect, ok


async def test_get_balance_reads_the_last_commit_on_the_loop_while_another_connection_writes(
    runtime: Runtime, new_wallet: wallet.NewWallet, tmp_path: Path
) -> None:
    fund(runtime, new_wallet.wallet_id, "5.00")
    runtime.db.engine.dispose()  # a fresh pool: any read through it would leave a connection in it
    writer = sqlite3.connect(tmp_path / "lava.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE wallet SET balance_micros = 1 WHERE id = ?", (new_wallet.wallet_id,))
        async with connect(runtime, new_wallet) as client:
            assert ok(await client.call_tool("get_balance", {}))["balance"] == "5.00"
        pool = runtime.db.engine.pool
        assert (pool.checkedin(), pool.checkedout()) == (0, 0)  # type: ignore[attr-defined]
    finally:
        writer.execute("ROLLBACK")
        writer.close()


async def test_get_balance_waits_off_the_loop_when_sqlite_would_make_the_read_wait(
    runtime: Runtime, new_wallet: wallet.NewWallet, tmp_path: Path
) -> None:
    """(Read on the loop with a busy timeout, the call would stall the loop in SQLite's
    busy handler until the lock came free or the timeout ran out.)"""
    fund(runtime, new_wallet.wallet_id, "5.00")
    # Exclusive locking mode can only be had while no other connection has the file open.
    runtime.db.engine.dispose()
    assert runtime.loop_reads is not None
    runtime.loop_reads.close()
    blocker = sqlite3.connect(tmp_path / "lava.db", isolation_level=None)
    blocker.execute("PRAGMA locking_mode=EXCLUSIVE")
    blocker.execute("BEGIN EXCLUSIVE")  # held until the connection closes: no reader gets in
    app = build_app(runtime, migrate=False)
    async with (
        connect(runtime, new_wallet) as client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as web,
    ):
        try:
            asking = asyncio.ensure_future(client.call_tool("get_balance", {}))
            pool = runtime.db.engine.pool
            # Wait for the read to reach a worker thread (its pooled connection, waiting on the lock).
            while pool.checkedout() == 0 and not asking.done():  # type: ignore[attr-defined]
                await asyncio.sleep(0.001)
            assert not asking.done(), asking.result()
            answer = await web.get("/healthz")
            assert answer.status_code == 200 and answer.json()["status"] == "ok"
            assert not asking.done()  # still waiting for the lock, and the loop went on
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        assert ok(await asking)["balance"] == "5.00"
        # With the lock gone, the loop reads it itself again.
        assert ok(await client.call_tool("get_balance", {}))["balance"] == "5.00"
