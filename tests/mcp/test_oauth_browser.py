"""The sign-in page in a real browser (Debian's chromium, driven by Playwright): the form is
filled and approved as a person would, the browser follows the answer's redirect to the
client (the page's Content-Security-Policy, SameSite cookie and Origin check all let a real
browser through), and the code it carries buys a token with the scopes left ticked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from lava_mcp.config import Settings
from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from tests.fake_provider import serve_in_thread
from tests.mcp.oauth_helpers import pkce_pair, serve_app

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def callback() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A client's redirect URI on loopback that records what the browser brought it."""
    received: list[dict[str, str]] = []

    async def land(request: Request) -> Response:
        received.append(dict(request.query_params))
        return PlainTextResponse("back at the app")

    with serve_in_thread(Starlette(routes=[Route("/callback", land)])) as url:
        yield f"{url}/callback", received


async def test_a_person_signs_in_and_approves_in_chromium(
    settings: Settings,
    runtime: Runtime,
    new_wallet: wallet.NewWallet,
    callback: tuple[str, list[dict[str, str]]],
) -> None:
    from playwright.async_api import async_playwright

    assert CHROMIUM.exists(), "these tests use Debian's chromium (apt-get install chromium)"
    callback_url, received = callback
    with serve_app(settings) as app:
        registered = httpx.post(
            f"{app.url}/register",
            json={"redirect_uris": [callback_url], "client_name": "Browser app"},
            timeout=30,
        ).json()
        verifier, challenge = pkce_pair()
        query = httpx.QueryParams(
            {
                "response_type": "code",
                "client_id": registered["client_id"],
                "redirect_uri": callback_url,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": "browser-state",
                "resource": f"{app.url}/mcp",
            }
        )
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            try:
                page = await browser.new_page()
                await page.goto(f"{app.url}/authorize?{query}")
                assert "Browser app" in await page.content()
                await page.fill('input[name="wallet_key"]', new_wallet.wallet_key)
                await page.uncheck('input[value="wallet:fund"]')
                await page.click('button[value="approve"]')
                await page.wait_for_url(f"{callback_url}?*")
                assert "back at the app" in await page.content()
            finally:
                await browser.close()
        [answer] = received
        assert answer["state"] == "browser-state" and answer["iss"] == app.url
        tokens = httpx.post(
            f"{app.url}/token",
            data={
                "grant_type": "authorization_code",
                "code": answer["code"],
                "redirect_uri": callback_url,
                "client_id": registered["client_id"],
                "code_verifier": verifier,
            },
            timeout=30,
        )
        assert tokens.status_code == 200, tokens.text
        assert tokens.json()["scope"] == "wallet:read wallet:spend"
