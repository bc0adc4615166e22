"""Fuzzing the gateway's two request shapes over HTTP, with a real spend key, against the
app on loopback and the fake provider upstream.

Bodies come from a model of each request (`strategies.chat_body`: messages, token limits,
stream and stream_options, temperature, tools, service_tier, cache_control, metadata, n,
system, each right or wrong, plus junk fields) and from raw bytes (`strategies.raw_body`:
JSON that is not an object, NaN, deep nesting, broken JSON, bytes that are not UTF-8). In
some examples the fake provider is told to fail. For every call:

- no 5xx, except a 502 or 504 for a provider that was told to fail;
- every error is in that API's documented error shape (OpenAI `{"error": {"message",
  "type", "code", "param"}}`, Anthropic `{"type": "error", "error": {"type", "message"}}`);
- a refusal (4xx, or any failure) charges nothing: the wallet's balance, held amount and
  ledger entries, and the key's spend counters are unchanged and no hold is left pending;
  one refused before any upstream traffic also leaves the key's request counters alone,
  and one the provider refused was sent to it once;
- a success sent the provider strict JSON naming a model, and is charged exactly what its request record says: the balance and the key's
  spend move by that cost, and nothing stays held;
- the ledger verifies (`lava_mcp.core.verify`) after every success and at the end.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lava_mcp.store.models import RequestRecord, SpendKey
from tests.conftest import ledger_state
from tests.fake_provider import FakeProvider
from tests.fuzz.strategies import EDGE_BODIES, raw_body
from tests.gateway.conftest import Gateway

EXAMPLES_PER_SHAPE = 250
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
# What the fake is told to answer with: nothing (healthy), or a provider failure.
FAKE_FAILURES = [None, None, None, None, None, None, 500, 502, 503, 400, 429]


@dataclass(frozen=True)
class KeyCounters:
    cycle_spend_micros: int
    total_spend_micros: int
    cycle_requests: int
    total_requests: int


def key_counters(gateway: Gateway, spend_key_id: str) -> KeyCounters:
    with gateway.runtime.db.read() as session:
        row = session.get(SpendKey, spend_key_id)
        assert row is not None
        return KeyCounters(
            row.cycle_spend_micros, row.total_spend_micros, row.cycle_requests, row.total_requests
        )


def request_cost_micros(gateway: Gateway, request_id: str) -> int:
    with gateway.runtime.db.read() as session:
        record = session.get(RequestRecord, request_id)
        assert record is not None, request_id
        assert record.status == "completed", (record.status, record.error)
        return record.cost_micros


def check_error_shape(shape: str, response: httpx.Response) -> None:
    body = orjson.loads(response.content)
    if shape == "openai":
        assert set(body) == {"error"}, body
        error = body["error"]
        assert set(error) == {"message", "type", "code", "param"}, body
        assert isinstance(error["message"], str) and error["message"], body
        assert isinstance(error["type"], str) and isinstance(error["code"], str), body
    else:
        assert set(body) == {"type", "error"} and body["type"] == "error", body
        error = body["error"]
        assert set(error) == {"type", "message"}, body
        assert isinstance(error["type"], str) and isinstance(error["message"], str) and error["message"], body


def check_success_shape(shape: str, response: httpx.Response) -> None:
    if response.headers["content-type"].startswith("text/event-stream"):
        ending = "data: [DONE]" if shape == "openai" else "event: message_stop"
        assert ending in response.text, response.text[-300:]
        return
    parsed = orjson.loads(response.content)
    if shape == "openai":
        assert parsed["object"] == "chat.completion", parsed
    else:
        assert parsed["type"] == "message", parsed


def check_sent_upstream(sent: dict[str, Any], content: bytes) -> None:
    """What a served call sent the provider is JSON (RFC 8259 has no NaN or Infinity, which
    a provider's parser refuses) and names a model."""
    json.dumps(sent, allow_nan=False)  # raises ValueError for NaN or an infinity
    assert isinstance(sent.get("model"), str) and sent["model"].strip(), (sent.get("model"), content[:300])


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
def test_fuzzed_bodies_get_no_5xx_the_shapes_errors_and_are_charged_only_what_ran(
    gateway: Gateway, fake: FakeProvider, shape: str
) -> None:
    # A budget the dearest hold can exceed, so the key's own 402 is among the outcomes.
    created = gateway.create_key(request_shape=shape, spend_limit={"amount": "0.50", "cycle": "total"})
    secret, spend_key_id = created["key"], created["spend_key_id"]
    outcomes: Counter[str] = Counter()
    client = httpx.Client(base_url=gateway.url, timeout=30)

    def check_one_call(content: bytes, fake_failure: int | None, header: str) -> None:
        fake.fail_status = fake_failure
        headers = {"content-type": "application/json"}
        headers[header] = f"Bearer {secret}" if header == "authorization" else secret
        if shape == "anthropic":
            headers["anthropic-version"] = "2023-06-01"
        before = ledger_state(gateway.runtime.db, gateway.wallet_id)
        counters = key_counters(gateway, spend_key_id)
        traffic = len(fake.received)
        try:
            response = client.post(PATHS[shape], content=content, headers=headers)
        finally:
            fake.fail_status = None
        request_id = response.headers["x-lava-request-id"]
        status = response.status_code
        outcomes[str(status)] += 1
        if status >= 500:
            assert fake_failure is not None and status in (502, 504), (status, content[:300], response.text)
        if status != 200:
            check_error_shape(shape, response)
            after = ledger_state(gateway.runtime.db, gateway.wallet_id)
            assert (after.balance_micros, after.held_micros, after.entries, after.pending_holds) == (
                before.balance_micros,
                before.held_micros,
                before.entries,
                before.pending_holds,
            ), (status, content[:300])
            now = key_counters(gateway, spend_key_id)
            assert (now.cycle_spend_micros, now.total_spend_micros) == (
                counters.cycle_spend_micros,
                counters.total_spend_micros,
            ), (status, content[:300])
            if len(fake.received) == traffic:
                assert now == counters, (status, content[:300])  # refused before any traffic
            else:
                assert len(fake.received) == traffic + 1, content[:300]  # sent at most once
                assert status in (400, 429, 502, 504), (status, content[:300])  # the provider's refusal
            return
        gateway.wait_resolved(request_id)
        check_success_shape(shape, response)
        check_sent_upstream(fake.received[-1].body, content)
        cost_micros = request_cost_micros(gateway, request_id)
        after = ledger_state(gateway.runtime.db, gateway.wallet_id)
        assert after.balance_micros == before.balance_micros - cost_micros, content[:300]
        assert after.held_micros == before.held_micros and after.pending_holds == 0, content[:300]
        now = key_counters(gateway, spend_key_id)
        assert now.total_spend_micros == counters.total_spend_micros + cost_micros
        assert now.total_requests == counters.total_requests + 1
        assert gateway.verify() == []

    # Every edge body runs as an explicit example, then the drawn ones.
    one_call = given(
        content=raw_body(shape),
        fake_failure=st.sampled_from(FAKE_FAILURES),
        header=st.sampled_from(["authorization", "x-api-key"]),
    )(check_one_call)
    for edge in EDGE_BODIES:
        one_call = example(content=edge, fake_failure=None, header="authorization")(one_call)
    one_call = settings(
        max_examples=EXAMPLES_PER_SHAPE,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )(one_call)

    with client:
        one_call()
    assert gateway.verify() == []
    print(f"\nfuzz gateway {shape}: {sum(outcomes.values())} calls {dict(sorted(outcomes.items()))}")
    assert sum(outcomes.values()) >= EXAMPLES_PER_SHAPE
    assert outcomes["200"] > 0 and outcomes["400"] > 0, outcomes  # the model reaches both ends
