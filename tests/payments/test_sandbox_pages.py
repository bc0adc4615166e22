"""The sandbox's checkout and 3-D Secure pages against cross-site form posts and racing
submissions, driven over real HTTP against the app on loopback.

A form posted without the page's token, with another page's token, or from a browser that
names another origin is a 403 page that changed nothing. However many submissions of one
page race, one card is saved and one deposit made (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlmodel import select

from lava_mcp.config import Settings
from lava_mcp.core import funding, verify, wallet
from lava_mcp.errors import NotFound
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import Payment, PaymentMethod
from lava_mcp.transports.app import build_app
from tests.fake_provider import serve_in_thread
from tests.gateway.test_key_changes import send_headers
from tests.payments.conftest import PUBLIC_URL, balance_micros, deposits, mcp, rest, tool_ok
from tests.payments.test_sandbox import page_path, page_token

SUBMISSIONS = 16
CARD = {"number": "4242 4242 4242 4242", "expiry": "12 / 34", "cvc": "123"}


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend_sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runtime]:
    url = (
        f"sqlite:///{tmp_path / 'lava.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    built = Runtime.build(
        Settings(
            LAVA_DATABASE_URL=url,
            LAVA_PUBLIC_URL=PUBLIC_URL,
            LAVA_SQLITE_SYNCHRONOUS="NORMAL",
            _env_file=None,  # type: ignore[call-arg]
        )
    )
    built.db.upgrade()
    yield built
    await built.aclose()


@pytest.fixture
def served(sandbox: Runtime) -> Iterator[str]:
    """The whole app on loopback (uvicorn in a thread): its base URL."""
    with serve_in_thread(build_app(sandbox, migrate=False)) as url:
        yield url


async def checkout_page(runtime: Runtime, owner: wallet.NewWallet) -> str:
    async with mcp(runtime, owner) as chat:
        checkout = tool_ok(await chat.call_tool("add_funds", {"amount": 25}))
    assert checkout["status"] == "checkout_required"
    return page_path(checkout["checkout_url"])


def cards_of(runtime: Runtime, wallet_id: str) -> list[PaymentMethod]:
    with runtime.db.read() as session:
        return list(session.exec(select(PaymentMethod).where(PaymentMethod.wallet_id == wallet_id)).all())


def payment_rows(runtime: Runtime, wallet_id: str) -> list[dict[str, object]]:
    with runtime.db.read() as session:
        return [
            payment.model_dump(exclude={"updated_at"})
            for payment in session.exec(select(Payment).where(Payment.wallet_id == wallet_id)).all()
        ]


async def test_cross_site_posts_to_the_checkout_page_change_nothing(
    sandbox: Runtime, sandbox_wallet: wallet.NewWallet, served: str
) -> None:
    path = await checkout_page(sandbox, sandbox_wallet)
    other_path = await checkout_page(sandbox, wallet.create_wallet(sandbox.db, name="other", mode="sandbox"))
    before = payment_rows(sandbox, sandbox_wallet.wallet_id)
    async with httpx.AsyncClient(base_url=served) as browser:
        form = await browser.get(path)
        token = page_token(form.text)
        other_token = page_token((await browser.get(other_path)).text)

        # A declined card would record its decline on the payment: refused, it records nothing.
        declined_card = {**CARD, "number": "4000000000009995"}
        for data, headers in (
            (CARD, {}),  # no token at all: what a forged form sends
            ({**CARD, "page_token": "0" * 64}, {}),
            ({**CARD, "page_token": other_token}, {}),  # another page's token
            ({**declined_card, "page_token": ""}, {}),
            ({**CARD, "page_token": token}, {"origin": "https://evil.test"}),
            ({**CARD, "page_token": token}, {"origin": "null"}),
            ({**CARD, "page_token": token}, {"origin": "http://lava.test:8788"}),
            ({**CARD, "page_token": token}, {"referer": "https://evil.test/pay.html"}),
            ({**declined_card, "page_token": token}, {"origin": "https://evil.test"}),
        ):
            refused = await browser.post(path, data=data, headers=headers)
            assert refused.status_code == 403, (data, headers, refused.text)
            assert "SANDBOX" in refused.text and "nothing was charged" in refused.text
        assert payment_rows(sandbox, sandbox_wallet.wallet_id) == before
        assert cards_of(sandbox, sandbox_wallet.wallet_id) == []
        assert deposits(sandbox, sandbox_wallet.wallet_id) == []
        assert token and other_token and token != other_token
        assert form.status_code == 200 and form.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
        assert form.headers["cache-control"] == "no-store"
        # "no-referrer" would make a browser post the page's own form with `Origin: null`.
        assert form.headers["referrer-policy"] == "same-origin"

        # The page's own form, as a browser sends it from the page (either origin of ours).
        from lava_mcp.transports.http import origin_of

        for origin in (served, PUBLIC_URL):
            assert origin_of(origin + "/sandbox/checkout/x") == origin
        paid = await browser.post(
            path, data={**CARD, "page_token": token}, headers={"origin": served, "referer": served + path}
        )
        assert paid.status_code == 303, paid.text
    assert balance_micros(sandbox, sandbox_wallet.wallet_id) == 25_000_000
    assert len(cards_of(sandbox, sandbox_wallet.wallet_id)) == 1


async def test_cross_site_posts_to_the_3d_secure_page_change_nothing(
    sandbox: Runtime, sandbox_wallet: wallet.NewWallet, served: str
) -> None:
    async with rest(sandbox, sandbox_wallet) as client:
        saved = await client.post(
            "/v1/payment_methods", json={"payment_method_id": "pm_card_authenticationRequired"}
        )
        fund = await client.post(
            "/v1/wallet/fund", json={"amount": 20, "payment_method_id": saved.json()["id"]}
        )
    assert fund.json()["status"] == "requires_action"
    challenge = page_path(fund.json()["redirect_url"])
    before = payment_rows(sandbox, sandbox_wallet.wallet_id)
    async with httpx.AsyncClient(base_url=served) as browser:
        token = page_token((await browser.get(challenge)).text)
        for data, headers in (
            ({"action": "approve"}, {}),
            ({"action": "fail"}, {}),
            ({"action": "approve", "page_token": token[:-1] + "x"}, {}),
            ({"action": "approve", "page_token": token}, {"origin": "https://evil.test"}),
            ({"action": "fail", "page_token": token}, {"referer": "http://evil.test/"}),
            # A card entered on the challenge page must not stand in for authenticating.
            ({**CARD, "action": "pay", "page_token": token}, {}),
        ):
            refused = await browser.post(challenge, data=data, headers=headers)
            assert refused.status_code in (400, 403), (data, headers)
        assert payment_rows(sandbox, sandbox_wallet.wallet_id) == before
        assert balance_micros(sandbox, sandbox_wallet.wallet_id) == 0
        assert token
        approved = await browser.post(challenge, data={"action": "approve", "page_token": token})
        assert approved.status_code == 303
    assert balance_micros(sandbox, sandbox_wallet.wallet_id) == 20_000_000


@contextmanager
def payment_row_locked(runtime: Runtime, payment_id: str) -> Iterator[Callable[[int], None]]:
    """PostgreSQL: hold the payment's row lock from outside the app, so that every racing
    submission has read the page as unpaid before the first can write (a deterministic
    race). Yields `wait_for(n)`: returns once n of the app's connections wait on the lock."""
    engine = create_engine(runtime.db.url)
    try:
        with engine.connect() as holder, engine.connect() as watcher:
            holder.execute(text("SELECT id FROM payment WHERE id = :id FOR UPDATE"), {"id": payment_id})
            holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
            watcher.commit()

            def wait_for(count: int) -> None:
                deadline = time.monotonic() + 120  # a hang guard, not a timing assumption
                while True:
                    # Later waiters queue behind the first one, not the holder: follow the chain.
                    edges = watcher.execute(
                        text(
                            "SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity"
                            " WHERE cardinality(pg_blocking_pids(pid)) > 0"
                        )
                    ).all()
                    watcher.rollback()
                    behind = {holder_pid}
                    while grown := {pid for pid, blockers in edges if behind & set(blockers)} - behind:
                        behind |= grown
                    blocked = len(behind) - 1
                    if blocked >= count:
                        return
                    assert time.monotonic() < deadline, f"only {blocked} of {count} submissions arrived"
                    time.sleep(0.01)

            yield wait_for
            holder.rollback()  # releases the lock: the submissions proceed one by one
    finally:
        engine.dispose()


