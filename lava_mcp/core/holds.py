"""Holds: pending → posted (at most the held amount) | voided | expired.

A hold is taken with one conditional UPDATE (available = balance − held must cover it),
so concurrent calls can never overdraw a wallet, on SQLite or PostgreSQL alike. Posting
more than the hold is impossible by construction: the charge is `min`-checked here and
the provider's reported usage can only lower it. A hold also counts against its spend
key's cycle limit (see `spend_keys`), released and posted in the same transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col, select

from lava_mcp.core import ledger
from lava_mcp.errors import InsufficientBalance, NotFound
from lava_mcp.ids import new_id
from lava_mcp.store import fast
from lava_mcp.store.models import Hold, Wallet, utc_now

# The hot path's statements run straight on the driver (`store.fast`); the same SQL on
# SQLite and PostgreSQL.
_TAKE = fast.Statement(
    "UPDATE wallet SET held_micros = held_micros + :amount"
    " WHERE id = :wallet_id AND balance_micros - held_micros >= :amount"
)
_INSERT_HOLD = fast.Statement(
    "INSERT INTO hold (id, wallet_id, spend_key_id, request_id, amount_micros, settled_micros, status,"
    " expires_at, created_at) VALUES (:id, :wallet_id, :spend_key_id, :request_id, :amount, 0, 'pending',"
    " :expires_at, :created_at)"
)
_CHARGE = fast.Statement(
    "UPDATE wallet SET balance_micros = balance_micros - :cost, held_micros = held_micros - :release"
    " WHERE id = :wallet_id RETURNING balance_micros, held_micros"
)
_CHARGE_AVAILABLE = fast.Statement(
    "UPDATE wallet SET balance_micros = balance_micros - :cost, held_micros = held_micros - :release"
    " WHERE id = :wallet_id AND balance_micros - held_micros >= :cost RETURNING balance_micros, held_micros"
)
_SETTLE_KEY = fast.Statement(
    "UPDATE spend_key SET held_micros = held_micros - :release,"
    " cycle_spend_micros = cycle_spend_micros + :cost, total_spend_micros = total_spend_micros + :cost"
    " WHERE id = :spend_key_id"
)
_POSTED = fast.Statement(
    "UPDATE hold SET status = 'posted', settled_micros = :cost, resolved_at = :resolved_at WHERE id = :hold_id"
)
_SELECT_HOLD = (
    "SELECT wallet_id, spend_key_id, request_id, amount_micros, status FROM hold WHERE id = :hold_id"
)
# Lock order, everywhere: hold, then spend key, then wallet (a hold is taken key first,
# then wallet: `spend_keys.reserve` runs before `reserve`). On PostgreSQL a settlement
# locks the key explicitly before it touches the wallet, or concurrent calls on one key
# would deadlock. SQLite's BEGIN IMMEDIATE already serialises writers.
_LOCK_KEY = fast.Statement("SELECT id FROM spend_key WHERE id = :spend_key_id FOR UPDATE")
_RECORD_EXPIRED = fast.Statement(
    "UPDATE request_record SET status = 'error', error = 'its hold expired before the call settled;"
    " nothing was charged', error_code = 504, completed_at = :completed_at"
    " WHERE id = :request_id AND status = 'pending'"
)
_HOLD_FOR_UPDATE = {
    "sqlite": fast.Statement(_SELECT_HOLD),  # BEGIN IMMEDIATE already holds the write lock
    "default": fast.Statement(_SELECT_HOLD + " FOR UPDATE"),
}


def reserve(
    session: Session,
    *,
    wallet_id: str,
    amount_micros: int,
    request_id: str,
    ttl_s: int,
    spend_key_id: str | None = None,
) -> Hold:
    """Hold `amount_micros` of the wallet's available balance.

    The caller reserves the spend key's share (`spend_keys.reserve`) in the same transaction.
    Raises: InsufficientBalance when balance − held < amount; NotFound for an unknown wallet.
    """
    assert amount_micros >= 0, amount_micros
    if amount_micros > 0:
        taken = fast.run(session, _TAKE, {"amount": amount_micros, "wallet_id": wallet_id})
        if taken.rowcount != 1:
            if session.get(Wallet, wallet_id) is None:
                raise NotFound(f"unknown wallet {wallet_id!r}")
            raise InsufficientBalance()
    now = utc_now()
    hold = Hold.model_construct(
        id=new_id("hold"),
        wallet_id=wallet_id,
        spend_key_id=spend_key_id,
        request_id=request_id,
        amount_micros=amount_micros,
        settled_micros=0,
        status="pending",
        expires_at=now + timedelta(seconds=ttl_s),
        created_at=now,
        resolved_at=None,
    )
    fast.run(
        session,
        _INSERT_HOLD,
        {
            "id": hold.id,
            "wallet_id": wallet_id,
            "spend_key_id": spend_key_id,
            "request_id": request_id,
            "amount": amount_micros,
            "expires_at": hold.expires_at,
            "created_at": now,
        },
    )
    return hold


def post(session: Session, hold_id: str, cost_micros: int, *, memo: str = "") -> int:
    """Settle a pending hold at `cost_micros` (≤ its amount); release the rest.

    Returns the wallet's available balance after (balance − what is still held). A hold
    that is no longer pending (it expired while the call ran) is settled all the same if
    the wallet can still pay: the call ran, and its cost must be recorded; the charge then
    comes out of the available balance.

    Raises: NotFound for an unknown hold.
    """
    dialect = session.get_bind().dialect.name
    found = fast.run(
        session, _HOLD_FOR_UPDATE["sqlite" if dialect == "sqlite" else "default"], {"hold_id": hold_id}
    ).fetchone()
    if found is None:
        raise NotFound(f"unknown hold {hold_id!r}")
    wallet_id, spend_key_id, request_id, amount_micros, status = found
    assert 0 <= cost_micros <= amount_micros, (cost_micros, amount_micros)
    assert status in ("pending", "expired"), (hold_id, status)
    was_pending = status == "pending"
    held_release = amount_micros if was_pending else 0
    _lock_key(session, spend_key_id)
    # A hold no longer pending is gone, so the charge must fit in what is available now.
    wallet_update = _CHARGE if was_pending else _CHARGE_AVAILABLE
    row = fast.run(
        session, wallet_update, {"cost": cost_micros, "release": held_release, "wallet_id": wallet_id}
    ).fetchone()
    if row is None:
        # Only reachable for an expired hold on a wallet emptied meanwhile: charge what
        # is available and record the shortfall in the memo, never go below zero.
        wallet = session.get(Wallet, wallet_id)
        assert wallet is not None
        cost_micros = max(0, wallet.balance_micros - wallet.held_micros)
        memo = f"{memo} (hold expired; short by the rest)".strip()
        row = session.execute(
            update(Wallet)
            .where(col(Wallet.id) == wallet_id)
            .values(balance_micros=col(Wallet.balance_micros) - cost_micros)
            .returning(col(Wallet.balance_micros), col(Wallet.held_micros))
        ).one()
    balance_after, held_after = int(row[0]), int(row[1])
    assert 0 <= held_after <= balance_after, (held_after, balance_after)
    if cost_micros > 0:
        ledger.insert_entry(
            session,
            wallet_id=wallet_id,
            kind="charge",
            amount_micros=-cost_micros,
            balance_after_micros=balance_after,
            reference=request_id,
            memo=memo,
        )
    if spend_key_id is not None:
        _settle_key(session, spend_key_id, held_release, cost_micros)
    fast.run(session, _POSTED, {"cost": cost_micros, "resolved_at": utc_now(), "hold_id": hold_id})
    return balance_after - held_after


def void(session: Session, hold_id: str) -> None:
    """Release a pending hold in full (the call failed or was never made)."""
    hold = _get(session, hold_id)
    if hold.status != "pending":
        return
    _release(session, hold, "voided")


def extend(session: Session, hold_id: str, ttl_s: int) -> None:
    """Push a pending hold's expiry forward (a stream is still alive)."""
    session.execute(
        update(Hold)
        .where(col(Hold.id) == hold_id, col(Hold.status) == "pending")
        .values(expires_at=utc_now() + timedelta(seconds=ttl_s))
    )


