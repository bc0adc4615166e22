"""What the scale tests read back from the database after the load: the facts every money
rule is judged on, straight from the rows (never from a server's answer)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import select

from lava_mcp.store.db import Database
from lava_mcp.store.models import Hold, LedgerEntry, RequestRecord, SpendKey, Wallet


@dataclass(frozen=True)
class KeyFacts:
    total_spend_micros: int
    cycle_spend_micros: int
    held_micros: int
    cycle_requests: int
    completed: int  # request records completed
    charged_micros: int  # the sum of the charge entries of its requests


def key_facts(db: Database, spend_key_id: str) -> KeyFacts:
    with db.read() as session:
        key = session.get(SpendKey, spend_key_id)
        assert key is not None
        completed = session.exec(
            select(func.count())
            .select_from(RequestRecord)
            .where(RequestRecord.spend_key_id == spend_key_id, RequestRecord.status == "completed")
        ).one()
        charged = session.exec(
            select(func.coalesce(func.sum(LedgerEntry.amount_micros), 0))
            .select_from(LedgerEntry)
            .join(RequestRecord, RequestRecord.id == LedgerEntry.reference)
            .where(RequestRecord.spend_key_id == spend_key_id, LedgerEntry.kind == "charge")
        ).one()
        return KeyFacts(
            total_spend_micros=key.total_spend_micros,
            cycle_spend_micros=key.cycle_spend_micros,
            held_micros=key.held_micros,
            cycle_requests=key.cycle_requests,
            completed=int(completed),
            charged_micros=-int(charged),
        )


def wallet_balance(db: Database, wallet_id: str) -> tuple[int, int]:
    """(balance, held) in micros."""
    with db.read() as session:
        row = session.get(Wallet, wallet_id)
        assert row is not None
        return row.balance_micros, row.held_micros


def statuses(db: Database) -> tuple[Counter[str], Counter[str]]:
    """How many request records and holds are in each status."""
    with db.read() as session:
        records = Counter(
            dict(
                session.exec(select(RequestRecord.status, func.count()).group_by(RequestRecord.status)).all()
            )
        )
        holds = Counter(dict(session.exec(select(Hold.status, func.count()).group_by(Hold.status)).all()))
    return records, holds


def charged_once(db: Database) -> list[str]:
    """Every way a call was charged other than exactly once, one line each: a charge entry
    naming no completed request, a request charged twice, a completed request whose cost
    has no charge (or another amount), a posted hold whose request is not completed."""
    problems: list[str] = []
    with db.read() as session:
        charges = session.exec(
            select(LedgerEntry.reference, LedgerEntry.amount_micros).where(LedgerEntry.kind == "charge")
        ).all()
        records = {
            record.id: record
            for record in session.exec(select(RequestRecord).where(RequestRecord.ran == True)).all()  # noqa: E712
        }
        posted = session.exec(
            select(Hold.request_id, Hold.settled_micros).where(Hold.status == "posted")
        ).all()
    by_request = Counter(reference for reference, _ in charges)
    amounts = {reference: -amount for reference, amount in charges}
    for reference, times in by_request.items():
        if times > 1:
            problems.append(f"request {reference} charged {times} times")
        record = records.get(str(reference))
        if record is None or record.status != "completed":
            problems.append(f"charge for request {reference}, which is not a completed request")
    for record in records.values():
        if (
            record.status == "completed"
            and record.cost_micros > 0
            and amounts.get(record.id) != record.cost_micros
        ):
            problems.append(
                f"request {record.id}: cost {record.cost_micros}, charged {amounts.get(record.id)}"
            )
    for request_id, settled in posted:
        record = records.get(request_id)
        if record is None or record.status != "completed" or record.cost_micros != settled:
            problems.append(f"hold of request {request_id} posted at {settled} without its completed record")
    return problems