async def test_concurrent_submissions_of_one_page_save_one_card_and_credit_once(
    backend_sandbox: Runtime,
) -> None:
    runtime = backend_sandbox
    owner = wallet.create_wallet(runtime.db, name="racer", mode="sandbox")
    path = await checkout_page(runtime, owner)
    [payment] = payment_rows(runtime, owner.wallet_id)
    with serve_in_thread(build_app(runtime, migrate=False)) as url:
        async with httpx.AsyncClient(
            base_url=url, limits=httpx.Limits(max_connections=SUBMISSIONS), timeout=180
        ) as browser:
            token = page_token((await browser.get(path)).text)

            def submit() -> asyncio.Task[httpx.Response]:
                return asyncio.create_task(browser.post(path, data={**CARD, "page_token": token}))

            if runtime.db.is_sqlite:
                # One process serialises SQLite writers; the race is still many real posts at once.
                answers = await asyncio.gather(*(submit() for _ in range(SUBMISSIONS)))
            else:
                with payment_row_locked(runtime, str(payment["id"])) as wait_for:
                    racing = [submit() for _ in range(SUBMISSIONS)]
                    await asyncio.to_thread(wait_for, SUBMISSIONS)
                answers = await asyncio.gather(*racing)
        assert [answer.status_code for answer in answers] == [303] * SUBMISSIONS
        cards = cards_of(runtime, owner.wallet_id)
        assert len(cards) == 1 and cards[0].is_default
        assert len(deposits(runtime, owner.wallet_id)) == 1
        assert balance_micros(runtime, owner.wallet_id) == 25_000_000
        [payment] = payment_rows(runtime, owner.wallet_id)
        assert payment["status"] == "succeeded" and payment["payment_method_id"] == cards[0].id
        assert verify.verify(runtime.db) == []


