"""Group commit on SQLite (`store.writer`): concurrent holds, settles and voids share one
transaction per commit, each job in a savepoint of its own.

- a refused hold in a batch commits the others and refuses exactly that one (and a key's
  share taken before its wallet refused is given back);
- a job whose statement fails is rolled back alone; one whose failure aborts the whole
  transaction is answered with its error while the rest of its batch commits;
- a process SIGKILLed while batches run leaves no half-written batch;
- hundreds of concurrent callers end with the ledger's invariants;
- the event loop keeps serving (`/healthz`) while another connection holds the write lock;
- a caller cancelled while its hold commits has the hold voided at once;
- at `synchronous=FULL` the writer syncs the WAL itself, and the pool's connections stay at FULL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from lava_mcp.config import Settings
from lava_mcp.core import holds, ledger, spend_keys, verify, wallet
from lava_mcp.core.metering import Metering, Ticket
from lava_mcp.errors import Forbidden, InsufficientBalance, LavaError, RateLimited, UpstreamError
from lava_mcp.providers import shapes
from lava_mcp.runtime import Runtime
from lava_mcp.store.db import Database
from lava_mcp.store.models import Hold, LedgerEntry, RequestRecord, SpendKey, utc_now
from lava_mcp.store.writer import Writer
from lava_mcp.transports.app import build_app
from tests.conftest import fund, ledger_state

HELLO = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}
USAGE = shapes.Usage(3, 6)  # cheap-1: 3 × $1 + 6 × $2 per million tokens = 15 micro-dollars
COST_MICROS = 15


def open_call(metering: Metering, wallet_id: str, key: SpendKey | None = None) -> Any:
    return metering.open(
        wallet_id=wallet_id,
        service_id="cheapchat",
        model="cheap-1",
        body=HELLO,
        endpoint="test",
        spend_key=key,
    )


def funded_runtime(settings: Settings, synchronous: str, name: str) -> tuple[Runtime, str]:
    """A migrated runtime at `synchronous` with a wallet holding $1.00 (its id)."""
    runtime = Runtime.build(settings.model_copy(update={"sqlite_synchronous": synchronous}))
    runtime.db.upgrade()
    created = wallet.create_wallet(runtime.db, name=name)
    fund(runtime, created.wallet_id, "1.00")
    return runtime, created.wallet_id


def writer_of(runtime: Runtime) -> Writer:
    assert runtime.db.writer is not None
    return runtime.db.writer


class HeldWriter:
    """Keeps the writer thread busy in a job of its own until released, so that the jobs
    submitted meanwhile queue up and are committed together in the next batch."""

    def __init__(self, db: Database) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.job = db.submit(self._hold)

    def _hold(self, session: Session) -> None:
        self.started.set()
        assert self.release.wait(30), "the test never released the writer"

    async def __aenter__(self) -> HeldWriter:
        assert await asyncio.to_thread(self.started.wait, 30)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release.set()
        await self.job


async def queued(writer: Writer, count: int) -> None:
    """Let the submitting tasks run until `count` jobs wait for the writer."""
    for _ in range(1000):
        if writer.queued() == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{writer.queued()} jobs queued, expected {count}")


def dollars(micros: int) -> str:
    """Whole cents as the API's dollar text."""
    assert micros % 10_000 == 0, micros
    return f"{micros // 1_000_000}.{micros % 1_000_000 // 10_000:02d}"


def key_row(db: Database, key_id: str) -> SpendKey:
    with db.read() as session:
        found = session.get(SpendKey, key_id)
    assert found is not None
    return found


