"""The rules behind the gateway's limits, with time passed explicitly: cycles, cycle
resets of a key's spend and request counts, and the GCRA rate limiter (proved equal to
the token bucket of DESIGN §13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lava_mcp.core import holds, spend_keys
from lava_mcp.core.cycles import CYCLES, cycle_end, cycle_start
from lava_mcp.core.rate_limits import (
    NANOS_PER_SECOND,
    InProcessRateLimiter,
    gcra,
    retry_after_seconds,
)
from lava_mcp.errors import Forbidden, RateLimited, SpendLimitReached, Unauthorized
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import SpendKey
from tests.conftest import fund

moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


# -- cycles -----------------------------------------------------------------------------------


@given(moments, st.sampled_from(["daily", "weekly", "monthly"]))
def test_a_cycle_contains_now_and_starts_at_a_utc_boundary(now: datetime, cycle: str) -> None:
    start, end = cycle_start(cycle, now), cycle_end(cycle, now)
    assert end is not None
    assert start <= now < end
    assert (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0)
    assert start.tzinfo == UTC
    if cycle == "weekly":
        assert start.weekday() == 0 and end - start == timedelta(days=7)
    if cycle == "monthly":
        assert start.day == 1 and end.day == 1 and 28 <= (end - start).days <= 31
    # the next cycle starts where this one ends
    assert cycle_start(cycle, end) == end


@given(moments)
def test_total_never_resets(now: datetime) -> None:
    assert cycle_end("total", now) is None
    assert cycle_start("total", now) == cycle_start("total", now + timedelta(days=400))


def test_cycle_edges() -> None:
    sunday_night = datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC)
    assert cycle_start("weekly", sunday_night) == datetime(2026, 11, 23, tzinfo=UTC)
    assert cycle_start("weekly", sunday_night + timedelta(seconds=1)) == datetime(2026, 11, 30, tzinfo=UTC)
    assert cycle_end("monthly", datetime(2026, 12, 31, 12, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert cycle_start("daily", datetime(2026, 3, 1, 0, 0, tzinfo=UTC)) == datetime(2026, 3, 1, tzinfo=UTC)
    assert set(CYCLES) == {"daily", "weekly", "monthly", "total"}


# -- a key's counters across cycle resets ---------------------------------------------------------


def _key(runtime: Runtime, wallet_id: str, **options: object) -> SpendKey:
    return spend_keys.create(runtime.db, wallet_id, options).key


def _spend(runtime: Runtime, key: SpendKey, *, hold: int, cost: int, now: datetime) -> None:
    """One call's worth of accounting at `now`: key hold + wallet hold, then settle."""
    with runtime.db.write() as session:
        spend_keys.reserve(session, key, hold_micros=hold, now=now)
        taken = holds.reserve(
            session, wallet_id=key.wallet_id, amount_micros=hold, request_id=f"r{now.timestamp()}{hold}",
            ttl_s=600, spend_key_id=key.id,
        )  # fmt: skip
        holds.post(session, taken.id, cost)


def test_daily_spend_limit_resets_at_midnight_utc(runtime: Runtime) -> None:
    from lava_mcp.core import wallet

    owner = wallet.create_wallet(runtime.db).wallet_id
    fund(runtime, owner, "5.00")
    key = _key(runtime, owner, spend_limit={"amount": "0.01", "cycle": "daily"})
    day = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    _spend(runtime, key, hold=6_000, cost=6_000, now=day)
    with pytest.raises(SpendLimitReached) as refused, runtime.db.write() as session:
        spend_keys.reserve(session, key, hold_micros=6_000, now=day + timedelta(hours=8))
    assert "2026-11-24T00:00:00+00:00" in refused.value.message
    next_day = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    _spend(runtime, key, hold=6_000, cost=5_000, now=next_day)
    row = spend_keys.get(runtime.db, owner, key.id)
    figures = spend_keys.figures(row, next_day)
    assert (figures.current_spend_micros, figures.total_spend_micros) == (5_000, 11_000)
    assert (figures.current_requests, figures.total_requests) == (2, 2)
    # a day later still, nothing spent in the new cycle yet
    assert spend_keys.figures(row, next_day + timedelta(days=1)).current_spend_micros == 0


def test_request_limit_resets_with_its_cycle_and_names_the_wait(runtime: Runtime) -> None:
    from lava_mcp.core import wallet

    owner = wallet.create_wallet(runtime.db).wallet_id
    key = _key(runtime, owner, request_limit={"count": 1, "cycle": "weekly"})
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    _spend(runtime, key, hold=0, cost=0, now=monday)
    sunday = datetime(2026, 11, 29, 23, 59, 0, tzinfo=UTC)
    with pytest.raises(RateLimited) as refused, runtime.db.write() as session:
        spend_keys.reserve(session, key, hold_micros=0, now=sunday)
    assert refused.value.retry_after_s == 61
    _spend(runtime, key, hold=0, cost=0, now=sunday + timedelta(minutes=1))


