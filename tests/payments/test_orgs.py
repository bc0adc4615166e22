"""Orgs and the funding gate: team and enterprise members (admins included) fund only once
an admin enabled Lava for the org. REST for members, the CLI for the operator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lava_mcp.cli import app
from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from tests.payments.conftest import balance_micros, mcp, payments_of, rest, tool_error, tool_ok


async def save_card(runtime: Runtime, owner: wallet.NewWallet) -> None:
    async with rest(runtime, owner) as client:
        saved = await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
        assert saved.status_code == 201  # saving a card is never gated


@pytest.mark.parametrize("plan", ["team", "enterprise"])
async def test_the_gate_for_admin_and_member_until_enabled(sandbox: Runtime, plan: str) -> None:
    admin = wallet.create_wallet(sandbox.db, name="admin")
    member = wallet.create_wallet(sandbox.db, name="member")
    outsider = wallet.create_wallet(sandbox.db, name="outsider")
    for owner in (admin, member):
        await save_card(sandbox, owner)

    async with rest(sandbox, admin) as admin_client, rest(sandbox, member) as member_client:
        created = await admin_client.post("/v1/orgs", json={"name": "Acme", "plan": plan})
        assert created.status_code == 201, created.text
        org = created.json()
        assert org | {"org_id": "", "created_at": ""} == {
            "org_id": "",
            "created_at": "",
            "name": "Acme",
            "plan": plan,
            "enabled": False,
            "members": [{"wallet_id": admin.wallet_id, "role": "admin"}],
        }
        org_id = org["org_id"]
        invited = await admin_client.post(
            f"/v1/orgs/{org_id}/members", json={"wallet_id": member.wallet_id, "role": "member"}
        )
        assert invited.status_code == 201 and invited.json()["status"] == "pending"
        accepted = await member_client.post(f"/v1/org_invitations/{invited.json()['id']}/accept")
        assert accepted.status_code == 200
        assert len((await admin_client.get(f"/v1/orgs/{org_id}")).json()["members"]) == 2

        # Not enabled: nobody funds, and the answer names who can fix it.
        for client, owner in ((admin_client, admin), (member_client, member)):
            refused = await client.post("/v1/wallet/fund", json={"amount": 25})
            assert refused.status_code == 403
            body = refused.json()
            assert admin.wallet_id in body["error"] and f"lava-mcp org enable {org_id}" in body["next_step"]
            assert body["admins"] == [admin.wallet_id] and body["org_id"] == org_id
            async with mcp(sandbox, owner) as chat:
                tool_error(await chat.call_tool("add_funds", {"amount": 25}), 403)
                tool_error(await chat.call_tool("add_funds", {}), 403)

        # Members can't flip the switch; outsiders can't even see the org.
        assert (await member_client.post(f"/v1/orgs/{org_id}/enable")).status_code == 403
        assert (await member_client.get(f"/v1/orgs/{org_id}")).status_code == 200
        async with rest(sandbox, outsider) as outsider_client:
            for response in (
                await outsider_client.get(f"/v1/orgs/{org_id}"),
                await outsider_client.post(f"/v1/orgs/{org_id}/enable"),
                await outsider_client.post(
                    f"/v1/orgs/{org_id}/members", json={"wallet_id": outsider.wallet_id}
                ),
            ):
                assert response.status_code == 404
        assert balance_micros(sandbox, admin.wallet_id) == balance_micros(sandbox, member.wallet_id) == 0
        assert payments_of(sandbox, admin.wallet_id) == payments_of(sandbox, member.wallet_id) == []

        enabled = await admin_client.post(f"/v1/orgs/{org_id}/enable")
        assert enabled.status_code == 200 and enabled.json()["enabled"] is True
        for owner in (admin, member):
            async with mcp(sandbox, owner) as chat:
                assert tool_ok(await chat.call_tool("add_funds", {"amount": 25}))["status"] == "completed"

        assert (await admin_client.post(f"/v1/orgs/{org_id}/disable")).json()["enabled"] is False
        assert (await member_client.post("/v1/wallet/fund", json={"amount": 25})).status_code == 403
    assert balance_micros(sandbox, member.wallet_id) == 25_000_000


async def test_individual_orgs_are_never_gated(sandbox: Runtime) -> None:
    owner = wallet.create_wallet(sandbox.db, name="solo")
    await save_card(sandbox, owner)
    async with rest(sandbox, owner) as client:
        created = await client.post("/v1/orgs", json={"name": "Me", "plan": "individual"})
        assert created.status_code == 201
        assert (await client.post("/v1/wallet/fund", json={"amount": 25})).json()["status"] == "completed"


async def test_org_bad_input(sandbox: Runtime) -> None:
    owner = wallet.create_wallet(sandbox.db, name="owner")
    async with rest(sandbox, owner) as client:
        for body in (
            {"name": "", "plan": "team"},
            {"name": "X", "plan": "galactic"},
            {"plan": "team"},
            {"name": 5},
        ):
            response = await client.post("/v1/orgs", json=body)
            assert response.status_code == 400, body
        org_id = (await client.post("/v1/orgs", json={"name": "Acme", "plan": "team"})).json()["org_id"]
        assert (await client.post("/v1/orgs", json={"name": "Again", "plan": "team"})).status_code == 409
        assert (
            await client.post(f"/v1/orgs/{org_id}/members", json={"wallet_id": "wal_nope"})
        ).status_code == 404
        role = await client.post(
            f"/v1/orgs/{org_id}/members", json={"wallet_id": owner.wallet_id, "role": "owner"}
        )
        assert role.status_code == 400
        assert (await client.get("/v1/orgs/org_nope")).status_code == 404
        assert (await client.get(f"/v1/orgs/{org_id}", headers={"authorization": ""})).status_code == 401


def test_cli_org_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"LAVA_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "LAVA_PAYMENTS": "sandbox"}

    def run(*args: str) -> dict[str, object]:
        result = runner.invoke(app, [*args, "--json"], env=env)
        assert result.exit_code == 0, result.output
        body: dict[str, object] = json.loads(result.stdout)
        return body

    from lava_mcp.cli import commands, org  # noqa: F401  (registers the commands, as main() does)

    admin = str(run("wallet", "create", "--name", "admin")["wallet_id"])
    member = str(run("wallet", "create", "--name", "member")["wallet_id"])
    created = run("org", "create", "--name", "Acme", "--plan", "team", "--admin", admin)
    org_id = str(created["org_id"])
    assert created["enabled"] is False and created["plan"] == "team"
    assert created["members"] == [{"wallet_id": admin, "role": "admin"}]
    added = run("org", "add-member", org_id, member, "--role", "member")
    assert added["members"] == [
        {"wallet_id": admin, "role": "admin"},
        {"wallet_id": member, "role": "member"},
    ]
    assert run("org", "enable", org_id)["enabled"] is True
    assert run("org", "disable", org_id)["enabled"] is False
    assert run("org", "show", org_id)["org_id"] == org_id

    failed = runner.invoke(
        app, ["org", "create", "--name", "X", "--plan", "galactic", "--admin", admin, "--json"], env=env
    )
    assert failed.exit_code == 1 and json.loads(failed.stderr)["code"] == 400
    unknown = runner.invoke(app, ["org", "enable", "org_nope"], env=env)
    assert unknown.exit_code == 1 and "404" in unknown.stderr
