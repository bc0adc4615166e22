"""The OAuth sign-in page shares the dashboard's session, both ways: a browser signed in to
the dashboard only approves or denies (no key asked), and signing in on the consent page
signs the dashboard in too (a new session id, the dashboard's cookie rules). A forged post
carrying the session cookie changes nothing. Over plain HTTP (a browser's cookie jar and
Origin), and once in a real Chromium."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from lava_mcp.core import oauth, sessions, wallet
from lava_mcp.errors import Unauthorized
from tests.dashboard.conftest import screenshot, sign_in, signed_in_client
from tests.fake_provider import serve_in_thread
from tests.gateway.conftest import Gateway
from tests.mcp.oauth_helpers import CLAUDE_CALLBACK, hidden_fields, pkce_pair
from tests.mcp.test_oauth import mcp_status

EVIL = "https://evil.example"
HOST = "127.0.0.1"  # where the app listens: the cookies' domain


def register(app: Gateway, redirect_uri: str = CLAUDE_CALLBACK) -> str:
    answer = httpx.post(
        f"{app.url}/register",
        json={"redirect_uris": [redirect_uri], "client_name": "Claude (test)"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    client_id: str = answer.json()["client_id"]
    return client_id


def authorization_url(
    app: Gateway, client_id: str, challenge: str, redirect_uri: str = CLAUDE_CALLBACK
) -> str:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st-1",
        "resource": f"{app.url}/mcp",
    }
    return f"{app.url}/authorize?{urlencode(query)}"


def post_consent(browser: httpx.Client, page: httpx.Response, **fields: Any) -> httpx.Response:
    """Submit the consent page's form as the browser would (its Origin, its cookies)."""
    body = {**hidden_fields(page.text), **fields}
    return browser.post(
        "/oauth/consent",
        content=urlencode(body, doseq=True),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )


def code_of(answer: httpx.Response) -> str:
    assert answer.status_code == 303, answer.text
    query = parse_qs(urlparse(answer.headers["location"]).query)
    assert query["state"] == ["st-1"]
    return query["code"][0]


