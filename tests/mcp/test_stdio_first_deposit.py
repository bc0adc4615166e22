"""The first deposit with only Claude Desktop's process running (issue 8 §1).

`lava-mcp stdio` is started alone, as a child process, and driven with the MCP SDK's own
stdio client: the Checkout link `add_funds` returns must open (the stdio server serves
the sandbox pages on loopback while it runs), paying it with 4242… through the page's own
form must credit the wallet, and `get_balance` in the same session must show it. Without
a wallet key the local default wallet is used and the user is told, once, where its key
is. With a `lava-mcp serve` already running on the same ledger, the links are its.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from lava_mcp.config import Settings
from lava_mcp.core import verify, wallet
from lava_mcp.runtime import Runtime
from lava_mcp.transports.stdio_host import serving_record_path, wallet_key_file
from tests.fake_provider import FakeProvider, free_port
from tests.mcp.conftest import ok
from tests.mcp.test_transports import child_environment, installed_script

CARD = {"number": "4242 4242 4242 4242", "expiry": "12 / 34", "cvc": "123"}


def stdio_child(environment: dict[str, str], cwd: Path) -> Client:
    return Client(StdioServerParameters(command=installed_script(), args=["stdio"], env=environment, cwd=cwd))


async def pay_checkout_page(checkout_url: str) -> None:
    """What the user's browser does: open the link, fill in the card, submit the page's form."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(checkout_url))
    async with httpx.AsyncClient(timeout=30, follow_redirects=True) as browser:
        page = await browser.get(checkout_url)
        assert page.status_code == 200, page.text
        assert "SANDBOX" in page.text
        token = re.search(r'name="page_token" value="([^"]+)"', page.text)
        assert token is not None, page.text
        paid = await browser.post(
            checkout_url,
            data={"page_token": token.group(1), "action": "pay", **CARD},
            headers={"origin": origin, "referer": checkout_url},
        )
        assert paid.status_code == 200, paid.text
        assert "Payment received" in paid.text


async def test_stdio_alone_takes_a_first_deposit(
    runtime: Runtime, settings: Settings, new_wallet: wallet.NewWallet, fake: FakeProvider, tmp_path: Path
) -> None:
    port = free_port()
    environment = child_environment(settings, new_wallet.wallet_key, fake) | {"LAVA_PORT": str(port)}
    async with stdio_child(environment, tmp_path) as chat:
        assert ok(await chat.call_tool("get_balance", {}))["balance"] == "0.00"
        checkout = ok(await chat.call_tool("add_funds", {"amount": 25}))
        assert checkout["status"] == "checkout_required" and checkout["sandbox"] is True
        # LAVA_PORT was free, so the pages are there.
        assert checkout["checkout_url"].startswith(f"http://127.0.0.1:{port}/sandbox/checkout/")
        await pay_checkout_page(checkout["checkout_url"])
        assert ok(await chat.call_tool("get_balance", {}))["balance"] == "25.00"

        # The card is saved now: the next top-up charges it at once.
        again = ok(await chat.call_tool("add_funds", {"amount": 10}))
        assert (again["status"], again["balance"]) == ("completed", "35.00")
    assert verify.verify(runtime.db) == []


