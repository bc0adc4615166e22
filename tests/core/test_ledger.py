"""Ledger entries, wallets and `ledger verify` (DESIGN §3)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import event, text, update
from sqlmodel import select

from lava_mcp.core import holds, ledger, verify, wallet
from lava_mcp.errors import BadRequest, NotFound, Unauthorized
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import Hold, LedgerEntry, Wallet
from tests.conftest import fund, ledger_state


def test_a_new_wallet_is_empty_and_its_key_opens_it(runtime: Runtime) -> None:
    created = wallet.create_wallet(runtime.db, name="me")
    assert created.wallet_key.startswith("lava_wk_") and len(created.wallet_key) >= 8 + 43
    assert wallet.authenticate(runtime.db, created.wallet_key).id == created.wallet_id
    balance = wallet.get_balance(runtime.db, created.wallet_id)
    assert (balance.balance_micros, balance.held_micros, balance.available_micros) == (0, 0, 0)
    with runtime.db.read() as session:
        row = session.get(Wallet, created.wallet_id)
    assert row is not None and created.wallet_key not in (row.key_hash, row.key_preview)


@pytest.mark.parametrize(
    "key", [None, "", "lava_wk_", "lava_wk_wrong", "lava_sk_abc", "'; DROP TABLE wallet; --"]
)
def test_an_unknown_wallet_key_is_401(runtime: Runtime, new_wallet, key: str | None) -> None:
    with pytest.raises(Unauthorized):
        wallet.authenticate(runtime.db, key)


def test_deposits_are_idempotent_on_their_reference(runtime: Runtime, new_wallet) -> None:
    for _ in range(3):
        with runtime.db.write() as session:
            ledger.credit(
                session,
                wallet_id=new_wallet.wallet_id,
                kind="deposit",
                amount_micros=25_000_000,
                reference="pay_1",
            )
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.entries) == (25_000_000, 1)


def test_an_adjustment_may_not_overdraw_the_wallet_or_its_holds(runtime: Runtime, new_wallet) -> None:
    fund(runtime, new_wallet.wallet_id, "10.00")
    with runtime.db.write() as session:
        holds.reserve(
            session, wallet_id=new_wallet.wallet_id, amount_micros=4_000_000, request_id="r", ttl_s=60
        )
    with pytest.raises(BadRequest):
        wallet.adjust(runtime.db, new_wallet.wallet_id, "-6.01", reason="too much")
    balance = wallet.adjust(runtime.db, new_wallet.wallet_id, "-6.00", reason="refund by hand")
    assert (balance.balance_micros, balance.held_micros) == (4_000_000, 4_000_000)
    with pytest.raises(NotFound):
        wallet.adjust(runtime.db, "wal_missing", "1.00", reason="x")
    with pytest.raises(BadRequest):
        wallet.adjust(runtime.db, new_wallet.wallet_id, "1.00", reason="  ")
    assert verify.verify(runtime.db) == []


def test_every_entry_records_the_balance_after_it(runtime: Runtime, new_wallet) -> None:
    for amount in ("5.00", "2.50", "-1.25"):
        wallet.adjust(runtime.db, new_wallet.wallet_id, amount, reason="test")
    with runtime.db.read() as session:
        entries = session.exec(select(LedgerEntry).order_by(LedgerEntry.id)).all()  # type: ignore[arg-type]
    assert [(e.amount_micros, e.balance_after_micros) for e in entries] == [
        (5_000_000, 5_000_000),
        (2_500_000, 7_500_000),
        (-1_250_000, 6_250_000),
    ]


def test_verify_reports_a_balance_that_disagrees_with_its_entries(runtime: Runtime, new_wallet) -> None:
    fund(runtime, new_wallet.wallet_id, "10.00")
    assert verify.verify(runtime.db) == []
    with runtime.db.write() as session:
        session.execute(text("UPDATE wallet SET balance_micros = balance_micros + 1"))
    assert verify.verify(runtime.db) == [
        f"wallet {new_wallet.wallet_id}: balance 10000001 != sum of entries 10000000"
    ]


def test_verify_reports_held_money_without_a_hold_and_a_negative_balance(
    runtime: Runtime, new_wallet
) -> None:
    with runtime.db.write() as session:
        session.execute(update(Wallet).values(balance_micros=-5, held_micros=3))
    problems = verify.verify(runtime.db)
    assert any("below zero" in problem for problem in problems)
    assert any("held 3 != open holds 0" in problem for problem in problems)
    assert any("exceeds balance" in problem for problem in problems)


def test_verify_reports_a_hold_settled_above_its_amount(runtime: Runtime, new_wallet) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    with runtime.db.write() as session:
        hold = holds.reserve(
            session, wallet_id=new_wallet.wallet_id, amount_micros=10, request_id="r", ttl_s=60
        )
        holds.post(session, hold.id, 10)
    with runtime.db.write() as session:
        session.execute(update(Hold).values(settled_micros=11))
    assert verify.verify(runtime.db) == [f"hold {hold.id}: settled 11 above its amount 10"]


def test_verify_sees_one_snapshot_while_money_moves(runtime: Runtime, new_wallet) -> None:
    """`ledger verify` runs beside a live server: a credit that commits between its first
    query (the sums of entries) and the next ones (the wallets) must not look like a broken
    invariant. On PostgreSQL at READ COMMITTED each statement saw its own snapshot and
    verify reported "balance != sum of entries" for a sound ledger."""
    fund(runtime, new_wallet.wallet_id, "1.00")
    credited: list[threading.Thread] = []

    def credit_after_the_first_read(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if credited or not statement.lstrip().upper().startswith("SELECT"):
            return
        credit = threading.Thread(
            target=wallet.adjust,
            args=(runtime.db, new_wallet.wallet_id, "0.25"),
            kwargs={"reason": "meanwhile"},
        )
        credited.append(credit)
        credit.start()
        credit.join()  # committed on another connection before verify's next statement

    event.listen(runtime.db.engine, "after_cursor_execute", credit_after_the_first_read)
    try:
        problems = verify.verify(runtime.db)
    finally:
        event.remove(runtime.db.engine, "after_cursor_execute", credit_after_the_first_read)
    assert len(credited) == 1
    assert problems == []
    assert ledger_state(runtime.db, new_wallet.wallet_id).balance_micros == 1_250_000
    assert verify.verify(runtime.db) == []
