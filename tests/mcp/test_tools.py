"""The five wallet tools through the SDK's in-memory client (DESIGN §4, §13)."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from lava_mcp.core import holds, ledger, verify
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import utc_now
from tests.conftest import fund, ledger_state
from tests.fake_provider import FakeProvider
from tests.mcp.conftest import connect, error, ok

HELLO = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}
INSUFFICIENT = '{"error": "Insufficient wallet balance", "code": 402}'


async def test_the_five_tools_are_listed_with_their_arguments(runtime: Runtime, new_wallet) -> None:
    async with connect(runtime, new_wallet) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == {
            "get_balance",
            "add_funds",
            "usage_summary",
            "list_requests",
            "call_paid_service",
            "list_services",  # issue 8: the read-only catalog listing
        }
        paid = tools["call_paid_service"].input_schema
        assert paid["required"] == ["service", "input"]
        assert set(paid["properties"]) == {"service", "model", "input", "max_cost"}
        assert set(tools["add_funds"].input_schema["properties"]) == {
            "amount",
            "payment_method_id",
            "use_checkout",
            "idempotency_key",
        }
        assert set(tools["usage_summary"].input_schema["properties"]) == {"since", "until"}
        assert set(tools["list_requests"].input_schema["properties"]) == {"limit", "before"}


async def test_get_balance(runtime: Runtime, new_wallet) -> None:
    async with connect(runtime, new_wallet) as client:
        assert ok(await client.call_tool("get_balance", {}))["balance"] == "0.00"
        fund(runtime, new_wallet.wallet_id, "47.50")
        body = ok(await client.call_tool("get_balance", {}))
        assert (body["balance"], body["currency"], body["held"]) == ("47.50", "USD", "0.00")


async def test_get_balance_shows_what_is_available_rounded_down(runtime: Runtime, new_wallet) -> None:
    async with connect(runtime, new_wallet) as client:
        with runtime.db.write() as session:
            ledger.credit(
                session,
                wallet_id=new_wallet.wallet_id,
                kind="adjustment",
                amount_micros=10_239_999,
                reference="odd",
            )
            holds.reserve(
                session, wallet_id=new_wallet.wallet_id, amount_micros=5_000_001, request_id="r", ttl_s=60
            )
        body = ok(await client.call_tool("get_balance", {}))
        # 10.239999 - 5.000001 = 5.239998 available: shown as 5.23, never 5.24.
        assert (body["balance"], body["held"]) == ("5.23", "5.00")


async def test_a_paid_call_returns_result_cost_balance_and_request_id(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    async with connect(runtime, new_wallet) as client:
        fund(runtime, new_wallet.wallet_id, "47.50")
        body = ok(
            await client.call_tool(
                "call_paid_service", {"service": "cheapchat", "model": "cheap-1", "input": HELLO}
            )
        )
        assert set(body) == {"result", "cost", "balance", "request_id"}
        assert body["result"]["choices"][0]["message"]["content"] == "Hello from the fake provider."
        assert body["cost"] == "0.000015"
        assert body["balance"] == "47.49"  # 47.499985, rounded down
        assert re.fullmatch(r"req_[0-9a-f]{28}", body["request_id"])
        [listed] = ok(await client.call_tool("list_requests", {}))["requests"]
        assert listed["id"] == body["request_id"]
        assert (listed["service"], listed["model"], listed["cost"], listed["succeeded"]) == (
            "cheapchat",
            "cheap-1",
            "0.000015",
            True,
        )
        assert (listed["input_tokens"], listed["output_tokens"]) == (3, 6)
        assert "error" not in listed
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", listed["created_at"])


async def test_the_model_may_come_inside_the_input(runtime: Runtime, new_wallet) -> None:
    async with connect(runtime, new_wallet) as client:
        fund(runtime, new_wallet.wallet_id, "1.00")
        ok(
            await client.call_tool(
                "call_paid_service", {"service": "cheapchat", "input": {**HELLO, "model": "cheap-1"}}
            )
        )


async def test_a_call_the_balance_cannot_cover_is_exactly_the_402_json(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    async with connect(runtime, new_wallet) as client:
        result = await client.call_tool(
            "call_paid_service", {"service": "cheapchat", "model": "cheap-1", "input": HELLO}
        )
        assert result.is_error is True
        [text] = [content.text for content in result.content]  # type: ignore[union-attr]
        assert {key: json.loads(text)[key] for key in ("error", "code")} == json.loads(INSUFFICIENT)
        assert fake.received == []
        [refused] = ok(await client.call_tool("list_requests", {}))["requests"]
        assert (refused["succeeded"], refused["cost"], refused["error"]) == (
            False,
            "0.000000",
            "Insufficient wallet balance",
        )
        usage = ok(await client.call_tool("usage_summary", {}))
        assert (usage["total_requests"], usage["total_spend"]) == (0, "0.000000")
        assert all(day["requests"] == 0 and day["by_service"] == {} for day in usage["days"])


async def test_a_failed_upstream_call_is_502_and_charges_nothing(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    async with connect(runtime, new_wallet) as client:
        fund(runtime, new_wallet.wallet_id, "5.00")
        fake.fail_status = 500
        body = error(
            await client.call_tool(
                "call_paid_service", {"service": "cheapchat", "model": "cheap-1", "input": HELLO}
            ),
            502,
        )
        assert "nothing was charged" in body["error"]
        balance = ok(await client.call_tool("get_balance", {}))
        assert (balance["balance"], balance["held"]) == ("5.00", "0.00")
        [failed] = ok(await client.call_tool("list_requests", {}))["requests"]
        assert (failed["succeeded"], failed["cost"]) == (False, "0.000000")
        assert "HTTP 500" in failed["error"]
        state = ledger_state(runtime.db, new_wallet.wallet_id)
        assert (state.entries, state.pending_holds) == (1, 0)  # only the funding entry
        assert verify.verify(runtime.db) == []


async def test_a_free_service_runs_with_zero_balance_and_is_recorded(
    new_wallet, runtime: Runtime, fake: FakeProvider
) -> None:
    async with connect(runtime, new_wallet) as client:
        body = ok(
            await client.call_tool(
                "call_paid_service", {"service": "ollama", "model": "llama3.2", "input": HELLO}
            )
        )
        assert (body["cost"], body["balance"]) == ("0.000000", "0.00")
        assert len(fake.received) == 1
        [listed] = ok(await client.call_tool("list_requests", {}))["requests"]
        assert (listed["service"], listed["succeeded"], listed["cost"]) == ("ollama", True, "0.000000")
        usage = ok(await client.call_tool("usage_summary", {}))
        assert usage["total_requests"] == 1
        assert usage["days"][-1]["by_service"] == {"ollama": {"spend": "0.000000", "requests": 1}}


async def test_an_unpriced_paid_model_is_400(runtime: Runtime, new_wallet, fake: FakeProvider) -> None:
    async with connect(runtime, new_wallet) as client:
        fund(runtime, new_wallet.wallet_id, "5.00")
        body = error(
            await client.call_tool(
                "call_paid_service", {"service": "openai", "model": "gpt-unknown-1", "input": HELLO}
            ),
            400,
        )
        assert "no known price" in body["error"] and body["next_step"]
        assert fake.received == []


async def test_max_cost_below_the_bound_is_402_before_any_traffic(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    async with connect(runtime, new_wallet) as client:
        fund(runtime, new_wallet.wallet_id, "5.00")
        # 100,000 output tokens at $2/M could cost $0.20: more than the $0.01 allowed.
        large = {"service": "cheapchat", "model": "cheap-1", "input": {**HELLO, "max_tokens": 100_000}}
        body = error(await client.call_tool("call_paid_service", {**large, "max_cost": "0.01"}), 402)
        assert "max_cost" in body["error"]
        assert fake.received == []
        [refused] = ok(await client.call_tool("list_requests", {}))["requests"]
        assert (refused["succeeded"], refused["cost"]) == (False, "0.000000")
        assert ok(await client.call_tool("get_balance", {}))["balance"] == "5.00"
        small = {"service": "cheapchat", "model": "cheap-1", "input": HELLO}  # bound ~ $0.0002
        ok(await client.call_tool("call_paid_service", {**small, "max_cost": 0.01}))
        assert len(fake.received) == 1


async def test_usage_summary_lists_every_day_and_each_service(runtime: Runtime, new_wallet) -> None:
    async with connect(runtime, new_wallet) as client:
        fund(runtime, new_wallet.wallet_id, "5.00")
        for service, model in [("cheapchat", "cheap-1"), ("cheapchat", "cheap-1"), ("ollama", "llama3.2")]:
            ok(
                await client.call_tool(
                    "call_paid_service", {"service": service, "model": model, "input": HELLO}
                )
            )
        ok(await client.call_tool("call_paid_service", {"service": "weather", "input": {"city": "Oslo"}}))
        body = ok(await client.call_tool("usage_summary", {}))
        today = utc_now().date()
        assert (body["since"], body["until"]) == ((today - timedelta(days=6)).isoformat(), today.isoformat())
        assert [day["date"] for day in body["days"]] == [
            (today - timedelta(days=6 - n)).isoformat() for n in range(7)
        ]
        assert all(
            day == {"date": day["date"], "spend": "0.000000", "requests": 0, "by_service": {}}
            for day in body["days"][:6]
        )
        assert body["days"][-1] == {
            "date": today.isoformat(),
            "spend": "0.002030",
            "requests": 4,
            "by_service": {
                "cheapchat": {"spend": "0.000030", "requests": 2},
                "ollama": {"spend": "0.000000", "requests": 1},
                "weather": {"spend": "0.002000", "requests": 1},
            },
        }
        assert (body["total_spend"], body["total_requests"]) == ("0.002030", 4)
        window = ok(await client.call_tool("usage_summary", {"since": "2026-01-01", "until": "2026-01-31"}))
        assert len(window["days"]) == 31 and window["total_requests"] == 0


async def test_list_requests_pages_newest_first(runtime: Runtime, new_wallet) -> None:
    fund(runtime, new_wallet.wallet_id, "1.00")
    async with connect(runtime, new_wallet) as client:
        made = []
        for number in range(25):
            body = ok(
                await client.call_tool("call_paid_service", {"service": "weather", "input": {"n": number}})
            )
            made.append(body["request_id"])
        assert len(set(made)) == 25
        newest_first = sorted(made, reverse=True)

        first = ok(await client.call_tool("list_requests", {}))
        assert [r["id"] for r in first["requests"]] == newest_first[:20]  # default limit 20
        assert first["next_cursor"] == newest_first[19]

        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            arguments = {"limit": 7} | ({"before": cursor} if cursor else {})
            page = ok(await client.call_tool("list_requests", arguments))
            seen += [r["id"] for r in page["requests"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 4 and seen == newest_first  # no duplicates, no gaps


async def test_add_funds_refuses_bad_amounts(runtime: Runtime, new_wallet) -> None:
    async with connect(runtime, new_wallet) as client:
        fund(runtime, new_wallet.wallet_id, "1.00")
        before = ledger_state(runtime.db, new_wallet.wallet_id)
        for amount in ("9.99", "10000.01", "abc", -10, 0, "25.001", "1e3", True):
            error(await client.call_tool("add_funds", {"amount": amount}), 400)
        assert ledger_state(runtime.db, new_wallet.wallet_id) == before


async def test_max_cost_takes_six_decimals_like_every_cost(
    runtime: Runtime, new_wallet, fake: FakeProvider
) -> None:
    async with connect(runtime, new_wallet) as client:
        fund(runtime, new_wallet.wallet_id, "5.00")
        small = {"service": "cheapchat", "model": "cheap-1", "input": HELLO}  # bound ~ $0.0002
        body = error(await client.call_tool("call_paid_service", {**small, "max_cost": "0.000001"}), 402)
        assert "0.000001" not in body["error"] and "max_cost" in body["error"]
        assert fake.received == []
        ok(await client.call_tool("call_paid_service", {**small, "max_cost": "0.005"}))
        assert len(fake.received) == 1
