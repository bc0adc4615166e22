"""Rate limits shared through Redis: one bucket per key for every process, the same rule
as the in-process limiter, and a fail-closed refusal when Redis can't be reached.

Every test uses its own key prefix (the `redis_service` fixture deletes its keys after).
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import openai
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from lava_mcp.config import Settings
from lava_mcp.core import verify, wallet
from lava_mcp.core.rate_limits import InProcessRateLimiter, RedisRateLimiter, build_rate_limiter
from lava_mcp.errors import RateLimited
from lava_mcp.observability import metrics
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import RequestRecord
from lava_mcp.transports.app import build_app
from tests.conftest import RedisService, ledger_state
from tests.fake_provider import free_port, serve_in_thread

PROMPT = [{"role": "user", "content": "hello"}]
# Long, so that a busy machine's scheduling never turns into an "unreachable" refusal in the
# tests of exact counts (the refusal itself is tested against closed ports and a killed Redis).
TIMEOUT_S = 30.0
# 2026-12-01 in microseconds: the script's arithmetic must stay exact at real clock values.
START_US = 1_796_083_200_000_000


async def outcome(
    limiter: RedisRateLimiter | InProcessRateLimiter, key: str, rpm: int, burst: int | None
) -> int:
    """0 when allowed, else the refusal's Retry-After in seconds."""
    try:
        await limiter.acquire(key, rpm=rpm, burst=burst)
    except RateLimited as error:
        assert error.retry_after_s is not None
        return error.retry_after_s
    return 0


steps = st.lists(
    st.tuples(
        st.integers(0, 5) | st.integers(0, 120_000_000),  # µs to the next request: bursts and gaps
        st.sampled_from([1, 2, 7, 60, 61, 997, 1_000_000]),  # rpm (updates between requests)
        st.none() | st.integers(1, 12),  # burst
    ),
    min_size=1,
    max_size=40,
)


EXAMPLES = itertools.count()


# One prefix for all examples (the fixture's), one key per example.
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=steps)
def test_the_redis_script_decides_exactly_as_the_in_process_limiter(
    redis_service: RedisService, sequence: list[tuple[int, int, int | None]]
) -> None:
    # Both driven by one clock: same decisions, same Retry-After, through rpm and burst
    # updates, sub-microsecond intervals (rpm 7, 997) and times near 2^51 µs.
    now_us = [START_US]
    in_process = InProcessRateLimiter(clock_ns=lambda: now_us[0] * 1000)
    key = f"example-{next(EXAMPLES)}"

    async def run() -> None:
        shared = RedisRateLimiter(
            redis_service.url,
            key_prefix=redis_service.key_prefix,
            timeout_s=TIMEOUT_S,
            clock_us=lambda: now_us[0],
        )
        try:
            for advance_us, rpm, burst in sequence:
                now_us[0] += advance_us
                expected = await outcome(in_process, key, rpm, burst)
                assert await outcome(shared, key, rpm, burst) == expected, (advance_us, rpm, burst)
        finally:
            await shared.aclose()

    asyncio.run(run())


async def test_two_limiters_as_two_processes_admit_exactly_the_burst(redis_service: RedisService) -> None:
    # rpm 1 refills one request a minute: the run is far shorter, so exactly the burst passes.
    first, second = (
        RedisRateLimiter(redis_service.url, key_prefix=redis_service.key_prefix, timeout_s=TIMEOUT_S)
        for _ in range(2)
    )
    try:
        outcomes = await asyncio.gather(
            *(outcome(first if index % 2 else second, "key_shared", 1, 25) for index in range(200))
        )
    finally:
        await first.aclose()
        await second.aclose()
    assert outcomes.count(0) == 25
    refusals = [seconds for seconds in outcomes if seconds]
    assert len(refusals) == 175 and all(
        isinstance(seconds, int) and 1 <= seconds <= 60 for seconds in refusals
    )


