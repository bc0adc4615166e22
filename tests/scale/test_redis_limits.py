"""Rate limits through Redis (`LAVA_REDIS_URL`) with three `lava-mcp serve` processes.

- One bucket per key for all processes: a key's rpm with its burst admits what one
  process would, not three times that.
- Redis stopped under load: calls on a rate-limited key are refused with 429 naming Redis
  (a limit that can't be checked is not waived), keys without a rate limit are served as
  before, and no money moves for a refused call (Redis never holds money: balances and
  spend limits are in PostgreSQL). Redis back: the limited key is served again by itself.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import REDIS_URL, ledger_state
from tests.fake_provider import free_port
from tests.scale.conftest import Cluster, wait_until
from tests.scale.ledger_facts import charged_once, key_facts, statuses
from tests.scale.load import OpenAIClients, Outcomes, hammer

# Refills one request per 10 s: during the test's few seconds the burst is what it admits.
RPM = 6
BURST = 30
RATE_CALLS = 150


def _no_pending(cluster: Cluster) -> None:
    records, holds = statuses(cluster.db)
    assert records["pending"] == 0 and holds["pending"] == 0, (records, holds)


def test_a_keys_rpm_holds_across_three_processes(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(
        3, LAVA_REDIS_URL=REDIS_URL, LAVA_REDIS_KEY_PREFIX=f"lava-scale-{secrets.token_hex(4)}:"
    )
    owner = cluster.create_wallet("20.00")
    key = cluster.create_spend_key(owner.wallet_key, rate_limit={"rpm": RPM, "burst": BURST})

    async def load() -> tuple[Outcomes, float]:
        clients = OpenAIClients(cluster.urls, key["key"])
        started = time.monotonic()
        try:
            outcomes = await hammer(clients.call, calls=RATE_CALLS, concurrency=15)
        finally:
            await clients.aclose()
        return outcomes, time.monotonic() - started

    outcomes, elapsed_s = asyncio.run(load())
    assert outcomes.statuses().keys() <= {200, 429}, outcomes.statuses()
    admitted = len(outcomes.with_status(200))
    # The bucket starts full (the burst) and refills RPM a minute; whatever the machine's
    # speed, three processes together admit no more than one bucket does.
    refilled = int(elapsed_s * RPM / 60) + 1
    assert BURST <= admitted <= BURST + refilled, (admitted, elapsed_s)
    assert admitted < 2 * BURST  # a bucket per process would have admitted 3 × BURST
    assert {item.server for item in outcomes.with_status(200)} == set(cluster.urls)
    for item in outcomes.with_status(429):
        assert "rate limit of 6 requests per minute" in item.body["error"]["message"]
        assert item.retry_after is not None and int(item.retry_after) >= 1
    facts = key_facts(cluster.db, key["spend_key_id"])
    assert facts.completed == admitted and facts.held_micros == 0
    _no_pending(cluster)
    assert charged_once(cluster.db) == []
    cluster.ledger_verify()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """A Redis server of this test's own on a free port (stopped and started by the test)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; this test stops and restarts its own Redis")
    port = free_port()
    processes: list[subprocess.Popen[bytes]] = []

    class OwnRedis:
        url = f"redis://127.0.0.1:{port}/0"

        def start(self) -> None:
            with (tmp_path / "redis.log").open("ab") as log:
                processes.append(
                    subprocess.Popen(
                        [
                            binary,
                            "--port",
                            str(port),
                            "--bind",
                            "127.0.0.1",
                            "--save",
                            "",
                            "--appendonly",
                            "no",
                        ],
                        cwd=tmp_path,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            client = redis.Redis.from_url(self.url, socket_connect_timeout=1)

            def answers() -> bool:
                try:
                    return bool(client.ping())
                except redis.RedisError:
                    return False

            try:
                wait_until(answers, timeout_s=30, what="Redis to answer")
            finally:
                client.close()

        def stop(self) -> None:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=15)

    own = OwnRedis()
    own.start()
    try:
        yield own
    finally:
        own.stop()


def test_redis_stopped_under_load_refuses_rate_limited_keys_only_and_moves_no_money(
    cluster_factory: Any, own_redis: Any
) -> None:
    cluster: Cluster = cluster_factory(3, LAVA_REDIS_URL=own_redis.url, LAVA_REDIS_TIMEOUT_S="0.5")
    limited_owner = cluster.create_wallet("20.00")
    free_owner = cluster.create_wallet("20.00")
    limited = cluster.create_spend_key(limited_owner.wallet_key, rate_limit={"rpm": 6000, "burst": 6000})
    unlimited = cluster.create_spend_key(free_owner.wallet_key)

    async def calls(key: str, count: int) -> Outcomes:
        clients = OpenAIClients(cluster.urls, key)
        try:
            return await hammer(clients.call, calls=count, concurrency=6)
        finally:
            await clients.aclose()

    async def both(count: int) -> tuple[Outcomes, Outcomes]:
        return await asyncio.gather(calls(limited["key"], count), calls(unlimited["key"], count))

    # Redis up: both keys served.
    before_limited, before_unlimited = asyncio.run(both(30))
    assert before_limited.statuses() == {200: 30} and before_unlimited.statuses() == {200: 30}
    limited_state = ledger_state(cluster.db, limited_owner.wallet_id)
    limited_key = key_facts(cluster.db, limited["spend_key_id"])
    unlimited_before = key_facts(cluster.db, unlimited["spend_key_id"])

    # Redis gone, mid-load: the rate-limited key is refused, the other one is not.
    async def through_the_outage() -> tuple[Outcomes, Outcomes]:
        running = asyncio.ensure_future(both(150))
        await asyncio.sleep(0)  # the load is on its way
        await asyncio.to_thread(own_redis.stop)
        return await running

    during_limited, during_unlimited = asyncio.run(through_the_outage())
    assert during_unlimited.statuses() == {200: 150}, during_unlimited.statuses()
    assert during_limited.statuses().keys() <= {200, 429}
    refused = during_limited.with_status(429)
    assert len(refused) > 100, during_limited.statuses()  # all but what was in flight as it stopped
    for item in refused:
        assert "Redis" in item.body["error"]["message"] and int(item.retry_after or 0) >= 1, item
    # No money moved for a refused call: only the few admitted before Redis went are charged.
    admitted = len(during_limited.with_status(200))
    after_key = key_facts(cluster.db, limited["spend_key_id"])
    assert after_key.completed == limited_key.completed + admitted
    assert after_key.total_spend_micros == limited_key.total_spend_micros + admitted * (
        limited_key.total_spend_micros // limited_key.completed
    )
    after_state = ledger_state(cluster.db, limited_owner.wallet_id)
    assert after_state.balance_micros == limited_state.balance_micros - (
        after_key.total_spend_micros - limited_key.total_spend_micros
    )
    assert after_state.holds == limited_state.holds + admitted and after_state.held_micros == 0
    assert after_state.entries == limited_state.entries + admitted
    assert key_facts(cluster.db, unlimited["spend_key_id"]).completed == unlimited_before.completed + 150

    # Redis back on the same address: served again, nobody restarted.
    own_redis.start()
    after_limited, after_unlimited = asyncio.run(both(30))
    assert after_unlimited.statuses() == {200: 30}
    # The first call on each process may find its pooled Redis connection dead.
    assert len(after_limited.with_status(200)) >= 30 - len(cluster.urls), after_limited.statuses()
    _no_pending(cluster)
    assert charged_once(cluster.db) == []
    cluster.ledger_verify()
