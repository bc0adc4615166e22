"""Connected apps on the dashboard: a client connected with the MCP SDK's own OAuth client is
listed (name, where its answers go, its scopes in words, connected and last used), and
disconnecting it in a real Chromium ends its token at the next request of its open /mcp
session. Over plain HTTP: another wallet's grant is a 404, and a forged or cross-origin
revoke changes nothing."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from lava_mcp.core import oauth, wallet
from tests.dashboard.conftest import PHONE, no_horizontal_overflow, screenshot, sign_in, signed_in_client
from tests.gateway.conftest import Gateway
from tests.mcp.conftest import ok
from tests.mcp.oauth_helpers import CLAUDE_CALLBACK, MemoryStorage, Person, pkce_pair
from tests.mcp.test_oauth import bearer_session, mcp_status, oauth_session

EVIL = "https://evil.example"
WAIT_S = 60  # a bound on waiting for the other thread, never a timing assertion


def in_thread(work: Callable[[], Coroutine[Any, Any, None]]) -> tuple[threading.Thread, list[BaseException]]:
    """Run an async MCP client in its own thread and event loop (the sync Playwright API
    owns this thread's); its failure is kept for the test to raise."""
    failures: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(work())
        except BaseException as failure:  # reported by the test, not lost in the thread
            failures.append(failure)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    return thread, failures


def finish(thread: threading.Thread, failures: list[BaseException]) -> None:
    thread.join(WAIT_S)
    assert not thread.is_alive(), "the MCP client thread did not finish"
    if failures:
        raise failures[0]


def test_a_connected_client_is_listed_and_disconnecting_it_ends_its_token(page: Any, served: Gateway) -> None:
    url = served.url
    # The owner leaves "add funds" unticked at the consent page.
    person = Person(url, wallet_key=served.wallet_key, scopes=[oauth.READ, oauth.SPEND])
    storage = MemoryStorage()
    connected, revoked, after_revoke = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    async def client_app() -> None:
        # Discovery, registration, PKCE, consent and token, as Claude's connector does it.
        async with oauth_session(url, person, storage) as client:
            seen["balance"] = ok(await client.call_tool("get_balance", {}))["balance"]
        assert storage.tokens is not None
        # An open session that outlives the disconnect: its next request must fail.
        async with bearer_session(url, storage.tokens.access_token) as client:
            ok(await client.call_tool("get_balance", {}))
            connected.set()
            assert revoked.wait(WAIT_S)
            with pytest.raises(MCPError, match="error response"):
                await client.call_tool("get_balance", {})
            after_revoke.set()

    thread, failures = in_thread(client_app)
    if not connected.wait(WAIT_S):
        finish(thread, failures)
    assert seen["balance"] == "10.00"
    assert storage.tokens is not None
    access = storage.tokens.access_token

    sign_in(page, served.wallet_key)
    page.click("nav.tabs >> text=Connected apps")
    page.wait_for_url("**/dashboard/apps")
    assert page.get_attribute("nav.tabs a[href='/dashboard/apps']", "aria-current") == "page"
    [grant] = oauth.list_connected_clients(served.runtime.db, served.wallet_id)
    row = page.locator(f"#apps tbody tr[data-app='{grant.id}']")
    text = row.inner_text()
    assert "Claude (test)" in text
    assert "claude.ai" in text  # the host of its registered redirect URI
    assert row.locator("ul.scopes li").all_inner_texts() == [
        "See your balance, usage and requests",
        "Make paid calls from your balance",
    ]
    assert "Add funds" not in text and "wallet:" not in text  # words, not scope names
    assert grant.last_used_at is not None
    assert grant.last_used_at.strftime("%Y-%m-%d %H:%M") in text
    assert grant.created_at.strftime("%Y-%m-%d %H:%M") in text
    assert served.wallet_key not in page.content() and access not in page.content()
    screenshot(page, "desktop-connected-apps")
    page.set_viewport_size(PHONE)
    page.reload()
    assert no_horizontal_overflow(page)
    screenshot(page, "phone-connected-apps")

    # Disconnect asks first; keeping it changes nothing.
    row.locator("text=Disconnect").click()
    page.wait_for_url(f"**/dashboard/apps/{grant.id}/revoke")
    assert "Disconnect “Claude (test)”?" in page.inner_text("h1")
    screenshot(page, "phone-connected-apps-confirm")
    page.click("text=Keep it")
    page.wait_for_url("**/dashboard/apps")
    assert mcp_status(url, access) == 200
    row.locator("text=Disconnect").click()
    page.click("#confirm-disconnect")
    page.wait_for_url("**/dashboard/apps")
    assert page.locator("#no-apps").is_visible()
    assert page.locator("#apps").count() == 0

    revoked.set()
    assert after_revoke.wait(WAIT_S) or not thread.is_alive()
    finish(thread, failures)
    # Every surface: /mcp, /sse and the REST list.
    assert mcp_status(url, access) == 401
    sse = httpx.get(f"{url}/sse", headers={"authorization": f"Bearer {access}"}, timeout=30)
    assert sse.status_code == 401
    with served.rest() as rest:
        assert rest.get("/v1/oauth/clients").json()["data"] == []


def connect_with_core(app: Gateway, wallet_id: str, name: str) -> str:
    """A grant made by the same core calls the consent page makes; returns its id."""
    client_id = f"client-{name}"
    oauth.save_client(app.runtime.db, client_id, {"client_name": name, "redirect_uris": [CLAUDE_CALLBACK]})
    _, challenge = pkce_pair()
    request_id = oauth.start_authorization(
        app.runtime.db,
        client_id,
        {
            "redirect_uri": CLAUDE_CALLBACK,
            "code_challenge": challenge,
            "scopes": list(oauth.SCOPES),
            "resource": f"{app.url}/mcp",
        },
    )
    oauth.approve(app.runtime.db, request_id, wallet_id=wallet_id, scopes=list(oauth.SCOPES))
    [grant] = [c for c in oauth.list_connected_clients(app.runtime.db, wallet_id) if c.client_id == client_id]
    return grant.id


def form_token(client: httpx.Client) -> str:
    found = re.search(r'name="form_token" value="([0-9a-f]{64})"', client.get("/dashboard/apps").text)
    assert found is not None
    return found.group(1)


def test_another_wallets_app_is_a_404_and_a_cross_origin_revoke_changes_nothing(served: Gateway) -> None:
    other = wallet.create_wallet(served.runtime.db, name="someone else")
    theirs = connect_with_core(served, other.wallet_id, "Their app")
    mine = connect_with_core(served, served.wallet_id, "My app")
    with signed_in_client(served) as browser:
        listing = browser.get("/dashboard/apps")
        assert listing.status_code == 200
        assert "My app" in listing.text and "Their app" not in listing.text and theirs not in listing.text
        token = form_token(browser)
        assert browser.get(f"/dashboard/apps/{theirs}/revoke").status_code == 404
        refused = browser.post(f"/dashboard/apps/{theirs}/revoke", data={"form_token": token})
        assert refused.status_code == 404 and "No connected client" in refused.text
        assert browser.get("/dashboard/apps/oag_unknown/revoke").status_code == 404

        # Another site's post, even with the right token and the session cookie, is refused.
        cross = browser.post(
            f"/dashboard/apps/{mine}/revoke", data={"form_token": token}, headers={"origin": EVIL}
        )
        assert cross.status_code == 403 and "posted from another site; nothing was changed" in cross.text
        # Same origin without this session's form token (a forged form): refused too.
        assert browser.post(f"/dashboard/apps/{mine}/revoke", data={}).status_code == 403
        assert (
            browser.post(f"/dashboard/apps/{mine}/revoke", data={"form_token": "0" * 64}).status_code == 403
        )

        assert [c.id for c in oauth.list_connected_clients(served.runtime.db, served.wallet_id)] == [mine]
        assert [c.id for c in oauth.list_connected_clients(served.runtime.db, other.wallet_id)] == [theirs]

        done = browser.post(f"/dashboard/apps/{mine}/revoke", data={"form_token": token})
        assert (done.status_code, done.headers["location"]) == (303, "/dashboard/apps")
    assert oauth.list_connected_clients(served.runtime.db, served.wallet_id) == []
    assert [c.id for c in oauth.list_connected_clients(served.runtime.db, other.wallet_id)] == [theirs]


def test_without_a_session_the_apps_pages_redirect_to_sign_in(served: Gateway) -> None:
    grant_id = connect_with_core(served, served.wallet_id, "My app")
    with httpx.Client(base_url=served.url, headers={"origin": served.url}) as anonymous:
        for response in (
            anonymous.get("/dashboard/apps"),
            anonymous.get(f"/dashboard/apps/{grant_id}/revoke"),
            anonymous.post(f"/dashboard/apps/{grant_id}/revoke", data={"form_token": "0" * 64}),
        ):
            assert (response.status_code, response.headers["location"]) == (303, "/dashboard/signin")
    assert [c.id for c in oauth.list_connected_clients(served.runtime.db, served.wallet_id)] == [grant_id]