@pytest.mark.sqlite_only  # SQLite's writer thread batches the jobs
async def test_a_refused_hold_in_a_batch_commits_the_others_and_refuses_exactly_that_one(
    runtime: Runtime, new_wallet: wallet.NewWallet
) -> None:
    db, metering, writer = runtime.db, runtime.metering, writer_of(runtime)
    funded = new_wallet.wallet_id
    fund(runtime, funded, "1.00")
    empty = wallet.create_wallet(db, name="empty").wallet_id
    on_empty = spend_keys.create(db, empty, {}).key  # its share is taken, then the wallet refuses
    unlimited = spend_keys.create(db, funded, {}).key
    used_up = spend_keys.create(db, funded, {"request_limit": {"count": 1, "cycle": "total"}}).key
    ticket = await open_call(metering, funded, used_up)
    await metering.settle(ticket, USAGE)
    judged = spend_keys.create(db, funded, {}).key  # judged active, then paused (a new version)
    spend_keys.update_key(db, funded, judged.id, {"status": "paused"})
    used_up = key_row(db, used_up.id)
    commits, committed_jobs = writer.commits, writer.committed_jobs

    async with HeldWriter(db) as held:
        calls = [
            asyncio.ensure_future(open_call(metering, funded)),
            asyncio.ensure_future(open_call(metering, empty, on_empty)),
            asyncio.ensure_future(open_call(metering, funded, unlimited)),
            asyncio.ensure_future(open_call(metering, funded, used_up)),
            asyncio.ensure_future(open_call(metering, funded, judged)),
            asyncio.ensure_future(open_call(metering, funded)),
        ]
        await queued(writer, len(calls))
        held.release.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)

    assert (writer.commits, writer.committed_jobs) == (commits + 2, committed_jobs + 1 + len(calls))
    taken = [outcome for outcome in outcomes if isinstance(outcome, Ticket)]
    assert [type(outcome) for outcome in outcomes] == [
        Ticket,
        InsufficientBalance,
        Ticket,
        RateLimited,
        Forbidden,
        Ticket,
    ]
    state = ledger_state(db, funded)
    assert state.held_micros == sum(ticket.hold_micros for ticket in taken) > 0
    assert state.pending_holds == 3
    refused_on_empty = ledger_state(db, empty)
    assert (refused_on_empty.held_micros, refused_on_empty.holds, refused_on_empty.requests) == (0, 0, 1)
    # The key whose wallet refused has its share back: nothing held, no request counted.
    back = key_row(db, on_empty.id)
    assert (back.held_micros, back.cycle_requests, back.total_requests) == (0, 0, 0)
    assert key_row(db, used_up.id).total_requests == 1
    with db.read() as session:
        records = {
            record.id: record
            for record in session.exec(select(RequestRecord).where(RequestRecord.endpoint == "test")).all()
        }
    assert sorted((r.status, r.ran, r.error_code) for r in records.values()) == [
        ("completed", True, None),  # the used-up key's first call
        ("error", False, 402),
        ("error", False, 403),
        ("error", False, 429),
        ("pending", True, None),
        ("pending", True, None),
        ("pending", True, None),
    ]
    for ticket in taken:
        await metering.settle(ticket, USAGE)
    assert ledger_state(db, funded).held_micros == 0
    assert verify.verify(db) == []


def _raise_the_balance_then_fail(session: Session, wallet_id: str, hold_id: str) -> None:
    """A job that writes, then runs a statement that fails (a duplicate hold id)."""
    from lava_mcp.store import fast

    fast.run(
        session,
        fast.Statement("UPDATE wallet SET balance_micros = balance_micros + 1 WHERE id = :id"),
        {"id": wallet_id},
    )
    fast.run(
        session,
        fast.Statement(
            "INSERT INTO hold (id, wallet_id, request_id, amount_micros, settled_micros, status, expires_at,"
            " created_at) VALUES (:id, :wallet_id, 'req_dup', 0, 0, 'pending', :now, :now)"
        ),
        {"id": hold_id, "wallet_id": wallet_id, "now": utc_now()},
    )


def _add_a_duplicate_record(session: Session, request_id: str, wallet_id: str) -> None:
    """A job whose ORM flush fails: SQLAlchemy then rolls back the whole transaction."""
    session.add(RequestRecord(id=request_id, wallet_id=wallet_id, service="cheapchat"))