def test_the_page_token_is_bound_to_its_session_and_server(
    sandbox: Runtime, sandbox_wallet: wallet.NewWallet
) -> None:
    from lava_mcp.payments.sandbox import SandboxPayments

    elsewhere = SandboxPayments(base_url=PUBLIC_URL)  # another server (or a restart): another key
    session_id = "cs_sbx_" + "a" * 32
    payments = sandbox.payments
    assert isinstance(payments, SandboxPayments)
    token = payments.page_token(session_id)
    assert payments.page_token_matches(session_id, token)
    assert not payments.page_token_matches(session_id, elsewhere.page_token(session_id))
    assert not payments.page_token_matches("cs_sbx_" + "b" * 32, token)
    assert not payments.page_token_matches(session_id, "")
    with pytest.raises(NotFound, match="unknown SANDBOX checkout session"):
        funding.sandbox_page_token(sandbox, session_id)


async def test_a_form_posted_slower_than_the_body_timeout_is_408_and_changes_nothing(
    sandbox_wallet: wallet.NewWallet, sandbox: Runtime
) -> None:
    """The pages read their forms with the same bounded reader as every other route: a
    client that trickles a form gets 408 instead of holding a worker for ever."""
    sandbox.settings.body_timeout_s = 0.5
    path = await checkout_page(sandbox, sandbox_wallet)
    before = payment_rows(sandbox, sandbox_wallet.wallet_id)
    with serve_in_thread(build_app(sandbox, migrate=False)) as url:
        async with httpx.AsyncClient(base_url=url) as browser:
            token = page_token((await browser.get(path)).text)
        body = str(httpx.QueryParams({**CARD, "page_token": token})).encode()
        sock = send_headers(url, path, {"Origin": url}, len(body))
        with sock:
            sock.sendall(body[:10])  # and never the rest
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = sock.recv(65536)
                assert chunk, response
                response += chunk
    assert response.startswith(b"HTTP/1.1 408"), response[:200]
    assert payment_rows(sandbox, sandbox_wallet.wallet_id) == before
    assert cards_of(sandbox, sandbox_wallet.wallet_id) == []
    assert deposits(sandbox, sandbox_wallet.wallet_id) == []
