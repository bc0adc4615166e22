"""Streams: relayed as they arrive; charged by the same rule as a JSON answer — the
provider's usage (read on for up to LAVA_STREAM_DRAIN_S after the client leaves), capped
at the hold, or the hold when no usage arrives."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import httpx
import pytest
from sqlalchemy import NullPool, create_engine, text
from sqlmodel import select

from lava_mcp.store.models import Hold, RequestRecord
from tests.fake_provider import ConnectionDropper, FakeProvider
from tests.gateway.conftest import Gateway

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
MODELS = {"openai": "cheap-1", "anthropic": "claude-haiku-4-5"}


def record(gateway: Gateway, request_id: str) -> RequestRecord:
    with gateway.runtime.db.read() as session:
        found = session.get(RequestRecord, request_id)
    assert found is not None
    return found


def stream_body(shape: str) -> dict[str, object]:
    return {
        "model": MODELS[shape],
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "tell me a story"}],
    }


@pytest.mark.parametrize("shape", sorted(PATHS))
def test_chunks_arrive_before_the_stream_ends(gateway: Gateway, fake: FakeProvider, shape: str) -> None:
    """The fake pauses after two words; the client must already have them (no buffering)."""
    key = gateway.create_key(request_shape=shape)["key"]
    fake.pause_after_words = 2
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{gateway.url}{PATHS[shape]}", json=stream_body(shape), headers={"x-api-key": key}
        ) as response,
    ):
        request_id = response.headers["x-lava-request-id"]
        seen = ""
        lines = response.iter_lines()
        while "from" not in seen:
            seen += next(lines)
        assert fake.stream_paused.wait(10) and not fake.stream_gate.is_set()
        fake.stream_gate.set()
        rest = "".join(lines)
    assert "provider" in rest
    gateway.wait_resolved(request_id)
    assert record(gateway, request_id).output_tokens == 6


def draining(gateway: Gateway) -> threading.Event:
    """Set when the gateway notices a stream's client left and starts draining the upstream."""
    noticed = threading.Event()
    gateway.runtime.metering.draining_listeners.append(lambda _request_id: noticed.set())
    return noticed


@pytest.mark.parametrize("shape", sorted(PATHS))
def test_a_client_that_leaves_pays_for_what_was_produced(
    gateway: Gateway, fake: FakeProvider, shape: str
) -> None:
    """The provider goes on generating (and billing) after the client leaves: the gateway
    reads on for the final usage and charges that."""
    key = gateway.create_key(request_shape=shape)
    fake.pause_after_words = 2
    noticed = draining(gateway)
    before = gateway.balance_micros()
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{gateway.url}{PATHS[shape]}", json=stream_body(shape), headers={"x-api-key": key["key"]}
        ) as response,
    ):
        request_id = response.headers["x-lava-request-id"]
        lines = response.iter_lines()
        seen = ""
        while "from" not in seen:
            seen += next(lines)
        assert fake.stream_paused.wait(10)
        # leaving the block closes the connection mid-stream
    assert noticed.wait(15)
    fake.stream_gate.set()  # the provider finishes the answer nobody reads any more
    gateway.wait_resolved(request_id)
    saved = record(gateway, request_id)
    assert saved.status == "completed"
    assert (saved.output_tokens, saved.charge_basis) == (6, "usage")  # what the provider billed
    with gateway.runtime.db.read() as session:
        hold = session.exec(select(Hold).where(Hold.request_id == request_id)).one()
    assert hold.status == "posted"
    assert 0 < saved.cost_micros <= hold.amount_micros
    assert gateway.balance_micros() == before - saved.cost_micros
    assert gateway.verify() == []


