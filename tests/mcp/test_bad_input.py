"""Bad input on every tool → the documented `{"error", "code"}` JSON and no state change."""

from __future__ import annotations

from typing import Any

import pytest

from lava_mcp.runtime import Runtime
from tests.conftest import fund, ledger_state
from tests.fake_provider import FakeProvider
from tests.mcp.conftest import connect, error, ok

HELLO = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}
SQL = "'; DROP TABLE wallet; --"
UNICODE = "ünïcødé 🚀 \u202e\u0000 ☃"
CHEAP = {"service": "cheapchat", "model": "cheap-1", "input": HELLO}

CASES: list[tuple[str, dict[str, Any], int]] = [
    # list_requests: limit outside 1..100, wrong types, bad cursors
    ("list_requests", {"limit": 0}, 400),
    ("list_requests", {"limit": 101}, 400),
    ("list_requests", {"limit": -1}, 400),
    ("list_requests", {"limit": "abc"}, 400),
    ("list_requests", {"limit": 1.5}, 400),
    ("list_requests", {"limit": True}, 400),
    ("list_requests", {"limit": "²"}, 400),
    ("list_requests", {"limit": [10]}, 400),
    ("list_requests", {"limit": {"n": 10}}, 400),
    ("list_requests", {"limit": SQL}, 400),
    ("list_requests", {"before": "not-a-cursor"}, 400),
    ("list_requests", {"before": 12345}, 400),
    ("list_requests", {"before": SQL}, 400),
    ("list_requests", {"before": UNICODE}, 400),
    ("list_requests", {"before": "req_" + "g" * 28}, 400),
    # usage_summary: dates in the wrong format, since > until, wrong types
    ("usage_summary", {"since": "23/11/2026"}, 400),
    ("usage_summary", {"since": "2026-11-23T00:00:00Z"}, 400),
    ("usage_summary", {"since": "2026-02-30"}, 400),
    ("usage_summary", {"since": "20261123"}, 400),
    ("usage_summary", {"until": "tomorrow"}, 400),
    ("usage_summary", {"since": 20261123}, 400),
    ("usage_summary", {"since": ["2026-11-23"]}, 400),
    ("usage_summary", {"since": "2026-11-20", "until": "2026-11-10"}, 400),
    ("usage_summary", {"since": "2020-01-01", "until": "2026-01-01"}, 400),
    ("usage_summary", {"since": SQL}, 400),
    ("usage_summary", {"until": UNICODE}, 400),
    ("usage_summary", {"until": "9999-12-31"}, 400),  # a 500 before (found by fuzzing)
    ("usage_summary", {"until": "0001-01-03"}, 400),
    # call_paid_service: unknown service, wrong types, malformed input, bad max_cost
    ("call_paid_service", {"service": "no-such-service", "input": HELLO}, 404),
    ("call_paid_service", {"service": SQL, "input": HELLO}, 404),
    ("call_paid_service", {"service": UNICODE, "input": HELLO}, 404),
    ("call_paid_service", {"service": "", "input": HELLO}, 400),
    ("call_paid_service", {"service": 42, "input": HELLO}, 400),
    ("call_paid_service", {"service": ["cheapchat"], "input": HELLO}, 400),
    ("call_paid_service", {"input": HELLO}, 400),
    ("call_paid_service", {"service": "cheapchat", "model": "cheap-1"}, 400),
    ("call_paid_service", {}, 400),
    ("call_paid_service", {**CHEAP, "input": "Say hello"}, 400),
    ("call_paid_service", {**CHEAP, "input": ["Say hello"]}, 400),
    ("call_paid_service", {**CHEAP, "input": {}}, 400),
    ("call_paid_service", {**CHEAP, "input": {"messages": "Say hello"}}, 400),
    ("call_paid_service", {**CHEAP, "input": {**HELLO, "max_tokens": 0}}, 400),
    ("call_paid_service", {**CHEAP, "input": {**HELLO, "max_tokens": -5}}, 400),
    ("call_paid_service", {**CHEAP, "input": {**HELLO, "max_tokens": "50"}}, 400),
    ("call_paid_service", {**CHEAP, "input": {**HELLO, "max_tokens": 10**7}}, 400),
    ("call_paid_service", {**CHEAP, "input": {**HELLO, "n": 100}}, 400),
    ("call_paid_service", {**CHEAP, "input": {**HELLO, "stream": True}}, 400),
    ("call_paid_service", {**CHEAP, "model": 7}, 400),
    ("call_paid_service", {**CHEAP, "model": ""}, 400),
    ("call_paid_service", {**CHEAP, "model": SQL}, 400),
    ("call_paid_service", {**CHEAP, "model": UNICODE}, 400),
    ("call_paid_service", {"service": "openai", "input": HELLO}, 400),  # a paid service needs a model
    (
        "call_paid_service",
        {"service": "ollama", "model": "ollama/", "input": HELLO},
        400,
    ),  # no model after the prefix
    ("call_paid_service", {"service": "weather", "input": "city=Oslo"}, 400),
    ("call_paid_service", {**CHEAP, "max_cost": -1}, 400),
    ("call_paid_service", {**CHEAP, "max_cost": 0}, 400),
    ("call_paid_service", {**CHEAP, "max_cost": "0.00"}, 400),
    ("call_paid_service", {**CHEAP, "max_cost": "NaN"}, 400),
    ("call_paid_service", {**CHEAP, "max_cost": "1.2345678"}, 400),  # costs have 6 decimals
    ("call_paid_service", {**CHEAP, "max_cost": "1e2"}, 400),
    ("call_paid_service", {**CHEAP, "max_cost": 1e2 + 0.0000001}, 400),
    ("call_paid_service", {**CHEAP, "max_cost": True}, 400),
    ("call_paid_service", {**CHEAP, "max_cost": "five dollars"}, 400),
    ("call_paid_service", {**CHEAP, "max_cost": SQL}, 400),
    ("call_paid_service", {**CHEAP, "max_cost": [1]}, 400),
    # add_funds: only its amount rules here (funding itself is tested with payments)
    ("add_funds", {"amount": -25}, 400),
    ("add_funds", {"amount": 0}, 400),
    ("add_funds", {"amount": "0.00"}, 400),
    ("add_funds", {"amount": "NaN"}, 400),
    ("add_funds", {"amount": "25.001"}, 400),
    ("add_funds", {"amount": 25.001}, 400),
    ("add_funds", {"amount": "2.5e1"}, 400),
    ("add_funds", {"amount": 1e20}, 400),
    ("add_funds", {"amount": True}, 400),
    ("add_funds", {"amount": "twenty"}, 400),
    ("add_funds", {"amount": "9.99"}, 400),
    ("add_funds", {"amount": "10000.01"}, 400),
    ("add_funds", {"amount": [25]}, 400),
    ("add_funds", {"amount": SQL}, 400),
    ("add_funds", {"amount": UNICODE}, 400),
    ("add_funds", {"amount": "25", "use_checkout": "yes"}, 400),
    ("add_funds", {"amount": "25", "payment_method_id": 12}, 400),
    # An integer past CPython's 4,300-digit limit for int-to-text, where the input is shown
    # in an error or measured: a 500 before (found by probing with the fuzzers' values).
    ("call_paid_service", {**CHEAP, "input": {**HELLO, "service_tier": 10**5000}}, 400),
    ("call_paid_service", {**CHEAP, "input": {**HELLO, "tools": [{"type": 10**5000}]}}, 400),
    ("call_paid_service", {**CHEAP, "input": {**HELLO, "metadata": {"n": 10**5000}}}, 400),
    ("call_paid_service", {"service": "weather", "input": {"city": 10**5000}}, 400),
    (
        "call_paid_service",
        {
            "service": "anthropic",
            "model": "claude-haiku-4-5",
            "input": {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "x", "cache_control": {"ttl": 10**5000}}],
                    }
                ],
                "max_tokens": 5,
            },
        },
        400,
    ),
]


