"""`store.fast.read_one`: a statement answered on a pooled connection outside any session,
on both databases — here the balance `get_balance` answers from
(`wallet.get_balance_and_invited`): the wallet row's figures and whether an org
invitation awaits its answer, in one statement."""

from __future__ import annotations

import pytest

from lava_mcp.core import holds, orgs, wallet
from lava_mcp.errors import NotFound
from lava_mcp.runtime import Runtime
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
