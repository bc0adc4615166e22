"""Ledger entries: append-only, signed, each naming what caused it.

Every function here runs inside a caller's write transaction (`Database.write()`), so an
entry and the wallet's running balance change together or not at all.

The sign of an entry's amount is fixed by its kind (`SIGNS`, asserted on every insert and
checked by `ledger verify`):
  deposit           > 0   a top-up the processor reported paid
  charge            < 0   a metered call
  refund            ≤ 0   money the processor gave back to the card holder (a refund of a top-up)
  dispute           ≤ 0   money the processor withdrew for a dispute (chargeback)
  dispute_reversal  ≥ 0   a dispute's money reinstated
  refund_reversal   ≥ 0   a refund that failed or was canceled: its money given back
  shortfall_cover   < 0   a later deposit paying what a refund or dispute could not take
  adjustment        ≠ 0   an operator's correction

A refund or dispute never takes the balance below what is held: it debits what is
available and records the rest as the wallet's shortfall, which the next deposit (or a
dispute's reinstatement) covers first. Each entry's `shortfall_micros` is the change it
made to the wallet's shortfall (`+` owed, `−` covered), and `payment_id` the top-up it
reverses or that covers it. Invariants, checked by `lava-mcp ledger verify`:
  wallet.balance_micros   == sum(entries.amount_micros) >= 0
  wallet.held_micros      == sum(pending holds)  and  held_micros <= balance_micros
  wallet.shortfall_micros == sum(entries.shortfall_micros) >= 0
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from lava_mcp.errors import BadRequest, NotFound
from lava_mcp.store import fast
from lava_mcp.store.models import LedgerEntry, Wallet, utc_now

ENTRY_KINDS = (
    "deposit",
    "charge",
    "refund",
    "dispute",
    "dispute_reversal",
    "refund_reversal",
    "shortfall_cover",
    "adjustment",
)
# Entries giving back what a reversal took (covering the shortfall first).
REINSTATE_KINDS = ("dispute_reversal", "refund_reversal")
REVERSAL_KINDS = ("refund", "dispute")

# kind → (lowest, highest) sign of its amount: 1 positive, 0 zero, -1 negative.
SIGNS: dict[str, tuple[int, int]] = {
    "deposit": (1, 1),
    "charge": (-1, -1),
    "refund": (-1, 0),
    "dispute": (-1, 0),
    "dispute_reversal": (0, 1),
    "refund_reversal": (0, 1),
    "shortfall_cover": (-1, -1),
    "adjustment": (-1, 1),
}


def sign_allowed(kind: str, amount_micros: int) -> bool:
    """Whether an entry of `kind` may move `amount_micros` (see the module docstring)."""
    if kind not in SIGNS:
        return False
    lowest, highest = SIGNS[kind]
    sign = (amount_micros > 0) - (amount_micros < 0)
    return lowest <= sign <= highest and not (kind == "adjustment" and sign == 0)


# Every charge of every metered call writes one entry: straight to the driver (`store.fast`).
_INSERT_ENTRY = fast.Statement(
    "INSERT INTO ledger_entry (wallet_id, kind, amount_micros, balance_after_micros, reference, payment_id,"
    " shortfall_micros, memo, created_at) VALUES (:wallet_id, :kind, :amount, :balance_after, :reference,"
    " :payment_id, :shortfall, :memo, :created_at) RETURNING id"
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
    """Append a deposit or adjustment and move the running balance with it.

    Idempotent on (wallet, kind, reference): the same deposit twice returns the first
    entry and `False`, and moves no money. A negative adjustment may not take the balance
    below what is held.

    Raises: NotFound for an unknown wallet; BadRequest for an adjustment that would
    overdraw the wallet.
    """
    assert kind in ("deposit", "adjustment"), kind
    assert sign_allowed(kind, amount_micros), (kind, amount_micros)
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
    payment_id: str | None = None,
    shortfall_micros: int = 0,
) -> LedgerEntry:
    """Record an entry whose balance move the caller has already made in this transaction."""
    created_at = utc_now()
    entry_id = append_entry(
        session,
        wallet_id=wallet_id,
        kind=kind,
        amount_micros=amount_micros,
        balance_after_micros=balance_after_micros,
        reference=reference,
        memo=memo,
        payment_id=payment_id,
        shortfall_micros=shortfall_micros,
        created_at=created_at,
    )
    return LedgerEntry(
        id=entry_id,
        wallet_id=wallet_id,
        kind=kind,
        amount_micros=amount_micros,
        balance_after_micros=balance_after_micros,
        reference=reference,
        payment_id=payment_id,
        shortfall_micros=shortfall_micros,
        memo=memo,
        created_at=created_at,
    )


def append_entry(
    session: Session,
    *,
    wallet_id: str,
    kind: str,
    amount_micros: int,
    balance_after_micros: int,
    reference: str,
    memo: str = "",
    payment_id: str | None = None,
    shortfall_micros: int = 0,
    created_at: datetime | None = None,
) -> int:
    """`insert_entry` without building the entry's object (every charge of every call
    writes one, and nobody reads it back): returns the new entry's id."""
    assert kind in ENTRY_KINDS, kind
    assert sign_allowed(kind, amount_micros), (kind, amount_micros)
    assert balance_after_micros >= 0, balance_after_micros
    entry_id: int = fast.run(
        session,
        _INSERT_ENTRY,
        {
            "wallet_id": wallet_id,
            "kind": kind,
            "amount": amount_micros,
            "balance_after": balance_after_micros,
            "reference": reference,
            "payment_id": payment_id,
            "shortfall": shortfall_micros,
            "memo": memo,
            "created_at": created_at or utc_now(),
        },
    ).fetchone()[0]
    return entry_id