def exchange(app: Gateway, client_id: str, code: str, verifier: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{app.url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CLAUDE_CALLBACK,
            "client_id": client_id,
            "code_verifier": verifier,
            "resource": f"{app.url}/mcp",
        },
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    tokens: dict[str, Any] = answer.json()
    return tokens


def grants(app: Gateway, wallet_id: str) -> list[str]:
    return [client.client_id for client in oauth.list_connected_clients(app.runtime.db, wallet_id)]


def test_a_dashboard_session_approves_without_the_key(served: Gateway) -> None:
    client_id = register(served)
    verifier, challenge = pkce_pair()
    with signed_in_client(served) as browser:
        session_id = browser.cookies["lava_session"]
        page = browser.get(authorization_url(served, client_id, challenge), follow_redirects=True)
        assert page.status_code == 200, page.text
        assert re.search(
            rf"Signed in as <strong>dashboard test</strong> \(<code>{served.wallet_id}</code>\)", page.text
        )
        assert 'name="wallet_key"' not in page.text  # nothing to paste
        assert "Create a new wallet" not in page.text
        assert "Use another wallet" in page.text
        assert 'button type="submit" name="action" value="approve"' in page.text
        assert 'value="deny"' in page.text

        answer = post_consent(browser, page, action="approve", scope=list(oauth.SCOPES))
        code = code_of(answer)
        assert "lava_session" not in answer.headers.get("set-cookie", "")  # the same session goes on
        assert browser.cookies["lava_session"] == session_id
        sessions.resolve(served.runtime.db, session_id)
    tokens = exchange(served, client_id, code, verifier)
    assert tokens["scope"] == " ".join(oauth.SCOPES)
    assert mcp_status(served.url, tokens["access_token"]) == 200
    assert grants(served, served.wallet_id) == [client_id]


def test_signing_in_on_the_consent_page_signs_the_dashboard_in(
    served: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client_id = register(served)
    verifier, challenge = pkce_pair()
    # An id planted in the browser before sign-in (or an older session) is worth nothing after.
    planted = sessions.sign_in(served.runtime.db, served.wallet_key).session_id
    with httpx.Client(base_url=served.url, timeout=30, headers={"origin": served.url}) as browser:
        # An unknown session id is no session: the page asks for the key.
        browser.cookies.set("lava_session", "lava_ws_" + "x" * 43, domain=HOST)
        page = browser.get(authorization_url(served, client_id, challenge), follow_redirects=True)
        assert page.status_code == 200
        assert 'type="password" name="wallet_key"' in page.text and "Signed in as" not in page.text
        browser.cookies.set("lava_session", planted, domain=HOST)
        wrong = post_consent(browser, page, action="approve", wallet_key="lava_wk_" + "Z" * 43)
        assert wrong.status_code == 401 and "not known" in wrong.text
        assert "lava_session" not in wrong.headers.get("set-cookie", "")
        answer = post_consent(browser, wrong, action="approve", wallet_key=served.wallet_key)
        code = code_of(answer)
        cookie = answer.headers["set-cookie"]
        assert "lava_session=lava_ws_" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Path=/" in cookie and "Secure" not in cookie  # served over http here
        assert served.wallet_key not in cookie
        new_id = browser.cookies.get("lava_session", domain=HOST)
        assert new_id is not None and new_id != planted
        with pytest.raises(Unauthorized):
            sessions.resolve(served.runtime.db, planted)  # rotated: the previous id is dead
        assert sessions.resolve(served.runtime.db, new_id).wallet_id == served.wallet_id

        # The dashboard doesn't ask again.
        dashboard = browser.get("/")
        assert dashboard.status_code == 200 and 'id="balance-available"' in dashboard.text
        assert served.wallet_key not in dashboard.text
    assert grants(served, served.wallet_id) == [client_id]
    assert mcp_status(served.url, exchange(served, client_id, code, verifier)["access_token"]) == 200
    assert served.wallet_key not in caplog.text


def test_a_key_sign_in_whose_approval_is_refused_still_keeps_the_new_session(served: Gateway) -> None:
    client_id = register(served)
    _, challenge = pkce_pair()
    with httpx.Client(base_url=served.url, timeout=30, headers={"origin": served.url}) as browser:
        page = browser.get(
            authorization_url(served, client_id, challenge) + "&scope=wallet%3Aread", follow_redirects=True
        )
        # A scope the client did not ask for: refused, but the key did sign this browser in.
        refused = post_consent(
            browser, page, action="approve", wallet_key=served.wallet_key, scope=[oauth.FUND]
        )
        assert refused.status_code == 400
        assert "lava_session=lava_ws_" in refused.headers["set-cookie"]
        assert browser.get("/").status_code == 200
    assert grants(served, served.wallet_id) == []


def test_use_another_wallet_asks_for_the_key_and_switches_the_session(served: Gateway) -> None:
    other = wallet.create_wallet(served.runtime.db, name="second wallet")
    client_id = register(served)
    _, challenge = pkce_pair()
    with signed_in_client(served) as browser:
        first_id = browser.cookies["lava_session"]
        page = browser.get(authorization_url(served, client_id, challenge), follow_redirects=True)
        link = re.search(r'<a href="([^"]+)" id=use-another-wallet>', page.text)
        assert link is not None
        another = browser.get(link.group(1).replace("&amp;", "&"))
        assert another.status_code == 200
        assert 'type="password" name="wallet_key"' in another.text and "Signed in as" not in another.text
        code_of(post_consent(browser, another, action="approve", wallet_key=other.wallet_key))
        second_id = browser.cookies["lava_session"]
        assert second_id != first_id
        assert sessions.resolve(served.runtime.db, second_id).wallet_id == other.wallet_id
        with pytest.raises(Unauthorized):
            sessions.resolve(served.runtime.db, first_id)
    assert grants(served, other.wallet_id) == [client_id]
    assert grants(served, served.wallet_id) == []


def test_a_forged_post_with_the_session_cookie_changes_nothing(served: Gateway) -> None:
    other = wallet.create_wallet(served.runtime.db, name="someone else")
    client_id = register(served)
    _, challenge = pkce_pair()
    with signed_in_client(served) as browser:
        session_id = browser.cookies["lava_session"]
        page = browser.get(authorization_url(served, client_id, challenge), follow_redirects=True)
        fields = {**hidden_fields(page.text), "action": "approve", "scope": list(oauth.SCOPES)}
        assert fields["session_wallet"] == served.wallet_id

        def forged(
            headers: dict[str, str], body: dict[str, Any], cookies: dict[str, str] | None = None
        ) -> int:
            jar = cookies if cookies is not None else dict(browser.cookies.items())
            with httpx.Client(base_url=served.url, cookies=jar, timeout=30) as attacker:
                answer = attacker.post(
                    "/oauth/consent",
                    content=urlencode(body, doseq=True),
                    headers={"content-type": "application/x-www-form-urlencoded", **headers},
                )
            assert answer.status_code != 303 and "location" not in answer.headers
            return answer.status_code

        # Another site's form, even carrying the session (and the right form token): refused.
        assert forged({"origin": EVIL}, fields) == 403
        assert forged({"referer": f"{EVIL}/page"}, fields) == 403
        assert forged({}, fields) == 403  # neither Origin nor Referer
        # This origin, the session cookie, but no form token of this page.
        assert forged({"origin": served.url}, {**fields, "csrf": "forged"}) == 403
        assert forged({"origin": served.url}, fields, cookies={"lava_session": session_id}) == 403
        # The page's form, but for a wallet the session isn't.
        assert forged({"origin": served.url}, {**fields, "session_wallet": other.wallet_id}) == 401
        assert grants(served, served.wallet_id) == [] and grants(served, other.wallet_id) == []
        sessions.resolve(served.runtime.db, session_id)  # and the session is untouched

        # Signed out meanwhile (after the page was shown): its approval no longer counts.
        page = browser.get(authorization_url(served, client_id, challenge), follow_redirects=True)
        browser.cookies.set("lava_session", "lava_ws_" + "y" * 43, domain=HOST)
        ended = post_consent(browser, page, action="approve", scope=list(oauth.SCOPES))
        assert ended.status_code == 401 and "session has ended" in ended.text
        assert grants(served, served.wallet_id) == []
        # Nothing was used up: the real page still answers.
        browser.cookies.set("lava_session", session_id, domain=HOST)
        again = browser.get(authorization_url(served, client_id, challenge), follow_redirects=True)
        code_of(post_consent(browser, again, action="approve", scope=[oauth.READ]))
    assert grants(served, served.wallet_id) == [client_id]


# --- in Chromium ------------------------------------------------------------------------------


@pytest.fixture
def callback() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A client's redirect URI on loopback that records what the browser brought it."""
    received: list[dict[str, str]] = []

    async def land(request: Request) -> Response:
        received.append(dict(request.query_params))
        return PlainTextResponse("back at the app")

    with serve_in_thread(Starlette(routes=[Route("/callback", land)])) as url:
        yield f"{url}/callback", received


def test_both_ways_in_chromium(
    page: Any, browser: Any, served: Gateway, callback: tuple[str, list[dict[str, str]]]
) -> None:
    callback_url, received = callback
    client_id = register(served, callback_url)
    _, challenge = pkce_pair()

    # Signed in to the dashboard: the consent page shows who, and asks only to approve.
    sign_in(page, served.wallet_key)
    page.goto(authorization_url(served, client_id, challenge, callback_url))
    assert "Signed in as" in page.inner_text("#signed-in-as")
    assert served.wallet_id in page.inner_text("#signed-in-as")
    assert page.locator("input[name=wallet_key]").count() == 0
    screenshot(page, "desktop-consent-signed-in")
    page.click("button[value=approve]")
    page.wait_for_url(f"{callback_url}?*")
    assert received[-1]["state"] == "st-1" and received[-1]["code"]

    # A fresh browser signs in on the consent page, then opens the dashboard: signed in.
    context = browser.new_context(base_url=served.url)
    fresh = context.new_page()
    fresh.set_default_timeout(20_000)
    try:
        fresh.goto(authorization_url(served, client_id, challenge, callback_url))
        fresh.fill("input[name=wallet_key]", served.wallet_key)
        fresh.click("button[value=approve]")
        fresh.wait_for_url(f"{callback_url}?*")
        cookie = next(c for c in context.cookies() if c["name"] == "lava_session")
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Lax", "/")
        fresh.goto("/")
        assert fresh.url == f"{served.url}/"
        assert fresh.inner_text("#balance-available") == "$10.00"
        assert served.wallet_key not in fresh.content()
    finally:
        context.close()
    assert len(received) == 2