@pytest.mark.parametrize(
    ("tool", "arguments", "code"), CASES, ids=[f"{tool}-{index}" for index, (tool, _, _) in enumerate(CASES)]
)
async def test_bad_input_is_the_error_json_and_changes_nothing(
    runtime: Runtime, new_wallet, fake: FakeProvider, tool: str, arguments: dict[str, Any], code: int
) -> None:
    fund(runtime, new_wallet.wallet_id, "5.00")
    async with connect(runtime, new_wallet) as client:
        ok(await client.call_tool("call_paid_service", CHEAP))  # some history to keep intact
        before = ledger_state(runtime.db, new_wallet.wallet_id)
        balance = ok(await client.call_tool("get_balance", {}))
        traffic = len(fake.received)

        body = error(await client.call_tool(tool, arguments), code)

        assert set(body) <= {"error", "code", "next_step", "min", "max"}
        assert ledger_state(runtime.db, new_wallet.wallet_id) == before
        assert ok(await client.call_tool("get_balance", {})) == balance
        assert len(fake.received) == traffic
        assert len(ok(await client.call_tool("list_requests", {}))["requests"]) == 1


async def test_sql_looking_text_is_stored_and_shown_as_text(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    """Text that looks like SQL reaches the provider and the request list verbatim."""
    fund(runtime, new_wallet.wallet_id, "5.00")
    body = {"messages": [{"role": "user", "content": SQL + UNICODE}], "max_tokens": 5}
    async with connect(runtime, new_wallet) as client:
        ok(await client.call_tool("call_paid_service", {**CHEAP, "input": body}))
        assert fake.received[0].body["messages"][0]["content"] == SQL + UNICODE
        assert len(ok(await client.call_tool("list_requests", {}))["requests"]) == 1
    assert ledger_state(runtime.db, new_wallet.wallet_id).entries == 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"since": "2026-11-20", "until": "2026-11-10"}, "since must not be after until"),
        ({"since": "yesterday"}, "since must be an ISO date like 2026-11-23"),
        ({"until": "2026-02-30"}, "until '2026-02-30' is not a real date"),
    ],
)
async def test_usage_summary_errors_name_its_own_arguments(
    runtime: Runtime, new_wallet, arguments: dict[str, Any], message: str
) -> None:
    """The tool's arguments are `since` and `until` (REST's `/v1/usage` says start and end)."""
    async with connect(runtime, new_wallet) as client:
        body = error(await client.call_tool("usage_summary", arguments), 400)
    assert body["error"] == message
