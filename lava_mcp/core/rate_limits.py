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

`InProcessRateLimiter` keeps `tat` per spend key in this process. A Redis implementation
(several replicas sharing limits) stores the same number per key and runs `gcra` in a
Lua script; it only has to implement `RateLimiter`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from lava_mcp.errors import RateLimited

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


class InProcessRateLimiter:
    """GCRA state in a dict, for one server process (DESIGN §11: use Redis for several)."""

    def __init__(self, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock_ns = clock_ns
        self._state: dict[str, tuple[int, int]] = {}  # key → (rpm, tat_scaled)
        self._lock = threading.Lock()

    async def acquire(self, key: str, *, rpm: int, burst: int | None = None) -> None:
        """Raises: RateLimited (429) when `key` has no token left."""
        self.take(key, rpm=rpm, burst=burst)

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
                return
        seconds = retry_after_seconds(decision.retry_after_ns)
        raise RateLimited(
            f"rate limit of {rpm} requests per minute (burst {burst}) reached; retry in {seconds} s",
            retry_after_s=seconds,
        )

    def _forget_idle(self, now_ns: int) -> None:
        # A key whose tat has passed has a full bucket: forgetting it changes nothing.
        for key, (rpm, tat_scaled) in list(self._state.items()):
            if tat_scaled <= now_ns * rpm:
                del self._state[key]
