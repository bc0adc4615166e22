"""Payments fixtures: localstripe in a child process, a boundary fake for Stripe Checkout in
front of it, signed webhook payloads, and runtimes in live (Stripe) and sandbox mode.

localstripe implements customers, payment methods and payment intents, but not Checkout
Sessions nor idempotency keys. `StripeFront` is a small loopback server that implements
`POST /v1/checkout/sessions` and `GET /v1/checkout/sessions/{id}` itself (paying a session
is a test's move: `front.pay(...)` creates a real PaymentIntent at localstripe) and proxies
every other request to localstripe, recording what it forwarded. It also lists
PaymentIntents by `customer` and `created[gte]` as Stripe does (localstripe lists all).

Faults, for lost answers and a slow processor (`front.inject(...)`): `drop` forwards the
request (the processor acts) and then drops the connection mid-answer; `error` forwards it
and answers 500; `unsent` drops the connection without forwarding (the processor never saw
it); `processing` forwards it and rewrites the answer's status to `processing`; `underpaid`
forwards it and rewrites the answer's `amount_received` to a dollar less; `hang`
waits, having noted that the request arrived, until the test releases it; `stale` (listing
PaymentIntents only) reads the processor's answer at once, notes the arrival, and delivers
that answer only when the test releases it (an answer that was true when it was given).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import anyio.to_thread
import httpx
import pytest
from mcp.client import Client
from mcp_types import CallToolResult
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from lava_mcp.config import Settings
from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import LedgerEntry, Payment
from lava_mcp.transports.app import build_app
from lava_mcp.transports.mcp_server import build_server
from tests.fake_provider import serve_in_thread

WEBHOOK_SECRET = "whsec_lava_test_secret"
STRIPE_KEY = "sk_test_lava"
PUBLIC_URL = "http://lava.test:8787"

# Runs localstripe's aiohttp app on a loopback port chosen by the OS, printed on stdout once
# listening. Its store is kept in memory only: localstripe pickles it to a fixed
# /tmp/localstripe.pickle, which would leak state between runs (and between users).
LOCALSTRIPE_MAIN = """
import socket, sys
from aiohttp import web
from localstripe import resources
from localstripe.server import app
resources.Store.dump_to_disk = lambda self: None
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
sock.listen(128)
print(sock.getsockname()[1], flush=True)
web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)
"""


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """localstripe's URL, in a child process with its own working directory."""
    workdir = tmp_path_factory.mktemp("localstripe")
    log = (workdir / "localstripe.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-c", LOCALSTRIPE_MAIN],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the socket listens
        if not line.strip().isdigit():
            raise RuntimeError(f"localstripe did not start: {(workdir / 'localstripe.log').read_text()}")
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
        log.close()


FaultMode = Literal["drop", "error", "unsent", "processing", "underpaid", "hang", "stale"]


@dataclass
class Fault:
    """One injected fault for requests `method path` (path: exact, or a prefix ending in /)."""

    method: str
    path: str
    mode: FaultMode
    times: int = 1
    arrived: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    release: threading.Event = field(default_factory=threading.Event)
    seen: int = 0

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and (
            path == self.path or (self.path.endswith("/") and path.startswith(self.path))
        )

    async def wait_arrivals(self, count: int = 1) -> None:
        """Wait until `count` requests hit this fault (no sleeping: a semaphore per arrival)."""
        for _ in range(count):
            await anyio.to_thread.run_sync(self.arrived.acquire)


