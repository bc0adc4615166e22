"""`lava-mcp ledger verify`: the ledger's invariants, checked from the rows themselves.

Shortfalls (money a refund or dispute could not take from the balance) are not broken
invariants but debts: `shortfalls` lists each one, and `verify` checks that each wallet's
shortfall is exactly what its entries say it owes.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from lava_mcp.core.ledger import REINSTATE_KINDS, REVERSAL_KINDS, sign_allowed
from lava_mcp.money import format_dollars
from lava_mcp.store.db import Database
from lava_mcp.store.models import Hold, LedgerEntry, Payment, SpendKey, Wallet, utc_now

# A hold may outlive its expiry by up to one sweep interval before it is released.
EXPIRY_GRACE_S = 120


def pending_card_cutoff(*, reconcile_interval_s: float, stripe_timeout_s: float) -> timedelta:
    """How old a pending card payment may be before it is reported: a few reconciliation
    sweeps after its charge request can no longer be in flight."""
    return timedelta(seconds=3 * reconcile_interval_s + 3 * stripe_timeout_s + 30)


def verify(db: Database, *, reconcile_interval_s: float = 60.0, stripe_timeout_s: float = 10.0) -> list[str]:
    """Every broken invariant, as one line each; an empty list means the ledger is sound.

    - each wallet's balance equals the sum of its entries, and is never below zero
    - each wallet's held amount equals the sum of its pending holds, and is ≤ its balance
    - each wallet's shortfall equals what its entries owe (reversals not debited, less what
      was covered since), and is never below zero
    - every entry's amount has its kind's sign (`ledger.SIGNS`)
    - every refund, dispute, reinstatement and cover names a payment of the same wallet
    - no card payment is still pending past the reconcile window (its answer was lost and
      the sweep has not found it)
    - no hold was settled above its amount
    - no hold is still pending past its expiry (plus one sweep of grace)
    - each spend key's held amount equals the sum of its pending holds
    """
    problems: list[str] = []
    with db.snapshot() as session:  # one snapshot: the server may be settling meanwhile
        entry_sums = dict(
            session.exec(
                select(LedgerEntry.wallet_id, func.sum(LedgerEntry.amount_micros)).group_by(
                    LedgerEntry.wallet_id
                )
            ).all()
        )
        shortfall_sums = dict(
            session.exec(
                select(LedgerEntry.wallet_id, func.sum(LedgerEntry.shortfall_micros)).group_by(
                    LedgerEntry.wallet_id
                )
            ).all()
        )
        pending = dict(
            session.exec(
                select(Hold.wallet_id, func.sum(Hold.amount_micros))
                .where(Hold.status == "pending")
                .group_by(Hold.wallet_id)
            ).all()
        )
        for wallet in session.exec(select(Wallet)).all():
            entries = int(entry_sums.get(wallet.id) or 0)
            held = int(pending.get(wallet.id) or 0)
            if wallet.balance_micros != entries:
                problems.append(
                    f"wallet {wallet.id}: balance {wallet.balance_micros} != sum of entries {entries}"
                )
            if wallet.balance_micros < 0:
                problems.append(f"wallet {wallet.id}: balance {wallet.balance_micros} below zero")
            if wallet.held_micros != held:
                problems.append(f"wallet {wallet.id}: held {wallet.held_micros} != open holds {held}")
            if wallet.held_micros > wallet.balance_micros:
                problems.append(
                    f"wallet {wallet.id}: held {wallet.held_micros} exceeds balance {wallet.balance_micros}"
                )
            owed = int(shortfall_sums.get(wallet.id) or 0)
            if wallet.shortfall_micros != owed:
                problems.append(
                    f"wallet {wallet.id}: shortfall {wallet.shortfall_micros} != reversals not yet debited {owed}"
                )
            if wallet.shortfall_micros < 0:
                problems.append(f"wallet {wallet.id}: shortfall {wallet.shortfall_micros} below zero")
        problems += _entry_problems(session)
        cutoff_card = utc_now() - pending_card_cutoff(
            reconcile_interval_s=reconcile_interval_s, stripe_timeout_s=stripe_timeout_s
        )
        for payment in session.exec(
            select(Payment).where(Payment.status == "pending", Payment.method == "card")
        ).all():
            updated_at = payment.updated_at
            if updated_at.tzinfo is None:
                updated_at = updated_at.replace(tzinfo=UTC)
            if updated_at < cutoff_card:
                problems.append(
                    f"payment {payment.id}: card payment still pending since {updated_at.isoformat()}"
                    " (not reconciled with the processor)"
                )
        over = session.exec(
            select(Hold.id, Hold.amount_micros, Hold.settled_micros).where(
                col(Hold.settled_micros) > col(Hold.amount_micros)
            )
        ).all()
        problems += [
            f"hold {hold_id}: settled {settled} above its amount {amount}"
            for hold_id, amount, settled in over
        ]
        cutoff = utc_now().timestamp() - EXPIRY_GRACE_S
        for hold in session.exec(select(Hold).where(Hold.status == "pending")).all():
            if hold.expires_at.timestamp() < cutoff:
                problems.append(f"hold {hold.id}: still pending, expired at {hold.expires_at.isoformat()}")
        key_pending = dict(
            session.exec(
                select(Hold.spend_key_id, func.sum(Hold.amount_micros))
                .where(Hold.status == "pending", col(Hold.spend_key_id).is_not(None))
                .group_by(Hold.spend_key_id)
            ).all()
        )
        for key in session.exec(select(SpendKey)).all():
            held = int(key_pending.get(key.id) or 0)
            if key.held_micros != held:
                problems.append(f"spend key {key.id}: held {key.held_micros} != open holds {held}")
    return problems


def shortfalls(db: Database) -> list[str]:
    """Every wallet that owes money a refund or dispute could not take, one line each."""
    with db.read() as session:
        owing = session.exec(
            select(Wallet).where(col(Wallet.shortfall_micros) > 0).order_by(col(Wallet.id))
        ).all()
        return [
            f"wallet {wallet.id}: shortfall ${format_dollars(wallet.shortfall_micros)}"
            f" ({wallet.shortfall_micros} micros) owed from refunds or disputes; it can't spend until covered"
            for wallet in owing
        ]


def _entry_problems(session: Session) -> list[str]:
    problems: list[str] = []
    for entry in session.exec(select(LedgerEntry).where(col(LedgerEntry.kind) != "charge")).all():
        if not sign_allowed(entry.kind, entry.amount_micros):
            problems.append(f"entry {entry.id}: {entry.kind} of {entry.amount_micros} has the wrong sign")
        owes = entry.kind in REVERSAL_KINDS
        covers = entry.kind in (*REINSTATE_KINDS, "shortfall_cover")
        if (owes and entry.shortfall_micros < 0) or (covers and entry.shortfall_micros > 0):
            problems.append(f"entry {entry.id}: {entry.kind} moves the shortfall by {entry.shortfall_micros}")
        if not (owes or covers) and entry.shortfall_micros != 0:
            problems.append(f"entry {entry.id}: {entry.kind} moves the shortfall by {entry.shortfall_micros}")
        if entry.kind in (*REVERSAL_KINDS, *REINSTATE_KINDS, "shortfall_cover"):
            payment = session.get(Payment, entry.payment_id) if entry.payment_id else None
            if payment is None or payment.wallet_id != entry.wallet_id:
                problems.append(
                    f"entry {entry.id}: {entry.kind} {entry.reference} names payment {entry.payment_id!r},"
                    " which is not a payment of its wallet"
                )
    return problems
