"""Fuzzing every MCP tool through the real SDK client, in memory, against the real server.

Arguments come from each tool's `inputSchema` as the client lists it (`strategies.
tool_arguments`), mixed with plausible values and junk. For every call:

- nothing crashes: the answer is a success the SDK client validated against the tool's
  `outputSchema`, or an error whose text is exactly the documented JSON `{"error": str,
  "code": int, ...}` with a code the tool documents (never 500), or an MCP invalid-params
  error from the SDK itself;
- the ledger moves only as documented. Read-only tools change nothing. `add_funds` runs on a
  wallet with no saved card, so no outcome can credit it: the ledger never changes.
  `call_paid_service` may succeed: then the balance falls by exactly the `cost` it answered,
  nothing stays held, and the `balance` it answered is the wallet's; a refusal or failure
  charges nothing (one refused or failed request may be recorded, one voided hold left).
- only `call_paid_service` reaches the provider, at most once per call, and a refusal the
  provider did not make sent it nothing;
- the ledger verifies after every tool's run (`lava_mcp.core.verify`).

The examples run in a worker thread (hypothesis drives a plain function); each call hops
back to the test's event loop, where the SDK client's task group lives.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
from hypothesis import HealthCheck, example, given, settings
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult

from lava_mcp.core import verify
from lava_mcp.money import format_dollars
from lava_mcp.runtime import Runtime
from tests.conftest import LedgerState, fund, ledger_state
from tests.fake_provider import FakeProvider
from tests.fuzz.strategies import EDGE_ARGUMENTS, paid_calls, tool_arguments
from tests.mcp.conftest import body_of, connect, ok

EXAMPLES_PER_TOOL = 300
TOOLS = ["get_balance", "add_funds", "usage_summary", "list_requests", "list_services", "call_paid_service"]
# The codes each tool documents for its refusals (DESIGN §4); 500 is never one.
ERROR_CODES: dict[str, set[int]] = {
    "get_balance": set(),
    "add_funds": {400, 404, 409},  # 404: a payment_method_id the wallet has not saved
    "usage_summary": {400},
    "list_requests": {400},
    "list_services": {400, 404},
    "call_paid_service": {400, 402, 403, 404, 429, 502},
}
# Calls that are right but for at most one field, for the tools whose success needs several
# fields right together.
WELL_FORMED = {"call_paid_service": paid_calls()}
ADD_FUNDS_STATUSES = {"amount_required", "checkout_required"}  # no saved card: nothing else


def micros(dollars: str) -> int:
    return int(Decimal(dollars) * 1_000_000)


def check_error(tool: str, arguments: dict[str, Any], result: CallToolResult) -> dict[str, Any]:
    body = body_of(result)
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("code"), int) and not isinstance(body["code"], bool), body
    assert body["code"] in ERROR_CODES[tool], (tool, arguments, body)
    return body


def check_ledger(
    tool: str, arguments: dict[str, Any], result: CallToolResult, before: LedgerState, after: LedgerState
) -> None:
    if tool != "call_paid_service":
        assert after == before, (tool, arguments, result)
        return
    assert after.pending_holds == 0 and after.held_micros == before.held_micros, arguments
    if result.is_error:
        assert (after.balance_micros, after.entries) == (before.balance_micros, before.entries), arguments
        assert before.requests <= after.requests <= before.requests + 1, arguments
        assert before.holds <= after.holds <= before.holds + 1, arguments
        return
    body = ok(result)
    assert after.balance_micros == before.balance_micros - micros(body["cost"]), (arguments, body)
    assert body["balance"] == format_dollars(after.balance_micros - after.held_micros), body
    assert after.requests == before.requests + 1, arguments
    assert after.entries in (before.entries, before.entries + 1), arguments


@pytest.mark.parametrize("tool", TOOLS)
async def test_every_tool_answers_fuzzed_arguments_with_its_json_and_moves_no_money_it_should_not(
    runtime: Runtime, new_wallet: Any, fake: FakeProvider, tool: str
) -> None:
    fund(runtime, new_wallet.wallet_id, "5.00")
    outcomes: Counter[str] = Counter()
    async with connect(runtime, new_wallet) as client:
        listed = {listed.name: listed for listed in (await client.list_tools()).tools}
        assert set(listed) == set(TOOLS)  # a new tool must be fuzzed too
        schema = listed[tool].input_schema
        # Some history, so the list and summary tools have pages and days to render.
        ok(
            await client.call_tool(
                "call_paid_service",
                {
                    "service": "cheapchat",
                    "model": "cheap-1",
                    "input": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
                },
            )
        )

        async def call(arguments: dict[str, Any]) -> CallToolResult | MCPError:
            try:
                return await client.call_tool(tool, arguments)
            except MCPError as error:
                return error

        def check_one_call(arguments: dict[str, Any]) -> None:
            before = ledger_state(runtime.db, new_wallet.wallet_id)
            traffic = len(fake.received)
            answer = anyio.from_thread.run(call, arguments)
            after = ledger_state(runtime.db, new_wallet.wallet_id)
            sent = len(fake.received) - traffic
            # Only a paid call reaches a provider, at most once; a refusal the provider did
            # not make (its 400 or 429, or a 502) sent it nothing.
            assert sent == 0 or (tool == "call_paid_service" and sent == 1), (arguments, sent)
            if sent and not isinstance(answer, MCPError) and answer.is_error:
                assert body_of(answer)["code"] in (400, 429, 502), (arguments, body_of(answer))
            if isinstance(answer, MCPError):
                # The SDK's own refusal of arguments it can't take: nothing ran.
                assert answer.error.code == INVALID_PARAMS, (arguments, answer.error)
                assert after == before, arguments
                outcomes["invalid params"] += 1
                return
            if answer.is_error:
                outcomes[f"error {check_error(tool, arguments, answer)['code']}"] += 1
            else:
                body = ok(answer)
                if tool == "add_funds":
                    assert body["status"] in ADD_FUNDS_STATUSES, (arguments, body)
                outcomes["ok"] += 1
            check_ledger(tool, arguments, answer, before, after)

        # Every edge case runs as an explicit example, then the drawn ones.
        one_call = given(arguments=tool_arguments(schema, WELL_FORMED.get(tool)))(check_one_call)
        for edge in EDGE_ARGUMENTS[tool]:
            one_call = example(arguments=edge)(one_call)
        one_call = settings(
            max_examples=EXAMPLES_PER_TOOL,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )(one_call)
        await anyio.to_thread.run_sync(one_call)
    assert verify.verify(runtime.db) == []
    print(f"\nfuzz mcp {tool}: {sum(outcomes.values())} calls {dict(sorted(outcomes.items()))}")
    assert sum(outcomes.values()) >= EXAMPLES_PER_TOOL + len(EDGE_ARGUMENTS[tool])
    # The strategy reaches past the first check: every tool both answered and refused.
    assert outcomes["ok"] > 0, outcomes
    if tool != "get_balance":
        assert len(outcomes) > 1, outcomes
