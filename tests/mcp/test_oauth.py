"""OAuth 2.1 for /mcp, end to end (DESIGN §14): the MCP SDK's own OAuth client against the
app on loopback, a real HTTP client at the sign-in page, and the refusals each rule makes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from lava_mcp.config import Settings
from lava_mcp.core import oauth, wallet
from lava_mcp.runtime import Runtime
from lava_mcp.transports.client_metadata import ClientMetadataFetcher
from tests.conftest import fund
from tests.mcp.conftest import error, ok
from tests.mcp.oauth_helpers import (
    CLAUDE_CALLBACK,
    DocumentServer,
    MemoryStorage,
    Person,
    Served,
    pkce_pair,
    redirected,
    sdk_oauth,
    self_signed_certificate,
    serve_app,
    serve_https,
    trusting,
)

ALL_SCOPES = "wallet:read wallet:fund wallet:spend"
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}
CHEAP = {
    "service": "cheapchat",
    "model": "cheap-1",
    "input": {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50},
}


@pytest.fixture
def served(settings: Settings, runtime: Runtime) -> Iterator[Served]:
    with serve_app(settings) as app:
        yield app


@asynccontextmanager
async def oauth_session(
    url: str, person: Person, storage: MemoryStorage, **options: Any
) -> AsyncIterator[Client]:
    """An MCP session whose credentials come from the SDK's OAuth client."""
    auth = sdk_oauth(f"{url}/mcp", person, storage, **options)
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http_client,
        Client(streamable_http_client(f"{url}/mcp", http_client=http_client)) as client,
    ):
        yield client


@asynccontextmanager
async def bearer_session(url: str, token: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http_client,
        Client(streamable_http_client(f"{url}/mcp", http_client=http_client)) as client,
    ):
        yield client


def mcp_status(url: str, token: str) -> int:
    """The status /mcp answers an initialize carrying `token`."""
    headers = MCP_HEADERS | {"authorization": f"Bearer {token}"}
    return httpx.post(f"{url}/mcp", json=INITIALIZE, headers=headers, timeout=30).status_code


def register(url: str, redirect_uris: list[str], **metadata: Any) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/register",
        json={"redirect_uris": redirect_uris, "client_name": "raw client", **metadata},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    registered: dict[str, Any] = answer.json()
    return registered


def authorization_url(url: str, client_id: str, challenge: str, **params: str) -> str:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CLAUDE_CALLBACK,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st-1",
        "resource": f"{url}/mcp",
        **params,
    }
    return f"{url}/authorize?{urlencode(query)}"


async def code_for(url: str, person: Person, client_id: str, challenge: str, **params: str) -> str:
    answer = await person.consent(authorization_url(url, client_id, challenge, **params))
    assert answer.status_code == 303, answer.text
    result = redirected(answer)
    assert result.state == "st-1" and result.iss == url
    return result.code


def exchange(url: str, client_id: str, code: str, verifier: str) -> httpx.Response:
    return httpx.post(
        f"{url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CLAUDE_CALLBACK,
            "client_id": client_id,
            "code_verifier": verifier,
            "resource": f"{url}/mcp",
        },
        timeout=30,
    )


def connected_clients(url: str, wallet_key: str) -> list[dict[str, Any]]:
    listed = httpx.get(
        f"{url}/v1/oauth/clients", headers={"authorization": f"Bearer {wallet_key}"}, timeout=30
    )
    assert listed.status_code == 200, listed.text
    data: list[dict[str, Any]] = listed.json()["data"]
    return data


# --- discovery --------------------------------------------------------------------------


def test_the_401_names_metadata_that_exists_and_lists_lava_as_the_authorization_server(
    served: Served,
) -> None:
    url = served.url
    answer = httpx.post(f"{url}/mcp", json=INITIALIZE, headers=MCP_HEADERS, timeout=30)
    assert answer.status_code == 401
    challenge = answer.headers["www-authenticate"]
    assert f'resource_metadata="{url}/.well-known/oauth-protected-resource/mcp"' in challenge
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        document = httpx.get(f"{url}{path}", timeout=30)
        assert document.status_code == 200, path
        assert document.json()["resource"] == f"{url}/mcp"
        assert document.json()["authorization_servers"] == [url]
        assert document.json()["scopes_supported"] == ALL_SCOPES.split()

    metadata = httpx.get(f"{url}/.well-known/oauth-authorization-server", timeout=30).json()
    assert metadata["issuer"] == url
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["client_id_metadata_document_supported"] is True
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert metadata["token_endpoint_auth_methods_supported"] == ["none"]
    assert metadata["registration_endpoint"] == f"{url}/register"
    assert metadata["revocation_endpoint"] == f"{url}/revoke"


