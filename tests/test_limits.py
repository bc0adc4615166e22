"""Oversized and slow requests are refused before any route runs, on every surface, in
that surface's error shape, and change nothing (`lava_mcp/transports/limits.py`).

Bodies over LAVA_MAX_BODY_BYTES are 413 (declared or chunked), request heads over
LAVA_MAX_HEADER_BYTES or LAVA_MAX_HEADER_COUNT are 431, a body slower than
LAVA_BODY_TIMEOUT_S is 408 — on the REST API, the gateway (OpenAI's and Anthropic's shapes),
MCP over /mcp, the dashboard's forms and the webhook. Everything runs over a real uvicorn
server on loopback, with each of its HTTP parsers where they differ.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pydantic
import pytest
import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lava_mcp.config import Settings
from lava_mcp.core import spend_keys, wallet
from lava_mcp.runtime import Runtime
from lava_mcp.transports.app import build_app
from lava_mcp.transports.limits import http_protocol, with_head_timeout
from tests.conftest import LedgerState, ledger_state
from tests.dashboard.conftest import signed_in_client
from tests.fake_provider import FakeProvider, free_port
from tests.gateway.conftest import Gateway
from tests.gateway.test_key_changes import read_response, send_headers

OVER_DEFAULT_BODY = 1_000_001
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@contextmanager
def serve(app: Any, port: int, http: Any = "auto") -> Iterator[str]:
    """uvicorn on loopback with the HTTP protocol given (a name: h11, httptools or its own
    pick; or a protocol class)."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", http=http)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def served_app(settings: Settings, fake: FakeProvider, http: Any = "auto") -> Iterator[Gateway]:
    """The whole app with a wallet funded with $10.00, at a public URL equal to its address
    (so the dashboard's same-origin rule accepts this test's posts)."""
    fake.reset()
    port = free_port()
    runtime = Runtime.build(settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"}))
    runtime.db.upgrade()
    created = wallet.create_wallet(runtime.db, name="limits")
    app = Gateway("", runtime, created.wallet_id, created.wallet_key)
    app.fund("10.00")
    with serve(build_app(runtime), port, http) as url:
        app.url = url
        yield app


@pytest.fixture(params=["h11", "httptools"])
def served(request: pytest.FixtureRequest, settings: Settings, fake: FakeProvider) -> Iterator[Gateway]:
    with served_app(settings, fake, request.param) as app:
        yield app


@pytest.fixture
def spend_key(served: Gateway) -> dict[str, Any]:
    return served.create_key(name="limits")


def state(app: Gateway) -> tuple[LedgerState, int]:
    """The ledger and the wallet's spend keys: what no refused request may change."""
    keys = spend_keys.list_keys(app.runtime.db, app.wallet_id, limit=100).keys
    return ledger_state(app.runtime.db, app.wallet_id), len(keys)


def chunked(*parts: bytes) -> Iterator[bytes]:
    """A body httpx sends with `Transfer-Encoding: chunked` (no Content-Length)."""
    yield from parts


def error_in_shape(shape: str, response: httpx.Response) -> tuple[str, str]:
    """(type, message) of an error answer in the surface's own shape."""
    body = response.json()
    if shape == "anthropic":
        assert body["type"] == "error"
        return body["error"]["type"], body["error"]["message"]
    if shape == "openai":
        assert set(body["error"]) == {"message", "type", "code", "param"}
        return body["error"]["code"], body["error"]["message"]
    assert body["code"] == response.status_code
    return "flat", body["error"]


# -- one request on each surface --------------------------------------------------------------


SURFACES = ["rest", "openai", "anthropic", "mcp", "dashboard", "webhook"]
SHAPE = {"openai": "openai", "anthropic": "anthropic"}  # every other surface: the flat JSON


def padded_json(size_bytes: int, **fields: Any) -> bytes:
    """A JSON object of exactly `size_bytes`: `fields`, then whitespace (still valid JSON)."""
    text = json.dumps(fields).encode()
    assert len(text) <= size_bytes
    return text + b" " * (size_bytes - len(text))


@contextmanager
def surface_request(app: Gateway, surface: str) -> Iterator[tuple[httpx.Client, str, dict[str, str], Any]]:
    """(client, path, headers, body maker) for a request that changes something on `surface`:
    create a spend key, make a model call, call an MCP tool, post a dashboard form, deliver
    a webhook. The body maker takes the body's size in bytes."""
    if surface == "dashboard":
        with signed_in_client(app) as browser:
            page = browser.get("/dashboard/keys")
            token = page.text.split('name="form_token" value="', 1)[1].split('"', 1)[0]
            prefix = f"form_token={token}&name=".encode()
            yield (
                browser,
                "/dashboard/keys",
                {"content-type": "application/x-www-form-urlencoded"},
                lambda size: prefix + b"x" * (size - len(prefix)),
            )
        return
    with httpx.Client(base_url=app.url, timeout=60) as client:
        if surface == "rest":
            yield (
                client,
                "/v1/spend_keys",
                {"authorization": f"Bearer {app.wallet_key}", "content-type": "application/json"},
                lambda size: padded_json(size, name="big"),
            )
        elif surface in ("openai", "anthropic"):
            key = app.create_key(name=surface, request_shape=surface)["key"]
            path = "/v1/chat/completions" if surface == "openai" else "/v1/messages"
            credentials = (
                {"authorization": f"Bearer {key}"}
                if surface == "openai"
                else {"x-api-key": key, "anthropic-version": "2023-06-01"}
            )
            yield (
                client,
                path,
                {**credentials, "content-type": "application/json"},
                lambda size: padded_json(size, model="cheap-1", max_tokens=8, messages=[]),
            )
        elif surface == "mcp":
            call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
            yield (
                client,
                "/mcp",
                {**MCP_HEADERS, "authorization": f"Bearer {app.wallet_key}"},
                lambda size: padded_json(size, **call, params={"name": "get_balance", "arguments": {}}),
            )
        else:
            assert surface == "webhook"
            yield (
                client,
                "/v1/webhooks/stripe",
                {"stripe-signature": "t=1,v1=00", "content-type": "application/json"},
                lambda size: padded_json(size, id="evt_big", type="payment_intent.succeeded"),
            )


def assert_refused(
    surface: str, response: httpx.Response, status: int, words: str, *, closes: bool = True
) -> None:
    """`closes`: refused by the limits themselves, which close the connection (a body the
    gateway's handler reads itself is refused there, in the same shape)."""
    assert response.status_code == status, response.text
    if closes:
        assert response.headers["connection"] == "close"
    body = response.json()
    shape = SHAPE.get(surface, "flat")
    if shape == "anthropic":
        expected_type = "request_too_large" if status == 413 else "invalid_request_error"
        assert body["type"] == "error" and body["error"]["type"] == expected_type
        message = body["error"]["message"]
    elif shape == "openai":
        codes = {413: "request_too_large", 431: "headers_too_large", 408: "request_timeout"}
        assert (body["error"]["type"], body["error"]["code"]) == ("invalid_request_error", codes[status])
        message = body["error"]["message"]
    else:
        assert body["code"] == status
        message = body["error"]
    assert words in message, message


# -- bodies -----------------------------------------------------------------------------------


@pytest.fixture
def app(settings: Settings, fake: FakeProvider) -> Iterator[Gateway]:
    with served_app(settings, fake) as served:
        yield served


@pytest.mark.parametrize("sent", ["declared", "chunked"])
@pytest.mark.parametrize("surface", SURFACES)
def test_an_oversized_body_is_413_in_the_surfaces_shape_and_changes_nothing(
    app: Gateway, fake: FakeProvider, surface: str, sent: str
) -> None:
    with surface_request(app, surface) as (client, path, headers, make):
        before = state(app)
        body = make(OVER_DEFAULT_BODY)
        assert len(body) == OVER_DEFAULT_BODY
        content = body if sent == "declared" else chunked(body[:1000], body[1000:])
        response = client.post(path, content=content, headers=headers)
        by_handler = sent == "chunked" and surface in SHAPE
        assert_refused(surface, response, 413, "request body over 1000000 bytes", closes=not by_handler)
    assert state(app) == before
    assert fake.received == []


@pytest.mark.parametrize("surface", SURFACES)
def test_a_body_at_the_limit_is_read(app: Gateway, surface: str) -> None:
    with surface_request(app, surface) as (client, path, headers, make):
        response = client.post(path, content=make(1_000_000), headers=headers)
    assert response.status_code not in (408, 413, 431), response.text


def test_a_declared_oversized_body_is_refused_before_it_is_sent_or_any_route_runs(app: Gateway) -> None:
    # No credentials at all: a route would answer 401; the limit answers first, and the
    # client waiting on `Expect: 100-continue` is never asked for the body.
    for path in ("/v1/spend_keys", "/v1/chat/completions", "/mcp"):
        with send_headers_only(app.url, path, OVER_DEFAULT_BODY) as sock:
            status, payload = read_response(sock)
        assert status == 413, payload
        assert "over 1000000 bytes" in json.dumps(payload)


@contextmanager
def send_headers_only(url: str, path: str, length: int) -> Iterator[socket.socket]:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
        )
        sock.sendall(head.encode())
        yield sock
    finally:
        sock.close()


