"""`lava-mcp stdio`'s choices at start, and its thin client's edges (issue 8 §1, review).

- The thin client sends the wallet key only to https:// or to http:// on loopback.
- A keyless stdio server never acts as a wallet it guessed: the saved key's wallet, or a
  new one on an empty ledger, whose key is saved before the wallet exists; a stale saved
  key is moved aside. Two first starts make one wallet (a lock file beside the ledger).
- The thin client starts while its server is down, and answers 502 / 401 JSON per call.
- A serving record is trusted only when `/healthz` proves its secret and the money mode
  matches.
- The stdio port is remembered beside the ledger.

Most cases call `stdio_host.prepare` in this process (what the `stdio` command runs before
its event loop); the ones about processes run `lava-mcp stdio` as a child.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lava_mcp.config import Settings
from lava_mcp.core import wallet
from lava_mcp.errors import Unauthorized
from lava_mcp.runtime import Runtime
from lava_mcp.transports import stdio_host
from lava_mcp.transports.stdio_host import database_identity, serving_record_path, wallet_key_file
from tests.fake_provider import FakeProvider, free_port, serve_in_thread
from tests.mcp.conftest import error
from tests.mcp.test_transports import child_environment, installed_script


def fresh(settings: Settings, **variables: Any) -> Settings:
    """The test's settings as a new process would read them (prepare changes its copy)."""
    defaults: dict[str, Any] = {
        "LAVA_DATABASE_URL": settings.database_url,
        "LAVA_CATALOG": settings.catalog_path,
        "LAVA_PAYMENTS": "sandbox",
    }
    return Settings(_env_file=None, **(defaults | variables))  # type: ignore[call-arg]


@pytest.fixture
def plans() -> Iterator[list[stdio_host.Plan]]:
    """Plans made by a test, closed at its end."""
    made: list[stdio_host.Plan] = []
    yield made
    for plan in made:
        if plan.runtime is not None:
            plan.runtime.db.dispose()
        if plan.listener is not None:
            plan.listener.close()


def prepare(settings: Settings, plans: list[stdio_host.Plan]) -> stdio_host.Plan:
    plan = stdio_host.prepare(settings)
    plans.append(plan)
    return plan


def close(plan: stdio_host.Plan) -> None:
    """Stop a plan's ledger and port now (as the process exiting would)."""
    if plan.runtime is not None:
        plan.runtime.db.dispose()
    if plan.listener is not None:
        plan.listener.close()
        plan.listener = None


def wallets_on(settings: Settings) -> int:
    from sqlmodel import select

    from lava_mcp.store.models import Wallet

    runtime = Runtime.build(settings)
    try:
        with runtime.db.read() as session:
            return len(session.exec(select(Wallet)).all())
    finally:
        runtime.db.dispose()


# --- 1. the wallet key goes only to https:// or loopback ------------------------------------


