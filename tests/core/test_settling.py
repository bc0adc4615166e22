"""Settling never loses a charge: a settle the database refuses for a while is retried
until it commits; the expired-hold sweep and settles never deadlock; an expired hold
settled late never takes a key past its limit; a key's counters stay in the cycle a call
was held in, and a failed call gives its request back."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import update
from sqlmodel import select

from lava_mcp.config import Settings
from lava_mcp.core import holds, spend_keys, verify, wallet
from lava_mcp.core.metering import Metering
from lava_mcp.errors import InsufficientBalance, RateLimited, UpstreamError
from lava_mcp.providers import shapes
from lava_mcp.runtime import Runtime
from lava_mcp.store.db import Database
from lava_mcp.store.models import Hold, RequestRecord, SpendKey, utc_now
from tests.conftest import fund, ledger_state
from tests.fake_provider import FakeProvider

HELLO = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}


async def open_call(runtime: Runtime, wallet_id: str, key: SpendKey | None = None, **options: Any):
    return await runtime.metering.open(
        wallet_id=wallet_id,
        service_id="cheapchat",
        model="cheap-1",
        body=HELLO,
        endpoint="test",
        spend_key=key,
        **options,
    )


def key_row(runtime: Runtime, key_id: str) -> SpendKey:
    with runtime.db.read() as session:
        found = session.get(SpendKey, key_id)
    assert found is not None
    return found


class Retries(logging.Handler):
    """Sets an event when metering logs that it is retrying a settle."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.seen.set()


