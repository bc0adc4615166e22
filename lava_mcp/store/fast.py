"""The hot path's statements, run on the driver's cursor inside the session's transaction.

SQLAlchemy's execution machinery costs about 0.15 ms a statement on a small machine: more
than SQLite takes to run one. The few statements every metered call runs (take the hold,
record the request, post the hold, write the charge) go straight to the DBAPI cursor of
the connection the session already holds, so they commit or roll back with everything
else in that transaction. A read that answers a tool call on its own (`read_one`) runs on a
pooled connection outside any session. One SQL text serves SQLite and PostgreSQL: `:name` parameters
(rewritten once to psycopg's `%(name)s`), and datetimes bound the way the ORM stores them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
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


def _sqlite_time(value: datetime) -> str:
    """The UTC time as "%Y-%m-%d %H:%M:%S.%f" (isoformat: twice as fast as strftime)."""
    assert value.tzinfo is not None, "datetimes are always aware UTC"
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]
