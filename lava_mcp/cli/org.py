"""`lava-mcp org …`: orgs, members, invitations and the admin's switch that gates funding.

The command line is the operator: it may change any org (the REST API checks roles), and
`add-member` enrols a wallet directly, since the operator runs the server. `invite` asks the
wallet instead; its owner answers with the REST API (or the operator with `accept`/`decline`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from lava_mcp.cli import JsonFlag, Typer, app, emit, fail, stdout
from lava_mcp.cli import database as _database
from lava_mcp.core import orgs
from lava_mcp.errors import LavaError

org_app = Typer(no_args_is_help=True, help="Orgs: members, roles, and the funding switch.")
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


def _show_invitations(invitations: list[orgs.InvitationView], as_json: bool) -> None:
    def human() -> None:
        if not invitations:
            stdout.print("no pending invitations")
        for invitation in invitations:
            stdout.print(
                f"{invitation.invitation_id}  {invitation.status:8}  {invitation.org_id} ({invitation.org_name})"
                f"  {invitation.role:6}  {invitation.wallet_id}"
            )

    emit(as_json, {"data": [invitation.to_json() for invitation in invitations]}, human)


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


@org_app.command("invite")
def org_invite(
    org_id: Annotated[str, typer.Argument()],
    wallet_id: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option(help="admin or member.")] = "member",
    as_json: JsonFlag = False,
) -> None:
    """Invite a wallet to an org: it becomes a member when it accepts."""
    try:
        invitation = orgs.invite_member(_database(), org_id, wallet_id, role=role)
    except LavaError as error:
        raise fail(error, as_json) from error
    emit(as_json, invitation.to_json(), lambda: _show_invitations([invitation], False))


@org_app.command("invitations")
def org_invitations(
    wallet: Annotated[str | None, typer.Option(help="A wallet's pending invitations.")] = None,
    org: Annotated[str | None, typer.Option(help="An org's pending invitations.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Pending invitations, of a wallet (--wallet) or of an org (--org)."""
    try:
        if (wallet is None) == (org is None):
            raise fail("give exactly one of --wallet or --org", as_json)
        database = _database()
        found = (
            orgs.pending_invitations(database, wallet) if wallet else orgs.org_invitations(database, str(org))
        )
    except LavaError as error:
        raise fail(error, as_json) from error
    _show_invitations(found, as_json)


def _answer(invitation_id: str, accept: bool, as_json: bool) -> None:
    try:
        invitation = orgs.answer_invitation(_database(), invitation_id, accept=accept)
    except LavaError as error:
        raise fail(error, as_json) from error
    emit(as_json, invitation.to_json(), lambda: _show_invitations([invitation], False))


@org_app.command("accept")
def org_accept(invitation_id: Annotated[str, typer.Argument()], as_json: JsonFlag = False) -> None:
    """Accept an invitation on its wallet's behalf (the wallet becomes a member)."""
    _answer(invitation_id, True, as_json)


@org_app.command("decline")
def org_decline(invitation_id: Annotated[str, typer.Argument()], as_json: JsonFlag = False) -> None:
    """Decline an invitation on its wallet's behalf."""
    _answer(invitation_id, False, as_json)


@org_app.command("remove-member")
def org_remove_member(
    org_id: Annotated[str, typer.Argument()],
    wallet_id: Annotated[str, typer.Argument()],
    as_json: JsonFlag = False,
) -> None:
    """Remove a member from an org (or revoke its pending invitation); an org keeps an admin."""
    try:
        database = _database()
        orgs.remove_member(database, org_id, wallet_id)
        view = orgs.get_org(database, org_id)
    except LavaError as error:
        raise fail(error, as_json) from error
    _show(view, as_json)
