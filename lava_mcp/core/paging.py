"""Lists, newest first, paged by id: every id is time-ordered (`ids.new_id`), so the next
page is simply the rows whose id is below the last one shown.

`limit` is 1..100 (default 20) and never clamped; a cursor must be one this service
handed out (DESIGN §13).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from sqlmodel import col
from sqlmodel.sql.expression import SelectOfScalar

from lava_mcp.errors import BadRequest
from lava_mcp.store.db import Database

MAX_PAGE = 100
DEFAULT_PAGE = 20

Row = TypeVar("Row")


def parse_limit(value: object, default: int = DEFAULT_PAGE) -> int:
    """Raises: BadRequest for a limit outside 1..100 (never clamped)."""
    if value is None:
        return default
    # ASCII digits only: str.isdigit() is also true for "²", which int() then rejects.
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,4}", value.strip()):
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PAGE:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE}")
    return value


def parse_cursor(value: object, prefix: str) -> str | None:
    """A cursor is an id with `prefix` (e.g. "req"). Raises: BadRequest for any other text."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(rf"{prefix}_[0-9a-f]{{28}}", value):
        raise BadRequest("cursor is not one this service handed out (use next_cursor)")
    return value


def newest_first(
    db: Database, query: SelectOfScalar[Row], id_column: Any, *, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """One page of `query`'s rows, newest first, and the cursor of the next page (or None)."""
    if cursor is not None:
        query = query.where(col(id_column) < cursor)
    query = query.order_by(col(id_column).desc()).limit(limit + 1)
    with db.read() as session:
        rows = list(session.exec(query).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, getattr(rows[-1], "id")  # noqa: B009  (every paged table's key is `id`)
