"""REST routes for orgs, their members and invitations (DESIGN §5, §14). Thin: parse, call
the core, render.

An admin's `POST /v1/orgs/{id}/members` invites (201, the invitation); the invited wallet
lists its invitations (`GET /v1/org_invitations`) and accepts or declines them. A wallet
outside an org gets 404 on the org's routes.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import Response

from lava_mcp.contract.common import Success
from lava_mcp.contract.errors import error_responses
from lava_mcp.contract.orgs import Invitation, InvitationList, MemberInvite, Org, OrgCreate, RoleChange
from lava_mcp.core import orgs
from lava_mcp.store.models import Wallet
from lava_mcp.transports import render
from lava_mcp.transports.api import Owner, WalletRoute, flat_json, links
from lava_mcp.transports.http import runtime_of

router = APIRouter(route_class=WalletRoute, tags=["orgs"])

OrgId = Annotated[str, Path(description="The org's id.")]
MemberId = Annotated[str, Path(description="The member's (or invited) wallet id.")]
InvitationId = Annotated[str, Path(description="The invitation's id.")]
# An org's routes answer 404 to a wallet outside it, 403 to a member who is not an admin.
ADMIN_ERRORS = error_responses(403, 404, 409)
# What an org's answer links to: the org's own operations, by its id; an invitation's, to
# the invited wallet's place in the org (change its role, or revoke it).
BY_ORG_ID = {"id": "$response.body#/org_id"}
ORG_OPERATIONS = (
    "getOrg",
    "inviteMember",
    "listOrgInvitations",
    "enableOrg",
    "disableOrg",
    "leaveOrg",
)
BY_MEMBER = {"id": "$response.body#/org_id", "wallet_id": "$response.body#/wallet_id"}


@router.post(
    "/v1/orgs",
    status_code=201,
    response_model=Org,
    operation_id="createOrg",
    summary="Create an org; the calling wallet becomes its admin",
    responses={**error_responses(404, 409), **links(201, BY_ORG_ID, *ORG_OPERATIONS)},
)
async def create_org(request: Request, owner: Owner, body: OrgCreate) -> Response:
    """Create an org; the calling wallet becomes its admin."""
    view = await anyio.to_thread.run_sync(
        lambda: orgs.create_org(
            runtime_of(request).db, name=body.name, plan=body.plan, admin_wallet_id=owner.id
        )
    )
    return flat_json(view.to_json(), status_code=201)


@router.get(
    "/v1/orgs/{id}",
    response_model=Org,
    operation_id="getOrg",
    summary="An org",
    responses={**error_responses(404), **links(200, BY_ORG_ID, *ORG_OPERATIONS)},
)
async def get_org(request: Request, owner: Owner, id: OrgId) -> Response:
    view = await anyio.to_thread.run_sync(
        lambda: orgs.get_org(runtime_of(request).db, id, actor_wallet_id=owner.id)
    )
    return flat_json(view.to_json())


@router.post(
    "/v1/orgs/{id}/members",
    status_code=201,
    response_model=Invitation,
    operation_id="inviteMember",
    summary="Invite a wallet (admins): it becomes a member when it accepts",
    responses={**ADMIN_ERRORS, **links(201, BY_MEMBER, "setMemberRole", "removeMember")},
)
async def invite_member(request: Request, owner: Owner, id: OrgId, body: MemberInvite) -> Response:
    """An admin invites a wallet: it becomes a member only when it accepts."""
    invitation = await anyio.to_thread.run_sync(
        lambda: orgs.invite_member(
            runtime_of(request).db, id, body.wallet_id, role=body.role, actor_wallet_id=owner.id
        )
    )
    return flat_json(invitation.to_json(), status_code=201)


@router.put(
    "/v1/orgs/{id}/members/{wallet_id}",
    response_model=Org,
    operation_id="setMemberRole",
    summary="Change a member's role (admins)",
    responses=ADMIN_ERRORS,
)
async def set_member_role(
    request: Request, owner: Owner, id: OrgId, wallet_id: MemberId, body: RoleChange
) -> Response:
    view = await anyio.to_thread.run_sync(
        lambda: orgs.set_role(runtime_of(request).db, id, wallet_id, role=body.role, actor_wallet_id=owner.id)
    )
    return flat_json(view.to_json())


@router.delete(
    "/v1/orgs/{id}/members/{wallet_id}",
    response_model=Success,
    operation_id="removeMember",
    summary="Remove a member or revoke a pending invitation (admins)",
    responses=ADMIN_ERRORS,
)
async def remove_member(request: Request, owner: Owner, id: OrgId, wallet_id: MemberId) -> Response:
    """An admin removes a member (or revokes a pending invitation)."""
    await anyio.to_thread.run_sync(
        lambda: orgs.remove_member(runtime_of(request).db, id, wallet_id, actor_wallet_id=owner.id)
    )
    return flat_json({"success": True})


@router.post(
    "/v1/orgs/{id}/leave",
    response_model=Success,
    operation_id="leaveOrg",
    summary="Leave the org (the last admin cannot)",
    responses=error_responses(404, 409),
)
async def leave_org(request: Request, owner: Owner, id: OrgId) -> Response:
    await anyio.to_thread.run_sync(orgs.leave, runtime_of(request).db, id, owner.id)
    return flat_json({"success": True})


@router.get(
    "/v1/orgs/{id}/invitations",
    response_model=InvitationList,
    operation_id="listOrgInvitations",
    summary="The org's pending invitations (admins)",
    responses={
        **error_responses(403, 404),
        **links(
            200,
            {"id": "$response.body#/data/0/org_id", "wallet_id": "$response.body#/data/0/wallet_id"},
            "setMemberRole",
            "removeMember",
        ),
    },
)
async def list_org_invitations(request: Request, owner: Owner, id: OrgId) -> Response:
    """The org's pending invitations (admins only)."""
    pending = await anyio.to_thread.run_sync(
        lambda: orgs.org_invitations(runtime_of(request).db, id, actor_wallet_id=owner.id)
    )
    return flat_json(render.list_json([invitation.to_json() for invitation in pending]))


