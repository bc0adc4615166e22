"""Input at the edges: REST amounts are judged on the JSON text (never a float's rounding),
deeply nested JSON is a 400 on every HTTP surface, and the webhook's body goes through the
same bounded reader as every other route."""

from __future__ import annotations

import hashlib
import hmac
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlmodel import select

from lava_mcp.config import Settings
from lava_mcp.core import spend_keys, wallet
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import Payment
from lava_mcp.transports.app import build_app
from tests.conftest import LedgerState, ledger_state
from tests.fake_provider import serve_in_thread

WEBHOOK_SECRET = "whsec_input_edges"


def client(runtime: Runtime, key: str | None = None) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(runtime, migrate=False)),
        base_url="http://127.0.0.1",
        headers=headers | {"content-type": "application/json"},
    )


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- amounts: the JSON text decides --------------------------------------------------------------

NOT_AMOUNTS = ["1e1", "2.5E1", "19.9999999999999999", "25.000", "1E+1", "-0.0"]


@pytest.mark.parametrize("amount", NOT_AMOUNTS)
async def test_a_fund_amount_is_judged_by_its_json_text(runtime: Runtime, amount: str) -> None:
    owner = wallet.create_wallet(runtime.db, name="fund")
    before: LedgerState = ledger_state(runtime.db, owner.wallet_id)
    async with client(runtime, owner.wallet_key) as rest:
        response = await rest.post("/v1/wallet/fund", content=f'{{"amount": {amount}}}')
    assert (response.status_code, response.json()["code"]) == (400, 400), response.text
    assert ledger_state(runtime.db, owner.wallet_id) == before
    with runtime.db.read() as session:
        assert session.exec(select(Payment).where(Payment.wallet_id == owner.wallet_id)).all() == []


@pytest.mark.parametrize("amount", ["25", "25.5", "25.50", "10.0"])
async def test_plain_fund_amounts_still_pass(runtime: Runtime, amount: str) -> None:
    owner = wallet.create_wallet(runtime.db, name="fund ok")
    async with client(runtime, owner.wallet_key) as rest:
        response = await rest.post("/v1/wallet/fund", content=f'{{"amount": {amount}}}')
    assert response.status_code == 200, response.text
    assert response.json()["amount"] == f"{float(amount):.2f}"


@pytest.mark.parametrize("amount", NOT_AMOUNTS)
async def test_a_spend_limit_amount_is_judged_by_its_json_text(runtime: Runtime, amount: str) -> None:
    owner = wallet.create_wallet(runtime.db, name="limits")
    key = spend_keys.create(runtime.db, owner.wallet_id, {"spend_limit": {"amount": "5.00"}}).key
    limit = f'{{"spend_limit": {{"amount": {amount}, "cycle": "daily"}}}}'
    async with client(runtime, owner.wallet_key) as rest:
        created = await rest.post("/v1/spend_keys", content=limit)
        updated = await rest.put(f"/v1/spend_keys/{key.id}", content=limit)
        listed = (await rest.get("/v1/spend_keys")).json()["data"]
    assert (created.status_code, updated.status_code) == (400, 400)
    assert "spend_limit.amount" in created.json()["error"]
    assert [(row["spend_key_id"], row["spend_limit"]) for row in listed] == [
        (key.id, {"amount": "5.00", "cycle": "total"})
    ]


# -- deeply nested JSON: 400 on every surface -------------------------------------------------------


@pytest.mark.parametrize("depth", [101, 500, 100_000])
async def test_deep_json_is_400_on_rest(runtime: Runtime, depth: int) -> None:
    owner = wallet.create_wallet(runtime.db, name="deep")
    async with client(runtime, owner.wallet_key) as rest:
        response = await rest.post("/v1/spend_keys", content=f'{{"name": {nested(depth)}}}')
        fund = await rest.post("/v1/wallet/fund", content=f'{{"amount": {nested(depth)}}}')
    for answer in (response, fund):
        assert answer.status_code == 400
        assert answer.json() == {"error": "request body nests deeper than 100 levels", "code": 400}


async def test_json_nested_within_the_limit_is_read(runtime: Runtime) -> None:
    owner = wallet.create_wallet(runtime.db, name="shallow")
    async with client(runtime, owner.wallet_key) as rest:
        response = await rest.post("/v1/spend_keys", content=f'{{"allowed_models": {nested(99)}}}')
    assert response.status_code == 400  # judged by the field's rules, not refused as too deep
    assert "allowed_models" in response.json()["error"]


@pytest.mark.parametrize("depth", [101, 100_000])
@pytest.mark.parametrize(
    ("path", "shape"), [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")]
)
async def test_deep_json_is_400_on_the_gateway(runtime: Runtime, depth: int, path: str, shape: str) -> None:
    owner = wallet.create_wallet(runtime.db, name="deep gateway")
    secret = spend_keys.create(runtime.db, owner.wallet_id, {"request_shape": shape}).secret
    body = f'{{"model": "cheap-1", "max_tokens": 8, "messages": [], "metadata": {nested(depth)}}}'
    async with client(runtime) as gateway:
        response = await gateway.post(path, content=body, headers={"x-api-key": secret})
    assert response.status_code == 400
    payload = response.json()
    message = payload["error"]["message"]
    assert "nests deeper than 100 levels" in message
    if shape == "anthropic":
        assert payload["error"]["type"] == "invalid_request_error"


# -- the webhook ---------------------------------------------------------------------------------------


@pytest.fixture
async def stripe_runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    """Stripe mode (the webhook verifies signatures); the API itself is never called here."""
    built = Runtime.build(
        Settings(
            LAVA_DATABASE_URL=f"sqlite:///{tmp_path / 'lava.db'}",
            LAVA_PAYMENTS="stripe",
            STRIPE_SECRET_KEY="sk_test_input_edges",
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            STRIPE_API_BASE="http://127.0.0.1:9",
            _env_file=None,  # type: ignore[call-arg]
        )
    )
    built.db.upgrade()
    yield built
    await built.aclose()


def signature(body: bytes) -> str:
    moment = int(time.time())
    digest = hmac.new(WEBHOOK_SECRET.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={digest}"


@pytest.mark.parametrize("depth", [101, 100_000])
async def test_a_signed_deeply_nested_webhook_is_400(stripe_runtime: Runtime, depth: int) -> None:
    body = (
        '{"id": "evt_deep", "type": "payment_intent.succeeded", "data": {"object": ' + nested(depth) + "}}"
    ).encode()
    async with client(stripe_runtime) as stripe:
        response = await stripe.post(
            "/v1/webhooks/stripe", content=body, headers={"stripe-signature": signature(body)}
        )
    assert response.status_code == 400
    assert response.json()["error"] == "request body nests deeper than 100 levels"


def test_the_webhook_refuses_a_declared_huge_body_before_reading_it(stripe_runtime: Runtime) -> None:
    """Content-Length: 400 MB and only a few bytes sent: answered at once, nothing buffered."""
    with serve_in_thread(build_app(stripe_runtime, migrate=False)) as url:
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Stripe-Signature: t=1,v1=00\r\nContent-Length: 400000000\r\n\r\n{"
            )
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                assert chunk, answer
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer
