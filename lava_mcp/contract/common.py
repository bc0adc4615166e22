"""Shapes every domain uses: the `{"success": true}` of a delete, list paging."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lava_mcp.contract.base import Shape

MAX_PAGE = 100
DEFAULT_PAGE = 20


class Success(Shape):
    success: Literal[True] = True


# Query parameters of a paged list (DESIGN §5): `limit` 1..100, never clamped; a cursor is a
# `next_cursor` this service handed out. Their rules are enforced by `core.paging`.
LIMIT_DESCRIPTION = f"1 to {MAX_PAGE} (default {DEFAULT_PAGE}); anything else is a 400, never clamped."
CURSOR_DESCRIPTION = "The `next_cursor` of the previous page."
LIMIT_QUERY = Field(default=None, ge=1, le=MAX_PAGE, description=LIMIT_DESCRIPTION)
