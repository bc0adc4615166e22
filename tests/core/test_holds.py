"""Holds (DESIGN §3): pending → posted (at most the hold) | voided | expired."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import select

from lava_mcp.core import holds, verify
from lava_mcp.errors import InsufficientBalance, NotFound
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import Hold, LedgerEntry, RequestRecord, utc_now
from tests.conftest import fund, ledger_state
from tests.fake_provider import FakeProvider

pytestmark = pytest.mark.usefixtures("fake")

CHEAP_CALL = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}


def reserve(
    runtime: Runtime, wallet_id: str, micros: int, request_id: str = "req_test", ttl_s: int = 60
) -> Hold:
    with runtime.db.write() as session:
        return holds.reserve(
            session, wallet_id=wallet_id, amount_micros=micros, request_id=request_id, ttl_s=ttl_s
        )


def test_a_hold_takes_from_the_available_balance_only(runtime: Runtime, new_wallet) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    reserve(runtime, new_wallet.wallet_id, 600_000, "req_a")
    with pytest.raises(InsufficientBalance):
        reserve(runtime, new_wallet.wallet_id, 400_001, "req_b")
    reserve(runtime, new_wallet.wallet_id, 400_000, "req_c")
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros, state.pending_holds) == (1_000_000, 1_000_000, 2)
    assert verify.verify(runtime.db) == []


def test_a_hold_on_an_unknown_wallet_is_404(runtime: Runtime) -> None:
    with pytest.raises(NotFound):
        reserve(runtime, "wal_missing", 1)


def test_post_charges_the_actual_cost_and_releases_the_rest(runtime: Runtime, new_wallet) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    hold = reserve(runtime, new_wallet.wallet_id, 300_000, "req_post")
    with runtime.db.write() as session:
        available = holds.post(session, hold.id, 120_000, memo="test")
    assert available == 880_000
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros, state.pending_holds) == (880_000, 0, 0)
    with runtime.db.read() as session:
        charge = session.exec(select(LedgerEntry).where(LedgerEntry.kind == "charge")).one()
        posted = session.get(Hold, hold.id)
    assert (charge.amount_micros, charge.balance_after_micros, charge.reference) == (
        -120_000,
        880_000,
        "req_post",
    )
    assert posted is not None and (posted.status, posted.settled_micros) == ("posted", 120_000)
    assert verify.verify(runtime.db) == []


def test_posting_more_than_the_hold_is_impossible(runtime: Runtime, new_wallet) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    hold = reserve(runtime, new_wallet.wallet_id, 1_000)
    with pytest.raises(AssertionError), runtime.db.write() as session:
        holds.post(session, hold.id, 1_001)
    state = ledger_state(runtime.db, new_wallet.wallet_id)  # the transaction rolled back
    assert (state.balance_micros, state.held_micros, state.entries) == (1_000_000, 1_000, 1)


def test_void_releases_everything_and_is_idempotent(runtime: Runtime, new_wallet) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    hold = reserve(runtime, new_wallet.wallet_id, 500_000)
    for _ in range(2):
        with runtime.db.write() as session:
            holds.void(session, hold.id)
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros, state.pending_holds, state.entries) == (
        1_000_000,
        0,
        0,
        1,
    )


def test_expire_due_releases_only_holds_past_their_expiry(runtime: Runtime, new_wallet) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    short = reserve(runtime, new_wallet.wallet_id, 100_000, "req_short", ttl_s=60)
    long = reserve(runtime, new_wallet.wallet_id, 200_000, "req_long", ttl_s=600)
    assert short.expires_at < long.expires_at
    with runtime.db.write() as session:
        assert holds.expire_due(session, now=short.expires_at - timedelta(seconds=1)) == 0
    with runtime.db.write() as session:
        assert holds.expire_due(session, now=short.expires_at + timedelta(seconds=1)) == 1
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.held_micros, state.pending_holds) == (200_000, 1)
    with runtime.db.write() as session:
        assert holds.expire_due(session, now=long.expires_at + timedelta(seconds=1)) == 1
        assert holds.expire_due(session, now=long.expires_at + timedelta(days=1)) == 0
    with runtime.db.read() as session:
        statuses = {h.id: h.status for h in session.exec(select(Hold)).all()}
    assert statuses == {short.id: "expired", long.id: "expired"}
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros, state.pending_holds) == (1_000_000, 0, 0)
    assert verify.verify(runtime.db) == []


def test_a_call_that_settles_after_its_hold_expired_is_still_charged(runtime: Runtime, new_wallet) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    hold = reserve(runtime, new_wallet.wallet_id, 300_000)
    with runtime.db.write() as session:
        assert holds.expire_due(session, now=hold.expires_at + timedelta(seconds=1)) == 1
    with runtime.db.write() as session:
        available = holds.post(session, hold.id, 250_000)
    assert available == 750_000
    assert verify.verify(runtime.db) == []


def test_a_late_settlement_never_takes_the_wallet_below_zero(runtime: Runtime, new_wallet) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    hold = reserve(runtime, new_wallet.wallet_id, 900_000, "req_late")
    with runtime.db.write() as session:
        holds.expire_due(session, now=hold.expires_at + timedelta(seconds=1))
    # Meanwhile another call holds most of what is left.
    reserve(runtime, new_wallet.wallet_id, 800_000, "req_other")
    with runtime.db.write() as session:
        available = holds.post(session, hold.id, 900_000)
    assert available == 0
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros) == (800_000, 800_000)
    with runtime.db.read() as session:
        charge = session.exec(select(LedgerEntry).where(LedgerEntry.reference == "req_late")).one()
    assert charge.amount_micros == -200_000 and "short" in charge.memo
    assert verify.verify(runtime.db) == []


async def test_metering_expire_holds_releases_a_crashed_call(runtime: Runtime, new_wallet) -> None:
    """A process that dies between hold and settle loses nothing: the sweep releases it."""
    fund(runtime, new_wallet.wallet_id, "1.00")
    ticket = await runtime.metering.open(
        wallet_id=new_wallet.wallet_id,
        service_id="cheapchat",
        model="cheap-1",
        body=CHEAP_CALL,
        endpoint="test",
    )
    assert runtime.metering.expire_holds() == 0  # not due yet
    assert ledger_state(runtime.db, new_wallet.wallet_id).held_micros == ticket.hold_micros
    with runtime.db.write() as session:  # ... the process "crashed"; time passes
        session.execute(
            update(Hold).where(Hold.id == ticket.hold_id).values(expires_at=utc_now() - timedelta(hours=1))  # type: ignore[arg-type]
        )
    assert any("still pending" in problem for problem in verify.verify(runtime.db))
    assert runtime.metering.expire_holds() == 1
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros, state.pending_holds) == (1_000_000, 0, 0)
    assert verify.verify(runtime.db) == []
    with runtime.db.read() as session:  # the request no longer reads as in flight
        record = session.get(RequestRecord, ticket.request_id)
    assert record is not None and (record.status, record.error_code) == ("error", 504)


async def test_settle_never_charges_more_than_the_hold(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    fake.overreport_tokens = 1_000_000  # the provider claims far more output than max_tokens
    outcome = await runtime.metering.call(
        wallet_id=new_wallet.wallet_id, service_id="cheapchat", model="cheap-1", body=CHEAP_CALL
    )
    with runtime.db.read() as session:
        hold = session.exec(select(Hold)).one()
        record = session.get(RequestRecord, outcome.settlement.request_id)
    assert hold.status == "posted"
    assert outcome.settlement.cost.total_micros == hold.settled_micros == hold.amount_micros
    assert record is not None and record.cost_micros == hold.amount_micros
    assert ledger_state(runtime.db, new_wallet.wallet_id).balance_micros == 1_000_000 - hold.amount_micros
    assert verify.verify(runtime.db) == []