def expire_due(session: Session, now: datetime | None = None) -> int:
    """Release every pending hold past its expiry; returns how many were released."""
    due = session.exec(
        select(Hold)
        .where(Hold.status == "pending", col(Hold.expires_at) < (now or utc_now()))
        .with_for_update()
    ).all()
    for hold in due:
        _release(session, hold, "expired")
        # The call never settled (a crash, most likely): say so on its record.
        fast.run(session, _RECORD_EXPIRED, {"request_id": hold.request_id, "completed_at": utc_now()})
    return len(due)


def _release(session: Session, hold: Hold, status: str) -> None:
    _lock_key(session, hold.spend_key_id)
    if hold.amount_micros:
        session.execute(
            update(Wallet)
            .where(col(Wallet.id) == hold.wallet_id)
            .values(held_micros=col(Wallet.held_micros) - hold.amount_micros)
        )
    if hold.spend_key_id is not None:
        _settle_key(session, hold.spend_key_id, hold.amount_micros, 0)
    hold.status = status
    hold.resolved_at = utc_now()
    session.add(hold)


def _lock_key(session: Session, spend_key_id: str | None) -> None:
    if spend_key_id is not None and session.get_bind().dialect.name != "sqlite":
        fast.run(session, _LOCK_KEY, {"spend_key_id": spend_key_id})


def _settle_key(session: Session, spend_key_id: str, released_micros: int, cost_micros: int) -> None:
    fast.run(
        session, _SETTLE_KEY, {"release": released_micros, "cost": cost_micros, "spend_key_id": spend_key_id}
    )


def _get(session: Session, hold_id: str) -> Hold:
    hold = session.get(Hold, hold_id, with_for_update=True)
    if hold is None:
        raise NotFound(f"unknown hold {hold_id!r}")
    return hold