@pytest.mark.parametrize("shape", sorted(PATHS))
def test_a_stream_without_final_usage_is_charged_its_hold(
    gateway: Gateway, fake: FakeProvider, shape: str
) -> None:
    key = gateway.create_key(request_shape=shape)["key"]
    fake.omit_stream_usage = True
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{gateway.url}{PATHS[shape]}", json=stream_body(shape), headers={"x-api-key": key}
        ) as response,
    ):
        request_id = response.headers["x-lava-request-id"]
        response.read()
    gateway.wait_resolved(request_id)
    saved = record(gateway, request_id)
    assert saved.output_tokens == 100  # the bound (max_tokens), not an estimate from six chunks
    assert saved.input_tokens >= 1
    assert saved.cost_micros == saved.hold_micros and saved.charge_basis == "hold"
    assert gateway.verify() == []


def test_overreported_stream_usage_is_capped_at_the_hold(gateway: Gateway, fake: FakeProvider) -> None:
    key = gateway.create_key()["key"]
    fake.overreport_tokens = 10_000_000
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json=stream_body("openai"),
            headers={"x-api-key": key},
        ) as response,
    ):
        request_id = response.headers["x-lava-request-id"]
        response.read()
    gateway.wait_resolved(request_id)
    saved = record(gateway, request_id)
    assert saved.cost_micros == saved.hold_micros
    assert gateway.verify() == []


@pytest.mark.parametrize("shape", sorted(PATHS))
def test_a_client_that_leaves_is_charged_the_hold_when_no_usage_comes_in_the_drain(
    gateway: Gateway, fake: FakeProvider, shape: str
) -> None:
    key = gateway.create_key(request_shape=shape)["key"]
    gateway.runtime.metering.stream_drain_s = 0  # no time to read on: the usage never comes
    fake.pause_after_words = 2
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{gateway.url}{PATHS[shape]}", json=stream_body(shape), headers={"x-api-key": key}
        ) as response,
    ):
        request_id = response.headers["x-lava-request-id"]
        assert fake.stream_paused.wait(10)
    gateway.wait_resolved(request_id)
    fake.stream_gate.set()
    saved = record(gateway, request_id)
    assert (saved.status, saved.charge_basis, saved.output_tokens) == ("completed", "hold", 100)
    assert saved.cost_micros == saved.hold_micros > 0
    assert gateway.verify() == []


@pytest.mark.parametrize("shape", sorted(PATHS))
def test_a_stream_that_breaks_off_after_the_provider_accepted_it_is_charged_its_hold(
    gateway: Gateway, fake: FakeProvider, shape: str
) -> None:
    """A 200 means the provider took the request and may bill it, even if the stream then
    breaks before any usage: the hold is charged, not nothing."""
    key = gateway.create_key(request_shape=shape)["key"]
    fake.break_stream_after_words = 2
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{gateway.url}{PATHS[shape]}", json=stream_body(shape), headers={"x-api-key": key}
        ) as response,
    ):
        request_id = response.headers["x-lava-request-id"]
        with pytest.raises(httpx.HTTPError):
            response.read()
    gateway.wait_resolved(request_id)
    saved = record(gateway, request_id)
    assert (saved.status, saved.charge_basis) == ("completed", "hold")
    assert saved.cost_micros == saved.hold_micros > 0
    assert gateway.verify() == []


@pytest.mark.parametrize(
    "usage",
    [
        {},
        {"prompt_tokens": "9", "completion_tokens": 2},
        {"prompt_tokens": 9.0, "completion_tokens": 2},
        {"prompt_tokens": 9},
        {"prompt_tokens": -1, "completion_tokens": 2},
    ],
)
def test_unusable_stream_usage_is_charged_the_hold(
    gateway: Gateway, fake: FakeProvider, usage: dict[str, object]
) -> None:
    key = gateway.create_key()["key"]
    fake.usage_override = usage
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json=stream_body("openai"),
            headers={"x-api-key": key},
        ) as response,
    ):
        request_id = response.headers["x-lava-request-id"]
        response.read()
    gateway.wait_resolved(request_id)
    saved = record(gateway, request_id)
    assert (saved.status, saved.charge_basis) == ("completed", "hold")
    assert saved.cost_micros == saved.hold_micros > 0
    assert gateway.verify() == []


