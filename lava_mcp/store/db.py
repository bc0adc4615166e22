"""Engines, SQLite pragmas, transactions and migrations.

Writes go through `Database.write()`: one transaction that, on SQLite, starts with
`BEGIN IMMEDIATE` (take the write lock up front, so a read-then-write can't fail with
SQLITE_BUSY halfway) and, inside one process, is serialised by a lock so that threads
queue in Python instead of in SQLite's sleeping busy handler. On PostgreSQL every
check-and-debit is one conditional UPDATE, so READ COMMITTED is enough.

Async code never waits on SQLite's locks on the event loop: a write may wait for the write
lock another process holds (`lava-mcp stdio` and `serve` share the default database), and
that wait must not stall every other request. `Database.transact()` hands a write job to
the writer thread, which commits concurrent jobs together (group commit, `store.writer`); on
PostgreSQL each job is its own transaction in a worker thread. `Database.run()` runs any
other blocking work in a worker thread. SQLite work runs on the event loop only where it
cannot wait: a short write job submitted `now_if_idle` when nothing else is in flight and
the lock is free that instant (`Writer.submit`, busy timeout 0 for its BEGIN), and
`store.fast.LoopReads`' single-statement reads, on a connection whose busy timeout is 0;
either goes to a thread instead when SQLite would make it wait.

A database failure that says "try again" (a connection dropped or refused, a server
restarting, a deadlock or serialization victim, SQLite busy past its timeout, no pooled
connection free in time) is answered on every surface as `ServiceUnavailable` (503 with a
retry hint), never as a 500: `unavailable` judges the error where the surfaces render
what they did not expect. The transaction it cut off was rolled back by the server.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import hashlib
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import Session

from lava_mcp.errors import ServiceUnavailable
from lava_mcp.store.writer import Writer, wait_out

if TYPE_CHECKING:
    from alembic.config import Config

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
            self.writer = Writer(
                self.engine,
                self._write_lock,
                on_file=on_file,
                sync_wal=sync_wal,
                busy_timeout_ms=int(busy_timeout_s * 1000),
            )

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: commits on success, rolls back on any exception."""
        with (
            self._write_lock or nullcontext(),
            Session(self._write_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    def submit(
        self, function: Callable[..., T], *args: Any, durable: bool = True, now_if_idle: bool = False
    ) -> asyncio.Future[T]:
        """Start `function(session, *args)` in a write transaction; the future resolves,
        with its result or its exception, once that transaction is over (committed, or for
        an exception rolled back).

        On SQLite the job shares a transaction with the jobs queued beside it, inside a
        SAVEPOINT of its own (`store.writer`: an exception rolls back this job only); on
        PostgreSQL it is a transaction of its own in a worker thread. Either way the job
        must not open another write transaction.

        `durable=False` (SQLite): resolve once the transaction is committed — visible to
        every connection, kept through a crash of this process, since the WAL append is in
        the kernel's page cache — without waiting for its fsync (`store.writer`). Only a
        power loss or an OS crash before the next durable commit can take it back, and that
        takes this process down with it; the next durable commit makes it durable too, since
        the WAL is one append-only file. For work that nothing answered to a client rests on
        until a later durable commit does: a call's hold, whose settle is durable. On
        PostgreSQL every commit is durable: an asynchronous commit there is lost when the
        database server alone crashes or restarts, while this process lives on and would
        settle a hold that is gone.

        `now_if_idle` (SQLite): a short job that never blocks may run at once on the calling
        thread when the writer is idle and SQLite's write lock is free this instant (never
        waiting for it), instead of a hand-off to the writer thread (`Writer.submit`).
        """
        if self.writer is not None:
            return self.writer.submit(function, args, durable=durable, now_if_idle=now_if_idle)
        return asyncio.ensure_future(
            anyio.to_thread.run_sync(self._transact_alone, function, *args, abandon_on_cancel=False)
        )

    async def transact(self, function: Callable[..., T], *args: Any, now_if_idle: bool = False) -> T:
        """`submit` (durable) and wait for the result. Cancelled meanwhile, it still waits for
        the transaction to end (its work can't be taken back), then raises the cancellation."""
        future = self.submit(function, *args, now_if_idle=now_if_idle)
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

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold the lock called `name` on this database for the block, against every process
        that opens it (a PostgreSQL advisory lock): for one-time work that several servers
        started together would otherwise all do at once — the migrations, the first wallet.
        On SQLite, nothing: its transactions already serialise one file's writers."""
        if self.is_sqlite:
            yield
            return
        key = int.from_bytes(hashlib.sha256(f"lava-mcp:{name}".encode()).digest()[:8], "big", signed=True)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})

    def upgrade(self) -> None:
        """Apply every Alembic migration not yet applied (one process at a time: servers
        started together on a new database would otherwise each create the same tables).

        A database already at the head revisions is left as it is without loading Alembic,
        which (with Mako and Pygments) a server would otherwise carry for its whole life
        (~11 MB resident) after the one look at `alembic_version` it needed.
        """
        with self.exclusive("migrations"), self.engine.begin() as connection:
            heads = head_revisions()
            if heads is not None and applied_revisions(connection) == heads:
                return
            from alembic import command

            config = alembic_config(self.url)
            config.attributes["connection"] = connection
            command.upgrade(config, "heads")

    def has_wallets(self) -> bool:
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
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@functools.cache
def head_revisions(versions: Path = MIGRATIONS_DIR / "versions") -> frozenset[str] | None:
    """The migrations' head revisions, read from the revision files' `revision` and
    `down_revision` literals without importing Alembic or the files (Alembic's own rule for
    which files are revisions: every `*.py` in `versions/` but `__init__` and editor
    backups). None when a file says anything this reading can't judge (no literal
    revision, a `depends_on`, a syntax error): then Alembic itself decides."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(versions.glob("*.py")):
        if path.name.startswith(("__init__", ".#")):
            continue
        try:
            found = _module_literals(path.read_text(), ("revision", "down_revision", "depends_on"))
        except (SyntaxError, ValueError):
            return None
        revision, down_revision = found.get("revision"), found.get("down_revision")
        if isinstance(down_revision, str):
            down_revision = (down_revision,)
        if (
            not isinstance(revision, str)
            or found.get("depends_on") is not None
            or not isinstance(down_revision, (tuple, list, type(None)))
            or not all(isinstance(parent, str) for parent in down_revision or ())
        ):
            return None
        revisions.add(revision)
        parents.update(down_revision or ())
    return frozenset(revisions - parents) if revisions else None


def _module_literals(source: str, names: tuple[str, ...]) -> dict[str, Any]:
    """The values a module's top-level statements assign to `names` (literals only).

    Raises: SyntaxError for a file that isn't Python; ValueError for a value that isn't a
    literal."""
    values: dict[str, Any] = {}
    for statement in ast.parse(source).body:
        if isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets: list[ast.expr] = [statement.target]
            value = statement.value
        elif isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in names:
                values[target.id] = ast.literal_eval(value)
    return values


def applied_revisions(connection: Any) -> frozenset[str]:
    """The revisions `alembic_version` records as applied (none on a new database)."""
    if not inspect(connection).has_table("alembic_version"):
        return frozenset()
    return frozenset(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


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


def database_errors() -> tuple[type[Exception], ...]:
    """Every error a database call can raise: SQLAlchemy's and the drivers' own.

    psycopg's (the `postgres` extra) count once psycopg is loaded, as it is by the engine of
    a PostgreSQL URL: before that no psycopg error can exist, and a process on SQLite never
    loads psycopg (~7 MB resident with its bundled libpq).
    """
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return (SQLAlchemyError, sqlite3.Error)
    return (SQLAlchemyError, sqlite3.Error, psycopg.Error)


# PostgreSQL's "try again" SQLSTATEs: serialization failure, deadlock, lock not available,
# and the server going away (admin shutdown, crash shutdown, cannot connect now); class 08
# is a lost connection.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03"})
RETRY_AFTER_S = 1


def unavailable(error: BaseException) -> ServiceUnavailable | None:
    """The 503 to answer for a database failure that a retry can pass, else None.

    Judges SQLAlchemy's wrapped errors and the drivers' own (the hot path's statements run
    on the driver's cursor, `store.fast`), searching the chain of causes: anything else (a
    missing table, a constraint, a bug) stays the 500 it is.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if retryable(current):
            return ServiceUnavailable(
                f"the ledger database is unavailable right now; retry in {RETRY_AFTER_S} s",
                retry_after_s=RETRY_AFTER_S,
                next_step="retry the request (a call refused this way was not charged)",
            )
        current = current.__cause__ or current.__context__
    return None


