"""The Python client of the REST API, sync (`Lava`) and async (`AsyncLava`).

    from lava_mcp import Lava
    lava = Lava(os.environ["LAVA_WALLET_KEY"], base_url="http://127.0.0.1:8787")
    lava.wallet.balance().balance  # "50.00"
    key = lava.spend_keys.create(name="Agent", spend_limit={"amount": "50.00", "cycle": "monthly"})
    key.key  # the secret, shown once

It mirrors Lava's Node SDK: `spend_keys.create/list/retrieve/update/rotate/revoke`,
`wallet.balance()`, `usage.retrieve()`, `requests.list()`; and `wallet.fund()`,
`payment_methods`, `orgs`, `org_invitations` and `connected_clients` (the apps connected
over OAuth, `/v1/oauth/clients`). Every answer is the typed pydantic model the server
declares for its route (`lava_mcp.client.models`, re-exported from `lava_mcp.contract`:
`lava.wallet.fund(25).status`, `lava.orgs.retrieve(org_id).members`), and a delete answers
True; every error is raised as `LavaAPIError` with the HTTP status, message and the error
JSON.

One implementation serves both clients: each resource method (`resources.py`) only builds an
`APIRequest` (`request.py`), and a transport sends it (`transports.py`) — `SyncTransport`
over `httpx.Client` for `Lava`, `AsyncTransport` over `httpx.AsyncClient` for `AsyncLava`.
`Lava` and `AsyncLava` differ only in that transport and in how they are closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import httpx

from lava_mcp.client.endpoint import TransportT
from lava_mcp.client.errors import LavaAPIError
from lava_mcp.client.models import (
    ConnectedClient,
    ConnectedClientList,
    FundResult,
    Invitation,
    InvitationList,
    Org,
    PaymentMethod,
    PaymentMethodList,
    RequestList,
    RequestRecord,
    SpendKey,
    SpendKeyList,
    Usage,
    Wallet,
)
from lava_mcp.client.resources import (
    ConnectedClients,
    OrgInvitations,
    Orgs,
    PaymentMethods,
    Requests,
    SpendKeyFields,
    SpendKeys,
    UsageResource,
    WalletResource,
)
from lava_mcp.client.transports import AsyncTransport, SyncTransport

__all__ = [
    "AsyncLava",
    "ConnectedClient",
    "ConnectedClientList",
    "FundResult",
    "Invitation",
    "InvitationList",
    "Lava",
    "LavaAPIError",
    "Org",
    "PaymentMethod",
    "PaymentMethodList",
    "RequestList",
    "RequestRecord",
    "SpendKey",
    "SpendKeyFields",
    "SpendKeyList",
    "Usage",
    "Wallet",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8787"
DEFAULT_TIMEOUT_S = 30.0

HTTPClientT = TypeVar("HTTPClientT", httpx.Client, httpx.AsyncClient)


class _Client(Generic[TransportT, HTTPClientT]):
    """The resources of one wallet over one transport, made by the subclass's `_transport_type`
    (which makes its own httpx client unless given one)."""

    _transport_type: Callable[[str, str, float, HTTPClientT | None], TransportT]

    def __init__(
        self,
        wallet_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        http_client: HTTPClientT | None = None,
    ) -> None:
        """Raises: ValueError (no wallet key)."""
        transport = self._transport_type(wallet_key, base_url, timeout_s, http_client)
        self._transport = transport
        self.spend_keys = SpendKeys(transport)
        self.wallet = WalletResource(transport)
        self.payment_methods = PaymentMethods(transport)
        self.usage = UsageResource(transport)
        self.requests = Requests(transport)
        self.orgs = Orgs(transport)
        self.org_invitations = OrgInvitations(transport)
        self.connected_clients = ConnectedClients(transport)


class Lava(_Client[SyncTransport, httpx.Client]):
    """A wallet, through the REST API. Use as a context manager (or call `close()`)."""

    _transport_type = SyncTransport

    def close(self) -> None:
        self._transport.http.close()

    def __enter__(self) -> Lava:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncLava(_Client[AsyncTransport, httpx.AsyncClient]):
    """`Lava` for asyncio/anyio code: the same resources, awaited."""

    _transport_type = AsyncTransport

    async def aclose(self) -> None:
        await self._transport.http.aclose()

    async def __aenter__(self) -> AsyncLava:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
