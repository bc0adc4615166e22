"""Wallets: create, authenticate, read the balance, operator credits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlmodel import select

from lava_mcp.core import ledger
from lava_mcp.errors import BadRequest, NotFound, Unauthorized
from lava_mcp.ids import WALLET_KEY_PREFIX, hash_secret, new_id, new_secret, preview
from lava_mcp.money import parse_amount
from lava_mcp.store import fast
from lava_mcp.store.db import Database
from lava_mcp.store.models import Wallet


@dataclass(frozen=True)
class NewWallet:
    wallet_id: str
    wallet_key: str  # shown once, never stored


@dataclass(frozen=True)
class Balance:
    wallet_id: str
    balance_micros: int
    held_micros: int
    mode: str
    # Owed to the processor (refunds, disputes the balance could not take): not spendable.
    shortfall_micros: int = 0

    @property
    def available_micros(self) -> int:
        return max(0, self.balance_micros - self.held_micros - self.shortfall_micros)


WALLET_MODES = ("sandbox", "test", "live")


def create_wallet(
    db: Database,
    *,
    name: str = "",
    mode: str = "sandbox",
    before_commit: Callable[[NewWallet], None] | None = None,
) -> NewWallet:
    """Create a wallet; its key is returned once and stored only as a hash.

    `mode` is the kind of money it holds: `sandbox`, `test` (Stripe test mode) or `live`;
    only a server whose payments run in that mode funds it. `before_commit` runs inside
    the transaction, so a caller that must keep the key (a key file) has it kept before the
    wallet exists; if it raises, no wallet is made.
    Raises: BadRequest for another mode; whatever `before_commit` raises.
    """
    if mode not in WALLET_MODES:
        raise BadRequest("mode must be 'sandbox', 'test' or 'live'")
    key = new_secret(WALLET_KEY_PREFIX)
    wallet = Wallet(
        id=new_id("wal"),
        name=name[:200],
        key_hash=hash_secret(key),
        key_preview=preview(key),
        mode=mode,
    )
    created = NewWallet(wallet_id=wallet.id, wallet_key=key)
    with db.write() as session:
        session.add(wallet)
        if before_commit is not None:
            session.flush()  # the row is accepted before the key is kept anywhere
            before_commit(created)
    return created


def authenticate(db: Database, wallet_key: str | None) -> Wallet:
    """The wallet a key belongs to.

    Lookup is by the key's SHA-256 (an index seek on a hash leaks nothing useful about
    the key, so no constant-time scan is needed).
    Raises: Unauthorized for a missing, malformed or unknown key.
    """
    if not wallet_key or not wallet_key.startswith(WALLET_KEY_PREFIX):
        raise Unauthorized(
            "a wallet key (lava_wk_…) is required",
            next_step="set LAVA_WALLET_KEY, or run `lava-mcp wallet create`",
        )
    with db.read() as session:
        wallet = session.exec(select(Wallet).where(Wallet.key_hash == hash_secret(wallet_key))).first()
    if wallet is None:
        raise Unauthorized("unknown wallet key")
    return wallet


def get_balance(db: Database, wallet_id: str) -> Balance:
    """Raises: NotFound for an unknown wallet."""
    with db.read() as session:
        wallet = session.get(Wallet, wallet_id)
    if wallet is None:
        raise NotFound(f"unknown wallet {wallet_id!r}")
    return Balance(wallet.id, wallet.balance_micros, wallet.held_micros, wallet.mode, wallet.shortfall_micros)


_BALANCE_AND_INVITED = fast.Statement(
    "SELECT balance_micros, held_micros, mode, shortfall_micros,"
    " EXISTS (SELECT 1 FROM org_invitation WHERE wallet_id = :wallet_id AND status = 'pending')"
    " FROM wallet WHERE id = :wallet_id"
)


def get_balance_and_invited(db: Database, wallet_id: str) -> tuple[Balance, bool]:
    """The balance, and whether an org invitation awaits the wallet's answer: one raw
    statement (what `get_balance` answers on every call; the ORM's two reads cost twenty
    times as much). Blocking: run it in a worker thread.

    Raises: NotFound for an unknown wallet.
    """
    return _balance_and_invited(
        fast.read_one(db.engine, _BALANCE_AND_INVITED, {"wallet_id": wallet_id}), wallet_id
    )


def balance_and_invited_now(reads: fast.LoopReads, wallet_id: str) -> tuple[Balance, bool]:
    """`get_balance_and_invited`, read by the event loop itself (`store.fast.LoopReads`).

    Raises: NotFound for an unknown wallet; fast.WouldWait when SQLite would wait for a lock.
    """
    return _balance_and_invited(reads.read_one(_BALANCE_AND_INVITED, {"wallet_id": wallet_id}), wallet_id)


def _balance_and_invited(row: Any, wallet_id: str) -> tuple[Balance, bool]:
    if row is None:
        raise NotFound(f"unknown wallet {wallet_id!r}")
    balance_micros, held_micros, mode, shortfall_micros, invited = row
    return Balance(wallet_id, balance_micros, held_micros, mode, shortfall_micros), bool(invited)


def adjust(
    db: Database, wallet_id: str, amount: object, *, reason: str, reference: str | None = None
) -> Balance:
    """An operator's `adjustment` entry (support credits, tests). Positive or negative.

    Raises: BadRequest for a malformed amount or a missing reason; NotFound.
    """
    if not reason.strip():
        raise BadRequest("an adjustment needs a reason")
    text = str(amount).strip()
    negative = text.startswith("-")
    micros = parse_amount(text[1:] if negative else amount)
    with db.write() as session:
        ledger.credit(
            session,
            wallet_id=wallet_id,
            kind="adjustment",
            amount_micros=-micros if negative else micros,
            reference=reference or new_id("adj"),
            memo=reason[:500],
        )
    return get_balance(db, wallet_id)