async def test_rpm_two_admits_two_then_429_with_whole_seconds_and_the_bucket_expires(
    redis_service: RedisService,
) -> None:
    # DESIGN §13: with rpm 2 and no burst, two quick requests pass and the third gets 429.
    limiter = RedisRateLimiter(redis_service.url, key_prefix=redis_service.key_prefix, timeout_s=TIMEOUT_S)
    try:
        await limiter.acquire("key_two", rpm=2)
        await limiter.acquire("key_two", rpm=2)
        with pytest.raises(RateLimited) as refused:
            await limiter.acquire("key_two", rpm=2)
    finally:
        await limiter.aclose()
    assert refused.value.code == 429 and refused.value.retry_after_s is not None
    assert 1 <= refused.value.retry_after_s <= 30
    assert "rate limit of 2 requests per minute (burst 2) reached" in refused.value.message
    # The bucket is kept only until it is full again (two tokens at 30 s each: 60 s).
    with redis.Redis.from_url(redis_service.url) as client:
        ttl_ms = client.pttl(limiter.bucket("key_two"))
    assert 0 < ttl_ms <= 60_001


async def test_the_documented_examples_hold_with_redis_keeping_time(redis_service: RedisService) -> None:
    # The in-process limiter's examples (tests/gateway/test_limits.py), on the Redis script.
    clock_us = [START_US]
    limiter = RedisRateLimiter(
        redis_service.url,
        key_prefix=redis_service.key_prefix,
        timeout_s=TIMEOUT_S,
        clock_us=lambda: clock_us[0],
    )
    try:
        assert [await outcome(limiter, "sk", 2, None) for _ in range(3)] == [0, 0, 30]
        clock_us[0] += 30_000_000
        assert [await outcome(limiter, "sk", 2, None) for _ in range(2)] == [0, 30]
        # A higher rpm keeps the tokens in use; they come back at the new rate from then on.
        assert [await outcome(limiter, "changed", 3, None) for _ in range(4)] == [0, 0, 0, 20]
        assert await outcome(limiter, "changed", 6, 3) == 10
        clock_us[0] += 9_000_000
        assert await outcome(limiter, "changed", 6, 3) == 1
        clock_us[0] += 1_000_000
        assert await outcome(limiter, "changed", 6, 3) == 0
    finally:
        await limiter.aclose()


PROCESS_SCRIPT = """
import asyncio, sys
from lava_mcp.core.rate_limits import RedisRateLimiter
from lava_mcp.errors import RateLimited

async def main() -> None:
    limiter = RedisRateLimiter(sys.argv[1], key_prefix=sys.argv[2], timeout_s=30)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    sys.stdin.readline()  # both processes start together

    async def one() -> bool:
        try:
            await limiter.acquire("key_processes", rpm=1, burst=30)
        except RateLimited:
            return False
        return True

    outcomes = await asyncio.gather(*(one() for _ in range(150)))
    await limiter.aclose()
    print(sum(outcomes))

asyncio.run(main())
"""


def test_two_processes_sharing_redis_admit_exactly_the_burst(redis_service: RedisService) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS_SCRIPT, redis_service.url, redis_service.key_prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for process in processes:
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        admitted = [int(process.communicate(timeout=60)[0]) for process in processes]
    finally:
        for process in processes:
            process.kill()
            process.wait()
    assert sum(admitted) == 30, admitted


