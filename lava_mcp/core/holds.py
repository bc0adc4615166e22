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
from lava_mcp.store.models import Hold, SpendKey, Wallet, utc_now


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
        result = session.execute(
            update(Wallet)
            .where(col(Wallet.id) == wallet_id)
            .where(col(Wallet.balance_micros) - col(Wallet.held_micros) >= amount_micros)
            .values(held_micros=col(Wallet.held_micros) + amount_micros)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]  # a CursorResult at run time
            if session.get(Wallet, wallet_id) is None:
                raise NotFound(f"unknown wallet {wallet_id!r}")
            raise InsufficientBalance()
    now = utc_now()
    hold = Hold(
        id=new_id("hold"),
        wallet_id=wallet_id,
        spend_key_id=spend_key_id,
        request_id=request_id,
        amount_micros=amount_micros,
        expires_at=now + timedelta(seconds=ttl_s),
        created_at=now,
    )
    session.add(hold)
    session.flush()
    return hold


def post(session: Session, hold_id: str, cost_micros: int, *, memo: str = "") -> int:
    """Settle a pending hold at `cost_micros` (≤ its amount); release the rest.

    Returns the wallet's available balance after (balance − what is still held). A hold that is no longer pending (it expired while
    the call ran) is settled all the same if the wallet can still pay: the call ran, and
    its cost must be recorded; the charge then comes out of the available balance.

    Raises: NotFound for an unknown hold.
    """
    hold = _get(session, hold_id)
    assert 0 <= cost_micros <= hold.amount_micros, (cost_micros, hold.amount_micros)
    assert hold.status in ("pending", "expired"), (hold.id, hold.status)
    was_pending = hold.status == "pending"
    held_release = hold.amount_micros if was_pending else 0
    wallet_update = (
        update(Wallet)
        .where(col(Wallet.id) == hold.wallet_id)
        .values(
            balance_micros=col(Wallet.balance_micros) - cost_micros,
            held_micros=col(Wallet.held_micros) - held_release,
        )
        .returning(col(Wallet.balance_micros), col(Wallet.held_micros))
    )
    if not was_pending:
        # The hold is gone, so the charge must fit in what is available now.
        wallet_update = wallet_update.where(
            col(Wallet.balance_micros) - col(Wallet.held_micros) >= cost_micros
        )
    row = session.execute(wallet_update).one_or_none()
    if row is None:
        # Only reachable for an expired hold on a wallet emptied meanwhile: charge what
        # is available and record the shortfall in the memo, never go below zero.
        wallet = session.get(Wallet, hold.wallet_id)
        assert wallet is not None
        cost_micros = max(0, wallet.balance_micros - wallet.held_micros)
        memo = f"{memo} (hold expired; short by the rest)".strip()
        row = session.execute(
            update(Wallet)
            .where(col(Wallet.id) == hold.wallet_id)
            .values(balance_micros=col(Wallet.balance_micros) - cost_micros)
            .returning(col(Wallet.balance_micros), col(Wallet.held_micros))
        ).one()
    balance_after, held_after = int(row[0]), int(row[1])
    assert 0 <= held_after <= balance_after, (held_after, balance_after)
    if cost_micros > 0:
        ledger.insert_entry(
            session,
            wallet_id=hold.wallet_id,
            kind="charge",
            amount_micros=-cost_micros,
            balance_after_micros=balance_after,
            reference=hold.request_id,
            memo=memo,
        )
    if hold.spend_key_id is not None:
        _settle_key(session, hold.spend_key_id, held_release, cost_micros)
    hold.status = "posted"
    hold.settled_micros = cost_micros
    hold.resolved_at = utc_now()
    session.add(hold)
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
    return len(due)


def _release(session: Session, hold: Hold, status: str) -> None:
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


def _settle_key(session: Session, spend_key_id: str, released_micros: int, cost_micros: int) -> None:
    session.execute(
        update(SpendKey)
        .where(col(SpendKey.id) == spend_key_id)
        .values(
            held_micros=col(SpendKey.held_micros) - released_micros,
            cycle_spend_micros=col(SpendKey.cycle_spend_micros) + cost_micros,
            total_spend_micros=col(SpendKey.total_spend_micros) + cost_micros,
        )
    )


def _get(session: Session, hold_id: str) -> Hold:
    hold = session.get(Hold, hold_id, with_for_update=True)
    if hold is None:
        raise NotFound(f"unknown hold {hold_id!r}")
    return hold