@pytest.mark.sqlite_only  # holds SQLite's write lock past its busy timeout
async def test_a_settle_the_database_refuses_is_retried_until_it_commits(
    settings: Settings, fake: FakeProvider, tmp_path
) -> None:
    """Another connection holds SQLite's write lock longer than the busy timeout: the
    settle fails, is retried, and commits once the lock is gone. The call is charged."""
    runtime = Runtime.build(settings)
    runtime.db = runtime.metering.db = Database(settings.database_url, busy_timeout_s=0.05)
    runtime.db.upgrade()
    created = wallet.create_wallet(runtime.db, name="busy")
    fund(runtime, created.wallet_id, "1.00")
    ticket = await open_call(runtime, created.wallet_id)
    runtime.metering.settle_retry_first_s = runtime.metering.settle_retry_longest_s = 0.01
    retries = Retries()
    logging.getLogger("lava_mcp.metering").addHandler(retries)
    blocker = sqlite3.connect(str(tmp_path / "lava.db"), isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        settling = asyncio.ensure_future(runtime.metering.settle(ticket, shapes.Usage(3, 6)))
        await asyncio.wait_for(retries.seen.wait(), 30)
        assert not settling.done()
        blocker.execute("COMMIT")
        settlement = await asyncio.wait_for(settling, 30)
    finally:
        logging.getLogger("lava_mcp.metering").removeHandler(retries)
        blocker.close()
    assert settlement.cost.total_micros == 15
    state = ledger_state(runtime.db, created.wallet_id)
    assert (state.balance_micros, state.held_micros, state.pending_holds) == (1_000_000 - 15, 0, 0)
    assert verify.verify(runtime.db) == []
    await runtime.aclose()


async def test_a_retried_settle_whose_first_commit_went_through_charges_once(
    runtime: Runtime, new_wallet
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    ticket = await open_call(runtime, new_wallet.wallet_id)
    await runtime.metering.settle(ticket, shapes.Usage(3, 6))
    await runtime.metering.settle(ticket, shapes.Usage(3, 6))  # the retry of a commit whose answer was lost
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros, state.entries) == (1_000_000 - 15, 0, 2)
    assert verify.verify(runtime.db) == []


def test_the_sweep_and_settles_on_postgresql_never_deadlock(
    postgres_url: str, settings: Settings, fake: FakeProvider
) -> None:
    """Many keys on one wallet, each with an expired hold (the sweep's) and a live one (a
    settle's). The sweep used to lock the wallet, then the next hold's key, while a
    settle locked that key, then the wallet."""
    db = Database(postgres_url)
    db.upgrade()
    created = wallet.create_wallet(db, name="sweep")
    wallet.adjust(db, created.wallet_id, "100.00", reason="test funding")
    rounds, keys_per_round = 3, 12
    failures: list[BaseException] = []
    for round_number in range(rounds):
        keys = [spend_keys.create(db, created.wallet_id, {}).key for _ in range(keys_per_round)]
        live: list[str] = []
        with db.write() as session:
            for index, key in enumerate(keys):
                holds.reserve(
                    session,
                    wallet_id=created.wallet_id,
                    amount_micros=1000,
                    request_id=f"req_expired_{round_number}_{index}",
                    ttl_s=0,
                    spend_key_id=key.id,
                )
                live.append(
                    holds.reserve(
                        session,
                        wallet_id=created.wallet_id,
                        amount_micros=1000,
                        request_id=f"req_live_{round_number}_{index}",
                        ttl_s=600,
                        spend_key_id=key.id,
                    ).id
                )
                # What `spend_keys.reserve` holds on the key for the two.
                session.execute(update(SpendKey).where(SpendKey.id == key.id).values(held_micros=2000))  # type: ignore[arg-type]
        metering = Metering(db, None, None)  # type: ignore[arg-type]
        start = threading.Barrier(len(live) + 1)

        def settle(hold_id: str, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                with db.write() as session:
                    holds.post(session, hold_id, 500)
            except BaseException as error:  # a deadlock surfaces here
                failures.append(error)

        def sweep(start: threading.Barrier = start, metering: Metering = metering) -> None:
            start.wait()
            try:
                metering.expire_holds()
            except BaseException as error:
                failures.append(error)

        threads = [threading.Thread(target=settle, args=(hold_id,)) for hold_id in live]
        threads.append(threading.Thread(target=sweep))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert failures == []
    with db.read() as session:
        statuses = [hold.status for hold in session.exec(select(Hold)).all()]
    assert (
        sorted(set(statuses)) == ["expired", "posted"] and statuses.count("posted") == rounds * keys_per_round
    )
    assert verify.verify(db) == []
    db.dispose()


async def test_an_expired_hold_settled_late_never_takes_its_key_past_the_limit(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    key = spend_keys.create(
        runtime.db, new_wallet.wallet_id, {"spend_limit": {"amount": "0.01", "cycle": "daily"}}
    ).key
    first = await open_call(runtime, new_wallet.wallet_id, key)
    with runtime.db.write() as session:  # the first call's hold expires while it runs
        session.execute(
            update(Hold).where(Hold.id == first.hold_id).values(expires_at=utc_now() - timedelta(seconds=1))  # type: ignore[arg-type]
        )
    assert runtime.metering.expire_holds() == 1
    # Meanwhile other calls on the key spend all but 100 micro-dollars of its limit.
    with runtime.db.write() as session:
        session.execute(
            update(SpendKey).where(SpendKey.id == key.id).values(cycle_spend_micros=10_000 - 100)  # type: ignore[arg-type]
        )
    settlement = await runtime.metering.settle(first, shapes.Usage(3, 6 + 100))  # costs 215
    assert settlement.cost.total_micros == 215  # what it cost, as recorded on the request ...
    row = key_row(runtime, key.id)
    assert row.cycle_spend_micros == 10_000  # ... but the key's limit is never passed
    with runtime.db.read() as session:
        hold = session.get(Hold, first.hold_id)
    assert hold is not None and hold.settled_micros == 100
    assert ledger_state(runtime.db, new_wallet.wallet_id).balance_micros == 1_000_000 - 100
    assert verify.verify(runtime.db) == []


async def test_a_call_held_before_midnight_counts_in_the_day_it_was_held(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    key = spend_keys.create(
        runtime.db, new_wallet.wallet_id, {"spend_limit": {"amount": "1.00", "cycle": "daily"}}
    ).key
    yesterday_call = await open_call(runtime, new_wallet.wallet_id, key)
    # Midnight passes while it runs: its hold and the key's cycle are from yesterday.
    row = key_row(runtime, key.id)
    assert row.cycle_started_at is not None
    yesterday = row.cycle_started_at - timedelta(days=1)
    with runtime.db.write() as session:
        session.execute(update(SpendKey).where(SpendKey.id == key.id).values(cycle_started_at=yesterday))  # type: ignore[arg-type]
        session.execute(
            update(Hold)
            .where(Hold.id == yesterday_call.hold_id)  # type: ignore[arg-type]
            .values(created_at=row.cycle_started_at - timedelta(seconds=1))
        )
    today_call = await open_call(runtime, new_wallet.wallet_id, key)  # today's cycle starts at zero
    await runtime.metering.settle(yesterday_call, shapes.Usage(3, 6))  # 15 micro-dollars
    await runtime.metering.settle(today_call, shapes.Usage(3, 16))  # 35
    row = key_row(runtime, key.id)
    assert (row.cycle_spend_micros, row.total_spend_micros, row.held_micros) == (35, 50, 0)
    assert spend_keys.figures(row).current_spend_micros == 35


async def test_a_call_in_flight_when_its_key_moves_to_a_shorter_cycle_counts_in_the_new_one(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    """A call held under a `total` limit settles after the key moved to `daily`: it was held
    today, so its cost counts in today's cycle (or the daily limit could be passed)."""
    fund(runtime, new_wallet.wallet_id, "10.00")
    key = spend_keys.create(
        runtime.db, new_wallet.wallet_id, {"spend_limit": {"amount": "5.00", "cycle": "total"}}
    ).key
    in_flight = await open_call(runtime, new_wallet.wallet_id, key)
    spend_keys.update_key(runtime.db, new_wallet.wallet_id, key.id, {"spend_limit": {"cycle": "daily"}})
    await runtime.metering.settle(in_flight, shapes.Usage(3, 6))  # 15 micro-dollars
    row = key_row(runtime, key.id)
    assert (row.cycle_spend_micros, row.total_spend_micros, row.held_micros) == (15, 15, 0)


def test_a_reserve_that_commits_after_midnight_with_an_earlier_clock_keeps_the_new_day(
    runtime: Runtime, new_wallet
) -> None:
    """Two reserves around midnight commit in the opposite order of the times they read:
    the key's cycle start stays on the new day, and the new day's spend is not reset."""
    from lava_mcp.core.cycles import cycle_start

    fund(runtime, new_wallet.wallet_id, "10.00")
    key_id = spend_keys.create(
        runtime.db, new_wallet.wallet_id, {"spend_limit": {"amount": "1.00", "cycle": "daily"}}
    ).key.id
    today = cycle_start("daily", utc_now())
    before_midnight, after_midnight = today - timedelta(microseconds=1), today + timedelta(seconds=1)

    def held(now: Any, amount_micros: int, request_id: str) -> str:
        with runtime.db.write() as session:
            key = session.get(SpendKey, key_id)
            assert key is not None
            spend_keys.reserve(session, key, hold_micros=amount_micros, now=now)
            return holds.reserve(
                session,
                wallet_id=new_wallet.wallet_id,
                amount_micros=amount_micros,
                request_id=request_id,
                ttl_s=600,
                spend_key_id=key_id,
            ).id

    new_day = held(after_midnight, 500_000, "req_new_day")
    held(before_midnight, 10, "req_late_clock")  # read its clock before midnight, committed after
    assert key_row(runtime, key_id).cycle_started_at == today
    with runtime.db.write() as session:
        holds.post(session, new_day, 500_000)
    held(after_midnight, 10, "req_next")
    assert key_row(runtime, key_id).cycle_spend_micros == 500_000


async def test_an_upstream_failure_gives_its_request_back(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    key = spend_keys.create(
        runtime.db, new_wallet.wallet_id, {"request_limit": {"count": 1, "cycle": "daily"}}
    ).key
    fake.fail_status = 500
    with pytest.raises(UpstreamError):
        await runtime.metering.call(
            wallet_id=new_wallet.wallet_id, service_id="cheapchat", model="cheap-1", body=HELLO, spend_key=key
        )
    assert key_row(runtime, key.id).cycle_requests == 0
    fake.fail_status = None
    await runtime.metering.call(
        wallet_id=new_wallet.wallet_id, service_id="cheapchat", model="cheap-1", body=HELLO, spend_key=key
    )
    with pytest.raises(RateLimited):  # the one request of the cycle is used now
        await runtime.metering.call(
            wallet_id=new_wallet.wallet_id, service_id="cheapchat", model="cheap-1", body=HELLO, spend_key=key
        )
    with runtime.db.read() as session:
        errors = [record.error_code for record in session.exec(select(RequestRecord)).all()]
    assert sorted(errors, key=str) == [429, 502, None]


def test_a_hold_outlives_connecting_reading_and_draining() -> None:
    with pytest.raises(ValidationError, match="LAVA_STREAM_DRAIN_S"):
        # 130 s outlives the 120 s read timeout, but not 10 s to connect + 120 s + 5 s drain.
        Settings(LAVA_HOLD_TTL_S=130, LAVA_UPSTREAM_TIMEOUT_S=120, _env_file=None)  # type: ignore[call-arg]
    assert Settings(LAVA_HOLD_TTL_S=136, LAVA_UPSTREAM_TIMEOUT_S=120, _env_file=None).hold_ttl_s == 136  # type: ignore[call-arg]


async def test_a_non_streaming_call_keeps_its_hold_alive_while_it_waits(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    """A hold must never expire under a running call: a JSON call pushes its expiry
    forward while the provider works, as a stream does."""
    fund(runtime, new_wallet.wallet_id, "1.00")
    runtime.metering.hold_ttl_s = 3  # extended every second
    fake.hold_answers = True
    calling = asyncio.ensure_future(
        runtime.metering.call(
            wallet_id=new_wallet.wallet_id, service_id="cheapchat", model="cheap-1", body=HELLO
        )
    )
    assert await asyncio.to_thread(fake.answer_waiting.wait, 15)
    with runtime.db.read() as session:
        first_expiry = session.exec(select(Hold.expires_at)).one()
    extended = False
    for _ in range(300):  # waits on the condition; the keep-alive runs every second
        with runtime.db.read() as session:
            extended = session.exec(select(Hold.expires_at)).one() > first_expiry
        if extended:
            break
        await asyncio.sleep(0.05)
    fake.answer_gate.set()
    await calling
    assert extended
    assert verify.verify(runtime.db) == []


async def test_a_settle_whose_postgresql_connection_is_killed_is_retried_and_charges_once(
    postgres_url: str, settings: Settings, fake: FakeProvider
) -> None:
    """The settle waits on a row lock another connection holds; the server then kills the
    settling connection (pg_terminate_backend, as a restart or a proxy would). The settle
    is retried on a new connection, commits once the lock is gone, and charges once."""
    from sqlalchemy import create_engine, text

    runtime = Runtime.build(settings.model_copy(update={"database_url": postgres_url}))
    runtime.db.upgrade()
    created = wallet.create_wallet(runtime.db, name="killed")
    fund(runtime, created.wallet_id, "1.00")
    ticket = await open_call(runtime, created.wallet_id)
    runtime.metering.settle_retry_first_s = runtime.metering.settle_retry_longest_s = 0.01
    retries = Retries()
    logging.getLogger("lava_mcp.metering").addHandler(retries)
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    locking = create_engine(postgres_url)
    locker = locking.connect()
    try:
        locker.begin()
        locker.execute(text("SELECT id FROM hold WHERE id = :id FOR UPDATE"), {"id": ticket.hold_id})
        settling = asyncio.ensure_future(runtime.metering.settle(ticket, shapes.Usage(3, 6)))
        with admin.connect() as watcher:
            waiting: list[int] = []
            for _ in range(3000):  # until the settle is seen waiting on the lock
                waiting = [
                    row[0]
                    for row in watcher.execute(
                        text(
                            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                            " AND query LIKE '%FROM hold WHERE id%' AND pid <> pg_backend_pid()"
                        )
                    )
                ]
                if waiting:
                    break
                await asyncio.sleep(0.01)
            assert len(waiting) == 1, waiting
            watcher.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": waiting[0]})
        await asyncio.wait_for(retries.seen.wait(), 30)
        locker.rollback()
        settlement = await asyncio.wait_for(settling, 30)
    finally:
        logging.getLogger("lava_mcp.metering").removeHandler(retries)
        locker.close()
        locking.dispose()
        admin.dispose()
    assert settlement.cost.total_micros == 15
    state = ledger_state(runtime.db, created.wallet_id)
    assert (state.balance_micros, state.held_micros, state.pending_holds) == (1_000_000 - 15, 0, 0)
    assert verify.verify(runtime.db) == []
    await runtime.aclose()


def test_late_settles_racing_new_holds_on_postgresql_never_overdraw(postgres_url: str) -> None:
    """Expired holds whose calls settle late while other calls take new holds on the same
    wallet: each late charge is judged under the wallet's lock, so it never takes more than
    is available and the wallet never holds more than it has."""
    from concurrent.futures import ThreadPoolExecutor

    db = Database(postgres_url)
    db.upgrade()
    created = wallet.create_wallet(db, name="late")
    wallet.adjust(db, created.wallet_id, "1.00", reason="test funding")
    calls = 24
    expired: list[str] = []
    with db.write() as session:
        for index in range(calls):
            expired.append(
                holds.reserve(
                    session,
                    wallet_id=created.wallet_id,
                    amount_micros=40_000,
                    request_id=f"req_late_{index}",
                    ttl_s=0,
                ).id
            )
    for hold_id in expired:
        with db.write() as session:
            assert holds.expire_one(session, hold_id, utc_now() + timedelta(seconds=1))

    def late_settle(hold_id: str) -> None:
        with db.write() as session:
            holds.post(session, hold_id, 40_000)

    def new_hold(index: int) -> None:
        try:
            with db.write() as session:
                holds.reserve(
                    session,
                    wallet_id=created.wallet_id,
                    amount_micros=50_000,
                    request_id=f"req_new_{index}",
                    ttl_s=600,
                )
        except InsufficientBalance:
            pass

    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(late_settle, hold_id) for hold_id in expired]
        futures += [pool.submit(new_hold, index) for index in range(calls)]
        for future in futures:
            future.result()  # a late settle that overdrew would raise here
    state = ledger_state(db, created.wallet_id)
    assert 0 <= state.held_micros <= state.balance_micros, state
    assert verify.verify(db) == []
    db.dispose()


async def test_a_settle_postgresql_picks_as_a_deadlock_victim_is_retried_and_charges_once(
    postgres_url: str, settings: Settings, fake: FakeProvider
) -> None:
    """Another transaction locks the call's key, then waits for its hold, while the settle
    holds the hold and waits for the key: PostgreSQL aborts the settle (the first to wait)
    as the deadlock's victim, inside a hot-path statement that raises the driver's own
    error. The settle is retried once the other transaction is gone, and charges once."""
    from sqlalchemy import create_engine, text

    runtime = Runtime.build(settings.model_copy(update={"database_url": postgres_url}))
    runtime.db.upgrade()
    created = wallet.create_wallet(runtime.db, name="victim")
    fund(runtime, created.wallet_id, "1.00")
    key = spend_keys.create(runtime.db, created.wallet_id, {}).key
    ticket = await open_call(runtime, created.wallet_id, key)
    runtime.metering.settle_retry_first_s = runtime.metering.settle_retry_longest_s = 0.01
    retries = Retries()
    logging.getLogger("lava_mcp.metering").addHandler(retries)
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    locking = create_engine(postgres_url)
    other = locking.connect()

    def waiting_on_locks() -> int:
        with admin.connect() as watcher:
            return int(
                watcher.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            )

    try:
        other.begin()
        other.execute(text("SELECT id FROM spend_key WHERE id = :id FOR UPDATE"), {"id": key.id})
        settling = asyncio.ensure_future(runtime.metering.settle(ticket, shapes.Usage(3, 6)))
        for _ in range(3000):  # until the settle holds the hold and waits for the key
            if waiting_on_locks() == 1:
                break
            await asyncio.sleep(0.01)
        closing = asyncio.get_running_loop().run_in_executor(
            None,
            lambda: other.execute(
                text("SELECT id FROM hold WHERE id = :id FOR UPDATE"), {"id": ticket.hold_id}
            ),
        )
        await asyncio.wait_for(retries.seen.wait(), 30)
        await asyncio.wait_for(closing, 30)  # the victim's hold lock is gone: ours now
        other.rollback()
        settlement = await asyncio.wait_for(settling, 30)
    finally:
        logging.getLogger("lava_mcp.metering").removeHandler(retries)
        other.close()
        locking.dispose()
        admin.dispose()
    assert settlement.cost.total_micros == 15
    state = ledger_state(runtime.db, created.wallet_id)
    assert (state.balance_micros, state.held_micros, state.pending_holds) == (1_000_000 - 15, 0, 0)
    assert key_row(runtime, key.id).total_spend_micros == 15
    assert verify.verify(runtime.db) == []
    await runtime.aclose()


async def test_a_settle_error_that_would_never_pass_is_raised_not_retried_for_ever(
    runtime: Runtime, new_wallet
) -> None:
    """Only "try again" errors are retried: a settling write (here the void of a failed
    call) that fails for good (the request table is gone) raises at once instead of
    hanging its call, shielded from cancellation, for ever."""
    from psycopg.errors import UndefinedTable
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError, ProgrammingError

    fund(runtime, new_wallet.wallet_id, "1.00")
    ticket = await open_call(runtime, new_wallet.wallet_id)
    with runtime.db.write() as session:
        session.execute(text("ALTER TABLE request_record RENAME TO request_record_gone"))
    # the hot path's statements raise the driver's own error (`store.fast`), the ORM's a wrapped one
    gone = (sqlite3.OperationalError, UndefinedTable, OperationalError, ProgrammingError)
    with pytest.raises(gone, match=r'no such table|relation "request_record" does not exist'):
        await asyncio.wait_for(runtime.metering.fail(ticket, UpstreamError("failed upstream")), 30)
