"""Streams: relayed as they arrive, a client that leaves pays for what was produced, a
stream without final usage is estimated (and never above the hold)."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel import select

from lava_mcp.store.models import Hold, RequestRecord
from tests.fake_provider import FakeProvider
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
        assert fake.stream_paused.is_set() and not fake.stream_gate.is_set()
        fake.stream_gate.set()
        rest = "".join(lines)
    assert "provider" in rest
    gateway.wait_resolved(request_id)
    assert record(gateway, request_id).output_tokens == 6


@pytest.mark.parametrize("shape", sorted(PATHS))
def test_a_client_that_leaves_pays_for_what_was_produced(
    gateway: Gateway, fake: FakeProvider, shape: str
) -> None:
    key = gateway.create_key(request_shape=shape)
    fake.pause_after_words = 2
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
    gateway.wait_resolved(request_id)
    fake.stream_gate.set()
    saved = record(gateway, request_id)
    assert saved.status == "completed"
    assert saved.output_tokens == 2  # two words were produced, not the six of the whole answer
    with gateway.runtime.db.read() as session:
        hold = session.exec(select(Hold).where(Hold.request_id == request_id)).one()
    assert hold.status == "posted"
    assert 0 < saved.cost_micros <= hold.amount_micros
    assert gateway.balance_micros() == before - saved.cost_micros
    assert gateway.verify() == []


@pytest.mark.parametrize("shape", sorted(PATHS))
def test_a_stream_without_final_usage_is_estimated_from_its_chunks(
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
    assert saved.output_tokens == 6  # six content chunks
    assert saved.input_tokens >= 1
    assert saved.cost_micros <= saved.hold_micros
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