async def test_the_runtime_shares_limits_through_redis_only_when_it_is_configured(settings: Settings) -> None:
    assert isinstance(build_rate_limiter(None, key_prefix="lava:", timeout_s=0.5), InProcessRateLimiter)
    per_process = Runtime.build(settings)
    assert isinstance(per_process.rate_limiter, InProcessRateLimiter)
    await per_process.aclose()
    built = Runtime.build(settings.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"}))
    try:
        assert isinstance(built.rate_limiter, RedisRateLimiter)
        assert built.metering.rate_limiter is built.rate_limiter
    finally:
        await built.aclose()


@contextmanager
def served_runtimes(settings: Settings, count: int) -> Iterator[tuple[list[Runtime], list[str]]]:
    """`count` runtimes on one ledger, each served on its own port as separate processes
    would be (each with its own event loop and Redis connections)."""
    runtimes = [Runtime.build(settings) for _ in range(count)]
    runtimes[0].db.upgrade()
    with ExitStack() as stack:
        urls = [
            stack.enter_context(serve_in_thread(build_app(runtime, migrate=False))) for runtime in runtimes
        ]
        yield runtimes, urls


def create_key(url: str, wallet_key: str, **options: object) -> dict[str, str]:
    response = httpx.post(
        f"{url}/v1/spend_keys", json=options, headers={"authorization": f"Bearer {wallet_key}"}, timeout=30
    )
    assert response.status_code == 201, response.text
    created: dict[str, str] = response.json()
    return created


async def call(url: str, key: str) -> int | str:
    async with openai.AsyncOpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0, timeout=60) as client:
        try:
            await client.chat.completions.create(model="cheap-1", messages=PROMPT, max_tokens=10)  # type: ignore[arg-type]
        except openai.APIStatusError as error:
            retry_after = error.response.headers.get("retry-after", "")
            assert error.status_code != 429 or retry_after.isdigit(), retry_after
            return error.status_code
    return "ok"


def redis_settings(settings: Settings, redis_service: RedisService, url: str | None = None) -> Settings:
    return settings.model_copy(
        update={
            "redis_url": url or redis_service.url,
            "redis_key_prefix": redis_service.key_prefix,
            "redis_timeout_s": TIMEOUT_S,
        }
    )


async def test_two_servers_sharing_redis_admit_exactly_the_burst_and_charge_only_it(
    settings: Settings, redis_service: RedisService
) -> None:
    with served_runtimes(redis_settings(settings, redis_service), 2) as (runtimes, urls):
        db = runtimes[0].db
        created = wallet.create_wallet(db, name="shared")
        wallet.adjust(db, created.wallet_id, "10.00", reason="test funding")
        key = create_key(urls[0], created.wallet_key, rate_limit={"rpm": 1, "burst": 6})
        outcomes = await asyncio.gather(*(call(urls[index % 2], key["key"]) for index in range(40)))
        assert outcomes.count("ok") == 6 and outcomes.count(429) == 34
        with db.read() as session:
            records = session.exec(
                select(RequestRecord).where(RequestRecord.spend_key_id == key["spend_key_id"])
            ).all()
        assert sorted(record.status for record in records) == ["completed"] * 6 + ["error"] * 34
        assert all(record.cost_micros == 0 for record in records if record.status == "error")
        charged = sum(record.cost_micros for record in records)
        assert wallet.get_balance(db, created.wallet_id).balance_micros == 10_000_000 - charged
        assert verify.verify(db) == []


async def test_rotate_keeps_the_bucket(settings: Settings, redis_service: RedisService) -> None:
    # The bucket belongs to the key's id, which a rotate keeps: rotating is no way round it.
    with served_runtimes(redis_settings(settings, redis_service), 2) as (runtimes, urls):
        created = wallet.create_wallet(runtimes[0].db, name="rotating")
        wallet.adjust(runtimes[0].db, created.wallet_id, "1.00", reason="test funding")
        key = create_key(urls[0], created.wallet_key, rate_limit={"rpm": 1, "burst": 2})
        assert [await call(urls[0], key["key"]), await call(urls[1], key["key"])] == ["ok", "ok"]
        rotated = httpx.post(
            f"{urls[1]}/v1/spend_keys/{key['spend_key_id']}/rotate",
            headers={"authorization": f"Bearer {created.wallet_key}"},
            timeout=30,
        )
        assert rotated.status_code == 200, rotated.text
        assert await call(urls[0], rotated.json()["key"]) == 429


