"""A key change takes effect on every call whose upstream request has not started: one
whose headers arrived before the change and whose body after, and one judged by the key
before the change whose hold is taken after (the hold checks the key's version)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpx
import openai
import pytest

from lava_mcp.config import Settings
from lava_mcp.core import spend_keys, wallet
from lava_mcp.errors import Forbidden, LavaError, Unauthorized
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import SpendKey
from tests.conftest import fund
from tests.fake_provider import FakeProvider
from tests.gateway.conftest import Gateway

CALL = {"model": "cheap-1", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


# -- raw HTTP: the body arrives after the change --------------------------------------------


def read_response(sock: socket.socket, buffered: bytes = b"") -> tuple[int, dict[str, Any]]:
    """One HTTP/1.1 response with a Content-Length body: (status, JSON body)."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return status, json.loads(rest[:length])


def send_headers(url: str, path: str, headers: dict[str, str], body_length: int) -> socket.socket:
    """Open a connection and send only a POST's headers, then wait until the server's handler
    asks for the body (uvicorn answers `Expect: 100-continue` at that moment), so the
    request's headers are certainly in when the test acts."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {body_length}", "Expect: 100-continue"]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    interim = b""
    while b"\r\n\r\n" not in interim:
        chunk = sock.recv(1)  # byte by byte: nothing of a later response is consumed here
        assert chunk, "connection closed before 100 Continue"
        interim += chunk
    assert interim.startswith(b"HTTP/1.1 100"), interim
    return sock


def change_key(gateway: Gateway, key_id: str, change: str) -> None:
    with gateway.rest() as rest:
        if change == "rotate":
            response = rest.post(f"/v1/spend_keys/{key_id}/rotate")
        elif change == "revoke":
            response = rest.delete(f"/v1/spend_keys/{key_id}")
        elif change == "pause":
            response = rest.put(f"/v1/spend_keys/{key_id}", json={"status": "paused"})
        elif change == "narrow_models":
            response = rest.put(f"/v1/spend_keys/{key_id}", json={"allowed_models": ["gpt-4o-mini"]})
        elif change == "narrow_providers":
            response = rest.put(f"/v1/spend_keys/{key_id}", json={"allowed_providers": ["openai"]})
        elif change == "shape":
            response = rest.put(f"/v1/spend_keys/{key_id}", json={"request_shape": "anthropic"})
        elif change == "spend_limit":
            response = rest.put(f"/v1/spend_keys/{key_id}", json={"spend_limit": {"amount": "0.01"}})
        else:
            assert change == "rename"
            response = rest.put(f"/v1/spend_keys/{key_id}", json={"name": "renamed"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ("rotate", 401),
        ("revoke", 401),
        ("pause", 403),
        ("narrow_models", 403),
        ("narrow_providers", 403),
        ("shape", 403),
        ("spend_limit", 402),
    ],
)
def test_a_change_between_headers_and_body_refuses_the_call(
    gateway: Gateway, fake: FakeProvider, change: str, status: int
) -> None:
    key = gateway.create_key(spend_limit={"amount": "5.00", "cycle": "monthly"})
    body = json.dumps(CALL | {"max_tokens": 100_000}).encode()
    sock = send_headers(
        gateway.url, "/v1/chat/completions", {"Authorization": f"Bearer {key['key']}"}, len(body)
    )
    with sock:
        change_key(gateway, key["spend_key_id"], change)
        sock.sendall(body)
        answered, payload = read_response(sock)
    assert answered == status, payload
    assert payload["error"]["message"]
    assert fake.received == []  # nothing reached the provider


def test_an_unrelated_change_between_headers_and_body_still_serves(
    gateway: Gateway, fake: FakeProvider
) -> None:
    key = gateway.create_key(request_shape="anthropic")
    body = json.dumps(CALL | {"model": "claude-haiku-4-5"}).encode()
    sock = send_headers(gateway.url, "/v1/messages", {"x-api-key": key["key"]}, len(body))
    with sock:
        change_key(gateway, key["spend_key_id"], "rename")
        sock.sendall(body)
        answered, payload = read_response(sock)
    assert answered == 200, payload
    assert len(fake.received) == 1


# -- the core: a key judged before the change, its hold taken after ----------------------------


def changes() -> dict[str, Callable[[Runtime, str, str], Any]]:
    def update(fields: dict[str, Any]) -> Callable[[Runtime, str, str], Any]:
        return lambda runtime, owner, key_id: spend_keys.update_key(runtime.db, owner, key_id, fields)

    return {
        "rotate": lambda runtime, owner, key_id: spend_keys.rotate(runtime.db, owner, key_id),
        "revoke": lambda runtime, owner, key_id: spend_keys.revoke(runtime.db, owner, key_id),
        "pause": update({"status": "paused"}),
        "narrow_models": update({"allowed_models": ["cheap-2"]}),
        "narrow_providers": update({"allowed_providers": ["openai"]}),
        "shape": update({"request_shape": "anthropic"}),
    }


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ("rotate", Unauthorized),
        ("revoke", Unauthorized),
        ("pause", Forbidden),
        ("narrow_models", Forbidden),
        ("narrow_providers", Forbidden),
        ("shape", Forbidden),
    ],
)
async def test_the_hold_refuses_a_key_changed_after_it_was_judged(
    runtime: Runtime, fake: FakeProvider, change: str, refusal: type[LavaError]
) -> None:
    owner = wallet.create_wallet(runtime.db, name="stale").wallet_id
    fund(runtime, owner, "5.00")
    created = spend_keys.create(runtime.db, owner, {})
    judged = spend_keys.authenticate(runtime.db, created.secret)  # as the gateway read it
    changes()[change](runtime, owner, judged.id)
    with pytest.raises(refusal):
        await runtime.metering.call(
            wallet_id=owner,
            service_id="cheapchat",
            model="cheap-1",
            body=CALL,
            endpoint="/v1/chat/completions",
            spend_key=judged,
            request_shape="openai",
        )
    assert fake.received == []
    assert spend_keys.get(runtime.db, owner, judged.id).total_requests == 0


async def test_the_hold_judges_again_and_serves_after_an_unrelated_change(
    runtime: Runtime, fake: FakeProvider
) -> None:
    owner = wallet.create_wallet(runtime.db, name="renamed").wallet_id
    fund(runtime, owner, "5.00")
    created = spend_keys.create(runtime.db, owner, {"allowed_models": ["cheap-1", "gpt-4o-mini"]})
    judged = spend_keys.authenticate(runtime.db, created.secret)
    spend_keys.update_key(runtime.db, owner, judged.id, {"name": "new name", "allowed_models": ["cheap-1"]})
    outcome = await runtime.metering.call(
        wallet_id=owner,
        service_id="cheapchat",
        model="cheap-1",
        body=CALL,
        endpoint="/v1/chat/completions",
        spend_key=judged,
        request_shape="openai",
    )
    assert outcome.settlement.cost.total_micros > 0
    current = spend_keys.get(runtime.db, owner, judged.id)
    assert (current.version, current.total_requests) == (judged.version + 1, 1)


def test_every_rotate_update_and_revoke_moves_the_version(runtime: Runtime) -> None:
    owner = wallet.create_wallet(runtime.db, name="versions").wallet_id
    key = spend_keys.create(runtime.db, owner, {}).key
    assert key.version == 1
    assert spend_keys.rotate(runtime.db, owner, key.id).key.version == 2
    assert spend_keys.update_key(runtime.db, owner, key.id, {"status": "paused"}).version == 3
    assert spend_keys.update_key(runtime.db, owner, key.id, {"status": "active"}).version == 4
    assert spend_keys.revoke(runtime.db, owner, key.id).version == 5


# -- many calls racing a rotate, on SQLite and PostgreSQL -----------------------------------------


@pytest.fixture
async def backend(settings: Settings) -> AsyncIterator[Runtime]:
    """A migrated runtime on the database of the test's parameter (`[sqlite]`, `[postgresql]`)."""
    built = Runtime.build(settings)
    built.db.upgrade()
    yield built
    await built.aclose()