@pytest.mark.sqlite_only  # SQLite's writer thread batches the jobs
async def test_a_failing_job_is_rolled_back_alone_and_its_batch_commits(
    runtime: Runtime, new_wallet: wallet.NewWallet
) -> None:
    db, metering, writer = runtime.db, runtime.metering, writer_of(runtime)
    fund(runtime, new_wallet.wallet_id, "1.00")
    first = await open_call(metering, new_wallet.wallet_id)
    async with HeldWriter(db) as held:
        jobs: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(open_call(metering, new_wallet.wallet_id)),
            db.submit(_raise_the_balance_then_fail, new_wallet.wallet_id, first.hold_id),
            asyncio.ensure_future(open_call(metering, new_wallet.wallet_id)),
            db.submit(_add_a_duplicate_record, first.request_id, new_wallet.wallet_id),
            asyncio.ensure_future(metering.settle(first, USAGE)),
        ]
        await queued(writer, len(jobs))
        held.release.set()
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    assert isinstance(outcomes[0], Ticket) and isinstance(outcomes[2], Ticket)
    assert isinstance(outcomes[1], sqlite3.IntegrityError)  # a statement failed: its savepoint rolled back
    assert "UNIQUE" in str(outcomes[3]) or "IntegrityError" in type(outcomes[3]).__name__  # the flush
    assert outcomes[4].cost.total_micros == COST_MICROS
    state = ledger_state(db, new_wallet.wallet_id)
    assert state.balance_micros == 1_000_000 - COST_MICROS  # the failed job's +1 is gone
    assert state.held_micros == outcomes[0].hold_micros + outcomes[2].hold_micros
    assert verify.verify(db) == []


CHILD = """
import asyncio, sys
from decimal import Decimal
from lava_mcp.core import spend_keys
from lava_mcp.core.metering import Metering
from lava_mcp.errors import UpstreamError
from lava_mcp.providers import shapes
from lava_mcp.providers.catalog import Catalog, ModelPrice, Service
from lava_mcp.providers.upstream import Upstream
from lava_mcp.store.db import Database

SERVICE = Service(id="chat", shape="openai", pricing="per_token", base_url="http://127.0.0.1:9",
                  model_prefixes=("c-",), models={"c-1": ModelPrice(Decimal("1.00"), Decimal("2.00"))})
BODY = {"model": "c-1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}

async def main(url, wallet_id, secret):
    db = Database(url)  # synchronous=FULL
    key = spend_keys.authenticate(db, secret)
    metering = Metering(db, Catalog({"chat": SERVICE}), Upstream(5.0))
    done = 0
    async def caller(number):
        nonlocal done
        while True:
            ticket = await metering.open(wallet_id=wallet_id, service_id="chat", model=None, body=BODY,
                                         endpoint="crash", spend_key=key if number % 2 else None)
            if number % 4 == 3:
                await metering.fail(ticket, UpstreamError("upstream failed"))
            else:
                await metering.settle(ticket, shapes.Usage(3, 6))
            done += 1
            if done == 300:
                print("running", flush=True)
    await asyncio.gather(*(caller(number) for number in range(48)))

asyncio.run(main(*sys.argv[1:]))
"""


def test_a_process_killed_while_batches_commit_leaves_no_half_written_batch(tmp_path: Path) -> None:
    """SIGKILL a process with 48 callers holding, settling and voiding against a file
    database, three times. Every call is whole: its hold, request record, charge and key
    counters all written or none; `ledger verify` passes; expiring what was in flight
    gives every held dollar back."""
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    db = Database(url)
    db.upgrade()
    created = wallet.create_wallet(db, name="crash")
    wallet.adjust(db, created.wallet_id, "1000.00", reason="test funding")
    secret = spend_keys.create(
        db, created.wallet_id, {"spend_limit": {"amount": "500.00", "cycle": "monthly"}}
    )
    for _ in range(3):
        with subprocess.Popen(
            [sys.executable, "-c", CHILD, url, created.wallet_id, secret.secret],
            stdout=subprocess.PIPE,
            text=True,
        ) as child:
            try:
                assert child.stdout is not None
                assert child.stdout.readline() == "running\n"
            finally:
                os.kill(child.pid, signal.SIGKILL)
        assert child.returncode == -signal.SIGKILL

    assert verify.verify(db) == []
    with db.read() as session:
        records = {r.id: r for r in session.exec(select(RequestRecord)).all()}
        holds_by_request = {h.request_id: h for h in session.exec(select(Hold)).all()}
        charges = {
            e.reference: e for e in session.exec(select(LedgerEntry).where(LedgerEntry.kind == "charge"))
        }
        key = session.get(SpendKey, secret.key.id)
    assert key is not None
    assert len(records) >= 900 and set(records) == set(holds_by_request)
    statuses = {"pending": "pending", "completed": "posted", "error": "voided"}
    for request_id, record in records.items():
        hold = holds_by_request[request_id]
        assert hold.status == statuses[record.status], (record, hold)
        if record.status == "completed":
            assert (
                -charges[request_id].amount_micros == record.cost_micros == hold.settled_micros == COST_MICROS
            )
        else:
            assert request_id not in charges
    keyed = [h for h in holds_by_request.values() if h.spend_key_id == key.id]
    assert key.total_requests == len(keyed)
    assert key.total_spend_micros == COST_MICROS * sum(h.status == "posted" for h in keyed)
    assert key.held_micros == sum(h.amount_micros for h in keyed if h.status == "pending")

    with db.write() as session:
        holds.expire_due(session, utc_now() + timedelta(days=1))
    balance = wallet.get_balance(db, created.wallet_id)
    assert balance.held_micros == 0
    assert balance.balance_micros == 1_000_000_000 - COST_MICROS * len(charges)
    assert key_row(db, key.id).held_micros == 0
    db.dispose()