async def test_stdio_takes_another_port_when_lava_port_is_busy(
    settings: Settings, new_wallet: wallet.NewWallet, fake: FakeProvider, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        environment = child_environment(settings, new_wallet.wallet_key, fake) | {"LAVA_PORT": str(taken)}
        async with stdio_child(environment, tmp_path) as chat:
            checkout = ok(await chat.call_tool("add_funds", {"amount": 25}))
            url = urlsplit(checkout["checkout_url"])
            assert url.hostname == "127.0.0.1" and url.port not in (None, taken)
            await pay_checkout_page(checkout["checkout_url"])
            assert ok(await chat.call_tool("get_balance", {}))["balance"] == "25.00"


async def test_without_a_wallet_key_the_local_wallet_is_used_and_the_user_told_once(
    settings: Settings, fake: FakeProvider, tmp_path: Path
) -> None:
    environment = child_environment(settings, "", fake)
    del environment["LAVA_WALLET_KEY"]
    key_file = wallet_key_file(settings.database_url)
    assert key_file is not None and not key_file.exists()

    async with stdio_child(environment, tmp_path) as chat:
        first = ok(await chat.call_tool("get_balance", {}))
        assert first["balance"] == "0.00"
        notice = first["notice"]
        assert str(key_file) in notice
        dashboard = re.search(r"dashboard at (http://127\.0\.0\.1:\d+/)", notice)
        assert dashboard is not None, notice
        # No LAVA_PORT: not serve's default port, which `lava-mcp serve` must still be able to take.
        assert ":8787/" not in dashboard.group(1)
        async with httpx.AsyncClient(timeout=30) as browser:
            # The dashboard answers (its sign-in page, where the saved key opens the wallet).
            page = await browser.get(dashboard.group(1), follow_redirects=True)
            assert page.status_code == 200 and "wallet key" in page.text.lower(), page.text[:300]
        assert "notice" not in ok(await chat.call_tool("get_balance", {}))  # once

        checkout = ok(await chat.call_tool("add_funds", {"amount": 25}))
        await pay_checkout_page(checkout["checkout_url"])

    key = key_file.read_text().strip()
    assert key.startswith("lava_wk_")
    if os.name != "nt":
        assert key_file.stat().st_mode & 0o077 == 0  # a secret: readable by this user only
    owner_runtime = Runtime.build(settings)
    try:
        owner = wallet.authenticate(owner_runtime.db, key)
        assert wallet.get_balance(owner_runtime.db, owner.id).balance_micros == 25_000_000
    finally:
        owner_runtime.db.dispose()

    # The next start finds the same wallet through the saved key.
    async with stdio_child(environment, tmp_path) as chat:
        again = ok(await chat.call_tool("get_balance", {}))
        assert again["balance"] == "25.00" and str(key_file) in again["notice"]


@pytest.fixture
def lava_serve(
    settings: Settings, fake: FakeProvider, new_wallet: wallet.NewWallet, tmp_path: Path
) -> Iterator[str]:
    """`lava-mcp serve` on the test's ledger, as a child process: its URL once it answers."""
    port = free_port()
    environment = child_environment(settings, new_wallet.wallet_key, fake) | {
        "LAVA_PORT": str(port),
        "PATH": os.environ.get("PATH", ""),
    }
    process = subprocess.Popen(
        [installed_script(), "serve"], env=environment, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for it to answer (or to die), not for a fixed time
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "lava-mcp serve did not start"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()


async def test_stdio_links_to_a_running_serve_on_the_same_ledger(
    lava_serve: str, settings: Settings, new_wallet: wallet.NewWallet, fake: FakeProvider, tmp_path: Path
) -> None:
    record = serving_record_path(settings.database_url)
    assert record is not None and record.exists()
    environment = child_environment(settings, new_wallet.wallet_key, fake)
    async with stdio_child(environment, tmp_path) as chat:
        checkout = ok(await chat.call_tool("add_funds", {"amount": 25}))
        assert checkout["checkout_url"].startswith(f"{lava_serve}/sandbox/checkout/")
        await pay_checkout_page(checkout["checkout_url"])
        assert ok(await chat.call_tool("get_balance", {}))["balance"] == "25.00"


async def test_a_stale_serving_record_is_not_trusted(
    settings: Settings, new_wallet: wallet.NewWallet, fake: FakeProvider, tmp_path: Path
) -> None:
    record = serving_record_path(settings.database_url)
    assert record is not None
    Runtime.build(settings).db.dispose()
    record.write_text(f'{{"url": "http://127.0.0.1:{free_port()}", "database_id": "x", "pid": 1}}')
    environment = child_environment(settings, new_wallet.wallet_key, fake)
    async with stdio_child(environment, tmp_path) as chat:
        checkout = ok(await chat.call_tool("add_funds", {"amount": 25}))
        await pay_checkout_page(checkout["checkout_url"])  # served by the stdio process itself
        assert ok(await chat.call_tool("get_balance", {}))["balance"] == "25.00"


@pytest.fixture
def team_server(settings: Settings) -> Iterator[str]:
    """A lava-mcp server (the whole app on loopback) on the test's ledger, at its own URL."""
    from lava_mcp.transports.app import build_app
    from tests.fake_provider import serve_in_thread

    port = free_port()
    served = Runtime.build(settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"}))
    with serve_in_thread(build_app(served), port=port) as url:
        yield url


async def test_with_lava_server_url_stdio_is_a_thin_client_of_that_server(
    team_server: str,
    runtime: Runtime,
    settings: Settings,
    new_wallet: wallet.NewWallet,
    fake: FakeProvider,
    tmp_path: Path,
) -> None:
    nowhere = tmp_path / "no-local-ledger" / "lava.db"
    environment = child_environment(settings, new_wallet.wallet_key, fake) | {
        "LAVA_SERVER_URL": team_server,
        "LAVA_DATABASE_URL": f"sqlite:///{nowhere}",  # must never be opened
    }
    async with stdio_child(environment, tmp_path) as chat:
        assert {tool.name for tool in (await chat.list_tools()).tools} >= {"get_balance", "list_services"}
        checkout = ok(await chat.call_tool("add_funds", {"amount": 25}))
        assert checkout["checkout_url"].startswith(f"{team_server}/sandbox/checkout/")  # the server's page
        await pay_checkout_page(checkout["checkout_url"])
        assert ok(await chat.call_tool("get_balance", {}))["balance"] == "25.00"
        paid = await chat.call_tool(
            "call_paid_service",
            {
                "service": "cheapchat",
                "model": "cheap-1",
                "input": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5},
            },
        )
        assert ok(paid)["cost"] != "0.000000" and paid.meta and paid.meta["lava-mcp/request_id"]
        refused = await chat.call_tool("add_funds", {"amount": 5})
        assert refused.is_error and '"code": 400' in refused.content[0].text  # type: ignore[union-attr]
    assert not nowhere.parent.exists()
    assert wallet.get_balance(runtime.db, new_wallet.wallet_id).balance_micros < 25_000_000


def test_a_thin_client_needs_the_wallet_key(settings: Settings, tmp_path: Path) -> None:
    finished = subprocess.run(
        [installed_script(), "stdio"],
        env={"LAVA_SERVER_URL": "http://127.0.0.1:9", "LAVA_DATABASE_URL": settings.database_url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 1
    assert "LAVA_SERVER_URL needs the wallet key" in finished.stderr
