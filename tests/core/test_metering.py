"""Metering (DESIGN §3, §7): hold → call → settle, through the core with no transport."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import select

from lava_mcp.core import verify
from lava_mcp.errors import BadRequest, InsufficientBalance, NotFound, PaymentRequired, UpstreamError
from lava_mcp.providers import prices, shapes
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import Hold, LedgerEntry, RequestRecord
from tests.conftest import fund, ledger_state
from tests.fake_provider import FakeProvider

HELLO = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}


async def call(runtime: Runtime, wallet_id: str, service: str, model: str | None, body: object, **options):
    return await runtime.metering.call(
        wallet_id=wallet_id, service_id=service, model=model, body=body, **options
    )


def records(runtime: Runtime) -> list[RequestRecord]:
    with runtime.db.read() as session:
        return list(session.exec(select(RequestRecord)).all())


async def test_a_paid_call_charges_what_the_provider_reports(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    outcome = await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO)
    # The fake reports bytes("Say hello") // 4 + 1 = 3 input tokens and 6 output words;
    # cheap-1 costs $1/M input and $2/M output, i.e. 1 and 2 micro-dollars a token.
    assert outcome.settlement.usage == shapes.Usage(3, 6)
    assert outcome.settlement.cost == prices.Cost(3, 15)
    assert outcome.settlement.available_micros == 1_000_000 - 15
    assert outcome.result["choices"][0]["message"]["content"] == "Hello from the fake provider."
    [sent] = fake.received
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "cheap-1" and sent.body["max_tokens"] == 50
    assert sent.headers["authorization"] == "Bearer sk-upstream-openai"  # the catalog's key, not the caller's
    [record] = records(runtime)
    assert (record.status, record.ran, record.cost_micros, record.input_cost_micros) == (
        "completed",
        True,
        15,
        3,
    )
    assert (record.input_tokens, record.output_tokens, record.service, record.model) == (
        3,
        6,
        "cheapchat",
        "cheap-1",
    )
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros, state.pending_holds) == (1_000_000 - 15, 0, 0)
    assert verify.verify(runtime.db) == []


async def test_genai_prices_price_a_real_model(runtime: Runtime, new_wallet, fake: FakeProvider) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    outcome = await call(runtime, new_wallet.wallet_id, "openai", "gpt-4o-mini", HELLO)
    service = runtime.catalog.get("openai")
    assert outcome.settlement.cost == prices.cost_of(service, "gpt-4o-mini", 3, 6)
    assert outcome.settlement.cost.total_micros > 0


async def test_the_core_caps_output_when_the_caller_gave_no_max_tokens(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", {"messages": HELLO["messages"]})
    assert fake.received[0].body["max_completion_tokens"] == runtime.settings.default_max_tokens
    with runtime.db.read() as session:
        hold = session.exec(select(Hold)).one()
    bound = shapes.prepare_openai(
        {"messages": HELLO["messages"]},
        upstream_model="cheap-1",
        default_max_tokens=runtime.settings.default_max_tokens,
    )
    assert hold.amount_micros == bound.input_tokens_bound + 2 * bound.output_tokens_bound


async def test_an_anthropic_call_is_metered_in_its_own_shape(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    body = {"system": "Be brief.", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 20}
    outcome = await call(runtime, new_wallet.wallet_id, "anthropic", "claude-3-5-haiku-latest", body)
    [sent] = fake.received
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-upstream-anthropic"
    assert outcome.settlement.usage == shapes.Usage(len(b"Be brief.Say hello") // 4 + 1, 6)
    assert outcome.settlement.cost.total_micros > 0
    assert verify.verify(runtime.db) == []


async def test_a_per_call_data_service_costs_its_price(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    outcome = await call(runtime, new_wallet.wallet_id, "weather", None, {"city": "Zürich"})
    assert outcome.result == {"echo": {"city": "Zürich"}, "source": "fake data service"}
    assert outcome.settlement.cost == prices.Cost(2_000, 2_000)
    assert ledger_state(runtime.db, new_wallet.wallet_id).balance_micros == 998_000


async def test_a_call_the_balance_cannot_cover_is_402_before_any_traffic(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    with pytest.raises(InsufficientBalance) as raised:
        await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO)
    refusal = raised.value.to_dict()
    assert (refusal["error"], refusal["code"]) == ("Insufficient wallet balance", 402)
    assert (refusal["available"], refusal["short_by"]) == ("0.000000", refusal["required"])
    assert fake.received == []
    [record] = records(runtime)  # recorded, so the user sees why
    assert (record.status, record.ran, record.cost_micros, record.error, record.error_code) == (
        "error",
        False,
        0,
        "Insufficient wallet balance",
        402,
    )
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros, state.holds, state.entries) == (0, 0, 0, 0)


async def test_a_failed_upstream_call_releases_its_hold_and_charges_nothing(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    fake.fail_status = 500
    with pytest.raises(UpstreamError) as raised:
        await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO)
    assert raised.value.code == 502
    assert "nothing was charged" in raised.value.message
    assert len(fake.received) == 1
    [record] = records(runtime)
    assert (record.status, record.ran, record.cost_micros, record.error_code) == ("error", True, 0, 502)
    with runtime.db.read() as session:
        [hold] = session.exec(select(Hold)).all()
        charges = session.exec(select(LedgerEntry).where(LedgerEntry.kind == "charge")).all()
    assert hold.status == "voided" and charges == []
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros) == (1_000_000, 0)
    assert verify.verify(runtime.db) == []


async def test_an_upstream_400_charges_nothing(runtime: Runtime, new_wallet, fake: FakeProvider) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    fake.fail_status = 400
    with pytest.raises(BadRequest):
        await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO)
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros, state.pending_holds) == (1_000_000, 0, 0)


async def test_an_unreachable_provider_is_502(runtime: Runtime, new_wallet, fake: FakeProvider) -> None:
    from dataclasses import replace

    fund(runtime, new_wallet.wallet_id, "1.00")
    service = runtime.catalog.services["cheapchat"]
    runtime.catalog.services["cheapchat"] = replace(service, base_url="http://127.0.0.1:9/v1")
    with pytest.raises(UpstreamError):
        await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO)
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros, state.pending_holds) == (1_000_000, 0, 0)


async def test_a_free_service_runs_with_no_funds_and_is_recorded(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    outcome = await call(runtime, new_wallet.wallet_id, "ollama", "llama3.2", HELLO)
    assert outcome.settlement.cost == prices.FREE
    assert fake.received[0].body["model"] == "llama3.2"
    assert "authorization" not in fake.received[0].headers
    [record] = records(runtime)
    assert (record.status, record.ran, record.cost_micros, record.input_tokens) == ("completed", True, 0, 3)
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.entries, state.pending_holds) == (0, 0, 0)


async def test_an_unpriced_paid_model_is_400_and_nothing_happens(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    with pytest.raises(BadRequest) as raised:
        await call(runtime, new_wallet.wallet_id, "openai", "gpt-nonexistent-9000", HELLO)
    assert "no known price" in raised.value.message
    assert fake.received == [] and records(runtime) == []


async def test_max_cost_below_the_bound_is_402_before_any_traffic(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    before = ledger_state(runtime.db, new_wallet.wallet_id)
    with pytest.raises(PaymentRequired) as raised:
        await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO, max_cost_micros=10)
    assert raised.value.code == 402 and "max_cost" in raised.value.message
    assert fake.received == []
    [record] = records(runtime)
    assert (record.ran, record.cost_micros, record.error_code) == (False, 0, 402)
    after = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (after.balance_micros, after.held_micros, after.holds) == (before.balance_micros, 0, 0)
    # A max_cost at or above the bound lets the call run.
    await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO, max_cost_micros=10_000)
    assert len(fake.received) == 1


@pytest.mark.parametrize(
    ("service", "model", "body", "error"),
    [
        ("nope", "cheap-1", HELLO, NotFound),
        (None, "cheap-1", HELLO, BadRequest),
        ("cheapchat", None, HELLO, BadRequest),
        ("cheapchat", "", HELLO, BadRequest),
        ("cheapchat", "cheap-1", {"messages": []}, BadRequest),
        (
            "cheapchat",
            "cheap-1",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
            BadRequest,
        ),
        (
            "cheapchat",
            "cheap-1",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": True},
            BadRequest,
        ),
        ("cheapchat", "cheap-1", {"messages": [{"role": "user", "content": "hi"}], "n": 0}, BadRequest),
        ("cheapchat", "cheap-1", {"messages": [{"role": "user", "content": "\ud800"}]}, BadRequest),
        ("weather", None, {"city": "\udfff"}, BadRequest),
        ("weather", None, ["not", "an", "object"], BadRequest),
        # A streamed answer would be billed upstream but unreadable (and uncharged) here.
        ("cheapchat", "cheap-1", {**HELLO, "stream": True}, BadRequest),
    ],
)
async def test_malformed_calls_change_nothing(
    runtime: Runtime, new_wallet, fake: FakeProvider, service, model, body, error
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    before = ledger_state(runtime.db, new_wallet.wallet_id)
    with pytest.raises(error):
        await call(runtime, new_wallet.wallet_id, service, model, body)
    assert ledger_state(runtime.db, new_wallet.wallet_id) == before
    assert fake.received == []


# -- the upper bound really bounds ---------------------------------------------------------

MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]), "content": st.text(max_size=300)}
)


@settings(max_examples=300)
@given(st.lists(MESSAGE, min_size=1, max_size=8), st.integers(min_value=1, max_value=4096))
def test_the_openai_bound_covers_any_unicode_prompt(messages: list[dict[str, str]], max_tokens: int) -> None:
    prepared = shapes.prepare_openai(
        {"messages": messages, "max_tokens": max_tokens}, upstream_model="m", default_max_tokens=4096
    )
    # The fake provider's count, like every byte-level BPE tokenizer's, is at most one token
    # per UTF-8 byte of text; the bound adds role markers on top of that.
    assert prepared.input_tokens_bound >= FakeProvider().input_tokens(prepared.body)
    content_bytes = sum(len(message["content"].encode()) for message in messages)
    assert prepared.input_tokens_bound >= content_bytes + shapes.PER_MESSAGE_ALLOWANCE_TOKENS * len(messages)
    assert prepared.output_tokens_bound == max_tokens


@settings(max_examples=200)
@given(
    st.text(max_size=200), st.lists(MESSAGE, min_size=1, max_size=6), st.integers(min_value=1, max_value=8)
)
def test_the_bound_covers_system_prompts_and_choices(
    system: str, messages: list[dict[str, str]], choices: int
) -> None:
    anthropic = shapes.prepare_anthropic(
        {"system": system, "messages": messages}, upstream_model="m", default_max_tokens=100
    )
    assert anthropic.input_tokens_bound >= FakeProvider().input_tokens(anthropic.body)
    assert anthropic.input_tokens_bound >= len(system.encode()) + sum(
        len(m["content"].encode()) for m in messages
    )
    assert anthropic.output_tokens_bound == 100 == anthropic.body["max_tokens"]
    openai = shapes.prepare_openai(
        {"messages": messages, "n": choices}, upstream_model="m", default_max_tokens=100
    )
    assert openai.output_tokens_bound == 100 * choices


def test_the_bound_counts_every_byte_of_multibyte_text() -> None:
    # One emoji is 4 UTF-8 bytes and may be up to 4 tokens; JSON escapes only make it longer.
    body = {"messages": [{"role": "user", "content": "🚀" * 100}]}
    prepared = shapes.prepare_openai(body, upstream_model="m", default_max_tokens=1)
    assert prepared.input_tokens_bound >= 400 + shapes.PER_MESSAGE_ALLOWANCE_TOKENS
    assert len(json.dumps(prepared.body, ensure_ascii=False).encode()) <= prepared.input_tokens_bound


@settings(max_examples=50, deadline=None)
@given(st.lists(MESSAGE, min_size=1, max_size=4))
def test_the_hold_covers_the_charge_for_any_prompt(messages: list[dict[str, str]]) -> None:
    service = prices_service()
    prepared = shapes.prepare_openai(
        {"messages": messages, "max_tokens": 30}, upstream_model="m", default_max_tokens=1
    )
    hold = prices.cost_of(service, "m", prepared.input_tokens_bound, prepared.output_tokens_bound)
    reported = FakeProvider().input_tokens(prepared.body)
    charge = prices.cost_of(service, "m", reported, len(FakeProvider().words(prepared.body)))
    assert charge.total_micros <= hold.total_micros


def prices_service():
    from decimal import Decimal

    from lava_mcp.providers.catalog import ModelPrice, Service

    return Service(
        id="s",
        shape="openai",
        pricing="per_token",
        base_url="http://127.0.0.1:9",
        models={"m": ModelPrice(Decimal("0.15"), Decimal("0.60"))},
    )


async def test_a_paid_answer_without_usage_is_charged_its_hold_not_nothing(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    fake.omit_usage = True
    outcome = await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO)
    [record] = records(runtime)
    assert outcome.settlement.cost.total_micros == record.hold_micros > 0
    assert record.cost_micros == record.hold_micros
    assert ledger_state(runtime.db, new_wallet.wallet_id).balance_micros == 1_000_000 - record.hold_micros
    assert verify.verify(runtime.db) == []
