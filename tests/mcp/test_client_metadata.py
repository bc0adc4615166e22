"""The Client ID Metadata Document fetcher's limits: anyone can make the server fetch a URL
(a client_id at /authorize), so it reads public https on port 443 only, never an address
that routes to a private one, and only a few at a time."""

from __future__ import annotations

import pytest

from lava_mcp.transports.client_metadata import (
    METADATA_DOCUMENT_FETCHES_AT_ONCE,
    ClientMetadataFetcher,
    _CheckedAddressBackend,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",  # cloud metadata
        "::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    ],
)
def test_addresses_that_are_or_route_to_private_ones_are_refused(address: str) -> None:
    assert not _CheckedAddressBackend(allow_private_addresses=False)._allowed(address)


def test_public_addresses_are_allowed() -> None:
    backend = _CheckedAddressBackend(allow_private_addresses=False)
    assert backend._allowed("1.1.1.1") and backend._allowed("2606:4700:4700::1111")


async def test_only_the_https_port_is_fetched() -> None:
    fetcher = ClientMetadataFetcher()
    # Refused before any lookup or connection: the URL names another port.
    assert await fetcher.fetch("https://1.1.1.1:22/client.json") is None
    assert await fetcher.fetch("https://example.com:8443/client.json") is None


async def test_fetches_beyond_the_limit_are_refused_at_once() -> None:
    """With as many fetches running as allowed, another is refused without connecting
    (it would otherwise wait, and a flood of client_ids would queue outbound fetches)."""
    fetcher = ClientMetadataFetcher()
    for _ in range(METADATA_DOCUMENT_FETCHES_AT_ONCE):
        await fetcher._fetching.acquire()  # stands for fetches still running
    assert await fetcher.fetch("https://example.com/client.json") is None
    for _ in range(METADATA_DOCUMENT_FETCHES_AT_ONCE):
        fetcher._fetching.release()
