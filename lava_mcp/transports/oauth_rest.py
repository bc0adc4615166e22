"""REST for the wallet's connected OAuth clients (the dashboard's list and revoke button).

`GET /v1/oauth/clients` lists them; `DELETE /v1/oauth/clients/{id}` revokes one, and its
tokens stop working on the next request on every surface. Authenticated with the wallet key.
"""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lava_mcp.core import oauth
from lava_mcp.store.models import Wallet
from lava_mcp.transports import render
from lava_mcp.transports.http import runtime_of, wallet_endpoint
from lava_mcp.transports.render import iso


def connected_client_json(client: oauth.ConnectedClient) -> dict[str, object]:
    return {
        "id": client.id,
        "client_id": client.client_id,
        "client_name": client.client_name,
        "scopes": client.scopes,
        "created_at": iso(client.created_at),
        "last_used_at": iso(client.last_used_at),
    }


@wallet_endpoint
async def list_clients(request: Request, owner: Wallet) -> Response:
    clients = await anyio.to_thread.run_sync(oauth.list_connected_clients, runtime_of(request).db, owner.id)
    return JSONResponse(render.list_json([connected_client_json(client) for client in clients], None))


@wallet_endpoint
async def revoke_client(request: Request, owner: Wallet) -> Response:
    grant_id = request.path_params["id"]
    await anyio.to_thread.run_sync(oauth.revoke_connected_client, runtime_of(request).db, owner.id, grant_id)
    return JSONResponse({"success": True})


routes = [
    Route("/v1/oauth/clients", list_clients, methods=["GET"]),
    Route("/v1/oauth/clients/{id}", revoke_client, methods=["DELETE"]),
]