def test_a_tightened_limit_applies_to_the_next_request(runtime: Runtime) -> None:
    from lava_mcp.core import wallet

    owner = wallet.create_wallet(runtime.db).wallet_id
    fund(runtime, owner, "5.00")
    key = _key(runtime, owner, spend_limit={"amount": "1.00", "cycle": "monthly"})
    now = datetime(2026, 11, 23, tzinfo=UTC)
    _spend(runtime, key, hold=20_000, cost=20_000, now=now)
    spend_keys.update_key(runtime.db, owner, key.id, {"spend_limit": {"amount": "0.02", "cycle": "monthly"}})
    with pytest.raises(SpendLimitReached), runtime.db.write() as session:
        spend_keys.reserve(session, key, hold_micros=1, now=now)


def test_reserve_refuses_a_key_revoked_or_paused_after_it_was_read(runtime: Runtime) -> None:
    from lava_mcp.core import wallet

    owner = wallet.create_wallet(runtime.db).wallet_id
    key = _key(runtime, owner)
    now = datetime(2026, 11, 23, tzinfo=UTC)
    spend_keys.update_key(runtime.db, owner, key.id, {"status": "paused"})
    with pytest.raises(Forbidden), runtime.db.write() as session:
        spend_keys.reserve(session, key, hold_micros=0, now=now)
    spend_keys.revoke(runtime.db, owner, key.id)
    with pytest.raises(Unauthorized), runtime.db.write() as session:
        spend_keys.reserve(session, key, hold_micros=0, now=now)


# -- GCRA is the token bucket ---------------------------------------------------------------------


def _bucket_decisions(arrivals_ns: list[int], rpm: int, burst: int) -> list[bool]:
    """DESIGN §13 literally: a bucket of `burst` tokens refilled at rpm per minute (exact)."""
    tokens, last = Fraction(burst), 0
    decisions = []
    for now in arrivals_ns:
        tokens = min(Fraction(burst), tokens + Fraction((now - last) * rpm, 60 * NANOS_PER_SECOND))
        last = now
        if tokens >= 1:
            tokens -= 1
            decisions.append(True)
        else:
            decisions.append(False)
    return decisions


@settings(max_examples=300)
@given(
    rpm=st.integers(1, 10_000),
    burst=st.integers(1, 50),
    gaps_ms=st.lists(st.integers(0, 120_000), min_size=1, max_size=60),
)
def test_gcra_decides_exactly_as_the_token_bucket(rpm: int, burst: int, gaps_ms: list[int]) -> None:
    arrivals, now = [], 10 * NANOS_PER_SECOND * 60  # start with a full bucket
    for gap in gaps_ms:
        now += gap * 1_000_000
        arrivals.append(now)
    tat = 0
    decisions = []
    for arrival in arrivals:
        decision = gcra(tat, arrival, rpm=rpm, burst=burst)
        decisions.append(decision.allowed)
        tat = decision.tat_scaled
        if not decision.allowed:
            # waiting exactly retry_after makes the next request allowed, and no sooner
            assert gcra(tat, arrival + decision.retry_after_ns, rpm=rpm, burst=burst).allowed
            assert not gcra(tat, arrival + decision.retry_after_ns - 1, rpm=rpm, burst=burst).allowed
    shifted = [arrival - 10 * NANOS_PER_SECOND * 60 for arrival in arrivals]
    assert decisions == _bucket_decisions(shifted, rpm, burst)


async def test_rpm_two_two_pass_third_waits_thirty_seconds() -> None:
    clock = [1_000 * NANOS_PER_SECOND]
    limiter = InProcessRateLimiter(clock_ns=lambda: clock[0])
    await limiter.acquire("sk", rpm=2)
    await limiter.acquire("sk", rpm=2)
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire("sk", rpm=2)
    assert refused.value.retry_after_s == 30
    await limiter.acquire("other", rpm=2)  # keyed by spend key
    clock[0] += 30 * NANOS_PER_SECOND
    await limiter.acquire("sk", rpm=2)
    with pytest.raises(RateLimited):
        await limiter.acquire("sk", rpm=2)


async def test_changing_a_keys_rpm_keeps_its_history() -> None:
    clock = [1_000 * NANOS_PER_SECOND]
    limiter = InProcessRateLimiter(clock_ns=lambda: clock[0])
    for _ in range(3):
        await limiter.acquire("sk", rpm=3)
    with pytest.raises(RateLimited):
        await limiter.acquire("sk", rpm=3)
    with pytest.raises(RateLimited):
        await limiter.acquire("sk", rpm=6, burst=3)  # a higher rate, but the bucket is still empty
    # from the first request at the new rate on, one token comes back every 10 s
    clock[0] += 9 * NANOS_PER_SECOND
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire("sk", rpm=6, burst=3)
    assert refused.value.retry_after_s == 1
    clock[0] += 1 * NANOS_PER_SECOND
    await limiter.acquire("sk", rpm=6, burst=3)


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert retry_after_seconds(1) == 1
    assert retry_after_seconds(NANOS_PER_SECOND) == 1
    assert retry_after_seconds(NANOS_PER_SECOND + 1) == 2
