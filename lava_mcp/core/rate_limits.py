"""Rate limits (requests per minute with a burst), behind one interface.

The rule (DESIGN §13) is a token bucket holding up to `burst` requests (default
`burst = rpm`) that refills at `rpm` per minute. It is computed here as GCRA (the
generic cell rate algorithm), which is that token bucket stored as one number per key,
the *theoretical arrival time* `tat`:

    interval = 60 s / rpm               (the time one token takes to refill)
    a request at `now` is allowed  iff  max(tat, now) + interval − now ≤ burst · interval
    and then                            tat := max(tat, now) + interval

Why it is the token bucket: let `tokens(now) = burst − (max(tat, now) − now) / interval`.
At `tat ≤ now` the bucket is full (`burst`); each allowed request moves `tat` one
interval later, i.e. takes one token; waiting `d` moves `now` on by `d`, i.e. refills
`d / interval` tokens, never above `burst`. The condition above is exactly
`tokens(now) ≥ 1`. A refused request changes nothing, and it may retry after
`max(tat, now) + interval − now − burst · interval` (rounded up to whole seconds).

Time is integer nanoseconds and every quantity is scaled by `rpm`, so the arithmetic is
exact (60 s / rpm need not be a whole number of nanoseconds).

Two implementations of `RateLimiter`, chosen by `build_rate_limiter`:

- `InProcessRateLimiter` keeps `tat` per spend key in this process: with several server
  processes each one admits the key's full rate (DESIGN §11), so it serves one process.
- `RedisRateLimiter` (`LAVA_REDIS_URL` set) runs the same step as one Lua script per
  request, atomic on the Redis server and timed by the server's own clock (`TIME`), so
  any number of processes share one bucket per key and their clocks don't matter. Lua
  numbers are doubles, exact only below 2^53, while `tat` × rpm in nanoseconds is not:
  the script keeps time in microseconds and `tat` as a whole microsecond plus a
  remainder in 1/rpm of one (`tat = tat_us + frac / rpm`), and computes only the tokens
  in use, `(tat − now) × rpm` (at most burst × 60 s × 10^6 ≤ 6·10^13), so every step is
  exact integer arithmetic there too. A key whose bucket is full again is deleted by its
  Redis expiry (a missing key *is* a full bucket, as in the in-process dict).

  Redis is never the source of truth for money (balances and spend limits are in the
  database); it holds only buckets. If Redis cannot be reached, calls on a key with a rate
  limit are refused with 429 naming the cause ("fails closed": a limit that can't be
  checked is not waived) after a short connect/read timeout (`LAVA_REDIS_TIMEOUT_S`);
  keys without a rate limit never ask Redis, so they and the money path are unaffected.
  An answer lost after the script ran refuses a call whose token was taken: the error
  is always on the side of admitting fewer, never more, than the rate.

The bucket belongs to the spend key's id. Rotating a key keeps its id, so it keeps its
bucket (a rotate is not a way round the limit). Updating the rpm keeps the tokens in use
and refills them at the new rate from then on; a lower burst than the tokens in use
refuses calls until they have refilled below it. Removing the rate limit stops asking;
setting one again starts from what the bucket still remembers (nothing once it refilled).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from lava_mcp.errors import RateLimited
from lava_mcp.observability import metrics

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

logger = logging.getLogger("lava_mcp.rate_limits")

NANOS_PER_MINUTE = 60_000_000_000
NANOS_PER_SECOND = 1_000_000_000


class RateLimiter(Protocol):
    """Admits or refuses one request for a key under `rpm` with `burst`."""

    async def acquire(self, key: str, *, rpm: int, burst: int | None = None) -> None:
        """Take one request from `key`'s bucket.

        Raises:
            RateLimited: the bucket is empty; `retry_after_s` says when one token is back.
        """
        ...

    async def aclose(self) -> None:
        """Release what the limiter holds open (connections)."""
        ...


@dataclass(frozen=True)
class Decision:
    allowed: bool
    tat_scaled: int  # the key's new theoretical arrival time, in nanoseconds × rpm
    retry_after_ns: int  # 0 when allowed


def gcra(tat_scaled: int, now_ns: int, *, rpm: int, burst: int) -> Decision:
    """One GCRA step (see the module docstring). Pure, exact integer arithmetic.

    `tat_scaled` and the result's are in nanoseconds × rpm (0 for a key never seen).
    """
    assert rpm >= 1 and burst >= 1, (rpm, burst)
    now_scaled = now_ns * rpm
    start = max(tat_scaled, now_scaled)
    new_tat = start + NANOS_PER_MINUTE  # one interval = 60 s / rpm, times rpm
    excess = new_tat - now_scaled - burst * NANOS_PER_MINUTE
    if excess <= 0:
        return Decision(True, new_tat, 0)
    return Decision(False, tat_scaled, -(-excess // rpm))


def retry_after_seconds(retry_after_ns: int) -> int:
    """Whole seconds, rounded up, at least 1 (the `Retry-After` header's unit)."""
    return max(1, -(-retry_after_ns // NANOS_PER_SECOND))


def refused(rpm: int, burst: int, retry_after_ns: int) -> RateLimited:
    """The 429 for a key whose bucket is empty (the same words from either limiter)."""
    seconds = retry_after_seconds(retry_after_ns)
    return RateLimited(
        f"rate limit of {rpm} requests per minute (burst {burst}) reached; retry in {seconds} s",
        retry_after_s=seconds,
    )


class InProcessRateLimiter:
    """GCRA state in a dict, for one server process (DESIGN §11: use Redis for several)."""

    def __init__(self, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock_ns = clock_ns
        self._state: dict[str, tuple[int, int]] = {}  # key → (rpm, tat_scaled)
        self._lock = threading.Lock()

    async def acquire(self, key: str, *, rpm: int, burst: int | None = None) -> None:
        """Raises: RateLimited (429) when `key` has no token left."""
        self.take(key, rpm=rpm, burst=burst)

    async def aclose(self) -> None:
        """Nothing to release."""

    def take(self, key: str, *, rpm: int, burst: int | None = None) -> None:
        """The synchronous step behind `acquire` (no I/O, so no await is needed).

        Raises: RateLimited (429) when `key` has no token left.
        """
        burst = burst or rpm
        with self._lock:
            now_ns = self._clock_ns()
            previous_rpm, tat_scaled = self._state.get(key, (rpm, 0))
            if previous_rpm != rpm:
                # The key's rpm was updated: keep the tokens it has used and not yet got
                # back (tat − now, in units of one interval × 60 s, is independent of rpm),
                # and refill them at the new rate from now on.
                used = max(0, tat_scaled - now_ns * previous_rpm)
                tat_scaled = now_ns * rpm + used
                self._state[key] = (rpm, tat_scaled)
            decision = gcra(tat_scaled, now_ns, rpm=rpm, burst=burst)
            if decision.allowed:
                self._state[key] = (rpm, decision.tat_scaled)
                if len(self._state) > 100_000:
                    self._forget_idle(now_ns)
                metrics.rate_limit_decision("allowed")
                return
        metrics.rate_limit_decision("refused")
        raise refused(rpm, burst, decision.retry_after_ns)

    def _forget_idle(self, now_ns: int) -> None:
        # A key whose tat has passed has a full bucket: forgetting it changes nothing.
        for key, (rpm, tat_scaled) in list(self._state.items()):
            if tat_scaled <= now_ns * rpm:
                del self._state[key]


# One GCRA step on the Redis server (see the module docstring for the units).
# KEYS[1]: the key's bucket, a hash {tat = whole µs, frac = remainder in 1/rpm µs, rpm}.
# ARGV: rpm, burst[, now in µs: only tests pass it, to drive the clock].
# Returns {1, 0} when allowed, {0, excess} when refused, where excess (µs × rpm) is how far
# past the bucket's depth this request would have gone.
# Numbers are written with %.0f: Lua's own tostring keeps only 14 significant digits.
# TIME before a write needs Redis 5 or newer (scripts replicated by their effects).
GCRA_SCRIPT = """
local rpm = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local interval = 60000000
local now = tonumber(ARGV[3])
if not now then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
local used = 0
local state = redis.call('HMGET', KEYS[1], 'tat', 'frac', 'rpm')
if state[1] then
  local tat = tonumber(state[1])
  if tat >= now then
    used = (tat - now) * tonumber(state[3]) + tonumber(state[2])
  end
end
local function store(in_use)
  local ahead = math.floor(in_use / rpm)
  local frac = in_use - ahead * rpm
  if frac < 0 then
    ahead = ahead - 1
    frac = frac + rpm
  elseif frac >= rpm then
    ahead = ahead + 1
    frac = frac - rpm
  end
  redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', now + ahead), 'frac', string.format('%.0f', frac),
    'rpm', string.format('%.0f', rpm))
  if not ARGV[3] then
    -- Gone once full again (a missing bucket is a full one). Redis expires keys by its
    -- own clock, so a test driving the time keeps its buckets instead.
    redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.floor(ahead / 1000) + 1))
  end
end
local new_used = used + interval
local excess = new_used - burst * interval
if excess > 0 then
  if state[1] and tonumber(state[3]) ~= rpm then
    store(used)  -- an updated rpm refills at the new rate from now on, even when refused
  end
  return {0, excess}
end
store(new_used)
return {1, 0}
"""

# A limit that could not be checked is asked again after this long.
REDIS_UNAVAILABLE_RETRY_AFTER_S = 5


class RedisRateLimiter:
    """GCRA buckets in Redis, shared by every server process that uses the same Redis
    and key prefix: one script call (one round trip) per request on a rate-limited key.

    The client is made on first use inside the running event loop (a redis.asyncio
    connection belongs to the loop that opened it), and again if the loop changes.
    `clock_us` replaces the Redis server's clock (tests drive time with it); by default
    every process takes the time from Redis, so their own clocks don't matter.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "lava:",
        timeout_s: float = 0.5,
        clock_us: Callable[[], int] | None = None,
    ) -> None:
        try:  # the optional `redis` extra: imported only when it is used
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
        except ImportError as error:
            raise RuntimeError(
                "LAVA_REDIS_URL is set but the redis package is missing: install lava-mcp[redis]"
            ) from error

        self.url = url
        self.key_prefix = key_prefix
        self.timeout_s = timeout_s
        self._clock_us = clock_us
        self._redis_module = redis.asyncio
        # One try: a dead Redis costs a call at most one timeout, never a series of them.
        self._retry = Retry(NoBackoff(), 0)
        self._errors = (RedisError, OSError)
        self._client: Redis | None = None
        self._script: AsyncScript | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failing = False

    def _connected(self) -> AsyncScript:
        loop = asyncio.get_running_loop()
        if self._script is None or self._loop is not loop:
            self._client = self._redis_module.Redis.from_url(
                self.url,
                socket_connect_timeout=self.timeout_s,
                socket_timeout=self.timeout_s,
                retry=self._retry,
            )
            self._script = self._client.register_script(GCRA_SCRIPT)
            self._loop = loop
        return self._script

    def bucket(self, key: str) -> str:
        """The Redis key of `key`'s bucket."""
        return f"{self.key_prefix}rate:{key}"

    async def acquire(self, key: str, *, rpm: int, burst: int | None = None) -> None:
        """Raises: RateLimited (429) when `key` has no token left, or when Redis can't be
        reached to say (the message names Redis as the cause)."""
        burst = burst or rpm
        arguments = [rpm, burst] if self._clock_us is None else [rpm, burst, self._clock_us()]
        try:
            answer: Any = await self._connected()(keys=[self.bucket(key)], args=arguments)
        except self._errors as error:
            metrics.rate_limit_decision("unavailable")
            if not self._failing:
                logger.warning("Redis at %s fails; rate-limited keys get 429: %r", self.where, error)
                self._failing = True
            raise RateLimited(
                f"this key's rate limit can't be checked: Redis (LAVA_REDIS_URL, {self.where}) is unreachable "
                f"or failing ({type(error).__name__}); calls on rate-limited keys are refused until it answers",
                retry_after_s=REDIS_UNAVAILABLE_RETRY_AFTER_S,
            ) from error
        if self._failing:
            logger.warning("Redis at %s answers again", self.where)
            self._failing = False
        allowed, excess = int(answer[0]), int(answer[1])
        if allowed:
            metrics.rate_limit_decision("allowed")
            return
        metrics.rate_limit_decision("refused")
        raise refused(rpm, burst, -(-excess * 1000 // rpm))  # µs × rpm → ns, rounded up

    @property
    def where(self) -> str:
        """Redis's host and port (or socket path), never its password."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return parts.path
        return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"

    async def aclose(self) -> None:
        client, self._client, self._script = self._client, None, None
        # A client opened in another event loop can't be closed from this one (its loop is
        # gone with its connections).
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


def build_rate_limiter(redis_url: str | None, *, key_prefix: str, timeout_s: float) -> RateLimiter:
    """Redis's shared buckets when `redis_url` is set, else this process's own."""
    if redis_url:
        return RedisRateLimiter(redis_url, key_prefix=key_prefix, timeout_s=timeout_s)
    return InProcessRateLimiter()