def reverse(
    session: Session,
    *,
    wallet_id: str,
    kind: str,
    amount_micros: int,
    reference: str,
    payment_id: str,
    memo: str = "",
) -> tuple[LedgerEntry, bool]:
    """Take back `amount_micros` the processor reversed (a refund or a dispute).

    Never below what is held: the entry debits min(amount, balance − held) and adds the
    rest to the wallet's shortfall. Idempotent on (wallet, kind, reference): the refund or
    dispute id. Returns the entry and whether it is new.
    Raises: NotFound for an unknown wallet.
    """
    assert kind in REVERSAL_KINDS, kind
    assert amount_micros > 0, amount_micros
    wallet = lock_wallet(session, wallet_id)  # first: a concurrent delivery then sees our entry
    existing = find(session, wallet_id=wallet_id, kind=kind, reference=reference)
    if existing is not None:
        return existing, False
    debit_micros = min(amount_micros, max(0, wallet.balance_micros - wallet.held_micros))
    short_micros = amount_micros - debit_micros
    balance_after = _move(session, wallet_id, balance_by=-debit_micros, shortfall_by=short_micros)
    return insert_entry(
        session,
        wallet_id=wallet_id,
        kind=kind,
        amount_micros=-debit_micros,
        balance_after_micros=balance_after,
        reference=reference,
        memo=memo,
        payment_id=payment_id,
        shortfall_micros=short_micros,
    ), True


def reinstate(
    session: Session,
    *,
    wallet_id: str,
    amount_micros: int,
    reference: str,
    payment_id: str,
    memo: str = "",
    kind: str = "dispute_reversal",
) -> tuple[LedgerEntry, bool]:
    """Give back a dispute's money (`dispute_reversal`) or a failed refund's
    (`refund_reversal`), covering the shortfall first.

    Idempotent on (wallet, kind, reference): the dispute or refund id. Returns the entry and
    whether it is new.
    Raises: NotFound for an unknown wallet.
    """
    assert kind in REINSTATE_KINDS, kind
    assert amount_micros > 0, amount_micros
    wallet = lock_wallet(session, wallet_id)
    existing = find(session, wallet_id=wallet_id, kind=kind, reference=reference)
    if existing is not None:
        return existing, False
    cover_micros = min(amount_micros, wallet.shortfall_micros)
    credit_micros = amount_micros - cover_micros
    balance_after = _move(session, wallet_id, balance_by=credit_micros, shortfall_by=-cover_micros)
    return insert_entry(
        session,
        wallet_id=wallet_id,
        kind=kind,
        amount_micros=credit_micros,
        balance_after_micros=balance_after,
        reference=reference,
        memo=memo,
        payment_id=payment_id,
        shortfall_micros=-cover_micros,
    ), True


def cover_shortfall(
    session: Session, *, wallet_id: str, deposit_micros: int, payment_id: str
) -> LedgerEntry | None:
    """After a deposit: pay the wallet's shortfall from it first (one `shortfall_cover`
    entry, at most the deposit and never below what is held). Idempotent on the payment.

    Returns the entry, or None when nothing was owed (or it was already covered).
    Raises: NotFound for an unknown wallet.
    """
    assert deposit_micros > 0, deposit_micros
    reference = f"{payment_id}:cover"
    wallet = lock_wallet(session, wallet_id)
    if find(session, wallet_id=wallet_id, kind="shortfall_cover", reference=reference) is not None:
        return None
    cover_micros = min(
        wallet.shortfall_micros, deposit_micros, max(0, wallet.balance_micros - wallet.held_micros)
    )
    if cover_micros <= 0:
        return None
    balance_after = _move(session, wallet_id, balance_by=-cover_micros, shortfall_by=-cover_micros)
    return insert_entry(
        session,
        wallet_id=wallet_id,
        kind="shortfall_cover",
        amount_micros=-cover_micros,
        balance_after_micros=balance_after,
        reference=reference,
        memo="this top-up first pays what earlier refunds or disputes could not take",
        payment_id=payment_id,
        shortfall_micros=-cover_micros,
    )


def lock_wallet(session: Session, wallet_id: str) -> Wallet:
    """The wallet's row, locked for this transaction (PostgreSQL `FOR UPDATE`; SQLite's
    `BEGIN IMMEDIATE` already serialises writers), read afresh.

    Raises: NotFound for an unknown wallet.
    """
    wallet = session.get(Wallet, wallet_id, with_for_update=True, populate_existing=True)
    if wallet is None:
        raise NotFound(f"unknown wallet {wallet_id!r}")
    return wallet


def _move(session: Session, wallet_id: str, *, balance_by: int, shortfall_by: int) -> int:
    """Move the locked wallet's balance and shortfall; returns the balance after."""
    row = session.execute(
        update(Wallet)
        .where(col(Wallet.id) == wallet_id)
        .values(
            balance_micros=col(Wallet.balance_micros) + balance_by,
            shortfall_micros=col(Wallet.shortfall_micros) + shortfall_by,
        )
        .returning(col(Wallet.balance_micros), col(Wallet.held_micros), col(Wallet.shortfall_micros))
    ).one()
    balance_after, held_after, shortfall_after = int(row[0]), int(row[1]), int(row[2])
    assert 0 <= held_after <= balance_after, (held_after, balance_after)
    assert shortfall_after >= 0, shortfall_after
    return balance_after
