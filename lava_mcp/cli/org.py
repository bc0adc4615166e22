"""`lava-mcp org …`: orgs, members and the admin's switch that gates funding.

The command line is the operator: it may change any org (the REST API checks roles).
"""

from __future__ import annotations

from typing import Annotated

import typer

from lava_mcp.cli import JsonFlag, app, emit, fail, stdout
from lava_mcp.cli import database as _database
from lava_mcp.core import orgs
from lava_mcp.errors import LavaError

org_app = typer.Typer(no_args_is_help=True, help="Orgs: members, roles, and the funding switch.")
app.add_typer(org_app, name="org")


def _show(view: orgs.OrgView, as_json: bool) -> None:
    def human() -> None:
        state = "[green]enabled[/]" if view.enabled else "[yellow]not enabled[/] (members can't fund)"
        if view.plan not in orgs.GATED_PLANS:
            state += " (individual plan: never gated)"
        stdout.print(f"{view.org_id}  {view.name}  plan={view.plan}  {state}")
        for member in view.members:
            stdout.print(f"  {member.role:6}  {member.wallet_id}")

    emit(as_json, view.to_json(), human)


@org_app.command("create")
def org_create(
    name: Annotated[str, typer.Option(help="The org's name.")],
    admin: Annotated[str, typer.Option(help="The wallet id of its first admin.")],
    plan: Annotated[str, typer.Option(help="individual, team or enterprise.")] = "team",
    as_json: JsonFlag = False,
) -> None:
    """Create an org (not enabled: team and enterprise members can't fund until it is)."""
    try:
        view = orgs.create_org(_database(), name=name, plan=plan, admin_wallet_id=admin)
    except LavaError as error:
        raise fail(error, as_json) from error
    _show(view, as_json)


@org_app.command("add-member")
def org_add_member(
    org_id: Annotated[str, typer.Argument()],
    wallet_id: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option(help="admin or member.")] = "member",
    as_json: JsonFlag = False,
) -> None:
    """Add a wallet to an org (or change its role)."""
    try:
        view = orgs.add_member(_database(), org_id, wallet_id, role=role)
    except LavaError as error:
        raise fail(error, as_json) from error
    _show(view, as_json)


@org_app.command("show")
def org_show(org_id: Annotated[str, typer.Argument()], as_json: JsonFlag = False) -> None:
    """An org and its members."""
    try:
        view = orgs.get_org(_database(), org_id)
    except LavaError as error:
        raise fail(error, as_json) from error
    _show(view, as_json)


@org_app.command("enable")
def org_enable(org_id: Annotated[str, typer.Argument()], as_json: JsonFlag = False) -> None:
    """Enable Lava for the org: its members may fund their wallets."""
    try:
        view = orgs.set_enabled(_database(), org_id, True)
    except LavaError as error:
        raise fail(error, as_json) from error
    _show(view, as_json)


@org_app.command("disable")
def org_disable(org_id: Annotated[str, typer.Argument()], as_json: JsonFlag = False) -> None:
    """Disable Lava for the org: team and enterprise members can't fund again until enabled."""
    try:
        view = orgs.set_enabled(_database(), org_id, False)
    except LavaError as error:
        raise fail(error, as_json) from error
    _show(view, as_json)
