"""What a rate-limit check costs: the in-process limiter and the shared Redis one.

    uv run python bench/rate_limits.py                       # Redis at redis://127.0.0.1:6379/0
    uv run python bench/rate_limits.py --redis redis://host:6379/0
    uv run python bench/rate_limits.py --uvloop              # on uvloop's event loop

Each limiter admits `--calls` checks on keys with a rate limit far above the load (so every
check is admitted and does the full step), sequentially and then from 32 concurrent tasks,
and prints the time per check (p50 and p99 for the sequential ones) and checks per second.
The Redis keys use a prefix of their own and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import time

import redis

from lava_mcp.core.rate_limits import InProcessRateLimiter, RateLimiter, RedisRateLimiter

RPM = 1_000_000  # far above the load: every check is admitted


async def sequential(limiter: RateLimiter, calls: int) -> list[float]:
    latencies_s = []
    for index in range(calls):
        started = time.perf_counter()
        await limiter.acquire(f"key_{index % 100}", rpm=RPM, burst=RPM)
        latencies_s.append(time.perf_counter() - started)
    return latencies_s


async def concurrent(limiter: RateLimiter, calls: int, tasks: int) -> float:
    async def worker(worker_index: int) -> None:
        for index in range(calls // tasks):
            await limiter.acquire(f"key_{(worker_index + index) % 100}", rpm=RPM, burst=RPM)

    started = time.perf_counter()
    await asyncio.gather(*(worker(index) for index in range(tasks)))
    return time.perf_counter() - started


async def measure(name: str, limiter: RateLimiter, calls: int) -> None:
    await sequential(limiter, 200)  # warm: connections open, the script loaded
    latencies_s = sorted(await sequential(limiter, calls))
    p50_us = statistics.median(latencies_s) * 1e6
    p99_us = latencies_s[int(len(latencies_s) * 0.99)] * 1e6
    elapsed_s = await concurrent(limiter, calls, 32)
    print(
        f"{name:<12} 1 caller: p50 {p50_us:7.1f} µs  p99 {p99_us:7.1f} µs  {calls / sum(latencies_s):9,.0f}/s"
        f"   32 callers: {calls / elapsed_s:9,.0f}/s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=5000)
    arguments = parser.parse_args()
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}, {loop} event loop"
    )
    await measure("in-process", InProcessRateLimiter(), arguments.calls)
    prefix = f"lava-bench-{secrets.token_hex(4)}:"
    shared = RedisRateLimiter(arguments.redis, key_prefix=prefix)
    try:
        await measure("Redis", shared, arguments.calls)
    finally:
        await shared.aclose()
        with redis.Redis.from_url(arguments.redis) as client:
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)


if __name__ == "__main__":
    import sys

    if "--uvloop" in sys.argv:
        import uvloop

        sys.argv.remove("--uvloop")
        uvloop.run(main())
    else:
        asyncio.run(main())
