"""A spend key's refusals say which limit refused and by how much; a new spend cycle
recounts the current spend; an update changes only the parts of a limit it names; a
`total` request limit says it never resets instead of sending a made-up Retry-After."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from lava_mcp.core import holds, spend_keys, wallet
from lava_mcp.core.cycles import cycle_end
from lava_mcp.errors import SpendLimitReached
from lava_mcp.ids import new_id
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import RequestRecord, SpendKey, utc_now
from tests.cli.test_commands import Cli
from tests.conftest import fund
from tests.gateway.conftest import Gateway

CALL = {"model": "cheap-1", "messages": [{"role": "user", "content": "hi"}]}


async def refusal(runtime: Runtime, key: SpendKey, max_tokens: int) -> SpendLimitReached:
    with pytest.raises(SpendLimitReached) as refused:
        await runtime.metering.call(
            wallet_id=key.wallet_id,
            service_id="cheapchat",
            model="cheap-1",
            body=CALL | {"max_tokens": max_tokens},
            endpoint="/v1/chat/completions",
            spend_key=key,
            request_shape="openai",
        )
    return refused.value


async def test_a_hold_that_does_not_fit_names_the_cost_the_room_and_the_way_out(runtime: Runtime) -> None:
    owner = wallet.create_wallet(runtime.db, name="room").wallet_id
    fund(runtime, owner, "5.00")
    key = spend_keys.create(runtime.db, owner, {"spend_limit": {"amount": "0.01", "cycle": "daily"}}).key
    error = await refusal(runtime, key, 20_000)
    body = error.to_dict()
    required = body["required"]
    assert required.startswith("0.04") and len(required.split(".")[1]) == 6  # 20,000 × $2/Mtok + input
    assert (body["limit"], body["remaining"]) == ("0.010000", "0.010000")
    reset = cycle_end("daily", utc_now())
    assert reset is not None and body["resets_at"] == reset.isoformat()
    assert error.message.startswith(
        f"this call may cost up to ${required} (max_tokens 20000); the key has $0.010000 left this daily cycle"
    )
    assert error.message.endswith("lower max_tokens or raise the limit")
    assert "spend limit reached" not in error.message
    # the same call with a bound that fits runs
    outcome = await runtime.metering.call(
        wallet_id=owner, service_id="cheapchat", model="cheap-1", body=CALL | {"max_tokens": 8},
        endpoint="/v1/chat/completions", spend_key=key, request_shape="openai",
    )  # fmt: skip
    assert outcome.settlement.cost.total_micros > 0


async def test_spend_limit_reached_only_when_nothing_is_left(runtime: Runtime) -> None:
    owner = wallet.create_wallet(runtime.db, name="empty key").wallet_id
    fund(runtime, owner, "5.00")
    key = spend_keys.create(runtime.db, owner, {"spend_limit": {"amount": "0.01", "cycle": "total"}}).key
    with runtime.db.write() as session:
        spend_keys.reserve(session, key, hold_micros=10_000, now=utc_now())
        taken = holds.reserve(
            session,
            wallet_id=owner,
            amount_micros=10_000,
            request_id="req_all",
            ttl_s=600,
            spend_key_id=key.id,
        )
        holds.post(session, taken.id, 10_000)
    error = await refusal(runtime, spend_keys.get(runtime.db, owner, key.id), 8)
    assert error.message.startswith("spend limit reached for this key")
    assert "never resets" in error.message
    assert error.to_dict() | {"error": ""} == {
        "error": "",
        "code": 402,
        "limit": "0.010000",
        "remaining": "0.000000",
        "required": error.to_dict()["required"],
        "resets_at": None,
    }


def test_the_gateway_402_names_the_room(gateway: Gateway) -> None:
    key = gateway.create_key(spend_limit={"amount": "0.01", "cycle": "weekly"})
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=CALL | {"max_tokens": 20_000},
        headers={"authorization": f"Bearer {key['key']}"},
        timeout=30,
    )
    assert response.status_code == 402
    message = response.json()["error"]["message"]
    assert "(max_tokens 20000); the key has $0.010000 left this weekly cycle" in message
    assert "resets at" in message


def test_a_total_request_limit_says_it_never_resets_and_sends_no_retry_after(gateway: Gateway) -> None:
    key = gateway.create_key(request_limit={"count": 1, "cycle": "total"})

    def call() -> httpx.Response:
        return httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json=CALL | {"max_tokens": 8},
            headers={"authorization": f"Bearer {key['key']}"},
            timeout=30,
        )

    assert call().status_code == 200
    refused = call()
    assert refused.status_code == 429
    assert "retry-after" not in refused.headers
    assert "never resets" in refused.json()["error"]["message"]


# -- a new spend cycle recounts; an update changes only what it names -----------------------------


def spent(runtime: Runtime, key: SpendKey, cost_micros: int, *, days_ago: int) -> None:
    """A completed call of `cost_micros` made `days_ago` days ago, accounted as settle does."""
    moment = utc_now() - timedelta(days=days_ago)
    request_id = new_id("req")
    with runtime.db.write() as session:
        current = session.get(SpendKey, key.id)
        assert current is not None
        spend_keys.reserve(session, current, hold_micros=cost_micros, now=moment)
        taken = holds.reserve(
            session, wallet_id=key.wallet_id, amount_micros=cost_micros, request_id=request_id, ttl_s=600,
            spend_key_id=key.id,
        )  # fmt: skip
        session.add(
            RequestRecord(
                id=request_id, wallet_id=key.wallet_id, spend_key_id=key.id, service="cheapchat", model="cheap-1",
                status="completed", ran=True, cost_micros=cost_micros, hold_micros=cost_micros, created_at=moment,
                completed_at=moment,
            )
        )  # fmt: skip
    with runtime.db.write() as session:
        holds.post(session, taken.id, cost_micros)


def test_a_new_spend_cycle_recounts_the_current_spend(runtime: Runtime) -> None:
    owner = wallet.create_wallet(runtime.db, name="recount").wallet_id
    fund(runtime, owner, "5.00")
    key = spend_keys.create(runtime.db, owner, {"spend_limit": {"amount": "1.00", "cycle": "monthly"}}).key
    spent(runtime, key, 30_000, days_ago=40)
    spent(runtime, key, 20_000, days_ago=0)
    assert spend_keys.figures(spend_keys.get(runtime.db, owner, key.id)).current_spend_micros == 20_000

    to_total = spend_keys.update_key(runtime.db, owner, key.id, {"spend_limit": {"cycle": "total"}})
    assert (to_total.spend_limit_micros, to_total.spend_cycle) == (1_000_000, "total")
    assert spend_keys.figures(to_total).current_spend_micros == 50_000

    to_daily = spend_keys.update_key(
        runtime.db, owner, key.id, {"spend_limit": {"amount": "2.00", "cycle": "daily"}}
    )
    assert (to_daily.spend_limit_micros, to_daily.spend_cycle) == (2_000_000, "daily")
    assert spend_keys.figures(to_daily).current_spend_micros == 20_000
    assert spend_keys.figures(to_daily).total_spend_micros == 50_000


def test_a_new_request_cycle_recounts_the_current_requests(runtime: Runtime) -> None:
    owner = wallet.create_wallet(runtime.db, name="recount").wallet_id
    fund(runtime, owner, "5.00")
    key = spend_keys.create(runtime.db, owner, {"request_limit": {"count": 100, "cycle": "monthly"}}).key
    for days_ago in (40, 40, 0):
        spent(runtime, key, 1_000, days_ago=days_ago)
    assert spend_keys.figures(spend_keys.get(runtime.db, owner, key.id)).current_requests == 1

    to_total = spend_keys.update_key(runtime.db, owner, key.id, {"request_limit": {"cycle": "total"}})
    assert spend_keys.figures(to_total).current_requests == 3
    to_daily = spend_keys.update_key(runtime.db, owner, key.id, {"request_limit": {"cycle": "daily"}})
    assert spend_keys.figures(to_daily).current_requests == 1
    assert spend_keys.figures(to_daily).total_requests == 3


def test_put_with_only_an_amount_keeps_the_cycle(gateway: Gateway) -> None:
    key = gateway.create_key(
        spend_limit={"amount": "50.00", "cycle": "monthly"}, request_limit={"count": 10, "cycle": "weekly"}
    )
    with gateway.rest() as rest:
        updated = rest.put(
            f"/v1/spend_keys/{key['spend_key_id']}",
            json={"spend_limit": {"amount": "5.00"}, "request_limit": {"count": 3}},
        ).json()
        assert updated["spend_limit"] == {"amount": "5.00", "cycle": "monthly"}
        assert updated["request_limit"] == {"count": 3, "cycle": "weekly"}
        cycle_only = rest.put(
            f"/v1/spend_keys/{key['spend_key_id']}", json={"spend_limit": {"cycle": "daily"}}
        )
        assert cycle_only.json()["spend_limit"] == {"amount": "5.00", "cycle": "daily"}
        unlimited = gateway.create_key()
        refused = rest.put(
            f"/v1/spend_keys/{unlimited['spend_key_id']}", json={"spend_limit": {"cycle": "daily"}}
        )
        assert refused.status_code == 400 and "amount is required" in refused.json()["error"]


def test_put_with_only_an_rpm_keeps_the_burst(gateway: Gateway) -> None:
    key = gateway.create_key(rate_limit={"rpm": 60, "burst": 10})
    path = f"/v1/spend_keys/{key['spend_key_id']}"
    with gateway.rest() as rest:
        assert rest.put(path, json={"rate_limit": {"rpm": 30}}).json()["rate_limit"] == {
            "rpm": 30,
            "burst": 10,
        }
        assert rest.put(path, json={"rate_limit": {"burst": 5}}).json()["rate_limit"] == {
            "rpm": 30,
            "burst": 5,
        }
        unlimited = gateway.create_key()
        refused = rest.put(f"/v1/spend_keys/{unlimited['spend_key_id']}", json={"rate_limit": {"burst": 5}})
        assert refused.status_code == 400 and "rpm is required" in refused.json()["error"]
        assert rest.put(path, json={"rate_limit": None}).json()["rate_limit"] is None


def test_cli_update_with_only_a_spend_limit_keeps_the_cycle(tmp_path: Any) -> None:
    cli = Cli(tmp_path)
    _, wallet_key = cli.new_wallet()
    created = cli.json(
        "keys", "create", "--spend-limit", "50.00", "--spend-cycle", "monthly", wallet_key=wallet_key
    )
    key_id = created["spend_key_id"]
    updated = cli.json("keys", "update", key_id, "--spend-limit", "5.00", wallet_key=wallet_key)
    assert updated["spend_limit"] == {"amount": "5.00", "cycle": "monthly"}
    cycled = cli.json("keys", "update", key_id, "--spend-cycle", "weekly", wallet_key=wallet_key)
    assert cycled["spend_limit"] == {"amount": "5.00", "cycle": "weekly"}
