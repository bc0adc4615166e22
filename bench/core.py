"""Core figures for the README: hold+settle cycles per second on SQLite in one process, and
the MCP `get_balance` round trip over stdio.

    uv run python bench/core.py [--seconds 4] [--calls 1000]

(1) Hold+settle cycles, sequential, in one process, with no upstream traffic:
    - metering: `Metering.open()` (validate, price, hold, record the request) then
      `Metering.settle()` (post the charge, complete the record), each one write
      transaction in a worker thread, as every paid call runs them;
    - holds: `holds.reserve()` then `holds.post()` in two `Database.write()` transactions
      on the calling thread (the ledger's own cost, without the request record or threads);
    each with LAVA_SQLITE_SYNCHRONOUS=FULL (the default) and NORMAL.
(2) `get_balance` over stdio: spawns the installed `lava-mcp stdio`, warms up, then times
    `--calls` sequential calls through the SDK's client and prints p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from lava_mcp.core import holds, wallet
from lava_mcp.core.metering import Metering
from lava_mcp.providers import shapes
from lava_mcp.providers.catalog import Catalog, Service
from lava_mcp.store.db import Database

PRICE_MICROS = 1_000  # $0.001 a call
BENCH_SERVICE = Service(
    id="bench", shape="http", pricing="per_call", base_url="http://127.0.0.1:9", per_call_micros=PRICE_MICROS
)


def machine() -> list[str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    filesystem = subprocess.run(["df", "-T", tempfile.gettempdir()], capture_output=True, text=True).stdout
    fs_type = filesystem.splitlines()[-1].split()[1] if filesystem.strip() else "unknown"
    return [
        f"command:  {shlex.join(['uv', 'run', 'python', 'bench/core.py', *sys.argv[1:]])}",
        f"machine:  {os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}",
        f"load:     {' '.join(f'{load:.2f}' for load in os.getloadavg())} (1, 5, 15 min averages at start)",
        f"python:   {platform.python_version()} ({platform.python_implementation()})",
        f"database: SQLite {__import__('sqlite3').sqlite_version} in {tempfile.gettempdir()} ({fs_type})",
    ]


def fresh_database(directory: Path, synchronous: str) -> tuple[Database, str]:
    database = Database(f"sqlite:///{directory / f'bench-{synchronous}.db'}", sqlite_synchronous=synchronous)
    database.upgrade()
    created = wallet.create_wallet(database, name="bench")
    wallet.adjust(database, created.wallet_id, "100000.00", reason="bench")
    return database, created.wallet_id


def timed(seconds: float, cycle: Callable[[], None]) -> tuple[int, float]:
    """Run `cycle` until `seconds` have passed; returns (cycles, elapsed seconds)."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        cycle()
        count += 1
    return count, time.perf_counter() - start


def bench_holds(directory: Path, synchronous: str, seconds: float) -> float:
    database, wallet_id = fresh_database(directory, synchronous)
    number = 0

    def cycle() -> None:
        nonlocal number
        number += 1
        with database.write() as session:
            hold = holds.reserve(
                session,
                wallet_id=wallet_id,
                amount_micros=PRICE_MICROS,
                request_id=f"req_{number}",
                ttl_s=600,
            )
        with database.write() as session:
            holds.post(session, hold.id, PRICE_MICROS)

    count, elapsed = timed(seconds, cycle)
    database.dispose()
    return count / elapsed


async def bench_metering(directory: Path, synchronous: str, seconds: float) -> float:
    database, wallet_id = fresh_database(directory, synchronous)
    async with httpx.AsyncClient() as unused_client:
        metering = Metering(database, Catalog({"bench": BENCH_SERVICE}), unused_client)
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            ticket = await metering.open(
                wallet_id=wallet_id, service_id="bench", model=None, body={"q": count}, endpoint="bench"
            )
            await metering.settle(ticket, shapes.Usage(0, 0))
            count += 1
        elapsed = time.perf_counter() - start
    database.dispose()
    return count / elapsed


async def bench_stdio(directory: Path, calls: int) -> tuple[float, float, float]:
    from mcp.client import Client
    from mcp.client.stdio import StdioServerParameters

    url = f"sqlite:///{directory / 'stdio.db'}"
    database = Database(url)
    database.upgrade()
    created = wallet.create_wallet(database, name="bench")
    wallet.adjust(database, created.wallet_id, "47.50", reason="bench")
    database.dispose()
    parameters = StdioServerParameters(
        command=str(Path(sys.executable).parent / "lava-mcp"),
        args=["stdio"],
        env={"LAVA_WALLET_KEY": created.wallet_key, "LAVA_DATABASE_URL": url, "LAVA_PAYMENTS": "sandbox"},
        cwd=directory,
    )
    latencies_ms: list[float] = []
    async with Client(parameters) as client:
        for _ in range(50):  # warm up
            await client.call_tool("get_balance", {})
        for _ in range(calls):
            start = time.perf_counter()
            result = await client.call_tool("get_balance", {})
            latencies_ms.append((time.perf_counter() - start) * 1000)
            assert not result.is_error and result.structured_content == {
                "balance": "47.50",
                "currency": "USD",
                "held": "0.00",
                "sandbox": True,
            }, result
    quantiles = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return quantiles[49], quantiles[98], statistics.fmean(latencies_ms)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="time per hold+settle measurement")
    parser.add_argument("--calls", type=int, default=1000, help="get_balance calls over stdio")
    arguments = parser.parse_args()

    for line in machine():
        print(line)
    print()
    with tempfile.TemporaryDirectory(prefix="lava-bench-") as temporary:
        directory = Path(temporary)
        print(
            f"hold+settle cycles per second (SQLite, one process, sequential, {arguments.seconds:g} s each)"
        )
        for synchronous in ("FULL", "NORMAL"):
            metering_rate = asyncio.run(bench_metering(directory, synchronous, arguments.seconds))
            holds_rate = bench_holds(directory, synchronous, arguments.seconds)
            print(
                f"  synchronous={synchronous:<6}  Metering.open+settle {metering_rate:8.0f}/s"
                f"   holds.reserve+post {holds_rate:8.0f}/s"
            )
        print()
        p50_ms, p99_ms, mean_ms = asyncio.run(bench_stdio(directory, arguments.calls))
        print(f"MCP get_balance over stdio ({arguments.calls} sequential calls to `lava-mcp stdio`)")
        print(f"  p50 {p50_ms:.2f} ms   p99 {p99_ms:.2f} ms   mean {mean_ms:.2f} ms")


if __name__ == "__main__":
    main()
