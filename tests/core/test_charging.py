"""The charging rule (DESIGN §14): a call is charged the usage its provider reported,
priced as the provider prices it (prompt caching included), capped at its hold; no usable
usage is charged the hold. Fields whose price the hold can't bound are refused."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from sqlmodel import select

from lava_mcp.core import verify
from lava_mcp.errors import BadRequest, Forbidden, InsufficientBalance, UpstreamError
from lava_mcp.money import dollars_to_micros_ceil
from lava_mcp.providers import prices, shapes
from lava_mcp.providers.catalog import ModelPrice
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import Hold, RequestRecord, Wallet
from tests.conftest import fund, ledger_state
from tests.fake_provider import ConnectionDropper, FakeProvider

HELLO = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}
HAIKU = "claude-3-5-haiku-latest"


async def call(
    runtime: Runtime, wallet_id: str, service: str, model: str | None, body: object, **options: Any
):
    return await runtime.metering.call(
        wallet_id=wallet_id, service_id=service, model=model, body=body, **options
    )


def only_record(runtime: Runtime) -> RequestRecord:
    with runtime.db.read() as session:
        [record] = session.exec(select(RequestRecord)).all()
    return record


def genai_micros(model: str, provider: str, **usage: int) -> int:
    calculation = calc_price(Usage(**usage), model_ref=model, provider_id=provider)
    return dollars_to_micros_ceil(calculation.total_price)


# -- prompt caching ----------------------------------------------------------------------------


async def test_anthropic_cache_writes_and_reads_are_priced_as_anthropic_prices_them(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    fake.cache_read_tokens, fake.cache_write_tokens, fake.cache_write_1h_tokens = 200, 300, 100
    body = {
        "system": [
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 2000,
    }
    outcome = await call(runtime, new_wallet.wallet_id, "anthropic", HAIKU, body)
    uncached = len(b"Be brief.Say hello") // 4 + 1
    assert outcome.settlement.usage == shapes.Usage(uncached, 6, 200, 300, 100)
    # genai-prices counts every input token in input_tokens and prices the cached apart:
    # 5-minute writes at 1.25x input, 1-hour writes at 2x, reads at 0.1x.
    expected = genai_micros(
        HAIKU,
        "anthropic",
        input_tokens=uncached + 200 + 300,
        output_tokens=6,
        cache_read_tokens=200,
        cache_write_tokens=300,
        cache_write_1h_tokens=100,
    )
    assert outcome.settlement.cost.total_micros == expected
    # By hand, at $0.80/M input, $1.00/M 5m writes, $1.60/M 1h writes, $0.08/M reads, $4/M output.
    by_hand = Decimal("0.8") * uncached + 1 * 200 + Decimal("1.6") * 100 + Decimal("0.08") * 200 + 4 * 6
    assert expected == int(by_hand.to_integral_value(rounding="ROUND_CEILING"))
    record = only_record(runtime)
    assert (record.input_tokens, record.cache_read_tokens, record.cache_write_tokens) == (uncached, 200, 300)
    assert (record.cost_micros, record.charge_basis) == (expected, "usage")
    assert verify.verify(runtime.db) == []


async def test_openai_cached_tokens_are_part_of_prompt_tokens_and_priced_as_cache_reads(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    fake.cache_read_tokens = 1000  # prompt_tokens includes them
    body = {"messages": [{"role": "user", "content": "Say hello " * 2000}], "max_tokens": 50}
    outcome = await call(runtime, new_wallet.wallet_id, "openai", "gpt-4o-mini", body)
    prompt = fake.input_tokens(body) + 1000
    assert outcome.settlement.usage == shapes.Usage(prompt - 1000, 6, cache_read_tokens=1000)
    expected = genai_micros(
        "gpt-4o-mini", "openai", input_tokens=prompt, output_tokens=6, cache_read_tokens=1000
    )
    assert outcome.settlement.cost.total_micros == expected
    plain = genai_micros("gpt-4o-mini", "openai", input_tokens=prompt, output_tokens=6)
    assert expected < plain  # cached input is cheaper
    record = only_record(runtime)
    assert (record.input_tokens, record.cache_read_tokens, record.charge_basis) == (
        prompt - 1000,
        1000,
        "usage",
    )


async def test_a_request_that_may_write_the_cache_holds_the_write_price(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    """Cache writes cost more than input (2x for the 1-hour TTL): the hold prices its input
    bound at that rate, so even a prompt written to the cache whole is covered."""
    fund(runtime, new_wallet.wallet_id, "1.00")
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "a long document",
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    }
                ],
            }
        ],
        "max_tokens": 10,
    }
    ticket = await runtime.metering.open(
        wallet_id=new_wallet.wallet_id, service_id="anthropic", model=HAIKU, body=body, endpoint="test"
    )
    bound = ticket.bound
    service = runtime.catalog.get("anthropic")
    all_written = prices.cost_of(
        service,
        HAIKU,
        0,
        bound.output_tokens,
        cache_write_tokens=bound.input_tokens,
        cache_write_1h_tokens=bound.input_tokens,
    )
    plain = prices.cost_of(service, HAIKU, bound.input_tokens, bound.output_tokens)
    assert ticket.hold_micros == all_written.total_micros > plain.total_micros
    # The provider writes every input token at the 1-hour rate: charged in full, not capped.
    charge = runtime.metering.charge(
        ticket, shapes.Usage(0, bound.output_tokens, 0, bound.input_tokens, bound.input_tokens)
    )
    assert (charge.basis, charge.cost.total_micros) == ("usage", ticket.hold_micros)


async def test_catalog_overrides_price_the_cache_as_they_say_or_by_the_safe_rule(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    service = runtime.catalog.services["cheapchat"]
    priced = replace(
        service,
        models={"cheap-1": ModelPrice(Decimal("1"), Decimal("2"), cache_read_per_mtok=Decimal("0.1"))},
    )
    # Declared: reads at $0.10/M. Left out: 5m writes at 1.25x input, 1h writes at 2x.
    assert prices.cost_of(priced, "cheap-1", 10, 0, cache_read_tokens=1000) == prices.Cost(110, 110)
    assert prices.cost_of(
        priced, "cheap-1", 0, 0, cache_write_tokens=100, cache_write_1h_tokens=40
    ) == prices.Cost(155, 155)
    runtime.catalog.services["cheapchat"] = priced
    fund(runtime, new_wallet.wallet_id, "1.00")
    fake.cache_read_tokens = 1000
    outcome = await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO)
    assert outcome.settlement.cost == prices.Cost(3 + 100, 3 + 100 + 12)


@pytest.mark.parametrize(
    ("service", "model", "body"),
    [
        ("openai", "gpt-4o-mini", {**HELLO, "service_tier": "priority"}),
        ("openai", "gpt-4o-mini", {**HELLO, "service_tier": "flex"}),
        ("openai", "gpt-4o-mini", {**HELLO, "max_completion_tokens": 50}),  # and max_tokens
        ("anthropic", HAIKU, {**HELLO, "service_tier": "priority"}),
        (
            "anthropic",
            HAIKU,
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "text",
                                "text": "hi",
                                "cache_control": {"type": "ephemeral", "ttl": "24h"},
                            }
                        ],
                    }
                ],
                "max_tokens": 10,
            },
        ),
        ("anthropic", HAIKU, {**HELLO, "system": [{"type": "text", "text": "x", "cache_control": "yes"}]}),
    ],
)
async def test_fields_whose_price_the_hold_cannot_bound_are_400_before_anything(
    runtime: Runtime, new_wallet, fake: FakeProvider, service: str, model: str, body: dict[str, Any]
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    before = ledger_state(runtime.db, new_wallet.wallet_id)
    with pytest.raises(BadRequest):
        await call(runtime, new_wallet.wallet_id, service, model, body)
    assert fake.received == []
    assert ledger_state(runtime.db, new_wallet.wallet_id) == before


@pytest.mark.parametrize(
    "limits",
    [
        {"max_tokens": 100_000, "max_completion_tokens": None},
        {"max_completion_tokens": 100_000, "max_tokens": None},
    ],
    ids=["max_tokens", "max_completion_tokens"],
)
async def test_a_null_token_limit_beside_a_real_one_is_dropped_and_the_real_one_held(
    runtime: Runtime, new_wallet, fake: FakeProvider, limits: dict[str, Any]
) -> None:
    """`null` is no limit: it is not forwarded, and the one real limit is what the hold
    bounds (not the default cap added beside it)."""
    fund(runtime, new_wallet.wallet_id, "100.00")
    ticket = await runtime.metering.open(
        wallet_id=new_wallet.wallet_id,
        service_id="openai",
        model="gpt-4o-mini",
        body={**HELLO, **limits},
        endpoint="test",
    )
    sent = {
        name: ticket.body[name] for name in ("max_tokens", "max_completion_tokens") if name in ticket.body
    }
    assert list(sent.values()) == [100_000] and ticket.bound.output_tokens == 100_000
    await runtime.metering.fail(ticket, BadRequest("not sent"))


async def test_standard_service_tiers_pass(runtime: Runtime, new_wallet, fake: FakeProvider) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    await call(runtime, new_wallet.wallet_id, "openai", "gpt-4o-mini", {**HELLO, "service_tier": "auto"})
    await call(runtime, new_wallet.wallet_id, "anthropic", HAIKU, {**HELLO, "service_tier": "standard_only"})
    assert len(fake.received) == 2


# -- usage that can't be used --------------------------------------------------------------------

UNUSABLE_OPENAI = [
    {},
    {"prompt_tokens": "3", "completion_tokens": "6"},
    {"prompt_tokens": 3.0, "completion_tokens": 6.0},
    {"prompt_tokens": -3, "completion_tokens": 6},
    {"prompt_tokens": 3},  # no output
    {"prompt_tokens": True, "completion_tokens": 6},
    {"prompt_tokens": 3, "completion_tokens": 6, "prompt_tokens_details": {"cached_tokens": 9}},
    {"prompt_tokens": 10**30, "completion_tokens": 10**30},  # absurd, and too big for a database
    "lots",
]


@pytest.mark.parametrize("usage", UNUSABLE_OPENAI, ids=repr)
async def test_unusable_usage_is_charged_the_hold_never_nothing(
    runtime: Runtime, new_wallet, fake: FakeProvider, usage: Any
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    fake.usage_override = usage
    outcome = await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO)
    record = only_record(runtime)
    assert outcome.settlement.cost.total_micros == record.cost_micros == record.hold_micros > 0
    assert (record.status, record.charge_basis, record.output_tokens) == ("completed", "hold", 50)
    assert verify.verify(runtime.db) == []


@pytest.mark.parametrize(
    "usage",
    [{}, {"input_tokens": 3}, {"input_tokens": 3, "output_tokens": 6, "cache_read_input_tokens": "many"}],
    ids=repr,
)
async def test_unusable_anthropic_usage_is_charged_the_hold(
    runtime: Runtime, new_wallet, fake: FakeProvider, usage: Any
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    fake.usage_override = usage
    await call(runtime, new_wallet.wallet_id, "anthropic", HAIKU, HELLO)
    record = only_record(runtime)
    assert record.cost_micros == record.hold_micros > 0 and record.charge_basis == "hold"


async def test_usage_beyond_the_bound_is_capped_and_says_so(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    fake.overreport_tokens = 200  # more than max_tokens allows, but not absurdly so
    await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO)
    record = only_record(runtime)
    assert (record.charge_basis, record.output_tokens) == ("capped", 206)  # the tokens reported
    assert record.cost_micros == record.hold_micros


# -- at most once ----------------------------------------------------------------------------------


async def test_a_dropped_connection_is_sent_once_502_and_nothing_charged(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    """The provider read the request and closed the connection: it may have run it, so
    it is never resent (a resend could be billed twice). The caller gets the 502."""
    fund(runtime, new_wallet.wallet_id, "1.00")
    dropper = ConnectionDropper()
    with dropper.serve() as url:
        service = runtime.catalog.services["cheapchat"]
        runtime.catalog.services["cheapchat"] = replace(service, base_url=f"{url}/v1")
        with pytest.raises(UpstreamError) as raised:
            await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO)
    assert raised.value.code == 502 and "nothing was charged" in raised.value.message
    assert dropper.received == 1
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros, state.pending_holds) == (1_000_000, 0, 0)
    assert verify.verify(runtime.db) == []


# -- refusals on the spend side ------------------------------------------------------------------


async def test_the_402_keeps_its_words_and_adds_what_is_missing(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "0.01")
    big = {**HELLO, "max_tokens": 10_000}  # up to 20,000 micro-dollars of output alone
    with pytest.raises(InsufficientBalance) as raised:
        await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", big)
    body = raised.value.to_dict()
    record = only_record(runtime)
    with runtime.db.read() as session:
        assert session.exec(select(Hold)).all() == []
    required = int(Decimal(body["required"]) * 1_000_000)
    assert (body["error"], body["code"]) == ("Insufficient wallet balance", 402)
    assert required > 20_000 and body["available"] == "0.010000"
    assert body["short_by"] == f"{Decimal(required - 10_000) / 1_000_000:.6f}"
    assert "max_tokens" in body["next_step"] and "add funds" in body["next_step"]
    assert (record.ran, record.error_code) == (False, 402)


async def test_a_shortfall_is_not_spendable(runtime: Runtime, new_wallet, fake: FakeProvider) -> None:
    """Money a refund or dispute took back that the balance could not cover is owed: the
    wallet can spend only what is left beyond it."""
    fund(runtime, new_wallet.wallet_id, "1.00")
    with runtime.db.write() as session:
        row = session.get(Wallet, new_wallet.wallet_id)
        assert row is not None
        row.shortfall_micros = 999_900
        session.add(row)
    with pytest.raises(InsufficientBalance) as raised:
        await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO)
    assert raised.value.to_dict()["available"] == "0.000100"
    assert raised.value.to_dict()["shortfall"] == "0.999900"
    assert fake.received == []


async def test_a_wallet_in_another_mode_is_403_before_any_traffic(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    """Sandbox money never buys calls on a server whose payments are live."""
    fund(runtime, new_wallet.wallet_id, "1.00")
    runtime.metering.money_mode = "live"
    with pytest.raises(Forbidden) as raised:
        await call(runtime, new_wallet.wallet_id, "cheapchat", "cheap-1", HELLO)
    assert "sandbox" in raised.value.message and "live" in raised.value.message
    assert fake.received == []
    record = only_record(runtime)
    assert (record.ran, record.error_code, record.cost_micros) == (False, 403, 0)
    state = ledger_state(runtime.db, new_wallet.wallet_id)
    assert (state.balance_micros, state.held_micros, state.holds) == (1_000_000, 0, 0)
    # Free services cost the operator nothing: they run in any mode.
    await call(runtime, new_wallet.wallet_id, "ollama", "llama3.2", HELLO)
    assert len(fake.received) == 1
