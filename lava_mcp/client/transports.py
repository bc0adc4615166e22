"""The two ways an `APIRequest` goes on the wire: `SyncTransport` over `httpx.Client`,
`AsyncTransport` over `httpx.AsyncClient`.

They differ only in whether `send` blocks or is awaited. What the request carries (URL,
query, body, headers, the wallet key) comes from `HTTPTransport.options`, and what the answer
means from `APIRequest.read`, so the two cannot drift apart. The request is built with the
httpx client's own `build_request`, so a caller's `http_client` keeps its timeouts, headers
and event hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict, TypeVar

import httpx

from lava_mcp.client.request import APIRequest

Result = TypeVar("Result")

USER_AGENT = "lava-mcp-python"


class RequestOptions(TypedDict):
    """The arguments of httpx's `build_request` for one call."""

    method: str
    url: str
    params: Mapping[str, str]
    json: Mapping[str, object] | None
    headers: dict[str, str]


class HTTPTransport:
    """What both transports share: the base URL and the wallet key's headers."""

    def __init__(self, wallet_key: str, base_url: str) -> None:
        """Raises: ValueError (no wallet key), before any connection pool is made."""
        if not wallet_key:
            raise ValueError("a wallet key (lava_wk_…) is required")
        self.base_url = base_url.rstrip("/")
        self._headers = {"authorization": f"Bearer {wallet_key}", "user-agent": USER_AGENT}

    def options(self, request: APIRequest[Result]) -> RequestOptions:
        """The httpx arguments that send `request` for this wallet."""
        return RequestOptions(
            method=request.method,
            url=self.base_url + request.path,
            params=request.query,
            json=request.json,
            headers={**self._headers, **request.all_headers()},
        )


class SyncTransport(HTTPTransport):
    def __init__(self, wallet_key: str, base_url: str, timeout_s: float, http: httpx.Client | None) -> None:
        super().__init__(wallet_key, base_url)
        self.http = http or httpx.Client(timeout=timeout_s)

    def send(self, request: APIRequest[Result]) -> Result:
        """Raises: LavaAPIError, httpx.TransportError."""
        response = self.http.send(self.http.build_request(**self.options(request)))
        return request.read(response)


class AsyncTransport(HTTPTransport):
    def __init__(
        self, wallet_key: str, base_url: str, timeout_s: float, http: httpx.AsyncClient | None
    ) -> None:
        super().__init__(wallet_key, base_url)
        self.http = http or httpx.AsyncClient(timeout=timeout_s)

    async def send(self, request: APIRequest[Result]) -> Result:
        """Raises: LavaAPIError, httpx.TransportError."""
        response = await self.http.send(self.http.build_request(**self.options(request)))
        return request.read(response)
