"""Client ID Metadata Documents: an OAuth client known by an https URL whose document
describes it (the MCP authorization spec's alternative to dynamic registration).

A document is read with strict limits: https only; a path and no query, fragment,
credentials or dot segments; no redirects; `METADATA_DOCUMENT_TIMEOUT_S`; at most
`METADATA_DOCUMENT_MAX_BYTES`; the host must resolve only to public addresses, and the
connection goes to the address that was checked (no DNS rebinding in between). It must name
its own URL as `client_id` and describe a public client with acceptable redirect URIs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

import anyio
import httpcore
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import ValidationError

from lava_mcp.core import oauth

logger = logging.getLogger("lava_mcp.oauth")

METADATA_DOCUMENT_MAX_BYTES = 5_000
METADATA_DOCUMENT_TIMEOUT_S = 5.0
# Anyone can make this server fetch a URL (a client_id at /authorize): a few fetches at a
# time, to the https port only, so it can't be turned into a port scanner or an amplifier.
METADATA_DOCUMENT_FETCHES_AT_ONCE = 4
METADATA_DOCUMENT_PORT = 443
# Global by `is_global`, but routed to an IPv4 address inside (NAT64, 6to4, Teredo): the
# embedded address could be a private one.
_TUNNELLED_NETWORKS = tuple(
    ipaddress.ip_network(network) for network in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32")
)


def is_metadata_document_url(client_id: str) -> bool:
    """An https URL with a path, no query, fragment, credentials or dot segments."""
    parsed = urlparse(client_id)
    segments = parsed.path.split("/")
    return (
        parsed.scheme == "https"
        and bool(parsed.hostname)
        and parsed.path not in ("", "/")
        and not parsed.query
        and not parsed.fragment
        and parsed.username is None
        and parsed.password is None
        and "." not in segments
        and ".." not in segments
    )


class _CheckedAddressBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself and connects only to an allowed address, so the address
    checked is the address connected to (no DNS rebinding between check and connect)."""

    def __init__(self, allow_private_addresses: bool) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private_addresses = allow_private_addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        infos = await anyio.getaddrinfo(host, port, type=0)
        addresses = [str(info[4][0]) for info in infos]
        allowed = [address for address in addresses if self._allowed(address)]
        if not allowed or len(allowed) != len(addresses):
            raise httpcore.ConnectError(f"{host} resolves to an address that is not public")
        return await self._inner.connect_tcp(allowed[0], port, timeout, local_address, socket_options)

    def _allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if self._allow_private_addresses and (ip.is_loopback or ip.is_private):
            return True
        if isinstance(ip, ipaddress.IPv6Address) and (
            ip.ipv4_mapped is not None or any(ip in network for network in _TUNNELLED_NETWORKS)
        ):
            return False
        return ip.is_global

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class ClientMetadataFetcher:
    """Reads a Client ID Metadata Document: https only, no redirects, at most
    `METADATA_DOCUMENT_MAX_BYTES`, within `METADATA_DOCUMENT_TIMEOUT_S`, from public
    addresses only (tests allow loopback and pass their own CA)."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, allow_private_addresses: bool = False
    ) -> None:
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._allow_private_addresses = allow_private_addresses
        self._fetching = anyio.Semaphore(METADATA_DOCUMENT_FETCHES_AT_ONCE)

    async def fetch(self, url: str) -> dict[str, Any] | None:
        """The document's JSON object, or None if it can't be read within the limits."""
        if not is_metadata_document_url(url):
            return None
        port = urlparse(url).port
        if not self._allow_private_addresses and port not in (None, METADATA_DOCUMENT_PORT):
            return None  # tests (loopback) serve documents on a port of their own
        if self._fetching.value == 0:
            logger.info(
                "client metadata document %s not read: %d fetches already running",
                url,
                METADATA_DOCUMENT_FETCHES_AT_ONCE,
            )
            return None
        async with self._fetching:
            return await self._fetch(url)

    async def _fetch(self, url: str) -> dict[str, Any] | None:
        try:
            with anyio.fail_after(METADATA_DOCUMENT_TIMEOUT_S):
                async with (
                    httpcore.AsyncConnectionPool(
                        ssl_context=self._ssl_context,
                        network_backend=_CheckedAddressBackend(self._allow_private_addresses),
                        retries=0,
                    ) as pool,
                    pool.stream("GET", url, headers={"accept": "application/json"}) as response,
                ):
                    if response.status != 200:
                        return None
                    body = b""
                    async for chunk in response.aiter_stream():
                        body += chunk
                        if len(body) > METADATA_DOCUMENT_MAX_BYTES:
                            return None
        except (
            TimeoutError,
            httpcore.TimeoutException,
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.UnsupportedProtocol,
            OSError,
        ) as error:
            logger.info("client metadata document %s could not be read: %s", url, type(error).__name__)
            return None
        try:
            document = json.loads(body)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None


def client_from_document(url: str, document: dict[str, Any]) -> OAuthClientInformationFull | None:
    """The client a metadata document describes, or None if it does not describe `url` as a
    public client with redirect URIs this server accepts."""
    if document.get("client_id") != url or "client_secret" in document:
        return None
    if document.get("token_endpoint_auth_method") not in (None, "none"):
        return None
    redirect_uris = document.get("redirect_uris")
    if (
        not isinstance(redirect_uris, list)
        or not redirect_uris
        or not all(map(acceptable_redirect_uri, redirect_uris))
    ):
        return None
    try:
        return OAuthClientInformationFull(
            client_id=url,
            client_name=str(document.get("client_name") or "")[:200] or None,
            redirect_uris=redirect_uris,
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            scope=" ".join(oauth.SCOPES),
        )
    except ValidationError:
        return None


def acceptable_redirect_uri(uri: object) -> bool:
    """https anywhere; http only to loopback (native apps, RFC 8252); nothing with a fragment."""
    if not isinstance(uri, str):
        return False
    parsed = urlparse(uri)
    if parsed.fragment or not parsed.hostname:
        return False
    if parsed.scheme == "https":
        return True
    return parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost", "::1")
