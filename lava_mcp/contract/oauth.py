"""The wallet's connected OAuth clients (`/v1/oauth/clients`): the chats and apps it let
in through the OAuth authorization server; revoking one ends its tokens on every surface."""

from __future__ import annotations

from lava_mcp.contract.base import Moment, Shape


class ConnectedClient(Shape):
    id: str
    client_id: str
    client_name: str | None
    scopes: list[str]
    created_at: Moment | None
    last_used_at: Moment | None


class ConnectedClientList(Shape):
    data: list[ConnectedClient]
    has_more: bool
    next_cursor: str | None