class DroppedConnection(Response):
    """Starts a 200 answer, sends part of it, then drops the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id": "pi_', "more_body": True})
        raise ConnectionAbortedError("StripeFront dropped the connection mid-answer (an injected fault)")


@dataclass
class StripeFront:
    """Stripe Checkout (faked at the boundary) in front of localstripe (proxied)."""

    localstripe_url: str
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_idempotency_key: dict[str, str] = field(default_factory=dict)
    forwarded: list[tuple[str, str]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    url: str = ""

    def inject(self, method: str, path: str, mode: FaultMode, times: int = 1) -> Fault:
        """Make the next `times` requests `method path` fail as `mode` says (see the module)."""
        fault = Fault(method, path, mode, times)
        self.faults.append(fault)
        return fault

    def reset(self) -> None:
        self.forwarded.clear()
        for fault in self.faults:
            fault.release.set()
        self.faults.clear()

    async def _fault(self, request: Request) -> Fault | None:
        """The fault this request meets, if any; a `hang` is waited out here."""
        for fault in self.faults:
            if fault.times > 0 and fault.matches(request.method, request.url.path):
                fault.times -= 1
                fault.seen += 1
                fault.arrived.release()
                if fault.mode == "hang":
                    await anyio.to_thread.run_sync(fault.release.wait, abandon_on_cancel=True)
                return fault
        return None

    def app(self) -> Starlette:
        async def create_session(request: Request) -> Response:
            fault = await self._fault(request)
            if fault is not None and fault.mode != "hang":
                return DroppedConnection()
            form = unflatten(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            key = request.headers.get("idempotency-key")
            if key and key in self.by_idempotency_key:
                return JSONResponse(self.sessions[self.by_idempotency_key[key]])
            session_id = "cs_test_" + secrets.token_hex(12)
            line = form["line_items"]["0"]
            session = {
                "id": session_id,
                "object": "checkout.session",
                "mode": form["mode"],
                "url": f"https://checkout.stripe.test/c/pay/{session_id}",
                "status": "open",
                "payment_status": "unpaid",
                "amount_total": int(line["price_data"]["unit_amount"]) * int(line["quantity"]),
                "currency": line["price_data"]["currency"],
                "customer": form.get("customer"),
                "metadata": form.get("metadata", {}),
                "payment_intent": None,
                "payment_intent_data": form.get("payment_intent_data", {}),
                "success_url": form["success_url"],
                "cancel_url": form["cancel_url"],
            }
            self.sessions[session_id] = session
            if key:
                self.by_idempotency_key[key] = session_id
            return JSONResponse(session)

        async def get_session(request: Request) -> Response:
            await self._fault(request)  # only `hang` is meant here: the answer then comes
            session = self.sessions.get(request.path_params["id"])
            if session is None:
                return JSONResponse(
                    {"error": {"type": "invalid_request_error", "message": "No such checkout.session"}},
                    status_code=404,
                )
            return JSONResponse(session)

        async def forward(request: Request, params: list[tuple[str, str]]) -> httpx.Response:
            self.forwarded.append((request.method, request.url.path))
            async with httpx.AsyncClient(base_url=self.localstripe_url) as client:
                return await client.request(
                    request.method,
                    request.url.path,
                    params=params,
                    content=await request.body(),
                    headers={
                        name: value
                        for name, value in request.headers.items()
                        if name in ("authorization", "content-type")
                    },
                )

        async def proxy(request: Request) -> Response:
            fault = await self._fault(request)
            if fault is not None and fault.mode == "unsent":
                return DroppedConnection()
            upstream = await forward(request, request.query_params.multi_items())
            if fault is not None and fault.mode == "drop":
                return DroppedConnection()
            if fault is not None and fault.mode == "error":
                return JSONResponse(
                    {"error": {"type": "api_error", "message": "injected: the answer was lost"}},
                    status_code=500,
                )
            if fault is not None and fault.mode == "processing":
                return JSONResponse(
                    upstream.json() | {"status": "processing"}, status_code=upstream.status_code
                )
            if fault is not None and fault.mode == "underpaid":
                answer = upstream.json()
                return JSONResponse(
                    answer | {"amount_received": int(answer["amount"]) - 100},
                    status_code=upstream.status_code,
                )
            return Response(upstream.content, status_code=upstream.status_code, media_type="application/json")

        async def list_intents(request: Request) -> Response:
            """Stripe's list: newest first, filtered by customer and created[gte]."""
            stale = next(
                (
                    fault
                    for fault in self.faults
                    if fault.mode == "stale"
                    and fault.times > 0
                    and fault.matches(request.method, request.url.path)
                ),
                None,
            )
            if stale is not None:
                stale.times -= 1
                stale.seen += 1
            else:
                await self._fault(request)
            query = dict(request.query_params)
            upstream = await forward(request, [("limit", "10000")])
            if upstream.status_code != 200:
                return Response(
                    upstream.content, status_code=upstream.status_code, media_type="application/json"
                )
            found = [
                intent
                for intent in upstream.json()["data"]
                if intent.get("customer") == query.get("customer", intent.get("customer"))
                and intent["created"] >= int(query.get("created[gte]", 0))
            ]
            found.sort(key=lambda intent: intent["created"], reverse=True)
            limit = int(query.get("limit", 10))
            if stale is not None:
                stale.arrived.release()
                await anyio.to_thread.run_sync(stale.release.wait, abandon_on_cancel=True)
            return JSONResponse(
                {
                    "object": "list",
                    "url": "/v1/payment_intents",
                    "data": found[:limit],
                    "has_more": len(found) > limit,
                }
            )

        return Starlette(
            routes=[
                Route("/v1/checkout/sessions", create_session, methods=["POST"]),
                Route("/v1/checkout/sessions/{id}", get_session, methods=["GET"]),
                Route("/v1/payment_intents", list_intents, methods=["GET"]),
                Route("/{path:path}", proxy, methods=["GET", "POST", "DELETE"]),
            ]
        )

    def count(self, method: str, path: str) -> int:
        return sum(1 for seen in self.forwarded if seen == (method, path))

    def pay(self, session_id: str, payment_method: str = "pm_card_visa") -> dict[str, Any]:
        """The card holder pays a session: a real PaymentIntent at localstripe, session complete."""
        session = self.sessions[session_id]
        auth = {"Authorization": f"Bearer {STRIPE_KEY}"}
        with httpx.Client(base_url=self.localstripe_url, headers=auth) as client:
            method = client.post(
                f"/v1/payment_methods/{payment_method}/attach", data={"customer": session["customer"]}
            ).raise_for_status()
            metadata = session["payment_intent_data"].get("metadata", {})
            intent = client.post(
                "/v1/payment_intents",
                data={
                    "amount": session["amount_total"],
                    "currency": "usd",
                    "customer": session["customer"],
                    "payment_method": method.json()["id"],
                    "confirm": "true",
                    **{f"metadata[{key}]": value for key, value in metadata.items()},
                },
            ).raise_for_status()
        session.update(status="complete", payment_status="paid", payment_intent=intent.json()["id"])
        return dict(session)

    def expire(self, session_id: str) -> dict[str, Any]:
        self.sessions[session_id].update(status="expired")
        return dict(self.sessions[session_id])


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`a[b][0][c]=v` form encoding (as stripe-python sends it) into nested dicts."""
    tree: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


@pytest.fixture(scope="session")
def stripe_front_server(localstripe: str) -> Iterator[StripeFront]:
    front = StripeFront(localstripe)
    with serve_in_thread(front.app()) as url:
        front.url = url
        yield front


@pytest.fixture
def stripe_front(stripe_front_server: StripeFront) -> Iterator[StripeFront]:
    stripe_front_server.reset()
    yield stripe_front_server
    stripe_front_server.reset()  # releases any hang the test left


def live_settings(tmp_path: Path, api_base: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "LAVA_DATABASE_URL": f"sqlite:///{tmp_path / 'lava.db'}",
        "LAVA_PAYMENTS": "stripe",
        "LAVA_PUBLIC_URL": PUBLIC_URL,
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": api_base,
        "LAVA_SQLITE_SYNCHRONOUS": "NORMAL",
    }
    return Settings(**(values | overrides), _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
async def live(tmp_path: Path, stripe_front: StripeFront) -> AsyncIterator[Runtime]:
    """A runtime whose payments go through the real stripe SDK to the front (and localstripe)."""
    built = Runtime.build(live_settings(tmp_path, stripe_front.url))
    built.db.upgrade()
    yield built
    await built.aclose()


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Runtime]:
    """A runtime with no Stripe key: the offline payments sandbox."""
    built = Runtime.build(
        Settings(
            LAVA_DATABASE_URL=f"sqlite:///{tmp_path / 'lava.db'}",
            LAVA_PUBLIC_URL=PUBLIC_URL,
            LAVA_SQLITE_SYNCHRONOUS="NORMAL",
            _env_file=None,  # type: ignore[call-arg]
        )
    )
    assert built.settings.payments_mode == "sandbox"
    built.db.upgrade()
    yield built
    await built.aclose()


@pytest.fixture
def live_wallet(live: Runtime) -> wallet.NewWallet:
    # STRIPE_KEY is a test-mode key: the server's money is Stripe test mode, and so is the wallet's.
    return wallet.create_wallet(live.db, name="live", mode=live.settings.money_mode)


@pytest.fixture
def sandbox_wallet(sandbox: Runtime) -> wallet.NewWallet:
    return wallet.create_wallet(sandbox.db, name="sandbox", mode="sandbox")


# --- clients ---------------------------------------------------------------------------


def rest(runtime: Runtime, owner: wallet.NewWallet | None = None) -> httpx.AsyncClient:
    """The whole ASGI app in process, authenticated as `owner`."""
    headers = {"authorization": f"Bearer {owner.wallet_key}"} if owner else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(runtime, migrate=False)),
        base_url="http://testserver",
        headers=headers,
    )


def mcp(runtime: Runtime, owner: wallet.NewWallet) -> Client:
    """`async with mcp(...) as client`: the SDK's in-memory client."""
    return Client(build_server(runtime, default_wallet_id=owner.wallet_id))