# --- the whole flow ---------------------------------------------------------------------


async def test_the_sdk_oauth_client_connects_signs_in_refreshes_and_is_revoked(
    served: Served, runtime: Runtime, new_wallet: wallet.NewWallet
) -> None:
    url = served.url
    fund(runtime, new_wallet.wallet_id, "12.50")
    person = Person(url, wallet_key=new_wallet.wallet_key)
    storage = MemoryStorage()
    # Discovery from the 401, dynamic registration, PKCE, consent, token, then the tools.
    async with oauth_session(url, person, storage) as client:
        assert ok(await client.call_tool("get_balance", {}))["balance"] == "12.50"
        assert ok(await client.call_tool("list_requests", {}))["requests"] == []
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"get_balance", "add_funds", "call_paid_service"} <= tools
    [answer] = person.answered
    assert answer.iss == url  # RFC 9207
    assert storage.client_info is not None and storage.client_info.token_endpoint_auth_method == "none"
    assert storage.tokens is not None and storage.tokens.scope == ALL_SCOPES
    first = storage.tokens
    assert first.refresh_token is not None

    [connected] = connected_clients(url, new_wallet.wallet_key)
    assert connected["client_name"] == "Claude (test)"
    assert connected["scopes"] == ALL_SCOPES.split()
    assert connected["last_used_at"] is not None

    # Refresh rotates: a new pair; the old refresh token is spent.
    refreshed = httpx.post(
        f"{url}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first.refresh_token,
            "client_id": storage.client_info.client_id,
            "resource": f"{url}/mcp",
        },
        timeout=30,
    )
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert second["refresh_token"] != first.refresh_token and second["access_token"] != first.access_token
    async with bearer_session(url, second["access_token"]) as client:
        assert ok(await client.call_tool("get_balance", {}))["balance"] == "12.50"
    # /sse is the same protected resource: the same token works there.
    sse_headers = {"Authorization": f"Bearer {second['access_token']}"}
    async with Client(sse_client(f"{url}/sse", headers=sse_headers, timeout=30)) as client:
        assert ok(await client.call_tool("get_balance", {}))["balance"] == "12.50"

    # Revoke: the token stops working at once, on /mcp and /sse.
    revoked = httpx.post(
        f"{url}/revoke",
        data={"token": second["access_token"], "client_id": storage.client_info.client_id},
        timeout=30,
    )
    assert revoked.status_code == 200
    assert mcp_status(url, second["access_token"]) == 401
    sse = httpx.get(f"{url}/sse", headers={"authorization": f"Bearer {second['access_token']}"}, timeout=30)
    assert sse.status_code == 401
    refused = httpx.post(
        f"{url}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": second["refresh_token"],
            "client_id": storage.client_info.client_id,
        },
        timeout=30,
    )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert connected_clients(url, new_wallet.wallet_key) == []


