"""Ledger entries: append-only, signed, each naming what caused it.

Every function here runs inside a caller's write transaction (`Database.write()`), so an
entry and the wallet's running balance change together or not at all. Invariants, checked
by `lava-mcp ledger verify`:
  wallet.balance_micros == sum(entries.amount_micros) >= 0
  wallet.held_micros    == sum(pending holds)  and  held_micros <= balance_micros
"""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, col, select

from lava_mcp.errors import BadRequest, NotFound
from lava_mcp.store import fast
from lava_mcp.store.models import LedgerEntry, Wallet, utc_now

ENTRY_KINDS = ("deposit", "charge", "refund", "adjustment")

# Every charge of every metered call writes one entry: straight to the driver (`store.fast`).
_INSERT_ENTRY = fast.Statement(
    "INSERT INTO ledger_entry (wallet_id, kind, amount_micros, balance_after_micros, reference, memo,"
    " created_at) VALUES (:wallet_id, :kind, :amount, :balance_after, :reference, :memo, :created_at)"
    " RETURNING id"
)


def find(session: Session, *, wallet_id: str, kind: str, reference: str) -> LedgerEntry | None:
    return session.exec(
        select(LedgerEntry).where(
            LedgerEntry.wallet_id == wallet_id,
            LedgerEntry.kind == kind,
            LedgerEntry.reference == reference,
        )
    ).first()


def credit(
    session: Session,
    *,
    wallet_id: str,
    kind: str,
    amount_micros: int,
    reference: str,
    memo: str = "",
) -> tuple[LedgerEntry, bool]:
    """Append a deposit, refund or adjustment and move the running balance with it.

    Idempotent on (wallet, kind, reference): the same deposit twice returns the first
    entry and `False`, and moves no money. A negative adjustment may not take the balance
    below what is held.

    Raises: NotFound for an unknown wallet; BadRequest for an adjustment that would
    overdraw the wallet.
    """
    assert kind in ("deposit", "refund", "adjustment"), kind
    assert amount_micros != 0, "an entry moves money"
    assert kind == "adjustment" or amount_micros > 0, (kind, amount_micros)
    existing = find(session, wallet_id=wallet_id, kind=kind, reference=reference)
    if existing is not None:
        return existing, False
    balance_after = session.execute(
        update(Wallet)
        .where(col(Wallet.id) == wallet_id)
        .where(col(Wallet.balance_micros) + amount_micros >= col(Wallet.held_micros))
        .values(balance_micros=col(Wallet.balance_micros) + amount_micros)
        .returning(col(Wallet.balance_micros))
    ).scalar_one_or_none()
    if balance_after is None:
        if session.get(Wallet, wallet_id) is None:
            raise NotFound(f"unknown wallet {wallet_id!r}")
        raise BadRequest("that adjustment would take the wallet below zero (or below its holds)")
    return insert_entry(
        session,
        wallet_id=wallet_id,
        kind=kind,
        amount_micros=amount_micros,
        balance_after_micros=balance_after,
        reference=reference,
        memo=memo,
    ), True


def insert_entry(
    session: Session,
    *,
    wallet_id: str,
    kind: str,
    amount_micros: int,
    balance_after_micros: int,
    reference: str,
    memo: str = "",
) -> LedgerEntry:
    """Record an entry whose balance move the caller has already made in this transaction."""
    assert kind in ENTRY_KINDS, kind
    assert balance_after_micros >= 0, balance_after_micros
    created_at = utc_now()
    entry_id = fast.run(
        session,
        _INSERT_ENTRY,
        {
            "wallet_id": wallet_id,
            "kind": kind,
            "amount": amount_micros,
            "balance_after": balance_after_micros,
            "reference": reference,
            "memo": memo,
            "created_at": created_at,
        },
    ).fetchone()[0]
    return LedgerEntry(
        id=entry_id,
        wallet_id=wallet_id,
        kind=kind,
        amount_micros=amount_micros,
        balance_after_micros=balance_after_micros,
        reference=reference,
        memo=memo,
        created_at=created_at,
    )
