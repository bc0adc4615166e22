"""What the model reads (issue 8 §3): titles, truthful annotations, an outputSchema every
success answer validates against, portable input schemas, descriptions that say when to
ask the user, `list_services`, decimal `max_cost` numbers and a paid call's `_meta`.

The SDK's own client validates each success answer against the tool's outputSchema, so
every `call_tool` here is also a schema check.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from lava_mcp.runtime import Runtime
from tests.conftest import fund
from tests.fake_provider import FakeProvider
from tests.mcp.conftest import connect, error, ok

HELLO = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}
READ_TOOLS = {"get_balance", "usage_summary", "list_requests", "list_services"}
MONEY_TOOLS = {"add_funds", "call_paid_service"}


def walk(schema: Any) -> list[dict[str, Any]]:
    """Every subschema of a JSON schema (dicts only)."""
    found: list[dict[str, Any]] = []
    if isinstance(schema, dict):
        found.append(schema)
        for value in schema.values():
            found.extend(walk(value))
    elif isinstance(schema, list):
        for value in schema:
            found.extend(walk(value))
    return found


async def test_every_tool_has_a_title_annotations_and_an_output_schema(runtime: Runtime, new_wallet) -> None:
    async with connect(runtime, new_wallet) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == READ_TOOLS | MONEY_TOOLS
    for name, tool in tools.items():
        assert tool.title, name
        assert tool.annotations is not None, name
        assert tool.output_schema is not None and tool.output_schema["type"] == "object", name
        Draft202012Validator.check_schema(tool.output_schema)
        Draft202012Validator.check_schema(tool.input_schema)
    for name in READ_TOOLS:
        annotations = tools[name].annotations
        assert annotations is not None and annotations.read_only_hint is True, name
    for name in MONEY_TOOLS:
        annotations = tools[name].annotations
        assert annotations is not None
        # Said outright, not left to the spec's defaults: both spend money, irreversibly,
        # through a third party, and a repeat may spend again.
        assert (
            annotations.read_only_hint,
            annotations.destructive_hint,
            annotations.idempotent_hint,
            annotations.open_world_hint,
        ) == (False, True, False, True), name


async def test_input_schemas_are_portable(runtime: Runtime, new_wallet) -> None:
    """One `type` per schema (alternatives as anyOf), no `format` a strict validator lacks,
    numeric bounds only beside a numeric type."""
    async with connect(runtime, new_wallet) as client:
        tools = (await client.list_tools()).tools
    for tool in tools:
        for schema in walk(tool.input_schema):
            assert not isinstance(schema.get("type"), list), (tool.name, schema)
            assert "format" not in schema, (tool.name, schema)
            if "minimum" in schema or "maximum" in schema:
                assert schema.get("type") in ("integer", "number"), (tool.name, schema)
    amount = next(tool for tool in tools if tool.name == "add_funds").input_schema["properties"]["amount"]
    assert [choice["type"] for choice in amount["anyOf"]] == ["number", "string", "null"]


async def test_descriptions_tell_the_model_when_to_ask_and_what_to_say(runtime: Runtime, new_wallet) -> None:
    async with connect(runtime, new_wallet) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    add_funds = tools["add_funds"].description or ""
    assert "CHARGES THE CARD IMMEDIATELY" in add_funds and "confirm the amount and the card" in add_funds
    assert "without an amount" in add_funds and "SANDBOX" in add_funds
    paid = tools["call_paid_service"].description or ""
    assert "list_services" in paid and "402" in paid and "add_funds" in paid and "max_cost" in paid
    assert "\n" not in paid  # one paragraph, not indented source text


async def test_every_success_answer_matches_its_output_schema(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "5.00")
    async with connect(runtime, new_wallet) as client:
        assert ok(await client.call_tool("get_balance", {}))["sandbox"] is True
        assert ok(await client.call_tool("add_funds", {}))["status"] == "amount_required"
        assert ok(await client.call_tool("add_funds", {"amount": 25}))["status"] == "checkout_required"
        ok(
            await client.call_tool(
                "call_paid_service", {"service": "cheapchat", "model": "cheap-1", "input": HELLO}
            )
        )
        ok(await client.call_tool("call_paid_service", {"service": "weather", "input": {"city": "Oslo"}}))
        assert ok(await client.call_tool("usage_summary", {}))["total_requests"] == 2
        assert len(ok(await client.call_tool("list_requests", {}))["requests"]) == 2
        ok(await client.call_tool("list_services", {}))


async def test_list_services_shows_models_prices_and_what_is_free(runtime: Runtime, new_wallet) -> None:
    async with connect(runtime, new_wallet) as client:
        listed = ok(await client.call_tool("list_services", {}))["services"]
        by_id = {service["id"]: service for service in listed}
        assert {"openai", "anthropic", "ollama", "cheapchat", "weather"} <= set(by_id)
        assert by_id["cheapchat"]["models"] == [
            {"model": "cheap-1", "input_per_million_tokens": "1.00", "output_per_million_tokens": "2.00"}
        ]
        assert (by_id["ollama"]["free"], by_id["ollama"]["pricing"]) == (True, "free")
        assert (by_id["weather"]["kind"], by_id["weather"]["price_per_call"]) == ("data", "0.002000")
        mini = next(model for model in by_id["openai"]["models"] if model["model"] == "gpt-4o-mini")
        assert (mini["input_per_million_tokens"], mini["output_per_million_tokens"]) == ("0.15", "0.60")

        only = ok(await client.call_tool("list_services", {"service": "cheapchat"}))["services"]
        assert [service["id"] for service in only] == ["cheapchat"]
        error(await client.call_tool("list_services", {"service": "nope"}), 404)


async def test_max_cost_takes_json_numbers_as_their_decimal_text(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    """0.00005 reaches the tool as the float 5e-05: it is a limit of 50 micro-dollars, not
    an exponent to refuse (400). This call's hold is 266 micro-dollars."""
    fund(runtime, new_wallet.wallet_id, "1.00")
    call = {"service": "cheapchat", "model": "cheap-1", "input": HELLO}
    async with connect(runtime, new_wallet) as client:
        refused = error(await client.call_tool("call_paid_service", {**call, "max_cost": 0.00005}), 402)
        assert "more than max_cost" in refused["error"], refused
        assert fake.received == []
        paid = ok(await client.call_tool("call_paid_service", {**call, "max_cost": 0.0003}))
        assert paid["cost"] == "0.000015"
        error(await client.call_tool("call_paid_service", {**call, "max_cost": 0.0000001}), 400)  # 7 decimals


async def test_a_paid_call_carries_its_request_id_hold_and_charge_in_meta(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    async with connect(runtime, new_wallet) as client:
        answer = await client.call_tool(
            "call_paid_service", {"service": "cheapchat", "model": "cheap-1", "input": HELLO}
        )
        body = ok(answer)
        assert answer.meta is not None
        assert answer.meta["lava-mcp/request_id"] == body["request_id"]
        assert answer.meta["lava-mcp/charged"] == body["cost"] == "0.000015"
        held = answer.meta["lava-mcp/held"]
        assert int(held.replace(".", "")) >= int(body["cost"].replace(".", "")) > 0
        balance = await client.call_tool("get_balance", {})
        assert "lava-mcp/request_id" not in (balance.meta or {})  # only paid calls carry it