async def test_a_spent_refresh_token_presented_again_fails_and_ends_the_connection(
    served: Served, runtime: Runtime, new_wallet: wallet.NewWallet
) -> None:
    url = served.url
    client_id = register(url, [CLAUDE_CALLBACK])["client_id"]
    verifier, challenge = pkce_pair()
    code = await code_for(url, Person(url, wallet_key=new_wallet.wallet_key), client_id, challenge)
    tokens = exchange(url, client_id, code, verifier).json()

    def refresh(refresh_token: str) -> httpx.Response:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
        return httpx.post(f"{url}/token", data=data, timeout=30)

    rotated = refresh(tokens["refresh_token"])
    assert rotated.status_code == 200
    again = refresh(tokens["refresh_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # Someone replayed a spent refresh token: every token of that connection ends.
    assert mcp_status(url, rotated.json()["access_token"]) == 401
    assert refresh(rotated.json()["refresh_token"]).status_code == 400


async def test_the_wallet_key_still_works_as_a_bearer_on_mcp(
    served: Served, runtime: Runtime, new_wallet
) -> None:
    fund(runtime, new_wallet.wallet_id, "3.00")
    async with bearer_session(served.url, new_wallet.wallet_key) as client:
        assert ok(await client.call_tool("get_balance", {}))["balance"] == "3.00"
        # Every scope of its own wallet: funding reaches the funding rules (no card: a link).
        funded = ok(await client.call_tool("add_funds", {"amount": "25"}))
        assert funded["status"] == "checkout_required"


async def test_a_dashboard_revoke_ends_an_open_session_at_its_next_request(
    served: Served, runtime: Runtime, new_wallet: wallet.NewWallet
) -> None:
    url = served.url
    person = Person(url, wallet_key=new_wallet.wallet_key)
    storage = MemoryStorage()
    async with oauth_session(url, person, storage) as client:
        ok(await client.call_tool("get_balance", {}))
    assert storage.tokens is not None
    access = storage.tokens.access_token
    async with bearer_session(url, access) as client:
        ok(await client.call_tool("get_balance", {}))
        [connected] = connected_clients(url, new_wallet.wallet_key)
        other = wallet.create_wallet(runtime.db, name="other")
        # Another wallet can't revoke it.
        foreign = httpx.delete(
            f"{url}/v1/oauth/clients/{connected['id']}",
            headers={"authorization": f"Bearer {other.wallet_key}"},
        )
        assert foreign.status_code == 404 and foreign.json()["code"] == 404
        deleted = httpx.delete(
            f"{url}/v1/oauth/clients/{connected['id']}",
            headers={"authorization": f"Bearer {new_wallet.wallet_key}"},
        )
        assert deleted.status_code == 200 and deleted.json() == {"success": True}
        # The next request of the open session is refused (the SDK client reports the 401
        # as an error response).
        with pytest.raises(MCPError, match="error response"):
            await client.call_tool("get_balance", {})
    assert mcp_status(url, access) == 401


# --- scopes and wallets -----------------------------------------------------------------


async def test_a_token_without_fund_or_spend_gets_403_from_those_tools(
    served: Served, runtime: Runtime, new_wallet: wallet.NewWallet, fake
) -> None:
    url = served.url
    fund(runtime, new_wallet.wallet_id, "5.00")
    person = Person(url, wallet_key=new_wallet.wallet_key, scopes=[])  # every box unticked: read only
    storage = MemoryStorage()
    async with oauth_session(url, person, storage) as client:
        assert ok(await client.call_tool("get_balance", {}))["balance"] == "5.00"
        refused = error(await client.call_tool("add_funds", {"amount": "25"}), 403)
        assert "wallet:fund" in refused["error"]
        refused = error(await client.call_tool("call_paid_service", CHEAP), 403)
        assert "wallet:spend" in refused["error"]
    assert storage.tokens is not None and storage.tokens.scope == "wallet:read"
    assert fake.received == []

    person = Person(url, wallet_key=new_wallet.wallet_key, scopes=["wallet:spend"])
    storage = MemoryStorage()
    async with oauth_session(url, person, storage) as client:
        assert ok(await client.call_tool("call_paid_service", CHEAP))["cost"] == "0.000015"
        error(await client.call_tool("add_funds", {"amount": "25"}), 403)


async def test_a_token_reads_only_its_own_wallet(served: Served, runtime: Runtime, new_wallet) -> None:
    url = served.url
    other = wallet.create_wallet(runtime.db, name="other")
    fund(runtime, new_wallet.wallet_id, "1.00")
    fund(runtime, other.wallet_id, "2.00")
    balances = []
    for owner in (new_wallet, other):
        storage = MemoryStorage()
        async with oauth_session(url, Person(url, wallet_key=owner.wallet_key), storage) as client:
            balances.append(ok(await client.call_tool("get_balance", {}))["balance"])
    assert balances == ["1.00", "2.00"]


# --- refusals ---------------------------------------------------------------------------


async def test_a_wrong_code_verifier_is_refused(served: Served, new_wallet) -> None:
    url = served.url
    client_id = register(url, [CLAUDE_CALLBACK])["client_id"]
    _, challenge = pkce_pair()
    code = await code_for(url, Person(url, wallet_key=new_wallet.wallet_key), client_id, challenge)
    wrong_verifier, _ = pkce_pair()
    refused = exchange(url, client_id, code, wrong_verifier)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    # PKCE is S256 only: `plain` (or no challenge at all) is refused at the authorization step.
    for params in ({"code_challenge_method": "plain"}, {"code_challenge": ""}):
        answer = httpx.get(authorization_url(url, client_id, challenge, **params), timeout=30)
        assert answer.status_code == 302, params
        assert parse_qs(urlparse(answer.headers["location"]).query)["error"] == ["invalid_request"]


async def test_a_reused_code_is_refused_and_ends_what_it_issued(served: Served, new_wallet) -> None:
    url = served.url
    client_id = register(url, [CLAUDE_CALLBACK])["client_id"]
    verifier, challenge = pkce_pair()
    code = await code_for(url, Person(url, wallet_key=new_wallet.wallet_key), client_id, challenge)
    first = exchange(url, client_id, code, verifier)
    assert first.status_code == 200
    assert mcp_status(url, first.json()["access_token"]) == 200
    again = exchange(url, client_id, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert mcp_status(url, first.json()["access_token"]) == 401


async def test_an_unregistered_redirect_uri_is_refused_without_a_redirect(served: Served) -> None:
    url = served.url
    client_id = register(url, [CLAUDE_CALLBACK, "https://claude.com/api/mcp/auth_callback"])["client_id"]
    _, challenge = pkce_pair()
    for redirect_uri in ("https://evil.example/callback", "https://claude.ai/api/mcp/auth_callback/extra"):
        answer = httpx.get(
            authorization_url(url, client_id, challenge, redirect_uri=redirect_uri), timeout=30
        )
        assert answer.status_code == 400, redirect_uri
        assert "location" not in answer.headers
        assert answer.json()["error"] == "invalid_request"
    # Claude's second callback is registered exactly, and works.
    answer = httpx.get(
        authorization_url(url, client_id, challenge, redirect_uri="https://claude.com/api/mcp/auth_callback"),
        timeout=30,
    )
    assert answer.status_code == 302 and "/oauth/consent?request=" in answer.headers["location"]
    # Registration takes https (or http to loopback) only.
    refused = httpx.post(f"{url}/register", json={"redirect_uris": ["http://evil.example/cb"]}, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_redirect_uri"


async def test_a_token_for_another_resource_is_refused(served: Served, runtime: Runtime, new_wallet) -> None:
    url = served.url
    client_id = register(url, [CLAUDE_CALLBACK])["client_id"]
    _, challenge = pkce_pair()
    # Asking for a token for another server's resource: refused at the authorization step.
    answer = httpx.get(
        authorization_url(url, client_id, challenge, resource="https://other.example/mcp"), timeout=30
    )
    assert answer.status_code == 302
    query = parse_qs(urlparse(answer.headers["location"]).query)
    assert query["error"] == ["invalid_target"] and query["state"] == ["st-1"]
    assert query["iss"] == [url]  # RFC 9207: error answers name the issuer too
    # A token bound to another resource (as an authorization server for several would
    # issue) is refused by /mcp.
    _, challenge = pkce_pair()
    params = {
        "scopes": list(oauth.SCOPES),
        "code_challenge": challenge,
        "redirect_uri": CLAUDE_CALLBACK,
        "redirect_uri_provided_explicitly": True,
        "state": None,
        "resource": "https://other.example/mcp",
    }
    request_id = oauth.start_authorization(runtime.db, client_id, params)
    code = oauth.approve(runtime.db, request_id, wallet_id=new_wallet.wallet_id, scopes=list(oauth.SCOPES))
    issued = oauth.exchange_code(runtime.db, code)
    assert mcp_status(url, issued.access_token) == 401


async def test_the_token_endpoint_refuses_a_resource_other_than_ours(served: Served, new_wallet) -> None:
    """RFC 8707 at /token too: naming another resource is `invalid_target`, and the code
    is still good for ours."""
    url = served.url
    client_id = register(url, [CLAUDE_CALLBACK])["client_id"]
    verifier, challenge = pkce_pair()
    code = await code_for(url, Person(url, wallet_key=new_wallet.wallet_key), client_id, challenge)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CLAUDE_CALLBACK,
        "client_id": client_id,
        "code_verifier": verifier,
    }
    refused = httpx.post(f"{url}/token", data={**form, "resource": "https://other.example/mcp"}, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_target", refused.text
    issued = exchange(url, client_id, code, verifier)
    assert issued.status_code == 200, issued.text
    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": issued.json()["refresh_token"],
        "client_id": client_id,
    }
    refused = httpx.post(
        f"{url}/token", data={**refresh, "resource": "https://other.example/mcp"}, timeout=30
    )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_target", refused.text


async def test_a_narrowed_refresh_keeps_reading_the_wallet(served: Served, new_wallet) -> None:
    """Refreshing with `scope=wallet:fund` alone must not leave a token that fails every
    request: reading the wallet is part of every grant."""
    url = served.url
    client_id = register(url, [CLAUDE_CALLBACK])["client_id"]
    verifier, challenge = pkce_pair()
    code = await code_for(url, Person(url, wallet_key=new_wallet.wallet_key), client_id, challenge)
    issued = exchange(url, client_id, code, verifier).json()
    narrowed = httpx.post(
        f"{url}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": issued["refresh_token"],
            "client_id": client_id,
            "scope": oauth.FUND,
        },
        timeout=30,
    )
    assert narrowed.status_code == 200, narrowed.text
    assert set(narrowed.json()["scope"].split()) == {oauth.READ, oauth.FUND}
    assert mcp_status(url, narrowed.json()["access_token"]) == 200


async def test_without_a_scope_asked_the_page_offers_only_what_the_client_registered_for(
    served: Served, new_wallet
) -> None:
    """A client registered for reading that asks for no scope is offered reading, not the
    power to charge cards or spend."""
    url = served.url
    client_id = register(url, [CLAUDE_CALLBACK], scope=oauth.READ)["client_id"]
    _, challenge = pkce_pair()
    page = await Person(url).open(authorization_url(url, client_id, challenge))
    assert page.status_code == 200, page.text
    offered = set(re.findall(r'name="scope" value="([^"]+)"', page.text))
    assert offered <= {oauth.READ}, offered


# --- the sign-in page -------------------------------------------------------------------


async def test_the_sign_in_page_refuses_forged_posts_and_a_wrong_key(served: Served, new_wallet) -> None:
    url = served.url
    client_id = register(url, [CLAUDE_CALLBACK])["client_id"]
    _, challenge = pkce_pair()
    person = Person(url)
    page = await person.open(authorization_url(url, client_id, challenge))
    assert page.status_code == 200
    assert "raw client" in page.text and "claude.ai" in page.text
    assert "Add funds to your wallet" in page.text and "Make paid calls" in page.text
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    # The browser may follow the answer's redirect to the client (form-action covers it).
    assert "form-action 'self' https://claude.ai;" in page.headers["content-security-policy"]
    assert 'method="post"' in page.text and 'type="password" name="wallet_key"' in page.text
    form = {"action": "approve", "wallet_key": new_wallet.wallet_key}

    async def post(
        headers: dict[str, str], fields: dict[str, Any], cookies: httpx.Cookies | None = None
    ) -> int:
        async with httpx.AsyncClient(
            cookies=person.cookies if cookies is None else cookies, timeout=30
        ) as browser:
            answer = await browser.post(
                f"{url}/oauth/consent",
                content=urlencode(fields),
                headers={"content-type": "application/x-www-form-urlencoded", **headers},
            )
            return answer.status_code

    from tests.mcp.oauth_helpers import hidden_fields

    fields = {**hidden_fields(page.text), **form}
    assert await post({"origin": "https://evil.example"}, fields) == 403  # another site
    assert await post({}, fields) == 403  # no Origin or Referer at all
    assert await post({"origin": url}, {**fields, "csrf": "forged"}) == 403
    assert await post({"origin": url}, fields, cookies=httpx.Cookies()) == 403  # no cookie

    wrong = await person.submit(page, action="approve", wallet_key="lava_wk_wrong")
    assert wrong.status_code == 401 and "not known" in wrong.text
    assert "lava_wk_wrong" not in wrong.text
    denied = await person.submit(wrong, action="deny")
    assert denied.status_code == 303
    query = parse_qs(urlparse(denied.headers["location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st-1"] and query["iss"] == [url]
    # Answered once: the same page can't approve afterwards.
    late = await person.submit(wrong, **form)
    assert late.status_code == 404


async def test_sign_up_on_the_embedded_install_makes_a_wallet_and_connects_it(
    served: Served, runtime: Runtime
) -> None:
    url = served.url
    client_id = register(url, [CLAUDE_CALLBACK])["client_id"]
    verifier, challenge = pkce_pair()
    person = Person(url)
    page = await person.open(authorization_url(url, client_id, challenge))
    assert "Create a new wallet" in page.text
    signed_up = await person.submit(page, action="signup")
    assert signed_up.status_code == 200
    [key] = [part for part in signed_up.text.split("<code id=new-wallet-key>")[1:2]]
    key = key.split("</code>")[0]
    owner = wallet.authenticate(runtime.db, key)
    approved = await person.submit(signed_up, action="approve", scope=["wallet:fund", "wallet:spend"])
    assert approved.status_code == 303
    tokens = exchange(url, client_id, redirected(approved).code, verifier).json()
    async with bearer_session(url, tokens["access_token"]) as client:
        assert ok(await client.call_tool("get_balance", {}))["balance"] == "0.00"
    [connected] = connected_clients(url, key)
    assert connected["client_id"] == client_id
    assert owner.mode == runtime.settings.money_mode


async def test_a_public_server_offers_no_sign_up_unless_the_operator_opens_it(
    settings: Settings, runtime
) -> None:
    for open_signup, offered in ((None, False), (True, True)):
        with serve_app(settings, public=True, open_signup=open_signup) as app:
            client_id = register(app.url, [CLAUDE_CALLBACK])["client_id"]
            _, challenge = pkce_pair()
            person = Person(app.url)
            page = await person.open(authorization_url(app.url, client_id, challenge))
            assert page.status_code == 200
            assert ("Create a new wallet" in page.text) is offered
            if not offered:
                refused = await person.submit(page, action="signup")
                assert refused.status_code == 403


# --- Client ID Metadata Documents -------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path)


async def test_a_client_id_metadata_document_client_connects_without_registering(
    settings: Settings, runtime: Runtime, new_wallet, certificate: tuple[Path, Path]
) -> None:
    documents = DocumentServer()
    with serve_https(documents.app(), *certificate) as documents_url:
        client_id = f"{documents_url}/claude/client.json"
        documents.documents["/claude/client.json"] = {
            "client_id": client_id,
            "client_name": "Claude (metadata document)",
            "redirect_uris": [CLAUDE_CALLBACK],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        }
        fetcher = ClientMetadataFetcher(ssl_context=trusting(certificate[0]), allow_private_addresses=True)
        with serve_app(settings, fetcher=fetcher) as app:
            fund(runtime, new_wallet.wallet_id, "4.00")
            storage = MemoryStorage()
            person = Person(app.url, wallet_key=new_wallet.wallet_key)
            async with oauth_session(app.url, person, storage, client_metadata_url=client_id) as client:
                assert ok(await client.call_tool("get_balance", {}))["balance"] == "4.00"
            assert storage.client_info is not None and storage.client_info.client_id == client_id
            [connected] = connected_clients(app.url, new_wallet.wallet_key)
            assert connected["client_name"] == "Claude (metadata document)"
            assert "/claude/client.json" in documents.requests


async def test_metadata_documents_are_read_with_strict_limits(
    settings: Settings, runtime: Runtime, certificate: tuple[Path, Path]
) -> None:
    documents = DocumentServer()
    with serve_https(documents.app(), *certificate) as documents_url:
        good = f"{documents_url}/good.json"
        documents.documents["/good.json"] = {"client_id": good, "redirect_uris": [CLAUDE_CALLBACK]}
        documents.documents["/other-id.json"] = {
            "client_id": f"{documents_url}/x.json",
            "redirect_uris": [CLAUDE_CALLBACK],
        }
        documents.documents["/secret.json"] = {
            "client_id": f"{documents_url}/secret.json",
            "redirect_uris": [CLAUDE_CALLBACK],
            "token_endpoint_auth_method": "client_secret_basic",
        }
        documents.documents["/huge.json"] = {
            "client_id": f"{documents_url}/huge.json",
            "redirect_uris": [CLAUDE_CALLBACK],
            "client_name": "x" * 6_000,
        }
        documents.documents["/bad-redirect.json"] = {
            "client_id": f"{documents_url}/bad-redirect.json",
            "redirect_uris": ["http://evil.example/cb"],
        }
        trusting_loopback = ClientMetadataFetcher(
            ssl_context=trusting(certificate[0]), allow_private_addresses=True
        )
        assert await trusting_loopback.fetch(good) is not None
        for path in ("/other-id.json", "/secret.json", "/huge.json", "/bad-redirect.json", "/missing.json"):
            with serve_app(settings, fetcher=trusting_loopback) as app:
                _, challenge = pkce_pair()
                answer = httpx.get(
                    authorization_url(app.url, f"{documents_url}{path}", challenge), timeout=30
                )
                assert answer.status_code == 400, path
                assert "not found" in answer.json()["error_description"]
        # The default fetcher reads public addresses only: loopback is refused before connecting.
        before = len(documents.requests)
        assert await ClientMetadataFetcher(ssl_context=trusting(certificate[0])).fetch(good) is None
        assert len(documents.requests) == before
        # And a certificate it does not trust is refused: the handshake fails, nothing is read.
        assert await ClientMetadataFetcher(allow_private_addresses=True).fetch(good) is None
        assert len(documents.requests) == before


def test_the_public_url_is_the_issuer_the_resource_and_the_allowed_host(settings: Settings, runtime) -> None:
    public = "https://lava.example.com"
    with serve_app(settings, public_url=public) as app:
        as_proxied = {"host": "lava.example.com"}
        metadata = httpx.get(f"{app.url}/.well-known/oauth-authorization-server", headers=as_proxied).json()
        assert metadata["issuer"] == public and metadata["authorization_endpoint"] == f"{public}/authorize"
        resource = httpx.get(f"{app.url}/.well-known/oauth-protected-resource/mcp", headers=as_proxied).json()
        assert resource == resource | {"resource": f"{public}/mcp", "authorization_servers": [public]}
        answer = httpx.post(f"{app.url}/mcp", json=INITIALIZE, headers=MCP_HEADERS | as_proxied, timeout=30)
        assert answer.status_code == 401
        assert (
            f'resource_metadata="{public}/.well-known/oauth-protected-resource/mcp"'
            in answer.headers["www-authenticate"]
        )
        # A token for this server's loopback address is another resource here.
        client_id = register(app.url, [CLAUDE_CALLBACK])["client_id"]
        _, challenge = pkce_pair()
        refused = httpx.get(authorization_url(app.url, client_id, challenge), timeout=30)
        assert parse_qs(urlparse(refused.headers["location"]).query)["error"] == ["invalid_target"]
        accepted = httpx.get(
            authorization_url(app.url, client_id, challenge, resource=f"{public}/mcp"), timeout=30
        )
        assert accepted.headers["location"].startswith(f"{public}/oauth/consent?request=")


async def test_a_plain_http_public_url_serves_no_oauth_but_takes_the_wallet_key(
    settings: Settings, runtime: Runtime, new_wallet
) -> None:
    # OAuth needs an https issuer (or loopback): over plain http elsewhere, only the key.
    with serve_app(settings, public_url="http://lava.test:8787") as app:
        as_proxied = {"host": "lava.test:8787"}
        assert (
            httpx.get(f"{app.url}/.well-known/oauth-authorization-server", headers=as_proxied).status_code
            == 404
        )
        assert httpx.get(f"{app.url}/authorize", headers=as_proxied).status_code == 404
        fund(runtime, new_wallet.wallet_id, "1.00")
        async with bearer_session(app.url, new_wallet.wallet_key) as client:
            assert ok(await client.call_tool("get_balance", {}))["balance"] == "1.00"
