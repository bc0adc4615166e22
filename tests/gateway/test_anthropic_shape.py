"""The real Anthropic SDK against the gateway: messages, streams, models, upstream headers."""

from __future__ import annotations

import anthropic

from lava_mcp.store.models import RequestRecord
from tests.fake_provider import FakeProvider
from tests.gateway.conftest import Gateway

MODEL = "claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "Say hello"}]


def record(gateway: Gateway, request_id: str) -> RequestRecord:
    with gateway.runtime.db.read() as session:
        found = session.get(RequestRecord, request_id)
    assert found is not None
    return found


def anthropic_key(gateway: Gateway, **options: object) -> str:
    key: str = gateway.create_key(request_shape="anthropic", **options)["key"]
    return key


def test_message_is_metered(gateway: Gateway, fake: FakeProvider) -> None:
    key = anthropic_key(gateway)
    raw = gateway.anthropic(key).messages.with_raw_response.create(
        model=MODEL, max_tokens=64, messages=MESSAGES
    )
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "Hello from the fake provider."
    saved = record(gateway, raw.headers["x-lava-request-id"])
    assert saved.status == "completed" and saved.cost_micros > 0
    assert (saved.input_tokens, saved.output_tokens) == (
        message.usage.input_tokens,
        message.usage.output_tokens,
    )
    (received,) = fake.received
    assert received.headers["x-api-key"] == "sk-upstream-anthropic"
    assert key not in str(received.headers)
    assert gateway.verify() == []


def test_stream_is_settled_from_message_start_and_delta(gateway: Gateway) -> None:
    key = anthropic_key(gateway)
    client = gateway.anthropic(key)
    with client.messages.with_streaming_response.create(
        model=MODEL, max_tokens=64, messages=MESSAGES, stream=True
    ) as response:
        request_id = response.headers["x-lava-request-id"]
        events = list(response.parse())
    assert next(event.type for event in events) == "message_start"
    text = "".join(
        event.delta.text
        for event in events
        if event.type == "content_block_delta" and event.delta.type == "text_delta"
    )
    assert text == "Hello from the fake provider."
    gateway.wait_resolved(request_id)
    saved = record(gateway, request_id)
    assert (saved.status, saved.output_tokens) == ("completed", 6)
    assert gateway.verify() == []


def test_stream_helper_works(gateway: Gateway) -> None:
    with gateway.anthropic(anthropic_key(gateway)).messages.stream(
        model=MODEL, max_tokens=64, messages=MESSAGES
    ) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == 6


def test_models_for_an_anthropic_key(gateway: Gateway) -> None:
    scoped = anthropic_key(gateway, allowed_models=[MODEL])
    assert [model.id for model in gateway.anthropic(scoped).models.list()] == [MODEL]
    everything = [model.id for model in gateway.anthropic(anthropic_key(gateway)).models.list()]
    assert MODEL in everything and all(model.startswith("claude") for model in everything)


def test_bearer_works_on_messages_too(gateway: Gateway) -> None:
    key = anthropic_key(gateway)
    with anthropic.Anthropic(auth_token=key, api_key=None, base_url=gateway.url, max_retries=0) as bearer:
        message = bearer.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    assert message.usage.output_tokens > 0