def test_the_body_limit_is_a_setting(settings: Settings, fake: FakeProvider) -> None:
    with (
        served_app(settings.model_copy(update={"max_body_bytes": 2000}), fake) as small,
        surface_request(small, "rest") as (client, path, headers, make),
    ):
        refused = client.post(path, content=make(2001), headers=headers)
        assert_refused("rest", refused, 413, "request body over 2000 bytes")
        assert state(small)[1] == 0
        created = client.post(path, content=make(2000), headers=headers)
        assert created.status_code == 201, created.text


def test_a_slow_mcp_body_is_408_flat_and_changes_nothing(settings: Settings, fake: FakeProvider) -> None:
    # The MCP SDK reads its bodies itself, with no time limit: the limits read them first.
    with served_app(settings.model_copy(update={"body_timeout_s": 0.5}), fake) as slow:
        before = state(slow)
        body = padded_json(200, jsonrpc="2.0", id=1, method="tools/list")
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {slow.wallet_key}"}
        headers.pop("content-type")
        with send_headers(slow.url, "/mcp", headers, len(body)) as sock:
            sock.sendall(body[:10])  # and never the rest
            status, payload = read_response(sock)
        assert (status, payload["code"]) == (408, 408)
        assert "did not arrive within 0.5 s" in payload["error"]
        assert state(slow) == before