async def test_hundreds_of_concurrent_callers_end_with_the_ledger_sound(
    runtime: Runtime, new_wallet: wallet.NewWallet
) -> None:
    """400 concurrent calls: 200 on a wallet that covers 120 holds, 200 through a spend key
    whose limit covers about 150 (on a wallet with plenty): exactly that many are admitted,
    the rest refused with 402; every admitted call is then settled or voided, concurrently."""
    db, metering = runtime.db, runtime.metering
    fund(runtime, new_wallet.wallet_id, "10.00")
    probe = await open_call(metering, new_wallet.wallet_id)  # the hold one call takes
    await metering.fail(probe, UpstreamError("probe"))
    hold_micros = probe.hold_micros
    crowd = wallet.create_wallet(db, name="crowd").wallet_id
    with db.write() as session:
        ledger.credit(
            session,
            wallet_id=crowd,
            kind="adjustment",
            amount_micros=120 * hold_micros,
            reference="test funding",
        )
    limit_micros = -(-150 * hold_micros // 10_000) * 10_000  # whole cents, as limits are set
    keyed_admissions = limit_micros // hold_micros
    assert 150 <= keyed_admissions < 200
    key = spend_keys.create(db, new_wallet.wallet_id, {"spend_limit": {"amount": dollars(limit_micros)}}).key
    outcomes = await asyncio.gather(
        *(
            open_call(metering, new_wallet.wallet_id, key) if number % 2 else open_call(metering, crowd)
            for number in range(400)
        ),
        return_exceptions=True,
    )
    admitted = [outcome for outcome in outcomes if isinstance(outcome, Ticket)]
    refused = [outcome for outcome in outcomes if not isinstance(outcome, Ticket)]
    assert all(isinstance(outcome, LavaError) and outcome.code == 402 for outcome in refused), refused[:3]
    assert sum(ticket.wallet_id == crowd for ticket in admitted) == 120
    assert sum(ticket.spend_key_id == key.id for ticket in admitted) == keyed_admissions
    assert ledger_state(db, crowd).held_micros == 120 * hold_micros
    assert key_row(db, key.id).held_micros == keyed_admissions * hold_micros

    async def finish(number: int, ticket: Ticket) -> int:
        if number % 3 == 0:
            await metering.fail(ticket, UpstreamError("upstream failed"))
            return 0
        return (await metering.settle(ticket, USAGE)).cost.total_micros

    costs = await asyncio.gather(*(finish(number, ticket) for number, ticket in enumerate(admitted)))
    charged = {wallet_id: 0 for wallet_id in (crowd, new_wallet.wallet_id)}
    for ticket, cost in zip(admitted, costs, strict=True):
        charged[ticket.wallet_id] += cost
    crowd_state, keyed_state = ledger_state(db, crowd), ledger_state(db, new_wallet.wallet_id)
    assert (crowd_state.held_micros, crowd_state.pending_holds, crowd_state.requests) == (0, 0, 200)
    assert crowd_state.balance_micros == 120 * hold_micros - charged[crowd]
    assert (keyed_state.held_micros, keyed_state.pending_holds, keyed_state.requests) == (0, 0, 201)
    assert keyed_state.balance_micros == 10_000_000 - charged[new_wallet.wallet_id]
    row = key_row(db, key.id)
    spent = charged[new_wallet.wallet_id]
    assert (row.held_micros, row.total_spend_micros, row.cycle_spend_micros) == (0, spent, spent)
    assert verify.verify(db) == []


@pytest.mark.sqlite_only  # holds SQLite's write lock through the file
@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_healthz_answers_while_another_connection_holds_the_write_lock(
    settings: Settings, tmp_path: Path, synchronous: str
) -> None:
    """Another process's connection holds `BEGIN IMMEDIATE`: a metered call waits for the
    lock in the writer thread, and meanwhile the event loop serves `/healthz`. (Run on the
    event loop, the call would stall it in SQLite's busy handler until the lock came free
    or the busy timeout ran out: a lone call tries the lock on the loop, never waiting.)"""
    runtime, wallet_id = funded_runtime(settings, synchronous, "blocked")
    try:
        # A first call opens the writer's session: the next, alone, tries the lock on the loop.
        await runtime.metering.settle(await open_call(runtime.metering, wallet_id), USAGE)
        app = build_app(runtime, migrate=False)
        blocker = sqlite3.connect(tmp_path / "lava.db", isolation_level=None)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as client:
            try:
                blocker.execute("BEGIN IMMEDIATE")
                calling = asyncio.ensure_future(open_call(runtime.metering, wallet_id))
                await asyncio.sleep(0)  # the call runs up to its hold, which waits for the lock
                answer = await client.get("/healthz")
                assert answer.status_code == 200 and answer.json()["status"] == "ok"
                assert not calling.done()  # still waiting for the lock, and the loop went on
            finally:
                blocker.execute("COMMIT")
                blocker.close()
            ticket = await calling
        assert ledger_state(runtime.db, wallet_id).held_micros == ticket.hold_micros
        await runtime.metering.settle(ticket, USAGE)
        assert verify.verify(runtime.db) == []
    finally:
        await runtime.aclose()


@pytest.mark.sqlite_only  # waits in SQLite's writer queue
async def test_a_call_cancelled_while_its_hold_commits_gives_the_hold_back(
    runtime: Runtime, new_wallet: wallet.NewWallet
) -> None:
    """The caller leaves (a cancel) while its hold waits in the writer's queue: the hold
    still commits, and is voided at once rather than left held until it expires."""
    db, writer = runtime.db, writer_of(runtime)
    fund(runtime, new_wallet.wallet_id, "1.00")
    async with HeldWriter(db) as held:
        calling = asyncio.ensure_future(open_call(runtime.metering, new_wallet.wallet_id))
        await queued(writer, 1)
        calling.cancel()
        held.release.set()
        outcome = await asyncio.gather(calling, return_exceptions=True)
    assert isinstance(outcome[0], asyncio.CancelledError)
    state = ledger_state(db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros, state.holds, state.pending_holds) == (1_000_000, 0, 1, 0)
    with db.read() as session:
        record = session.exec(
            select(RequestRecord).where(RequestRecord.wallet_id == new_wallet.wallet_id)
        ).one()
    assert (record.status, record.ran, record.error_code) == ("error", True, 499)
    assert verify.verify(db) == []


@pytest.mark.sqlite_only  # SQLite's WAL fsync
async def test_at_full_the_writer_syncs_the_wal_itself_and_the_pool_stays_at_full(
    tmp_path: Path, settings: Settings
) -> None:
    """At `synchronous=FULL` the writer's connection commits at NORMAL and its sync thread
    fsyncs the WAL before answering; every other connection stays at FULL, the writer's own
    too once it is handed back to the pool (here: after a job whose flush aborted a batch)."""
    runtime, wallet_id = funded_runtime(settings, "FULL", "full")
    db, metering = runtime.db, runtime.metering
    writer = writer_of(runtime)
    tickets = await asyncio.gather(*(open_call(metering, wallet_id) for _ in range(20)))
    await asyncio.gather(*(metering.settle(ticket, USAGE) for ticket in tickets))
    with pytest.raises(Exception, match="UNIQUE"):
        await db.transact(_add_a_duplicate_record, tickets[0].request_id, wallet_id)
    assert writer.committed_jobs >= 40
    state = ledger_state(db, wallet_id)
    assert (state.balance_micros, state.held_micros) == (1_000_000 - 20 * COST_MICROS, 0)
    pool = db.engine.pool
    idle = [db.engine.connect() for _ in range(pool.checkedin())]  # type: ignore[attr-defined]
    try:
        assert idle and all(
            connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2 for connection in idle
        )  # 2: FULL
    finally:
        for connection in idle:
            connection.close()
    assert verify.verify(db) == []
    await runtime.aclose()


class GatedFsync:
    """Holds the sync thread inside its fsync until released (`store.writer._fsync`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from lava_mcp.store import writer as writer_module

        self.entered = threading.Event()
        self.release = threading.Event()
        real = writer_module._fsync

        def gated(wal: Path) -> None:
            self.entered.set()
            self.release.wait(60)
            real(wal)

        monkeypatch.setattr(writer_module, "_fsync", gated)


@pytest.mark.sqlite_only  # SQLite's WAL fsync
async def test_at_full_a_hold_is_answered_at_commit_and_a_settle_once_the_wal_is_on_disk(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hold is committed before the upstream call but its caller does not wait for the
    fsync (`Database.submit(durable=False)`): the WAL is one append-only file, so the fsync
    its settle waits for makes it durable too. A settle is answered only once on disk."""
    runtime, wallet_id = funded_runtime(settings, "FULL", "gated")
    db, metering = runtime.db, runtime.metering
    gate = GatedFsync(monkeypatch)
    # Any fsync would stick in the gate: the hold is answered without waiting for one.
    opening = asyncio.ensure_future(open_call(metering, wallet_id))
    await asyncio.wait({opening}, timeout=30)
    if not opening.done():
        gate.release.set()
        await opening
        raise AssertionError("the hold waited for the fsync")
    ticket = opening.result()
    with db.read() as session:  # committed: every other connection sees it
        hold = session.get(Hold, ticket.hold_id)
        assert hold is not None and hold.status == "pending"
    settling = asyncio.ensure_future(metering.settle(ticket, USAGE))
    assert await asyncio.to_thread(gate.entered.wait, 30)
    for _ in range(50):  # the settle commits, then waits for its fsync
        await asyncio.sleep(0.01)
    assert not settling.done()
    with db.read() as session:
        record = session.get(RequestRecord, ticket.request_id)
        assert record is not None and record.status == "completed"  # committed, not yet answered
    gate.release.set()
    settlement = await asyncio.wait_for(settling, 30)
    assert settlement.cost.total_micros == COST_MICROS
    assert verify.verify(db) == []
    await runtime.aclose()


def _commit_mode(session: Session) -> str:
    return str(session.execute(text("SHOW synchronous_commit")).scalar())


async def test_on_postgresql_every_commit_is_durable_even_a_holds(postgres_url: str) -> None:
    """PostgreSQL: `durable=False` changes nothing. An asynchronous commit there is lost when
    the database server alone crashes or restarts while lava-mcp lives on, and a settle of
    the hold it took would find no hold: every commit stays synchronous."""
    db = Database(postgres_url)
    try:
        assert await db.submit(_commit_mode, durable=False) == "on"
        assert await db.submit(_commit_mode) == "on"
    finally:
        db.dispose()


def _fill(session: Session, rows: int) -> None:
    session.execute(text("CREATE TABLE IF NOT EXISTS filler (n INTEGER, payload BLOB)"))
    for _ in range(rows):
        session.execute(text("INSERT INTO filler VALUES (1, randomblob(3000))"))


def _autocheckpoint(session: Session) -> int:
    return int(session.execute(text("PRAGMA wal_autocheckpoint")).scalar())


@pytest.mark.sqlite_only  # SQLite's WAL checkpoints
@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_checkpoints_run_in_their_own_thread_not_in_a_commit(tmp_path: Path, synchronous: str) -> None:
    """The writer's connection never checkpoints inside a COMMIT (its automatic checkpoint
    is off); the checkpoint thread copies the WAL back every CHECKPOINT_COMMITS commits,
    and the connection goes back to the pool with the automatic checkpoint on."""
    from lava_mcp.store import writer as writer_module

    db = Database(f"sqlite:///{tmp_path / 'checkpoints.db'}", sqlite_synchronous=synchronous)
    writer = db.writer
    assert writer is not None
    assert await db.transact(_autocheckpoint) == 0
    commits = 0
    # Commits until the checkpoint thread, beside the writer, has run twice (two wake-ups
    # that come before it runs count once).
    while writer.checkpoints < 2 and commits < writer_module.CHECKPOINT_COMMITS * 40:
        await db.transact(_fill, 2)
        commits += 1
    assert writer.checkpoints >= 2
    assert commits >= writer_module.CHECKPOINT_COMMITS * 2  # none ran before it was due
    db.writer.stop()
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
        assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        rows = connection.exec_driver_sql("SELECT count(*) FROM filler").scalar()
        assert rows == commits * 2
    db.dispose()
    # Everything was copied back: the database file alone holds every row.
    alone = sqlite3.connect(tmp_path / "checkpoints.db")
    assert alone.execute("SELECT count(*) FROM filler").fetchone()[0] == rows
    alone.close()


def _where(session: Session, marker: str) -> str:
    session.execute(text("CREATE TABLE IF NOT EXISTS marks (marker TEXT UNIQUE, thread TEXT)"))
    session.execute(
        text("INSERT INTO marks VALUES (:marker, :thread)"),
        {"marker": marker, "thread": threading.current_thread().name},
    )
    return threading.current_thread().name


def _refuse(session: Session, marker: str) -> None:
    _where(session, marker)
    raise InsufficientBalance()


def _marks(db: Database) -> dict[str, str]:
    with db.read() as session:
        return {
            marker: thread for marker, thread in session.execute(text("SELECT marker, thread FROM marks"))
        }


@pytest.mark.sqlite_only  # SQLite's writer thread
@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_a_lone_job_runs_at_once_on_the_loop_and_concurrent_ones_share_the_writer(
    tmp_path: Path, synchronous: str
) -> None:
    """`now_if_idle`: a job submitted while nothing else is in flight commits at once on
    the calling thread (no hand-off); one submitted beside others, or while the writer is
    busy, waits for the writer's next batch; a job that raises is rolled back alone."""
    db = Database(f"sqlite:///{tmp_path / 'inline.db'}", sqlite_synchronous=synchronous)
    writer = db.writer
    assert writer is not None
    loop_thread = threading.current_thread().name
    # The first job opens the writer's session, which may wait for a pooled connection.
    assert await db.transact(_where, "first", now_if_idle=True) == "lava-sqlite-writer"
    assert await db.transact(_where, "lone", now_if_idle=True) == loop_thread
    assert await db.transact(_where, "queued") == "lava-sqlite-writer"  # not asked to run at once
    async with HeldWriter(db):  # the writer is in a batch: a lone job waits for it too
        busy = db.submit(_where, "busy", now_if_idle=True)
        await queued(writer, 1)
    assert await busy == "lava-sqlite-writer"
    with pytest.raises(InsufficientBalance):
        await db.transact(_refuse, "refused", now_if_idle=True)
    with pytest.raises(Exception, match="UNIQUE"):  # a statement error: this job alone
        await db.transact(_where, "lone", now_if_idle=True)
    assert await db.transact(_where, "after", now_if_idle=True) == loop_thread
    marks = _marks(db)
    assert "refused" not in marks and marks["lone"] == loop_thread and marks["after"] == loop_thread
    assert len(marks) == 1 + 1 + 1 + 1 + 1
    db.dispose()


@pytest.mark.sqlite_only  # SQLite's WAL fsync
async def test_a_job_submitted_while_another_awaits_its_fsync_shares_the_writers_next_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A durable job committed at once is in flight until its fsync: a job submitted
    meanwhile does not run at once beside it but waits for the writer (group commit)."""
    db = Database(f"sqlite:///{tmp_path / 'inflight.db'}", sqlite_synchronous="FULL")
    await db.transact(_where, "opens the writer's session")
    gate = GatedFsync(monkeypatch)
    first = db.submit(_where, "first", now_if_idle=True)
    assert await asyncio.to_thread(gate.entered.wait, 30)
    second = db.submit(_where, "second", now_if_idle=True)
    gate.release.set()
    assert await first == threading.current_thread().name
    assert await second == "lava-sqlite-writer"
    db.dispose()


@pytest.mark.sqlite_only  # holds SQLite's write lock through the file
async def test_a_lone_job_never_waits_on_the_loop_for_another_connections_lock(tmp_path: Path) -> None:
    """Another connection holds SQLite's write lock: a `now_if_idle` job does not wait for it
    on the event loop (the busy timeout is off for that try) but goes to the writer thread,
    which waits; the connection's busy timeout is as configured afterwards."""
    db = Database(f"sqlite:///{tmp_path / 'blocked.db'}", sqlite_synchronous="FULL", busy_timeout_s=20)
    await db.transact(_where, "first", now_if_idle=True)
    blocker = sqlite3.connect(tmp_path / "blocked.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        waiting = db.submit(_where, "blocked", now_if_idle=True)
        assert not waiting.done()  # submit returned at once, the job waits in the writer
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert not waiting.done()
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    assert await waiting == "lava-sqlite-writer"
    assert await db.transact(_busy_timeout, now_if_idle=True) == 20_000
    db.dispose()


def _busy_timeout(session: Session) -> int:
    return int(session.execute(text("PRAGMA busy_timeout")).scalar())


@pytest.mark.sqlite_only  # SQLite's writer thread
async def test_a_call_alone_writes_at_once_and_calls_open_together_share_the_writer(
    runtime: Runtime, new_wallet: wallet.NewWallet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metering asks for a write at once only while its call is the only one open: with
    another call open, its hold and settle go to the writer thread to share a commit."""
    fund(runtime, new_wallet.wallet_id, "1.00")
    metering = runtime.metering
    # The first call's writes open the writer's session (which may wait for a connection).
    await metering.settle(await open_call(metering, new_wallet.wallet_id), USAGE)
    threads: list[str] = []
    open_job, settle_job = metering._open_job, metering._settle_job

    def spied_open(*args: Any) -> Any:
        threads.append("hold " + threading.current_thread().name)
        return open_job(*args)

    def spied_settle(*args: Any) -> Any:
        threads.append("settle " + threading.current_thread().name)
        return settle_job(*args)

    monkeypatch.setattr(metering, "_open_job", spied_open)
    monkeypatch.setattr(metering, "_settle_job", spied_settle)
    here = threading.current_thread().name
    first = await open_call(metering, new_wallet.wallet_id)  # alone
    second = await open_call(metering, new_wallet.wallet_id)  # beside the first
    await metering.settle(first, USAGE)  # beside the second
    await metering.settle(second, USAGE)  # alone again
    assert threads == [
        f"hold {here}",
        "hold lava-sqlite-writer",
        "settle lava-sqlite-writer",
        f"settle {here}",
    ]
    refused = open_call(metering, "wal_missing")
    with pytest.raises(LavaError):
        await refused
    await metering.settle(await open_call(metering, new_wallet.wallet_id), USAGE)  # alone: nothing left open
    assert threads[-2:] == [f"hold {here}", f"settle {here}"]
    assert verify.verify(runtime.db) == []


@pytest.mark.sqlite_only  # SQLite's writer thread
async def test_calls_whose_writes_run_at_once_still_let_the_event_loop_run_between_them(
    runtime: Runtime, new_wallet: wallet.NewWallet
) -> None:
    """A write run at once on the loop is answered at the loop's next turn, so a caller
    looping over calls never starves the loop's other tasks."""
    fund(runtime, new_wallet.wallet_id, "1.00")
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count_turns())
    await asyncio.sleep(0)
    before = turns
    for _ in range(10):
        ticket = await open_call(runtime.metering, new_wallet.wallet_id)
        await runtime.metering.settle(ticket, USAGE)
    counter.cancel()
    assert turns - before >= 20  # at least one turn for each hold and each settle
