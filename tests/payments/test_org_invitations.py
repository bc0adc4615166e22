"""Org membership needs the member's consent (DESIGN §14): an admin's REST add-member is an
invitation that the invited wallet accepts or declines; until it accepts nothing about its
funding changes. A member can leave, an admin can remove; an org always keeps an admin."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from lava_mcp.cli import app
from lava_mcp.config import Settings
from lava_mcp.core import orgs, wallet
from lava_mcp.errors import Conflict
from lava_mcp.runtime import Runtime
from tests.payments.conftest import mcp, rest, tool_ok


async def save_card(client: httpx.AsyncClient) -> None:
    saved = await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
    assert saved.status_code == 201


async def fund_status(client: httpx.AsyncClient) -> int:
    return (await client.post("/v1/wallet/fund", json={"amount": 10})).status_code


async def team_org(client: httpx.AsyncClient) -> str:
    created = await client.post("/v1/orgs", json={"name": "Acme", "plan": "team"})
    assert created.status_code == 201
    return str(created.json()["org_id"])


async def join(admin: httpx.AsyncClient, member: httpx.AsyncClient, org_id: str, wallet_id: str) -> None:
    invited = await admin.post(f"/v1/orgs/{org_id}/members", json={"wallet_id": wallet_id})
    assert invited.status_code == 201, invited.text
    assert (await member.post(f"/v1/org_invitations/{invited.json()['id']}/accept")).status_code == 200


async def balance_of(runtime: Runtime, owner: wallet.NewWallet) -> dict[str, Any]:
    async with mcp(runtime, owner) as chat:
        return tool_ok(await chat.call_tool("get_balance", {}))


async def test_an_invitation_changes_nothing_until_the_wallet_accepts(sandbox: Runtime) -> None:
    admin = wallet.create_wallet(sandbox.db, name="admin")
    member = wallet.create_wallet(sandbox.db, name="member")
    outsider = wallet.create_wallet(sandbox.db, name="outsider")
    async with (
        rest(sandbox, admin) as admin_client,
        rest(sandbox, member) as member_client,
        rest(sandbox, outsider) as outsider_client,
    ):
        await save_card(member_client)
        org_id = await team_org(admin_client)
        invited = await admin_client.post(
            f"/v1/orgs/{org_id}/members", json={"wallet_id": member.wallet_id, "role": "member"}
        )
        assert invited.status_code == 201, invited.text
        invitation = invited.json()
        assert invitation["id"].startswith("inv_")
        assert invitation | {"id": "", "created_at": ""} == {
            "id": "",
            "created_at": "",
            "org_id": org_id,
            "org_name": "Acme",
            "wallet_id": member.wallet_id,
            "role": "member",
            "status": "pending",
            "invited_by": admin.wallet_id,
            "resolved_at": None,
        }

        # Invited is not a member: the org is still invisible to it and its funding is ungated.
        assert (await admin_client.get(f"/v1/orgs/{org_id}")).json()["members"] == [
            {"wallet_id": admin.wallet_id, "role": "admin"}
        ]
        assert (await member_client.get(f"/v1/orgs/{org_id}")).status_code == 404
        assert await fund_status(member_client) == 200
        assert await fund_status(admin_client) == 403  # the admin is a member: gated

        # The invited wallet sees it (REST and the get_balance hint); nobody else can answer it.
        mine = (await member_client.get("/v1/org_invitations")).json()
        assert mine == {"data": [invitation], "has_more": False, "next_cursor": None}
        assert (await outsider_client.get("/v1/org_invitations")).json()["data"] == []
        listed = (await admin_client.get(f"/v1/orgs/{org_id}/invitations")).json()["data"]
        assert [found["id"] for found in listed] == [invitation["id"]]
        assert (await outsider_client.get(f"/v1/orgs/{org_id}/invitations")).status_code == 404
        hint = await balance_of(sandbox, member)
        assert hint["org_invitations"] == [
            {"id": invitation["id"], "org_id": org_id, "org_name": "Acme", "role": "member"}
        ]
        assert "org_invitations" not in await balance_of(sandbox, admin)
        for client in (outsider_client, admin_client):
            answer = await client.post(f"/v1/org_invitations/{invitation['id']}/accept")
            assert answer.status_code == 404
        assert (await member_client.post("/v1/org_invitations/inv_nope/accept")).status_code == 404

        accepted = await member_client.post(f"/v1/org_invitations/{invitation['id']}/accept")
        assert accepted.status_code == 200
        assert accepted.json()["status"] == "accepted" and accepted.json()["resolved_at"]
        assert (await member_client.post(f"/v1/org_invitations/{invitation['id']}/accept")).status_code == 409
        org = (await member_client.get(f"/v1/orgs/{org_id}")).json()
        assert org["members"] == [
            {"wallet_id": admin.wallet_id, "role": "admin"},
            {"wallet_id": member.wallet_id, "role": "member"},
        ]
        assert await fund_status(member_client) == 403  # a member now: the org's gate applies
        assert "org_invitations" not in await balance_of(sandbox, member)
        assert (await member_client.get("/v1/org_invitations")).json()["data"] == []


async def test_decline_revoke_and_who_may_invite(sandbox: Runtime) -> None:
    admin = wallet.create_wallet(sandbox.db, name="admin")
    member = wallet.create_wallet(sandbox.db, name="member")
    invitee = wallet.create_wallet(sandbox.db, name="invitee")
    elsewhere = wallet.create_wallet(sandbox.db, name="elsewhere")
    async with (
        rest(sandbox, admin) as admin_client,
        rest(sandbox, member) as member_client,
        rest(sandbox, invitee) as invitee_client,
        rest(sandbox, elsewhere) as elsewhere_client,
    ):
        org_id = await team_org(admin_client)
        await join(admin_client, member_client, org_id, member.wallet_id)
        other_org = (await elsewhere_client.post("/v1/orgs", json={"name": "Other", "plan": "team"})).json()

        invite = {"wallet_id": invitee.wallet_id}
        assert (await member_client.post(f"/v1/orgs/{org_id}/members", json=invite)).status_code == 403
        assert (await elsewhere_client.post(f"/v1/orgs/{org_id}/members", json=invite)).status_code == 404
        for body, status in (
            ({"wallet_id": member.wallet_id}, 409),  # already a member
            ({"wallet_id": elsewhere.wallet_id}, 409),  # in another org
            ({"wallet_id": "wal_nope"}, 404),
            ({"wallet_id": invitee.wallet_id, "role": "owner"}, 400),
            ({}, 400),
        ):
            assert (await admin_client.post(f"/v1/orgs/{org_id}/members", json=body)).status_code == status, (
                body
            )
        assert (await invitee_client.get("/v1/org_invitations")).json()["data"] == []

        first = (await admin_client.post(f"/v1/orgs/{org_id}/members", json=invite)).json()
        again = (
            await admin_client.post(f"/v1/orgs/{org_id}/members", json=invite | {"role": "admin"})
        ).json()
        assert again["id"] == first["id"] and again["role"] == "admin"  # one pending invitation per wallet
        declined = await invitee_client.post(f"/v1/org_invitations/{first['id']}/decline")
        assert declined.status_code == 200 and declined.json()["status"] == "declined"
        assert (await invitee_client.post(f"/v1/org_invitations/{first['id']}/accept")).status_code == 409
        assert (await invitee_client.get(f"/v1/orgs/{org_id}")).status_code == 404

        # An admin revokes a pending invitation with the same DELETE that removes a member.
        second = (await admin_client.post(f"/v1/orgs/{org_id}/members", json=invite)).json()
        assert second["id"] != first["id"]
        revoked = await admin_client.delete(f"/v1/orgs/{org_id}/members/{invitee.wallet_id}")
        assert revoked.status_code == 200
        assert (await invitee_client.get("/v1/org_invitations")).json()["data"] == []
        assert (await invitee_client.post(f"/v1/org_invitations/{second['id']}/accept")).status_code == 409
        assert (
            await admin_client.delete(f"/v1/orgs/{org_id}/members/{invitee.wallet_id}")
        ).status_code == 404

        # A wallet already in an org can't accept another org's invitation until it leaves.
        third = (await admin_client.post(f"/v1/orgs/{org_id}/members", json=invite)).json()
        other_invite = await elsewhere_client.post(
            f"/v1/orgs/{other_org['org_id']}/members", json={"wallet_id": invitee.wallet_id}
        )
        assert (await invitee_client.post(f"/v1/org_invitations/{third['id']}/accept")).status_code == 200
        refused = await invitee_client.post(f"/v1/org_invitations/{other_invite.json()['id']}/accept")
        assert refused.status_code == 409 and f"/v1/orgs/{org_id}/leave" in refused.json()["next_step"]


async def test_leave_remove_and_the_last_admin(sandbox: Runtime) -> None:
    admin = wallet.create_wallet(sandbox.db, name="admin")
    member = wallet.create_wallet(sandbox.db, name="member")
    other = wallet.create_wallet(sandbox.db, name="other")
    async with (
        rest(sandbox, admin) as admin_client,
        rest(sandbox, member) as member_client,
        rest(sandbox, other) as other_client,
    ):
        await save_card(member_client)
        org_id = await team_org(admin_client)
        await join(admin_client, member_client, org_id, member.wallet_id)
        await join(admin_client, other_client, org_id, other.wallet_id)
        assert await fund_status(member_client) == 403

        # A member leaves: it is out of the org, and out of its gate.
        assert (await member_client.post(f"/v1/orgs/{org_id}/leave")).json() == {"success": True}
        assert (await member_client.get(f"/v1/orgs/{org_id}")).status_code == 404
        assert (await member_client.post(f"/v1/orgs/{org_id}/leave")).status_code == 404
        assert await fund_status(member_client) == 200

        # Members can't remove; outsiders get 404; the last admin stays.
        assert (await other_client.delete(f"/v1/orgs/{org_id}/members/{admin.wallet_id}")).status_code == 403
        assert (await member_client.delete(f"/v1/orgs/{org_id}/members/{other.wallet_id}")).status_code == 404
        for refused in (
            await admin_client.post(f"/v1/orgs/{org_id}/leave"),
            await admin_client.delete(f"/v1/orgs/{org_id}/members/{admin.wallet_id}"),
            await admin_client.put(f"/v1/orgs/{org_id}/members/{admin.wallet_id}", json={"role": "member"}),
        ):
            assert refused.status_code == 409 and "last admin" in refused.json()["error"]
        assert (await admin_client.get(f"/v1/orgs/{org_id}")).json()["members"][0]["role"] == "admin"

        # With a second admin, the first may leave; an admin removes a member.
        promoted = await admin_client.put(
            f"/v1/orgs/{org_id}/members/{other.wallet_id}", json={"role": "admin"}
        )
        assert promoted.status_code == 200
        assert (await admin_client.post(f"/v1/orgs/{org_id}/leave")).status_code == 200
        assert (await admin_client.get(f"/v1/orgs/{org_id}")).status_code == 404
        await join(other_client, member_client, org_id, member.wallet_id)
        removed = await other_client.delete(f"/v1/orgs/{org_id}/members/{member.wallet_id}")
        assert removed.json() == {"success": True}
        assert (await other_client.get(f"/v1/orgs/{org_id}")).json()["members"] == [
            {"wallet_id": other.wallet_id, "role": "admin"}
        ]
        assert (await member_client.get(f"/v1/orgs/{org_id}")).status_code == 404


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runtime]:
    url = (
        f"sqlite:///{tmp_path / 'lava.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    built = Runtime.build(
        Settings(LAVA_DATABASE_URL=url, LAVA_SQLITE_SYNCHRONOUS="NORMAL", _env_file=None)  # type: ignore[call-arg]
    )
    built.db.upgrade()
    yield built
    await built.aclose()


async def test_admins_leaving_at_once_never_leave_an_org_without_an_admin(backend: Runtime) -> None:
    admins = [wallet.create_wallet(backend.db, name=f"admin {number}") for number in range(8)]
    org = orgs.create_org(backend.db, name="Acme", plan="team", admin_wallet_id=admins[0].wallet_id)
    for admin in admins[1:]:
        orgs.add_member(backend.db, org.org_id, admin.wallet_id, role="admin")

    async def leave(wallet_id: str) -> bool:
        try:
            await asyncio.to_thread(orgs.leave, backend.db, org.org_id, wallet_id)
        except Conflict:
            return False
        return True

    left = await asyncio.gather(*(leave(admin.wallet_id) for admin in admins))
    assert left.count(False) == 1
    assert [member.role for member in orgs.get_org(backend.db, org.org_id).members] == ["admin"]


def test_cli_invite_accept_and_remove(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"LAVA_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "LAVA_PAYMENTS": "sandbox"}

    def run(*args: str) -> dict[str, Any]:
        result = runner.invoke(app, [*args, "--json"], env=env)
        assert result.exit_code == 0, result.output
        body: dict[str, Any] = json.loads(result.stdout)
        return body

    from lava_mcp.cli import commands, org  # noqa: F401  (registers the commands, as main() does)

    admin = str(run("wallet", "create", "--name", "admin")["wallet_id"])
    member = str(run("wallet", "create", "--name", "member")["wallet_id"])
    direct = str(run("wallet", "create", "--name", "direct")["wallet_id"])
    org_id = str(run("org", "create", "--name", "Acme", "--plan", "team", "--admin", admin)["org_id"])
    invitation = run("org", "invite", org_id, member)
    assert invitation["status"] == "pending" and invitation["invited_by"] == "operator"
    assert [found["id"] for found in run("org", "invitations", "--wallet", member)["data"]] == [
        invitation["id"]
    ]
    assert [found["id"] for found in run("org", "invitations", "--org", org_id)["data"]] == [invitation["id"]]
    assert len(run("org", "show", org_id)["members"]) == 1  # invited, not enrolled
    assert run("org", "accept", str(invitation["id"]))["status"] == "accepted"
    assert run("org", "add-member", org_id, direct)["members"][-1] == {"wallet_id": direct, "role": "member"}
    assert [m["wallet_id"] for m in run("org", "remove-member", org_id, member)["members"]] == [admin, direct]
    last = runner.invoke(app, ["org", "remove-member", org_id, admin, "--json"], env=env)
    assert last.exit_code == 1 and json.loads(last.stderr)["code"] == 409