async def test_no_call_is_held_with_the_old_secret_after_rotate_returned(backend: Runtime) -> None:
    """64 calls judged by the key before a rotate race it; 16 more start after it returned.
    Exactly the calls held before the rotate committed run (the rotate's own read of the
    key counts them); every other one is refused with 401."""
    runtime = backend
    owner = wallet.create_wallet(runtime.db, name="race").wallet_id
    fund(runtime, owner, "10.00")
    created = spend_keys.create(runtime.db, owner, {})
    judged: SpendKey = spend_keys.authenticate(runtime.db, created.secret)
    some_held = asyncio.Event()
    rotated_count: list[int] = []

    async def one(number: int) -> int:
        try:
            await runtime.metering.call(
                wallet_id=owner, service_id="weather", model=None, body={"call": number}, spend_key=judged
            )
        except Unauthorized:
            return 401
        finally:
            if number >= 8:
                some_held.set()
        return 200

    async def rotate() -> None:
        await some_held.wait()
        rotated = await anyio.to_thread.run_sync(spend_keys.rotate, runtime.db, owner, judged.id)
        rotated_count.append(rotated.key.total_requests)

    racing = [asyncio.ensure_future(one(number)) for number in range(64)]
    await rotate()
    after = await asyncio.gather(*(one(100 + number) for number in range(16)))
    during = await asyncio.gather(*racing)
    assert after == [401] * 16
    served = during.count(200)
    assert served == rotated_count[0] and served + during.count(401) == 64
    current = spend_keys.get(runtime.db, owner, judged.id)
    assert (current.total_requests, current.held_micros) == (served, 0)
    from lava_mcp.core import verify

    assert verify.verify(runtime.db) == []


async def test_gateway_calls_racing_a_rotate_are_served_only_if_held_before_it(gateway: Gateway) -> None:
    """48 calls over HTTP with the secret race its rotate; 16 more are sent after the rotate
    answered. Every call held before the rotate committed is served (the rotate's own read
    counts them); every other one is 401 and reaches no provider."""
    key = gateway.create_key()
    some_answered = asyncio.Event()

    async def one(client: Any) -> int:
        try:
            await client.chat.completions.create(**CALL)
        except openai.AuthenticationError:
            return 401
        finally:
            some_answered.set()
        return 200

    async with gateway.async_openai(key["key"]) as client:
        racing = [asyncio.ensure_future(one(client)) for _ in range(48)]
        await some_answered.wait()
        with httpx.Client(
            base_url=gateway.url, headers={"authorization": f"Bearer {gateway.wallet_key}"}
        ) as rest:
            rotated = await anyio.to_thread.run_sync(
                lambda: rest.post(f"/v1/spend_keys/{key['spend_key_id']}/rotate").json()
            )
        after = await asyncio.gather(*(one(client) for _ in range(16)))
        during = await asyncio.gather(*racing)
    assert after == [401] * 16
    assert during.count(200) == rotated["total_requests"]
    assert during.count(200) + during.count(401) == 48
    with gateway.rest() as rest:
        assert rest.get(f"/v1/spend_keys/{key['spend_key_id']}").json()["total_requests"] == during.count(200)
    assert gateway.verify() == []