def tool_ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    body: dict[str, Any] = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert result.structured_content == body
    return body


def tool_error(result: CallToolResult, code: int) -> dict[str, Any]:
    assert result.is_error, result.content
    body: dict[str, Any] = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert body["code"] == code, body
    return body


# --- webhooks and the ledger -----------------------------------------------------------


def signed(
    event: dict[str, Any], secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> tuple[bytes, str]:
    """A webhook delivery signed as Stripe signs it: HMAC-SHA256 over "{t}.{body}"."""
    body = json.dumps(event).encode()
    moment = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={moment},v1={signature}"


def event(event_type: str, data_object: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or "evt_" + secrets.token_hex(12),
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": data_object},
    }


async def deliver(client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    body, signature = signed(payload)
    return await client.post(
        "/v1/webhooks/stripe",
        content=body,
        headers={"stripe-signature": signature, "content-type": "application/json"},
    )


def deposits(runtime: Runtime, wallet_id: str) -> list[LedgerEntry]:
    from sqlmodel import select

    with runtime.db.read() as session:
        return list(
            session.exec(
                select(LedgerEntry).where(LedgerEntry.wallet_id == wallet_id, LedgerEntry.kind == "deposit")
            ).all()
        )


def payments_of(runtime: Runtime, wallet_id: str) -> list[Payment]:
    from sqlmodel import select

    with runtime.db.read() as session:
        return list(session.exec(select(Payment).where(Payment.wallet_id == wallet_id)).all())


def balance_micros(runtime: Runtime, wallet_id: str) -> int:
    return wallet.get_balance(runtime.db, wallet_id).balance_micros


# Stripe's endpoint that creates (and charges) a PaymentIntent, as StripeFront records it.
INTENTS = ("POST", "/v1/payment_intents")


async def save_card(runtime: Runtime, owner: wallet.NewWallet, token: str = "pm_card_visa") -> str:
    """Save a Stripe test card to the wallet over REST; returns its id."""
    async with rest(runtime, owner) as client:
        response = await client.post("/v1/payment_methods", json={"payment_method_id": token})
        assert response.status_code == 201, response.text
        card_id: str = response.json()["id"]
        return card_id
