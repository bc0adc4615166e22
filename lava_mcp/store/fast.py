"""The hot path's statements, run on the driver's cursor inside the session's transaction.

SQLAlchemy's execution machinery costs about 0.15 ms a statement on a small machine: more
than SQLite takes to run one. The few statements every metered call runs (take the hold,
record the request, post the hold, write the charge) go straight to the DBAPI cursor of
the connection the session already holds, so they commit or roll back with everything
else in that transaction. A read that answers a tool call on its own runs on a pooled
connection outside any session (`read_one`), or on SQLite on the event loop itself
(`LoopReads`, below). One SQL text serves SQLite and PostgreSQL: `:name` parameters
(rewritten once to psycopg's `%(name)s`), and datetimes bound the way the ORM stores them.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlmodel import Session

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
# SQLAlchemy's SQLite DATETIME storage format (UTC, as sqlmodel's UTCDateTime stores it):
# "%Y-%m-%d %H:%M:%S.%f".


class Statement:
    """One SQL text with `:name` parameters, prepared for both drivers."""

    def __init__(self, sql: str) -> None:
        self.sqlite = sql
        self.pyformat = _NAMED.sub(r"%(\1)s", sql)

    def __repr__(self) -> str:
        return f"Statement({self.sqlite!r})"


def run(session: Session, statement: Statement, parameters: dict[str, Any]) -> Any:
    """Execute `statement` in the session's transaction; returns the DBAPI cursor."""
    # A session keeps one connection per transaction: look it up once per transaction.
    found = session.info.get("lava_fast")
    transaction = session.get_transaction()
    if found is None or found[0] is not transaction:
        connection = session.connection()
        transaction = session.get_transaction()
        found = session.info["lava_fast"] = (
            transaction,
            connection.connection.driver_connection,
            connection.dialect.name == "sqlite",
        )
    _, driver, is_sqlite = found
    assert driver is not None
    cursor = driver.cursor()
    if is_sqlite:
        # Datetimes bound as the ORM stores them (a new dict: the caller's stays as it was).
        cursor.execute(
            statement.sqlite,
            {
                name: _sqlite_time(value) if isinstance(value, datetime) else value
                for name, value in parameters.items()
            },
        )
    else:
        cursor.execute(statement.pyformat, parameters)
    return cursor


def read_one(engine: Engine, statement: Statement, parameters: dict[str, Any]) -> Any:
    """The first row of a read-only `statement` (None when there is none), on a pooled
    connection outside any session: one statement is one snapshot on either database
    (SQLite runs it in a read transaction of its own; psycopg's transaction ends when the
    pool rolls the connection back on return)."""
    connection = engine.raw_connection()
    try:
        driver = connection.driver_connection
        assert driver is not None
        is_sqlite = engine.dialect.name == "sqlite"
        cursor = driver.cursor()
        try:
            cursor.execute(statement.sqlite if is_sqlite else statement.pyformat, parameters)
            return cursor.fetchone()
        finally:
            cursor.close()
    finally:
        connection.close()  # back to the pool


class WouldWait(Exception):
    """SQLite answered "busy": the read must wait for a lock, so not on the event loop."""


class LoopReads:
    """Single-statement reads the event loop runs itself, on a SQLite file in WAL mode.

    The rule is that the event loop never waits on SQLite's locks, because a write may
    wait for the write lock another process holds (`store.db`). A read in WAL mode takes no lock a
    writer holds: it reads the last commit from the database file and the WAL, whatever a
    writer is doing. It can only be made to wait by something unusual — another connection
    in exclusive locking mode, another process recovering the WAL after a crash, a file
    taken out of WAL mode — and SQLite then answers "busy" through the busy handler. This
    connection's busy timeout is 0: instead of sleeping in that handler, the read raises
    `WouldWait` at once and the caller reads in a worker thread, where waiting is harmless.
    So a read here costs only itself (tens of microseconds for one indexed row), against
    about 0.15 ms for the hop to a worker thread and back. The connection is `query_only`
    (a write on it fails), opened on first use and used from the event loop's thread only.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None

    @classmethod
    def for_url(cls, url: str) -> LoopReads | None:
        """Loop reads for a SQLite file's URL; None for any other database (a network
        round trip is never run on the loop)."""
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
            return None
        return cls(str(parsed.database))

    def read_one(self, statement: Statement, parameters: dict[str, Any]) -> Any:
        """The first row of `statement` (None when there is none).

        Raises: WouldWait when SQLite would wait for a lock (read it in a worker thread).
        """
        try:
            connection = self._connection or self._open()
            cursor = connection.execute(statement.sqlite, parameters)
            try:
                return cursor.fetchone()
            finally:
                cursor.close()
        except sqlite3.OperationalError as error:
            message = str(error).lower()
            if "locked" in message or "busy" in message:
                raise WouldWait(str(error)) from error
            raise

    def _open(self) -> sqlite3.Connection:
        # timeout=0: SQLite's busy timeout (sqlite3.connect's default is 5 s).
        connection = sqlite3.connect(self._path, timeout=0, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA query_only=ON")
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _sqlite_time(value: datetime) -> str:
    """The UTC time as "%Y-%m-%d %H:%M:%S.%f" (isoformat: twice as fast as strftime)."""
    assert value.tzinfo is not None, "datetimes are always aware UTC"
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]