async def _switch(request: Request, owner: Wallet, org_id: str, enabled: bool) -> Response:
    view = await anyio.to_thread.run_sync(
        lambda: orgs.set_enabled(runtime_of(request).db, org_id, enabled, actor_wallet_id=owner.id)
    )
    return flat_json(view.to_json())


@router.post(
    "/v1/orgs/{id}/enable",
    response_model=Org,
    operation_id="enableOrg",
    summary="Enable Lava for the org (admins): its members may fund",
    responses=error_responses(403, 404),
)
async def enable_org(request: Request, owner: Owner, id: OrgId) -> Response:
    return await _switch(request, owner, id, True)


@router.post(
    "/v1/orgs/{id}/disable",
    response_model=Org,
    operation_id="disableOrg",
    summary="Disable Lava for the org (admins)",
    responses=error_responses(403, 404),
)
async def disable_org(request: Request, owner: Owner, id: OrgId) -> Response:
    return await _switch(request, owner, id, False)


@router.get(
    "/v1/org_invitations",
    response_model=InvitationList,
    operation_id="listMyInvitations",
    summary="The calling wallet's pending invitations",
    responses=links(200, {"id": "$response.body#/data/0/id"}, "acceptInvitation", "declineInvitation"),
)
async def list_my_invitations(request: Request, owner: Owner) -> Response:
    """The calling wallet's pending invitations."""
    pending = await anyio.to_thread.run_sync(orgs.pending_invitations, runtime_of(request).db, owner.id)
    return flat_json(render.list_json([invitation.to_json() for invitation in pending]))


async def _answer(request: Request, owner: Wallet, invitation_id: str, accept: bool) -> Response:
    invitation = await anyio.to_thread.run_sync(
        lambda: orgs.answer_invitation(
            runtime_of(request).db, invitation_id, accept=accept, wallet_id=owner.id
        )
    )
    return flat_json(invitation.to_json())


@router.post(
    "/v1/org_invitations/{id}/accept",
    response_model=Invitation,
    operation_id="acceptInvitation",
    summary="Accept an invitation: the wallet joins the org",
    responses=error_responses(404, 409),
)
async def accept_invitation(request: Request, owner: Owner, id: InvitationId) -> Response:
    return await _answer(request, owner, id, True)


@router.post(
    "/v1/org_invitations/{id}/decline",
    response_model=Invitation,
    operation_id="declineInvitation",
    summary="Decline an invitation",
    responses=error_responses(404, 409),
)
async def decline_invitation(request: Request, owner: Owner, id: InvitationId) -> Response:
    return await _answer(request, owner, id, False)


routes = router.routes