# -- headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
def test_oversized_headers_are_431_in_the_surfaces_shape_and_change_nothing(
    served: Gateway, fake: FakeProvider, surface: str
) -> None:
    with surface_request(served, surface) as (client, path, headers, make):
        before = state(served)
        padded = {**headers, "x-padding": "p" * 9000}  # over 8192, under h11's 16 KiB
        response = client.post(path, content=make(500), headers=padded)
        assert_refused(surface, response, 431, "over 8192 bytes")
    assert state(served) == before
    assert fake.received == []


def test_too_many_headers_are_431_and_a_normal_request_passes(served: Gateway) -> None:
    wallet_key = {"authorization": f"Bearer {served.wallet_key}"}
    many = {**wallet_key, **{f"x-h{i}": "1" for i in range(100)}}  # 101 with the key, and httpx adds its own
    refused = httpx.get(f"{served.url}/v1/wallet", headers=many)
    assert_refused("rest", refused, 431, "more than 100 request headers")
    few = {**wallet_key, **{f"x-h{i}": "1" for i in range(80)}}
    assert httpx.get(f"{served.url}/v1/wallet", headers=few).status_code == 200
    # just under the byte limit: httpx's own headers and the request line fit beside it
    near = {**wallet_key, "x-padding": "p" * 7800}
    assert httpx.get(f"{served.url}/v1/wallet", headers=near).status_code == 200


def test_the_header_limit_stays_below_uvicorns_own() -> None:
    with pytest.raises(pydantic.ValidationError, match="LAVA_MAX_HEADER_BYTES"):
        Settings(LAVA_MAX_HEADER_BYTES=20000, _env_file=None)  # type: ignore[call-arg]


# -- request heads in time ------------------------------------------------------------------


PROTOCOLS = {"h11": H11Protocol, "httptools": HttpToolsProtocol}
HEAD_TIMEOUT_S = 0.3


@pytest.fixture(params=sorted(PROTOCOLS))
def timed(request: pytest.FixtureRequest, settings: Settings, fake: FakeProvider) -> Iterator[Gateway]:
    """The app behind each uvicorn parser with a head timeout of HEAD_TIMEOUT_S."""
    protocol = with_head_timeout(PROTOCOLS[request.param], HEAD_TIMEOUT_S)
    with served_app(settings, fake, protocol) as app:
        yield app


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_request_head_slower_than_the_timeout_is_408_and_closed(timed: Gateway) -> None:
    with connect(timed.url) as sock:
        sock.sendall(b"POST /v1/spend_keys HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
        answer = read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body) == {
        "error": f"the request headers did not arrive within {HEAD_TIMEOUT_S:g} s; nothing was done",
        "code": 408,
    }
    with timed.rest() as rest:
        assert rest.get("/v1/spend_keys").json()["data"] == []


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(timed: Gateway) -> None:
    with connect(timed.url) as sock:
        assert read_until_closed(sock) == b""


def test_the_next_request_on_a_kept_alive_connection_has_the_same_head_timeout(timed: Gateway) -> None:
    with connect(timed.url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, payload = read_response(sock)
        assert (status, payload["status"]) == (200, "ok")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408")


def test_a_response_longer_than_the_head_timeout_is_never_cut(timed: Gateway, fake: FakeProvider) -> None:
    # Six chunks 0.1 s apart: the stream outlasts the head timeout, which only runs while
    # the connection waits for a head.
    fake.chunk_delay_s = 0.1
    key = timed.create_key(name="stream", request_shape="openai")
    client = timed.openai(key["key"])
    stream = client.chat.completions.create(
        model="cheap-1", messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True
    )
    words = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert words == "".join(fake.reply_words)


def test_serve_runs_uvicorns_own_protocol_with_the_head_timeout() -> None:
    protocol = http_protocol(Settings(LAVA_HEADER_TIMEOUT_S=7, _env_file=None))  # type: ignore[call-arg]
    assert issubclass(protocol, AutoHTTPProtocol) and protocol is not AutoHTTPProtocol