def unavailable_decisions() -> float:
    value = metrics.REGISTRY.get_sample_value("lava_rate_limit_decisions_total", {"decision": "unavailable"})
    return value or 0.0


def closed_port_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


async def test_an_unreachable_redis_refuses_rate_limited_keys_and_serves_the_others(
    settings: Settings, redis_service: RedisService
) -> None:
    with served_runtimes(redis_settings(settings, redis_service, closed_port_url()), 1) as (runtimes, urls):
        db = runtimes[0].db
        created = wallet.create_wallet(db, name="no-redis")
        wallet.adjust(db, created.wallet_id, "1.00", reason="test funding")
        limited = create_key(urls[0], created.wallet_key, rate_limit={"rpm": 100})
        unlimited = create_key(urls[0], created.wallet_key)
        before = ledger_state(db, created.wallet_id)
        unavailable_before = unavailable_decisions()

        async with openai.AsyncOpenAI(
            api_key=limited["key"], base_url=f"{urls[0]}/v1", max_retries=0
        ) as client:
            with pytest.raises(openai.RateLimitError) as refused:
                await client.chat.completions.create(model="cheap-1", messages=PROMPT, max_tokens=10)  # type: ignore[arg-type]
        message = refused.value.response.json()["error"]["message"]
        assert "Redis" in message and "unreachable" in message and "LAVA_REDIS_URL" in message
        assert refused.value.response.headers["retry-after"].isdigit()
        after = ledger_state(db, created.wallet_id)
        # Nothing held or charged; only the refusal is recorded, as for any 429.
        assert (after.balance_micros, after.held_micros, after.entries, after.holds) == (
            before.balance_micros,
            before.held_micros,
            before.entries,
            before.holds,
        )
        assert after.requests == before.requests + 1
        assert unavailable_decisions() == unavailable_before + 1

        assert await call(urls[0], unlimited["key"]) == "ok"
        assert wallet.get_balance(db, created.wallet_id).balance_micros < before.balance_micros
        assert verify.verify(db) == []


async def test_a_redis_that_never_answers_refuses_after_the_timeout_instead_of_stalling() -> None:
    # A listener whose connections are accepted by the kernel and never read: the call
    # waits out LAVA_REDIS_TIMEOUT_S once (no retries) and is refused, naming the timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        limiter = RedisRateLimiter(
            f"redis://127.0.0.1:{silent.getsockname()[1]}/0", key_prefix="lava-test-silent:", timeout_s=0.2
        )
        try:
            for _ in range(2):
                with pytest.raises(RateLimited) as refused:
                    await asyncio.wait_for(limiter.acquire("key_s", rpm=60), 60)
                assert (
                    "Timeout" in refused.value.message and "unreachable or failing" in refused.value.message
                )
        finally:
            await limiter.aclose()


@contextmanager
def own_redis(port: int) -> Iterator[None]:
    """A Redis of this test's own on `port`, stopped on exit."""
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is needed for this test"
    process = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # its log says when it listens
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError("redis-server exited before it was ready")
        yield
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


async def test_a_redis_killed_under_load_refuses_then_resumes_by_itself() -> None:
    port = free_port()
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{port}/0", key_prefix="lava-test-killed:")
    try:
        with own_redis(port):
            assert (
                await asyncio.gather(*(outcome(limiter, "key_k", 1000, None) for _ in range(20))) == [0] * 20
            )
        # Killed: the pooled connections are dead and new ones are refused.
        with pytest.raises(RateLimited) as refused:
            await limiter.acquire("key_k", rpm=1000)
        assert "Redis (LAVA_REDIS_URL, 127.0.0.1:" in refused.value.message
        assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 1
        with own_redis(port):  # back (empty): the next call is admitted without a restart of ours
            await limiter.acquire("key_k", rpm=1000)
    finally:
        await limiter.aclose()
