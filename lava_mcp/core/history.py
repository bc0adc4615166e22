"""Payment history: where the wallet's money came from and went back to.

Two views, read-only:
- `money_movements`: the ledger's entries other than call charges (those are the request
  list's), newest first, paged by entry id — deposits, refunds, disputes and their
  reversals, shortfall covers and operator adjustments, each with its amount and date.
  An entry is the ledger's own record, so this history and the balance always agree.
- `failed_payments`: funding attempts that did not go through, with the processor's reason
  (decline code and message), newest first — what the wallet owner needs to fix a card.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import col, select

from lava_mcp.core import paging
from lava_mcp.errors import BadRequest
from lava_mcp.store.db import Database
from lava_mcp.store.models import LedgerEntry, Payment

# Entries for calls are the request list's; everything else moves money in or out.
MOVEMENT_KINDS = ("deposit", "refund", "dispute", "dispute_reversal", "shortfall_cover", "adjustment")


@dataclass(frozen=True)
class MovementPage:
    entries: Sequence[LedgerEntry]
    next_cursor: str | None


def money_movements(
    db: Database, wallet_id: str, *, limit: object = None, before: object = None
) -> MovementPage:
    """The wallet's ledger entries other than charges, newest first.

    `before` is the `next_cursor` of the previous page (an entry id as text).
    Raises: BadRequest for a limit outside 1..100 or a cursor this service did not hand out.
    """
    page_size = paging.parse_limit(limit)
    query = select(LedgerEntry).where(
        LedgerEntry.wallet_id == wallet_id, col(LedgerEntry.kind).in_(MOVEMENT_KINDS)
    )
    if before not in (None, ""):
        if not isinstance(before, str) or not re.fullmatch(r"[0-9]{1,18}", before):
            raise BadRequest("cursor is not one this service handed out (use next_cursor)")
        query = query.where(col(LedgerEntry.id) < int(before))
    query = query.order_by(col(LedgerEntry.id).desc()).limit(page_size + 1)
    with db.read() as session:
        rows = list(session.exec(query).all())
    if len(rows) <= page_size:
        return MovementPage(rows, None)
    rows = rows[:page_size]
    return MovementPage(rows, str(rows[-1].id))


def failed_payments(db: Database, wallet_id: str, *, limit: int = 20) -> list[Payment]:
    """The wallet's funding attempts that failed, newest first, at most `limit`."""
    assert 1 <= limit <= paging.MAX_PAGE, limit
    with db.read() as session:
        return list(
            session.exec(
                select(Payment)
                .where(Payment.wallet_id == wallet_id, Payment.status == "failed")
                .order_by(col(Payment.created_at).desc(), col(Payment.id).desc())
                .limit(limit)
            ).all()
        )
