"""Holds: pending → posted (at most the held amount) | voided | expired.

A hold is taken with one conditional UPDATE (available = balance − held − shortfall must
cover it, and the wallet's money must be in the server's mode), so concurrent calls can
never overdraw a wallet, on SQLite or PostgreSQL alike. Posting more than the hold is
impossible by construction: the charge is `min`-checked here and the provider's reported
usage can only lower it. A hold also counts against its spend key's cycle limit (see
`spend_keys`), released and posted in the same transaction.

Cycles: a hold's cost counts in the key's current cycle only if the hold was taken in
it, i.e. the cycle began no later than the hold was created (a call held before midnight
and settled after counts in the day it was held; a call in flight when its key moves to
another cycle counts in the new one, which began before it); it always counts in the
key's total. A voided hold (the call failed upstream, or never left) gives its request
back on the same terms. A key's cycle start only moves forward (`spend_keys._RESERVE`),
except when its owner changes the cycle.

Lock order, everywhere: hold, then spend key, then wallet; and the expired-hold sweep
releases one hold per transaction (`expire_one`), so it never holds one wallet while
waiting for another call's key.

Posting is idempotent: a settle retried after a commit whose answer was lost finds the
hold posted and charges nothing twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import update
from sqlmodel import Session, col, select

from lava_mcp.core import ledger
from lava_mcp.errors import Forbidden, InsufficientBalance, NotFound
from lava_mcp.ids import new_id
from lava_mcp.money import format_cost
from lava_mcp.store import fast
from lava_mcp.store.models import Hold, SpendKey, Wallet, utc_now

# The hot path's statements run straight on the driver (`store.fast`); the same SQL on
# SQLite and PostgreSQL.
_AVAILABLE = "balance_micros - held_micros - shortfall_micros"
_TAKE = fast.Statement(
    f"UPDATE wallet SET held_micros = held_micros + :amount WHERE id = :wallet_id AND {_AVAILABLE} >= :amount"
)
_TAKE_IN_MODE = fast.Statement(
    "UPDATE wallet SET held_micros = held_micros + :amount"
    f" WHERE id = :wallet_id AND mode = :mode AND {_AVAILABLE} >= :amount"
)
_INSERT_HOLD = fast.Statement(
    "INSERT INTO hold (id, wallet_id, spend_key_id, request_id, amount_micros, settled_micros, status,"
    " expires_at, created_at) VALUES (:id, :wallet_id, :spend_key_id, :request_id, :amount, 0, 'pending',"
    " :expires_at, :created_at)"
)
_CHARGE = fast.Statement(
    "UPDATE wallet SET balance_micros = balance_micros - :cost, held_micros = held_micros - :release"
    " WHERE id = :wallet_id RETURNING balance_micros, held_micros, shortfall_micros"
)
# The cost counts in the key's current cycle only if the hold was taken in it: the cycle
# began no later than the hold (`:held_at`, the hold's creation). A rollover since then
# moved the cycle's start past the hold; a change of cycle (`spend_keys.update_key`) sets
# the new cycle's start, so calls held in it before the change still count there.
_SETTLE_KEY = fast.Statement(
    "UPDATE spend_key SET held_micros = held_micros - :release,"
    " cycle_spend_micros = cycle_spend_micros"
    " + (CASE WHEN cycle_started_at <= :held_at THEN :cost ELSE 0 END),"
    " total_spend_micros = total_spend_micros + :cost"
    " WHERE id = :spend_key_id"
)
# A voided call gives its request back to the cycle it was counted in.
_GIVE_BACK_REQUEST = fast.Statement(
    "UPDATE spend_key SET cycle_requests = cycle_requests"
    " - (CASE WHEN request_cycle_started_at <= :held_at AND cycle_requests > 0 THEN 1 ELSE 0 END)"
    " WHERE id = :spend_key_id"
)
_POSTED = fast.Statement(
    "UPDATE hold SET status = 'posted', settled_micros = :cost, resolved_at = :resolved_at WHERE id = :hold_id"
)
_SELECT_HOLD = (
    "SELECT wallet_id, spend_key_id, request_id, amount_micros, status, created_at"
    " FROM hold WHERE id = :hold_id"
)
_SELECT_AVAILABLE = fast.Statement(f"SELECT {_AVAILABLE} FROM wallet WHERE id = :wallet_id")
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
_RELEASE_WALLET = fast.Statement(
    "UPDATE wallet SET held_micros = held_micros - :amount WHERE id = :wallet_id"
)
_RESOLVED = fast.Statement("UPDATE hold SET status = :status, resolved_at = :resolved_at WHERE id = :hold_id")


def reserve(
    session: Session,
    *,
    wallet_id: str,
    amount_micros: int,
    request_id: str,
    ttl_s: int,
    spend_key_id: str | None = None,
    mode: str | None = None,
) -> Hold:
    """Hold `amount_micros` of the wallet's available balance.

    The caller reserves the spend key's share (`spend_keys.reserve`) in the same transaction.
    `mode` (the server's money mode) is required of the wallet when anything is held: a
    balance buys paid calls only on a server whose money is in the same mode.

    Raises: InsufficientBalance when balance − held − shortfall < amount (with `required`,
    `available` and `short_by`); Forbidden for a wallet in another mode; NotFound for an
    unknown wallet.
    """
    assert amount_micros >= 0, amount_micros
    if amount_micros > 0:
        parameters = {"amount": amount_micros, "wallet_id": wallet_id}
        if mode is None:
            taken = fast.run(session, _TAKE, parameters)
        else:
            taken = fast.run(session, _TAKE_IN_MODE, {**parameters, "mode": mode})
        if taken.rowcount != 1:
            _refuse(session, wallet_id, amount_micros, mode)
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
    inserted = fast.run(
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
    assert inserted.rowcount == 1, (request_id, spend_key_id)
    return hold


def _refuse(session: Session, wallet_id: str, amount_micros: int, mode: str | None) -> NoReturn:
    """Raise the refusal a hold that could not be taken means (read after the failed UPDATE)."""
    wallet = session.get(Wallet, wallet_id, populate_existing=True)
    if wallet is None:
        raise NotFound(f"unknown wallet {wallet_id!r}")
    if mode is not None and wallet.mode != mode:
        raise Forbidden(
            f"this wallet holds {wallet.mode} money, and this server's payments are {mode}: "
            f"{wallet.mode} money can't pay for calls here",
            next_step=f"use a wallet funded in {mode} mode on this server",
        )
    available = max(0, wallet.balance_micros - wallet.held_micros - wallet.shortfall_micros)
    extra = {
        "required": format_cost(amount_micros),
        "available": format_cost(available),
        "short_by": format_cost(amount_micros - available),
    }
    if wallet.shortfall_micros:
        extra["shortfall"] = format_cost(wallet.shortfall_micros)
    raise InsufficientBalance(
        next_step="lower max_tokens (the hold is the most the call could cost) or add funds",
        extra=extra,
    )


def post(session: Session, hold_id: str, cost_micros: int, *, memo: str = "") -> int:
    """Settle a pending hold at `cost_micros` (≤ its amount); release the rest.

    Returns the wallet's available balance after (balance − held − shortfall). A hold
    already posted (a retried settle whose first commit went through) is left as it is.

    A hold that is no longer pending (it expired while the call ran) is settled all the
    same: the call ran, and its cost must be recorded. Its money is no longer held, so the
    charge is what the wallet can still pay and what the spend key's limit still has room
    for, never more; what could not be charged is written in the charge's memo.

    Raises: NotFound for an unknown hold.
    """
    wallet_id, spend_key_id, request_id, amount_micros, status, held_at = _locked(session, hold_id)
    assert 0 <= cost_micros <= amount_micros, (cost_micros, amount_micros)
    if status == "posted":
        return _available(session, wallet_id)
    assert status in ("pending", "expired"), (hold_id, status)
    was_pending = status == "pending"
    held_release = amount_micros if was_pending else 0
    _lock_key(session, spend_key_id)
    if was_pending:
        row = fast.run(
            session, _CHARGE, {"cost": cost_micros, "release": held_release, "wallet_id": wallet_id}
        ).fetchone()
    else:
        cost_micros, memo = _late_charge(session, wallet_id, spend_key_id, held_at, cost_micros, memo)
        row = session.execute(
            update(Wallet)
            .where(col(Wallet.id) == wallet_id)
            .values(balance_micros=col(Wallet.balance_micros) - cost_micros)
            .returning(col(Wallet.balance_micros), col(Wallet.held_micros), col(Wallet.shortfall_micros))
        ).one()
    balance_after, held_after, shortfall = int(row[0]), int(row[1]), int(row[2])
    assert 0 <= held_after <= balance_after, (held_after, balance_after)
    if cost_micros > 0:
        ledger.append_entry(
            session,
            wallet_id=wallet_id,
            kind="charge",
            amount_micros=-cost_micros,
            balance_after_micros=balance_after,
            reference=request_id,
            memo=memo,
        )
    if spend_key_id is not None:
        _settle_key(session, spend_key_id, held_release, cost_micros, held_at)
    fast.run(session, _POSTED, {"cost": cost_micros, "resolved_at": utc_now(), "hold_id": hold_id})
    return max(0, balance_after - held_after - shortfall)


def _late_charge(
    session: Session,
    wallet_id: str,
    spend_key_id: str | None,
    held_at: object,
    cost_micros: int,
    memo: str,
) -> tuple[int, str]:
    """What an expired hold's call may still be charged: at most what the wallet has
    available and what its key's limit has room for in the cycle it was held in.

    The wallet is locked before it is read (after the key: the one lock order), so no hold
    taken meanwhile can make the charge exceed what is available."""
    wallet = ledger.lock_wallet(session, wallet_id)
    charge = min(cost_micros, max(0, wallet.balance_micros - wallet.held_micros - wallet.shortfall_micros))
    short = (
        [f"hold expired; the wallet was short by {format_cost(cost_micros - charge)}"]
        if charge < cost_micros
        else []
    )
    key = session.get(SpendKey, spend_key_id, populate_existing=True) if spend_key_id else None
    if key is not None and key.spend_limit_micros is not None:
        same_cycle = key.cycle_started_at is not None and _comparable_time(
            key.cycle_started_at
        ) <= _comparable_time(held_at)
        if same_cycle:
            room = max(0, key.spend_limit_micros - key.cycle_spend_micros - key.held_micros)
            if room < charge:
                short.append(f"hold expired; the key's limit was short by {format_cost(charge - room)}")
                charge = room
    if short:
        memo = f"{memo} ({'; '.join(short)}: not charged)".strip()
    return charge, memo


def _comparable_time(value: object) -> str:
    """A datetime as `store.fast` binds it on SQLite (the text SQLite stores and compares)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return str(value)


def _available(session: Session, wallet_id: str) -> int:
    return max(0, int(fast.run(session, _SELECT_AVAILABLE, {"wallet_id": wallet_id}).fetchone()[0]))


def void(session: Session, hold_id: str) -> None:
    """Release a pending hold in full (the call failed or was never made) and give its
    request back to the spend key's cycle it was counted in. Idempotent.

    Raises: NotFound for an unknown hold.
    """
    found = _locked(session, hold_id)
    wallet_id, spend_key_id, _, amount_micros, status, held_at = found
    if status != "pending":
        return
    _release(session, hold_id, wallet_id, spend_key_id, amount_micros, held_at, "voided")
    if spend_key_id is not None:
        fast.run(session, _GIVE_BACK_REQUEST, {"spend_key_id": spend_key_id, "held_at": held_at})


def extend(session: Session, hold_id: str, ttl_s: int) -> None:
    """Push a pending hold's expiry forward (a stream is still alive)."""
    session.execute(
        update(Hold)
        .where(col(Hold.id) == hold_id, col(Hold.status) == "pending")
        .values(expires_at=utc_now() + timedelta(seconds=ttl_s))
    )


def due(session: Session, now: datetime | None = None, limit: int = 1000) -> list[str]:
    """The ids of pending holds past their expiry (read without locks; `expire_one` checks)."""
    return list(
        session.exec(
            select(Hold.id)
            .where(Hold.status == "pending", col(Hold.expires_at) < (now or utc_now()))
            .order_by(col(Hold.expires_at))
            .limit(limit)
        ).all()
    )


def expire_one(session: Session, hold_id: str, now: datetime | None = None) -> bool:
    """Release one hold if it is still pending and past its expiry; True if it was.

    One hold per transaction, locked hold → key → wallet like a settlement, so the sweep
    never waits for a key while it holds a wallet another call's settlement needs.
    """
    hold = _get(session, hold_id)
    if hold.status != "pending" or hold.expires_at >= (now or utc_now()):
        return False
    _release(
        session, hold.id, hold.wallet_id, hold.spend_key_id, hold.amount_micros, hold.created_at, "expired"
    )
    fast.run(session, _RECORD_EXPIRED, {"request_id": hold.request_id, "completed_at": utc_now()})
    return True


def expire_due(session: Session, now: datetime | None = None) -> int:
    """Release every pending hold past its expiry in this one transaction; returns how
    many were released. For maintenance and tests: holding several keys' locks at once,
    it could deadlock with live settlements on PostgreSQL, so the background sweep runs
    `expire_one` in a transaction per hold instead."""
    now = now or utc_now()
    return sum(expire_one(session, hold_id, now) for hold_id in due(session, now))


def _release(
    session: Session,
    hold_id: str,
    wallet_id: str,
    spend_key_id: str | None,
    amount_micros: int,
    held_at: object,
    status: str,
) -> None:
    """Give a locked, pending hold's money back to its wallet and key (lock order: key, wallet)."""
    _lock_key(session, spend_key_id)
    if amount_micros:
        fast.run(session, _RELEASE_WALLET, {"amount": amount_micros, "wallet_id": wallet_id})
    if spend_key_id is not None:
        _settle_key(session, spend_key_id, amount_micros, 0, held_at)
    fast.run(session, _RESOLVED, {"status": status, "resolved_at": utc_now(), "hold_id": hold_id})


def _locked(session: Session, hold_id: str) -> Any:
    """The hold's (wallet_id, spend_key_id, request_id, amount_micros, status, created_at),
    locked for this transaction (the first lock of the one lock order).

    Raises: NotFound for an unknown hold.
    """
    dialect = session.get_bind().dialect.name
    found = fast.run(
        session, _HOLD_FOR_UPDATE["sqlite" if dialect == "sqlite" else "default"], {"hold_id": hold_id}
    ).fetchone()
    if found is None:
        raise NotFound(f"unknown hold {hold_id!r}")
    return found


def _lock_key(session: Session, spend_key_id: str | None) -> None:
    if spend_key_id is not None and session.get_bind().dialect.name != "sqlite":
        fast.run(session, _LOCK_KEY, {"spend_key_id": spend_key_id})


def _settle_key(
    session: Session, spend_key_id: str, released_micros: int, cost_micros: int, held_at: object
) -> None:
    fast.run(
        session,
        _SETTLE_KEY,
        {"release": released_micros, "cost": cost_micros, "spend_key_id": spend_key_id, "held_at": held_at},
    )


def _get(session: Session, hold_id: str) -> Hold:
    hold = session.get(Hold, hold_id, with_for_update=True)
    if hold is None:
        raise NotFound(f"unknown hold {hold_id!r}")
    return hold
