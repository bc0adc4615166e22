"""The whole app on loopback (its public URL set to where it really listens, so payment
links lead back to it), a funded wallet, and a real headless Chromium driven by
Playwright (Debian's `/usr/bin/chromium`; no browser is ever downloaded).

Screenshots go to `test-artifacts/dashboard/` (git-ignored; CI keeps it as an artifact).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from lava_mcp.config import Settings
from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from lava_mcp.transports.app import build_app
from tests.fake_provider import FakeProvider, free_port, serve_in_thread
from tests.gateway.conftest import Gateway

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def served(settings: Settings, fake: FakeProvider) -> Iterator[Gateway]:
    """The app with a wallet funded with $10.00, at a public URL equal to its real address."""
    port = free_port()
    public = settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})
    runtime = Runtime.build(public)
    runtime.db.upgrade()
    created = wallet.create_wallet(runtime.db, name="dashboard test")
    app = Gateway("", runtime, created.wallet_id, created.wallet_key)

    def on_resolved(request_id: str) -> None:
        with app.resolved_any:
            app.resolved_ids.append(request_id)
            app.resolved_any.notify_all()

    runtime.metering.resolved_listeners.append(on_resolved)
    app.fund("10.00")
    with serve_in_thread(build_app(runtime), port=port) as url:
        app.url = url
        try:
            yield app
        finally:
            for client in app.clients:
                client.close()


def api_balance(app: Gateway, wallet_key: str | None = None) -> dict[str, Any]:
    with app.rest(wallet_key) as client:
        response = client.get("/v1/wallet")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@contextmanager
def signed_in_client(app: Gateway, wallet_key: str | None = None) -> Iterator[httpx.Client]:
    """An httpx 'browser' signed in to the dashboard (it keeps the session cookie)."""
    with httpx.Client(base_url=app.url, timeout=30, headers={"origin": app.url}) as client:
        response = client.post("/dashboard/signin", data={"wallet_key": wallet_key or app.wallet_key})
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/"
        yield client


# --- the browser ------------------------------------------------------------------------------


# Per module: the sync Playwright loop is closed before any other module's asyncio tests run.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, served: Gateway) -> Iterator[Any]:
    """A fresh browser tab (its own cookies) at desktop size."""
    context = browser.new_context(viewport=DESKTOP, base_url=served.url)
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    try:
        yield opened
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/dashboard/ and print its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def sign_in(page: Any, wallet_key: str) -> None:
    page.goto("/")
    assert page.url.endswith("/dashboard/signin")
    page.fill("#wallet_key", wallet_key)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def no_horizontal_overflow(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"))
