"""REST routes for orgs, their members and invitations (DESIGN §5, §14). Thin: parse, call
the core, render.

An admin's `POST /v1/orgs/{id}/members` invites (201, the invitation); the invited wallet
lists its invitations (`GET /v1/org_invitations`) and accepts or declines them. A wallet
outside an org gets 404 on the org's routes.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lava_mcp.core import orgs
from lava_mcp.store.models import Wallet
from lava_mcp.transports import render
from lava_mcp.transports.http import json_body, runtime_of, wallet_endpoint


@wallet_endpoint
async def create_org(request: Request, owner: Wallet) -> Response:
    """Create an org; the calling wallet becomes its admin."""
    body = await json_body(request)
    view = await anyio.to_thread.run_sync(
        lambda: orgs.create_org(
            runtime_of(request).db,
            name=body.get("name"),  # checked by the core
            plan=body.get("plan", "individual"),
            admin_wallet_id=owner.id,
        )
    )
    return JSONResponse(view.to_json(), status_code=201)


@wallet_endpoint
async def get_org(request: Request, owner: Wallet) -> Response:
    view = await anyio.to_thread.run_sync(
        lambda: orgs.get_org(runtime_of(request).db, request.path_params["id"], actor_wallet_id=owner.id)
    )
    return JSONResponse(view.to_json())


@wallet_endpoint
async def invite_member(request: Request, owner: Wallet) -> Response:
    """An admin invites a wallet: it becomes a member only when it accepts."""
    body = await json_body(request)
    invitation = await anyio.to_thread.run_sync(
        lambda: orgs.invite_member(
            runtime_of(request).db,
            request.path_params["id"],
            body.get("wallet_id"),  # checked by the core
            role=body.get("role", "member"),
            actor_wallet_id=owner.id,
        )
    )
    return JSONResponse(invitation.to_json(), status_code=201)


@wallet_endpoint
async def set_member_role(request: Request, owner: Wallet) -> Response:
    body = await json_body(request)
    view = await anyio.to_thread.run_sync(
        lambda: orgs.set_role(
            runtime_of(request).db,
            request.path_params["id"],
            request.path_params["wallet_id"],
            role=body.get("role"),  # checked by the core
            actor_wallet_id=owner.id,
        )
    )
    return JSONResponse(view.to_json())


@wallet_endpoint
async def remove_member(request: Request, owner: Wallet) -> Response:
    """An admin removes a member (or revokes a pending invitation)."""
    await anyio.to_thread.run_sync(
        lambda: orgs.remove_member(
            runtime_of(request).db,
            request.path_params["id"],
            request.path_params["wallet_id"],
            actor_wallet_id=owner.id,
        )
    )
    return JSONResponse({"success": True})


@wallet_endpoint
async def leave_org(request: Request, owner: Wallet) -> Response:
    await anyio.to_thread.run_sync(orgs.leave, runtime_of(request).db, request.path_params["id"], owner.id)
    return JSONResponse({"success": True})


@wallet_endpoint
async def list_org_invitations(request: Request, owner: Wallet) -> Response:
    """The org's pending invitations (admins only)."""
    pending = await anyio.to_thread.run_sync(
        lambda: orgs.org_invitations(
            runtime_of(request).db, request.path_params["id"], actor_wallet_id=owner.id
        )
    )
    return JSONResponse(render.list_json([invitation.to_json() for invitation in pending]))


@wallet_endpoint
async def list_my_invitations(request: Request, owner: Wallet) -> Response:
    """The calling wallet's pending invitations."""
    pending = await anyio.to_thread.run_sync(orgs.pending_invitations, runtime_of(request).db, owner.id)
    return JSONResponse(render.list_json([invitation.to_json() for invitation in pending]))


def _answer(accept: bool) -> Any:
    @wallet_endpoint
    async def answer(request: Request, owner: Wallet) -> Response:
        invitation = await anyio.to_thread.run_sync(
            lambda: orgs.answer_invitation(
                runtime_of(request).db, request.path_params["id"], accept=accept, wallet_id=owner.id
            )
        )
        return JSONResponse(invitation.to_json())

    return answer


def _switch(enabled: bool) -> Any:
    @wallet_endpoint
    async def switch(request: Request, owner: Wallet) -> Response:
        view = await anyio.to_thread.run_sync(
            lambda: orgs.set_enabled(
                runtime_of(request).db, request.path_params["id"], enabled, actor_wallet_id=owner.id
            )
        )
        return JSONResponse(view.to_json())

    return switch


routes = [
    Route("/v1/orgs", create_org, methods=["POST"]),
    Route("/v1/orgs/{id}", get_org, methods=["GET"]),
    Route("/v1/orgs/{id}/members", invite_member, methods=["POST"]),
    Route("/v1/orgs/{id}/members/{wallet_id}", set_member_role, methods=["PUT"]),
    Route("/v1/orgs/{id}/members/{wallet_id}", remove_member, methods=["DELETE"]),
    Route("/v1/orgs/{id}/leave", leave_org, methods=["POST"]),
    Route("/v1/orgs/{id}/invitations", list_org_invitations, methods=["GET"]),
    Route("/v1/orgs/{id}/enable", _switch(True), methods=["POST"]),
    Route("/v1/orgs/{id}/disable", _switch(False), methods=["POST"]),
    Route("/v1/org_invitations", list_my_invitations, methods=["GET"]),
    Route("/v1/org_invitations/{id}/accept", _answer(True), methods=["POST"]),
    Route("/v1/org_invitations/{id}/decline", _answer(False), methods=["POST"]),
]
