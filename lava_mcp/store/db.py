"""Engines, SQLite pragmas, transactions and migrations.

Writes go through `Database.write()`: one transaction that, on SQLite, starts with
`BEGIN IMMEDIATE` (take the write lock up front, so a read-then-write can't fail with
SQLITE_BUSY halfway) and, inside one process, is serialised by a lock so that threads
queue in Python instead of in SQLite's sleeping busy handler. On PostgreSQL every
check-and-debit is one conditional UPDATE, so READ COMMITTED is enough.

Async code never runs SQLite work on the event loop: a write may wait for the write lock
another process holds (`lava-mcp stdio` and `serve` share the default database), and that
wait must not stall every other request. `Database.transact()` hands a write job to the
writer thread, which commits concurrent jobs together (group commit, `store.writer`); on
PostgreSQL each job is its own transaction in a worker thread. `Database.run()` runs any
other blocking work in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlmodel import Session

from lava_mcp.store.writer import Writer, wait_out

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
T = TypeVar("T")


class Database:
    """One ledger database: a write path and a read path over the same URL."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", busy_timeout_s: float = 30.0) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            database = parsed.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": busy_timeout_s},
                pool_size=8,
                max_overflow=8,
            )
            _configure_sqlite(self.engine, sqlite_synchronous, int(busy_timeout_s * 1000))
        else:
            self.engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        self._write_engine = self.engine.execution_options(lava_begin="BEGIN IMMEDIATE")
        self._write_lock: threading.Lock | None = None
        # SQLite's writer thread (group commit); None on PostgreSQL.
        self.writer: Writer | None = None
        if self.is_sqlite:
            self._write_lock = threading.Lock()
            on_file = parsed.database not in (None, "", ":memory:")
            # At FULL the writer fsyncs the WAL itself, off its own path (`store.writer`).
            sync_wal = on_file and sqlite_synchronous.upper() == "FULL"
            self.writer = Writer(self.engine, self._write_lock, sync_wal=sync_wal)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: commits on success, rolls back on any exception."""
        with (
            self._write_lock or nullcontext(),
            Session(self._write_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    def submit(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Start `function(session, *args)` in a write transaction; the future resolves,
        with its result or its exception, once that transaction is over (committed, or for
        an exception rolled back).

        On SQLite the job shares a transaction with the jobs queued beside it, inside a
        SAVEPOINT of its own (`store.writer`: an exception rolls back this job only); on
        PostgreSQL it is a transaction of its own in a worker thread. Either way the job
        must not open another write transaction.
        """
        if self.writer is not None:
            return self.writer.submit(function, args)
        return asyncio.ensure_future(
            anyio.to_thread.run_sync(self._transact_alone, function, *args, abandon_on_cancel=False)
        )

    async def transact(self, function: Callable[..., T], *args: Any) -> T:
        """`submit` and wait for the result. Cancelled meanwhile, it still waits for the
        transaction to end (its work can't be taken back), then raises the cancellation."""
        future = self.submit(function, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):  # (or anyio would cancel the wait again and again)
                await wait_out(future)
            raise

    def _transact_alone(self, function: Callable[..., T], *args: Any) -> T:
        with self.write() as session:
            return function(session, *args)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run other blocking database work from async code, in a worker thread (never on
        the event loop: on SQLite it may wait for another process's write lock)."""
        return await anyio.to_thread.run_sync(function, *args, abandon_on_cancel=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (a snapshot per statement on PostgreSQL, per transaction on SQLite)."""
        with Session(self.engine, expire_on_commit=False) as session:
            yield session  # closing ends the transaction and detaches (without expiring) rows

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read-only session whose statements all see one snapshot, for reads that compare
        tables (`ledger verify`): on PostgreSQL a REPEATABLE READ transaction, since at READ
        COMMITTED a settle committing between two statements would look like a broken
        invariant; SQLite's read transaction already is one snapshot."""
        with Session(self.engine, expire_on_commit=False) as session:
            if not self.is_sqlite:
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    def upgrade(self) -> None:
        """Apply every Alembic migration not yet applied."""
        with self.engine.begin() as connection:
            config = alembic_config(self.url)
            config.attributes["connection"] = connection
            command.upgrade(config, "heads")

    def has_wallets(self) -> bool:
        from sqlalchemy import text

        with self.read() as session:
            return session.execute(text("SELECT 1 FROM wallet LIMIT 1")).first() is not None

    def has_schema(self) -> bool:
        return inspect(self.engine).has_table("wallet")

    def dispose(self) -> None:
        """Finish the queued write jobs, stop the writer thread, close every connection."""
        if self.writer is not None:
            self.writer.stop()
        self.engine.dispose()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _configure_sqlite(engine: Engine, synchronous: str, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how each transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # "BEGIN IMMEDIATE" for writes; "" for the writer thread, which begins its own.
        begin = connection.get_execution_options().get("lava_begin", "BEGIN")
        if begin:
            connection.exec_driver_sql(begin)