@pytest.mark.parametrize("url", ["http://lava.example.com", "ftp://127.0.0.1/", "http://10.0.0.7:8787/mcp"])
def test_a_thin_client_refuses_to_send_the_key_in_the_clear(url: str, tmp_path: Path) -> None:
    finished = subprocess.run(
        [installed_script(), "stdio"],
        env={"LAVA_SERVER_URL": url, "LAVA_WALLET_KEY": "lava_wk_secret", "PATH": os.environ["PATH"]},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert finished.returncode == 1, finished.stderr
    assert "is refused" in finished.stderr and "https://" in finished.stderr
    assert "lava_wk_secret" not in finished.stderr


def test_server_url_may_end_in_mcp_and_must_be_https_or_loopback() -> None:
    from lava_mcp.errors import BadRequest
    from lava_mcp.transports.thin_client import server_endpoint

    assert server_endpoint("https://lava.example.com/mcp") == "https://lava.example.com/mcp"
    assert server_endpoint("https://lava.example.com/team/mcp/") == "https://lava.example.com/team/mcp"
    assert server_endpoint("https://lava.example.com/") == "https://lava.example.com/mcp"
    assert server_endpoint("http://127.0.0.1:8787") == "http://127.0.0.1:8787/mcp"
    assert server_endpoint("http://[::1]:8787/mcp") == "http://[::1]:8787/mcp"
    assert server_endpoint("http://localhost:9") == "http://localhost:9/mcp"
    for refused in ("http://lava.example.com", "http://127.0.0.1.example.com", "lava.example.com", ""):
        with pytest.raises(BadRequest):
            server_endpoint(refused)


async def test_a_tool_call_answers_the_refusal_in_the_error_json(settings: Settings) -> None:
    from lava_mcp.transports.thin_client import build_thin_server

    thin = fresh(settings, LAVA_SERVER_URL="http://lava.example.com", LAVA_WALLET_KEY="lava_wk_secret")
    async with Client(build_thin_server(thin)) as chat:
        assert "get_balance" in {tool.name for tool in (await chat.list_tools()).tools}
        body = error(await chat.call_tool("get_balance", {}), 400)
        assert "https://" in body["error"] and "lava_wk_secret" not in str(body)


# --- 2 and 3. a keyless stdio server never guesses a wallet ---------------------------------


def test_a_stale_saved_key_is_moved_aside_and_the_new_wallet_keeps_its_key(
    settings: Settings, plans: list[stdio_host.Plan]
) -> None:
    first = prepare(fresh(settings), plans)
    assert first.identity is not None
    close(first)
    ledger = stdio_host.sqlite_file(settings.database_url)
    assert ledger is not None
    for path in ledger.parent.glob(ledger.name + "*"):
        if path.name in (ledger.name, ledger.name + "-wal", ledger.name + "-shm"):
            path.unlink()  # the user resets the ledger; the key file beside it stays

    second = prepare(fresh(settings), plans)  # no FileExistsError
    assert second.identity is not None and second.identity.wallet_id != first.identity.wallet_id
    key_file = wallet_key_file(settings.database_url)
    assert key_file is not None
    stale = list(key_file.parent.glob(key_file.name + ".stale-*"))
    assert len(stale) == 1 and second.identity.notice is not None
    assert "moved to" in second.identity.notice and str(stale[0]) in second.identity.notice
    assert second.runtime is not None
    assert (
        wallet.authenticate(second.runtime.db, key_file.read_text().strip()).id == second.identity.wallet_id
    )
    close(second)

    third = prepare(fresh(settings), plans)  # the same wallet, through its saved key
    assert third.identity is not None and third.identity.wallet_id == second.identity.wallet_id
    assert third.identity.notice is not None and "printed once" not in third.identity.notice
    assert str(key_file) in third.identity.notice


@pytest.mark.skipif(sys.platform == "win32", reason="a symbolic link needs privileges there")
def test_a_key_file_that_cannot_be_written_leaves_no_wallet(
    settings: Settings, plans: list[stdio_host.Plan], tmp_path: Path
) -> None:
    key_file = wallet_key_file(settings.database_url)
    assert key_file is not None
    Runtime.build(settings).db.dispose()  # the ledger's folder exists
    # A dangling link: no key file exists, yet creating one fails (it must not follow it).
    key_file.symlink_to(tmp_path / "elsewhere" / "key")
    with pytest.raises(FileExistsError):
        prepare(fresh(settings), plans)
    assert wallets_on(settings) == 0  # no wallet whose key nobody has


@pytest.mark.parametrize("wallets", [1, 2])
def test_a_keyless_stdio_server_refuses_a_ledger_whose_wallets_are_not_its_own(
    settings: Settings, plans: list[stdio_host.Plan], wallets: int
) -> None:
    runtime = Runtime.build(settings)
    runtime.db.upgrade()
    for number in range(wallets):  # as `lava-mcp serve` or `wallet create` made them
        wallet.create_wallet(runtime.db, name=f"someone {number}")
    runtime.db.dispose()
    with pytest.raises(Unauthorized) as refused:
        prepare(fresh(settings), plans)
    assert "LAVA_WALLET_KEY" in (refused.value.next_step or "") + refused.value.message
    assert wallets_on(settings) == wallets


@pytest.mark.skipif(sys.platform == "win32", reason="the test holds the lock with fcntl")
def test_a_second_first_start_waits_for_the_first_and_uses_its_wallet(
    settings: Settings, fake: FakeProvider, tmp_path: Path
) -> None:
    import fcntl

    environment = child_environment(settings, "", fake)
    del environment["LAVA_WALLET_KEY"]
    Runtime.build(settings).db.upgrade()
    ledger = stdio_host.sqlite_file(settings.database_url)
    key_file = wallet_key_file(settings.database_url)
    assert ledger is not None and key_file is not None
    with open(ledger.with_name(ledger.name + ".stdio-lock"), "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another first start is choosing
        child = subprocess.Popen(
            [installed_script(), "stdio"],
            env=environment,
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stderr is not None
        child.stdin.close()  # the child ends as soon as it reaches its stdio loop
        told = child.stderr.readline()  # waits for the child's first words (or its end)
        assert "waiting" in told, told + child.stderr.read()
        # The other start makes the wallet and saves its key, then lets go.
        runtime = Runtime.build(settings)
        theirs = wallet.create_wallet(runtime.db, name="default")
        runtime.db.dispose()
        key_file.write_text(theirs.wallet_key + "\n")
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        assert child.wait(timeout=60) == 0, child.stderr.read()
        child.stderr.close()
    assert wallets_on(settings) == 1
    assert key_file.read_text().strip() == theirs.wallet_key


# --- 5. the thin client starts while its server is down ------------------------------------


async def test_a_thin_client_starts_while_its_server_is_down(tmp_path: Path) -> None:
    environment = {
        "LAVA_SERVER_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "LAVA_WALLET_KEY": "lava_wk_x",
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
    }
    parameters = StdioServerParameters(
        command=installed_script(), args=["stdio"], env=environment, cwd=tmp_path
    )
    async with Client(parameters) as chat:
        assert "add_funds" in {tool.name for tool in (await chat.list_tools()).tools}
        body = error(await chat.call_tool("get_balance", {}), 502)
        assert "LAVA_SERVER_URL" in body["next_step"]


async def test_a_thin_client_with_a_key_the_server_refuses_answers_401(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    from lava_mcp.transports.app import build_app

    port = free_port()
    served = Runtime.build(settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"}))
    with serve_in_thread(build_app(served), port=port) as url:
        environment = {
            "LAVA_SERVER_URL": url + "/mcp",
            "LAVA_WALLET_KEY": "lava_wk_unknown",
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
        }
        parameters = StdioServerParameters(
            command=installed_script(), args=["stdio"], env=environment, cwd=tmp_path
        )
        async with Client(parameters) as chat:
            body = error(await chat.call_tool("get_balance", {}), 401)
            assert "LAVA_WALLET_KEY" in body["next_step"]


# --- 6. a serving record is trusted only when it is proven, in the same money mode ---------


def impostor_app(database_id: str) -> Starlette:
    """Another local user's server on the recorded port: it knows the ledger's identity
    (it is derived from a path) but not the record's secret."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "database_id": database_id,
                "payments": "sandbox",
                "money_mode": "sandbox",
                "proof": "0" * 64,
            }
        )

    return Starlette(routes=[Route("/healthz", healthz)])


def test_a_server_that_cannot_prove_the_record_is_not_linked_to(
    settings: Settings, plans: list[stdio_host.Plan]
) -> None:
    record = serving_record_path(settings.database_url)
    assert record is not None
    Runtime.build(settings).db.dispose()
    with serve_in_thread(impostor_app(database_identity(settings.database_url))) as impostor:
        record.write_text(
            f'{{"url": "{impostor}", "database_id": "{database_identity(settings.database_url)}", '
            f'"pid": {os.getpid()}, "secret": "guessed"}}'
        )
        record.chmod(0o600)
        plan = prepare(fresh(settings, LAVA_WALLET_KEY=make_key(settings)), plans)
    assert plan.listener is not None  # it serves its own pages
    assert not plan.settings.base_url.startswith(impostor)


def make_key(settings: Settings) -> str:
    runtime = Runtime.build(settings)
    try:
        runtime.db.upgrade()
        return wallet.create_wallet(runtime.db, name="mine").wallet_key
    finally:
        runtime.db.dispose()


@pytest.mark.parametrize("payments", ["sandbox", "stripe"])
def test_stdio_links_to_a_proven_serve_only_in_the_same_payments_mode(
    settings: Settings, plans: list[stdio_host.Plan], payments: str
) -> None:
    from lava_mcp.transports.app import build_app

    key = make_key(settings)
    port = free_port()
    served_settings = fresh(
        settings,
        LAVA_PAYMENTS=payments,
        STRIPE_SECRET_KEY="sk_test_not_called",
        LAVA_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    with (
        stdio_host.serving_record(served_settings),
        serve_in_thread(build_app(Runtime.build(served_settings)), port=port) as url,
    ):
        plan = prepare(fresh(settings, LAVA_WALLET_KEY=key), plans)
    if payments == "sandbox":
        assert plan.listener is None and plan.settings.base_url == url
    else:  # that serve's money is Stripe's test mode, this chat's is the sandbox
        assert plan.listener is not None and plan.settings.base_url != url


# --- 7. the stdio port survives a restart -----------------------------------------------------


def test_the_stdio_port_is_remembered_across_restarts(
    settings: Settings, plans: list[stdio_host.Plan]
) -> None:
    key = make_key(settings)
    first = prepare(fresh(settings, LAVA_WALLET_KEY=key), plans)
    assert first.listener is not None
    port = first.listener.getsockname()[1]
    assert port != 8787
    close(first)
    again = prepare(fresh(settings, LAVA_WALLET_KEY=key), plans)
    assert again.listener is not None and again.listener.getsockname()[1] == port
    assert again.settings.base_url == f"http://127.0.0.1:{port}"
    close(again)

    # A new LAVA_PORT is the user's choice: it wins over the remembered port.
    chosen = free_port()
    moved = prepare(fresh(settings, LAVA_WALLET_KEY=key, LAVA_PORT=chosen), plans)
    assert moved.listener is not None and moved.listener.getsockname()[1] == chosen
