"""`store.fast.read_one` and `LoopReads`: a statement answered outside any session, on a
pooled connection (both databases) or on the event loop's own SQLite connection — here the
balance `get_balance` answers from (`wallet.get_balance_and_invited`): the wallet row's
figures and whether an org invitation awaits its answer, in one statement. The loop's
connection never waits for a lock and never writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lava_mcp.core import holds, orgs, wallet
from lava_mcp.errors import NotFound
from lava_mcp.runtime import Runtime
from lava_mcp.store import fast
from tests.conftest import fund


def test_the_one_statement_balance_is_the_ledgers_and_sees_pending_invitations(
    runtime: Runtime, new_wallet: wallet.NewWallet
) -> None:
    db = runtime.db
    fund(runtime, new_wallet.wallet_id, "5.00")
    with db.write() as session:
        holds.reserve(
            session, wallet_id=new_wallet.wallet_id, amount_micros=1_250_000, request_id="req_t", ttl_s=60
        )
    balance, invited = wallet.get_balance_and_invited(db, new_wallet.wallet_id)
    assert balance == wallet.get_balance(db, new_wallet.wallet_id)
    assert (balance.balance_micros, balance.held_micros, balance.mode, invited) == (
        5_000_000,
        1_250_000,
        "sandbox",
        False,
    )

    admin = wallet.create_wallet(db, name="admin")
    org = orgs.create_org(db, name="Acme", plan=orgs.PLANS[0], admin_wallet_id=admin.wallet_id)
    invitation = orgs.invite_member(db, org.org_id, new_wallet.wallet_id, actor_wallet_id=admin.wallet_id)
    assert wallet.get_balance_and_invited(db, new_wallet.wallet_id)[1] is True
    assert wallet.get_balance_and_invited(db, admin.wallet_id)[1] is False
    orgs.answer_invitation(db, invitation.invitation_id, accept=False, wallet_id=new_wallet.wallet_id)
    assert wallet.get_balance_and_invited(db, new_wallet.wallet_id)[1] is False


def test_the_one_statement_balance_of_an_unknown_wallet_is_not_found(runtime: Runtime) -> None:
    with pytest.raises(NotFound):
        wallet.get_balance_and_invited(runtime.db, "wal_nope")


@pytest.mark.sqlite_only  # the event loop's own SQLite connection
def test_the_loops_connection_never_waits_for_a_lock_and_never_writes(
    runtime: Runtime, tmp_path: Path
) -> None:
    """`LoopReads`: SQLite's busy timeout 0 (a read that would wait raises WouldWait at once,
    never sleeping in the busy handler on the event loop) and `query_only`."""
    reads = fast.LoopReads.for_url(runtime.settings.database_url)
    assert reads is not None
    try:
        assert reads.read_one(fast.Statement("PRAGMA busy_timeout"), {}) == (0,)
        created = wallet.create_wallet(runtime.db, name="loop")
        fund(runtime, created.wallet_id, "2.50")
        on_loop = wallet.balance_and_invited_now(reads, created.wallet_id)
        assert on_loop == wallet.get_balance_and_invited(runtime.db, created.wallet_id)
        assert on_loop[0].balance_micros == 2_500_000
        with pytest.raises(NotFound):
            wallet.balance_and_invited_now(reads, "wal_nope")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reads.read_one(fast.Statement("DELETE FROM wallet"), {})
        reads.close()
        runtime.db.engine.dispose()  # exclusive locking mode needs the file to itself
        blocker = sqlite3.connect(tmp_path / "lava.db", isolation_level=None)
        try:
            blocker.execute("PRAGMA locking_mode=EXCLUSIVE")
            blocker.execute("BEGIN EXCLUSIVE")
            with pytest.raises(fast.WouldWait):
                reads.read_one(fast.Statement("SELECT count(*) FROM wallet"), {})
        finally:
            blocker.close()
        assert reads.read_one(fast.Statement("SELECT count(*) FROM wallet"), {}) == (1,)
    finally:
        reads.close()


def test_loop_reads_are_for_a_sqlite_file_only(postgres_url: str) -> None:
    assert fast.LoopReads.for_url(postgres_url) is None
    assert fast.LoopReads.for_url("sqlite:///:memory:") is None
    assert fast.LoopReads.for_url("sqlite://") is None
