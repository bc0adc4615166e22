"""REST for the wallet's connected OAuth clients (the dashboard's list and revoke button).

`GET /v1/oauth/clients` lists them; `DELETE /v1/oauth/clients/{id}` revokes one, and its
tokens stop working on the next request on every surface. Authenticated with the wallet key.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import Response

from lava_mcp.contract.common import Success
from lava_mcp.contract.errors import error_responses
from lava_mcp.contract.oauth import ConnectedClientList
from lava_mcp.core import oauth
from lava_mcp.transports import render
from lava_mcp.transports.api import Owner, WalletRoute, flat_json, links
from lava_mcp.transports.http import runtime_of
from lava_mcp.transports.render import iso

router = APIRouter(route_class=WalletRoute, tags=["oauth"])


def connected_client_json(client: oauth.ConnectedClient) -> dict[str, object]:
    return {
        "id": client.id,
        "client_id": client.client_id,
        "client_name": client.client_name,
        "scopes": client.scopes,
        "created_at": iso(client.created_at),
        "last_used_at": iso(client.last_used_at),
    }


@router.get(
    "/v1/oauth/clients",
    response_model=ConnectedClientList,
    operation_id="listConnectedClients",
    summary="The chats and apps connected to the wallet through OAuth",
    responses=links(200, {"id": "$response.body#/data/0/id"}, "revokeConnectedClient"),
)
async def list_clients(request: Request, owner: Owner) -> Response:
    clients = await anyio.to_thread.run_sync(oauth.list_connected_clients, runtime_of(request).db, owner.id)
    return flat_json(render.list_json([connected_client_json(client) for client in clients], None))


@router.delete(
    "/v1/oauth/clients/{id}",
    response_model=Success,
    operation_id="revokeConnectedClient",
    summary="Revoke a connected client: its tokens stop working on every surface",
    responses=error_responses(404),
)
async def revoke_client(
    request: Request, owner: Owner, id: Annotated[str, Path(description="The grant's id (`id` in the list).")]
) -> Response:
    await anyio.to_thread.run_sync(oauth.revoke_connected_client, runtime_of(request).db, owner.id, id)
    return flat_json({"success": True})


routes = router.routes
