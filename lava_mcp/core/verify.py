"""`lava-mcp ledger verify`: the ledger's invariants, checked from the rows themselves."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import col, select

from lava_mcp.store.db import Database
from lava_mcp.store.models import Hold, LedgerEntry, SpendKey, Wallet, utc_now

# A hold may outlive its expiry by up to one sweep interval before it is released.
EXPIRY_GRACE_S = 120


def verify(db: Database) -> list[str]:
    """Every broken invariant, as one line each; an empty list means the ledger is sound.

    - each wallet's balance equals the sum of its entries, and is never below zero
    - each wallet's held amount equals the sum of its pending holds, and is ≤ its balance
    - no hold was settled above its amount
    - no hold is still pending past its expiry (plus one sweep of grace)
    - each spend key's held amount equals the sum of its pending holds
    """
    problems: list[str] = []
    with db.read() as session:
        entry_sums = dict(
            session.exec(
                select(LedgerEntry.wallet_id, func.sum(LedgerEntry.amount_micros)).group_by(
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