def test_a_stream_whose_connection_drops_before_an_answer_is_sent_once_and_voided(
    gateway: Gateway, fake: FakeProvider
) -> None:
    """No resend after the request may have reached the provider: exactly one request
    arrives, the caller gets 502, and nothing is charged (the provider never answered)."""
    key = gateway.create_key()["key"]
    before = gateway.balance_micros()
    dropper = ConnectionDropper()
    with dropper.serve() as url:
        services = gateway.runtime.catalog.services
        services["cheapchat"] = replace(services["cheapchat"], base_url=f"{url}/v1")
        body = {**stream_body("openai"), "model": "cheap-1"}
        with httpx.Client(timeout=30) as client:
            response = client.post(
                f"{gateway.url}/v1/chat/completions", json=body, headers={"x-api-key": key}
            )
    assert response.status_code == 502
    assert dropper.received == 1
    saved = record(gateway, response.headers["x-lava-request-id"])
    assert (saved.status, saved.cost_micros, saved.charge_basis) == ("error", 0, None)
    assert gateway.balance_micros() == before
    assert gateway.verify() == []


class LedgerBlocker:
    """Another connection that keeps a settlement from committing until `release`: SQLite's
    write lock (`BEGIN IMMEDIATE` on the file), or on PostgreSQL the gateway wallet's row
    (`FOR UPDATE`: a settlement updates that row)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.engine = create_engine(gateway.runtime.settings.database_url, poolclass=NullPool)
        self.connection: Any = None

    def lock(self) -> None:
        if self.engine.dialect.name == "sqlite":
            self.connection = self.engine.raw_connection()
            self.connection.driver_connection.isolation_level = None
            self.connection.driver_connection.execute("BEGIN IMMEDIATE")
        else:
            self.connection = self.engine.connect()
            self.connection.begin()
            locked = self.connection.execute(
                text("SELECT id FROM wallet WHERE id = :id FOR UPDATE"), {"id": self.gateway.wallet_id}
            )
            assert locked.one()

    def release(self) -> None:
        if self.connection is None:
            return
        if self.engine.dialect.name == "sqlite":
            self.connection.driver_connection.execute("COMMIT")
        else:
            self.connection.commit()
        self.connection.close()
        self.engine.dispose()


@pytest.mark.parametrize("shape", sorted(PATHS))
def test_a_stream_is_settled_before_its_last_event_reaches_the_client(
    gateway: Gateway, fake: FakeProvider, shape: str
) -> None:
    """Durable before complete: with the ledger locked by another connection (SQLite's write
    lock; on PostgreSQL the wallet's row, which the settlement updates), the settlement can't
    commit, and neither `[DONE]` / `message_stop` nor the body's end reach the client; once
    it commits, the client that sees the last event finds the call charged."""
    key = gateway.create_key(request_shape=shape)["key"]
    last_event = "data: [DONE]" if shape == "openai" else "event: message_stop"
    fake.pause_after_words = 2
    blocker = LedgerBlocker(gateway)
    seen_last = threading.Event()
    status_when_seen: list[str] = []
    with (
        httpx.Client(timeout=60) as client,
        client.stream(
            "POST", f"{gateway.url}{PATHS[shape]}", json=stream_body(shape), headers={"x-api-key": key}
        ) as response,
    ):
        request_id = response.headers["x-lava-request-id"]
        lines = response.iter_lines()
        seen = ""
        while "from" not in seen:
            seen += next(lines)
        assert fake.stream_paused.wait(10)
        blocker.lock()  # the settlement can't commit until this ends

        def read_on() -> None:
            for line in lines:
                if line.strip() == last_event:
                    status_when_seen.append(record(gateway, request_id).status)
                    seen_last.set()

        reader = threading.Thread(target=read_on)
        fake.stream_gate.set()
        reader.start()
        try:
            # Everything the provider sent has reached the gateway, but not its last event.
            assert not seen_last.wait(1.5)
            assert record(gateway, request_id).status == "pending"
        finally:
            blocker.release()
        assert seen_last.wait(30)
        reader.join(30)
    assert status_when_seen == ["completed"]
    assert record(gateway, request_id).cost_micros > 0
