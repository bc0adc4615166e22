"""The real OpenAI SDK against the gateway: calls, streams, models, what reaches upstream."""

from __future__ import annotations

import httpx

from lava_mcp.store.models import RequestRecord
from tests.fake_provider import FakeProvider
from tests.gateway.conftest import Gateway

MESSAGES = [{"role": "user", "content": "Say hello"}]


def record(gateway: Gateway, request_id: str) -> RequestRecord:
    with gateway.runtime.db.read() as session:
        found = session.get(RequestRecord, request_id)
    assert found is not None
    return found


def test_chat_completion_is_metered_and_charged_exactly(gateway: Gateway, fake: FakeProvider) -> None:
    key = gateway.create_key(name="agent")
    before = gateway.balance_micros()
    raw = gateway.openai(key["key"]).chat.completions.with_raw_response.create(
        model="cheap-1", messages=MESSAGES, max_tokens=50
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the fake provider."
    request_id = raw.headers["x-lava-request-id"]
    saved = record(gateway, request_id)
    # cheap-1: $1 / Mtok input, $2 / Mtok output = 1 and 2 micro-dollars per token.
    assert completion.usage is not None
    expected = completion.usage.prompt_tokens * 1 + completion.usage.completion_tokens * 2
    assert (saved.status, saved.cost_micros, saved.spend_key_id) == (
        "completed",
        expected,
        key["spend_key_id"],
    )
    assert saved.endpoint == "/v1/chat/completions"
    assert gateway.balance_micros() == before - expected
    assert gateway.verify() == []


def test_upstream_gets_the_configured_key_never_the_callers(gateway: Gateway, fake: FakeProvider) -> None:
    key = gateway.create_key()
    gateway.openai(key["key"]).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (received,) = fake.received
    assert received.headers["authorization"] == "Bearer sk-upstream-openai"
    assert key["key"] not in str(received.headers)
    assert received.body["max_completion_tokens"] > 0  # the gateway set a cap for the hold


def test_stream_is_relayed_and_settled_from_the_streams_usage(gateway: Gateway, fake: FakeProvider) -> None:
    key = gateway.create_key()
    client = gateway.openai(key["key"])
    with client.chat.completions.with_streaming_response.create(
        model="cheap-1", messages=MESSAGES, stream=True
    ) as response:
        request_id = response.headers["x-lava-request-id"]
        chunks = list(response.parse())
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Hello from the fake provider."
    usage = chunks[-1].usage
    assert usage is not None  # the gateway asked upstream for usage and relayed it
    gateway.wait_resolved(request_id)
    saved = record(gateway, request_id)
    assert saved.status == "completed"
    assert (saved.input_tokens, saved.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    assert saved.cost_micros == usage.prompt_tokens + 2 * usage.completion_tokens
    assert fake.received[0].body["stream_options"] == {"include_usage": True}
    assert gateway.verify() == []


def test_bearer_and_x_api_key_are_both_accepted(gateway: Gateway) -> None:
    key = gateway.create_key()
    body = {"model": "cheap-1", "messages": MESSAGES}
    for headers in ({"authorization": f"Bearer {key['key']}"}, {"x-api-key": key["key"]}):
        response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["x-lava-request-id"].startswith("req_")


def test_models_lists_only_what_the_key_may_use(gateway: Gateway) -> None:
    scoped = gateway.create_key(allowed_models=["gpt-4o-mini", "cheap-1"])
    assert [model.id for model in gateway.openai(scoped["key"]).models.list()] == ["cheap-1", "gpt-4o-mini"]
    by_provider = gateway.create_key(allowed_providers=["cheapchat"])
    assert [model.id for model in gateway.openai(by_provider["key"]).models.list()] == ["cheap-1"]
    everything = [model.id for model in gateway.openai(gateway.create_key()["key"]).models.list()]
    assert "gpt-4o-mini" in everything and not any(model.startswith("claude") for model in everything)


def test_ollama_is_free_but_recorded(gateway: Gateway, fake: FakeProvider) -> None:
    key = gateway.create_key()
    raw = gateway.openai(key["key"]).chat.completions.with_raw_response.create(
        model="ollama/llama3.2", messages=MESSAGES
    )
    assert fake.received[0].body["model"] == "llama3.2"
    saved = record(gateway, raw.headers["x-lava-request-id"])
    assert (saved.status, saved.cost_micros, saved.service) == ("completed", 0, "ollama")