def retryable(error: BaseException) -> bool:
    """A database error that says "try again" (this error itself, not its causes): SQLite
    busy or locked; a PostgreSQL serialization failure, deadlock, lock not available or
    restart; a lost connection; no pooled connection free in time. Anything else (a missing
    table, a full disk, a constraint, a bug) would never pass by retrying.

    Both SQLAlchemy's wrapped errors and the drivers' own are judged: the hot path's
    statements (`store.fast`) run on the driver's cursor and raise the driver's errors.
    """
    if isinstance(error, PoolTimeoutError):
        return True  # no pooled connection came free in time
    driver_error: BaseException | None = error
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        driver_error = error.orig
    if isinstance(driver_error, sqlite3.OperationalError):
        message = str(driver_error).lower()
        return "locked" in message or "busy" in message
    if driver_error is None or not type(driver_error).__module__.startswith("psycopg"):
        return False
    sqlstate = getattr(driver_error, "sqlstate", None)
    if sqlstate is None:
        # No SQLSTATE: the connection itself failed (refused, closed by the server, broken).
        kinds = {kind.__name__ for kind in type(driver_error).__mro__}
        return bool(kinds & {"OperationalError", "InterfaceError"})
    return str(sqlstate) in _RETRYABLE_SQLSTATES or str(sqlstate).startswith("08")
