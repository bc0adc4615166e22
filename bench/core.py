"""Core figures for the README: hold+settle cycles per second through the metering core, and
the MCP `get_balance` round trip over stdio.

    uv run python bench/core.py [--seconds 4] [--callers 1,8,32] [--calls 1000] [--no-stdio]

(1) Hold+settle cycles through `Metering`, with no upstream traffic: each caller loops
    `Metering.open()` (validate, price the bound, take the hold on the wallet and on a spend
    key with a monthly spend limit, record the request) then `Metering.settle()` (post the
    charge, complete the record), each committed before it returns, as every gateway call
    runs them. At 1, 8 and 32 concurrent callers, on SQLite with `synchronous=FULL` (the
    default) and `NORMAL` (group commit: concurrent callers share a commit), and on
    PostgreSQL (per-call transactions in worker threads) at LAVA_BENCH_POSTGRES_URL or the
    tests' default, in a schema of its own that is dropped afterwards. The ledger is
    checked afterwards (`lava_mcp.core.verify`, and the balance is what the charges took).
(2) `holds.reserve()` then `holds.post()` in two `Database.write()` transactions on the
    calling thread (the ledger's own cost, without the request record or the writer thread).
(3) `get_balance` over stdio: spawns the installed `lava-mcp stdio`, warms up, then times
    `--calls` sequential calls through the SDK's client and prints p50/p99; then the same
    loop against `bench/stdio_floor.py` (a constant answer, same SDK, same output schema)
    on the SDK's stdio transport and on lava-mcp's: the floor under lava-mcp's figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from lava_mcp.core import holds, spend_keys, verify, wallet
from lava_mcp.core.metering import Metering
from lava_mcp.providers import shapes
from lava_mcp.providers.catalog import Catalog, ModelPrice, Service
from lava_mcp.providers.upstream import Upstream
from lava_mcp.store.db import Database
from lava_mcp.store.models import SpendKey

PRICE_MICROS = 1_000  # $0.001 a call (holds.reserve+post)
BENCH_SERVICE = Service(
    id="benchchat",
    shape="openai",
    pricing="per_token",
    base_url="http://127.0.0.1:9",
    model_prefixes=("bench-",),
    models={"bench-1": ModelPrice(Decimal("1.00"), Decimal("2.00"))},
)
BODY = {"model": "bench-1", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}
USAGE = shapes.Usage(9, 12)  # what each call reports: 9 × $1 + 12 × $2 per million tokens
CYCLE_COST_MICROS = 9 + 24
POSTGRES_URL = os.environ.get("LAVA_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


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
        f"date:     {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine:  {os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}",
        f"load:     {' '.join(f'{load:.2f}' for load in os.getloadavg())} (1, 5, 15 min averages at start)",
        f"python:   {platform.python_version()} ({platform.python_implementation()})",
        f"database: SQLite {__import__('sqlite3').sqlite_version} in {tempfile.gettempdir()} ({fs_type})",
    ]


def funded(database: Database) -> tuple[str, SpendKey]:
    """A wallet with plenty of money and a spend key with a monthly spend limit on it."""
    database.upgrade()
    created = wallet.create_wallet(database, name="bench")
    wallet.adjust(database, created.wallet_id, "100000.00", reason="bench")
    secret = spend_keys.create(
        database, created.wallet_id, {"spend_limit": {"amount": "100000.00", "cycle": "monthly"}}
    ).secret
    return created.wallet_id, spend_keys.authenticate(database, secret)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """The URL of a fresh schema on the bench's PostgreSQL, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"lava_bench_{secrets.token_hex(6)}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


async def bench_metering(url: str, synchronous: str, callers: int, seconds: float) -> tuple[float, float]:
    """Hold+settle cycles per second with `callers` concurrent callers, and the process's CPU
    time per cycle in microseconds (all threads); checks the ledger afterwards."""
    database = Database(url, sqlite_synchronous=synchronous)
    wallet_id, key = await asyncio.to_thread(funded, database)
    upstream = Upstream(5.0, connect_timeout_s=1.0)
    metering = Metering(database, Catalog({BENCH_SERVICE.id: BENCH_SERVICE}), upstream)
    counts = [0] * callers
    cycles = 0  # every cycle, warm-up included (for the balance check)
    loop = asyncio.get_running_loop()

    async def caller(number: int, deadline: float) -> None:
        nonlocal cycles
        while loop.time() < deadline:
            ticket = await metering.open(
                wallet_id=wallet_id,
                service_id=BENCH_SERVICE.id,
                model=None,
                body=BODY,
                endpoint="bench",
                spend_key=key,
            )
            settlement = await metering.settle(ticket, USAGE)
            assert settlement.cost.total_micros == CYCLE_COST_MICROS, settlement
            counts[number] += 1
            cycles += 1

    # Warm up (connections, statement caches, the writer thread), then measure.
    await asyncio.gather(*(caller(number, loop.time() + 0.3) for number in range(callers)))
    counts = [0] * callers
    start, cpu_start = time.perf_counter(), time.process_time()
    deadline = loop.time() + seconds
    await asyncio.gather(*(caller(number, deadline) for number in range(callers)))
    elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    await upstream.aclose()
    problems = await asyncio.to_thread(verify.verify, database)
    balance = await asyncio.to_thread(wallet.get_balance, database, wallet_id)
    database.dispose()
    assert problems == [], problems
    assert balance.held_micros == 0, balance
    assert balance.balance_micros == 100_000 * 1_000_000 - cycles * CYCLE_COST_MICROS, (balance, cycles)
    return sum(counts) / elapsed, cpu_s / sum(counts) * 1e6


def bench_holds(directory: Path, synchronous: str, seconds: float) -> float:
    database = Database(f"sqlite:///{directory / f'holds-{synchronous}.db'}", sqlite_synchronous=synchronous)
    wallet_id, _ = funded(database)
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


def timed(seconds: float, cycle: Callable[[], None]) -> tuple[int, float]:
    """Run `cycle` until `seconds` have passed; returns (cycles, elapsed seconds)."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        cycle()
        count += 1
    return count, time.perf_counter() - start


async def bench_stdio(directory: Path, calls: int) -> tuple[float, float, float]:
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
    return await time_get_balance(parameters, calls)


async def bench_stdio_floor(directory: Path, calls: int, transport: str) -> tuple[float, float, float]:
    """The same loop against `bench/stdio_floor.py`: the SDK's pipeline alone, on the
    SDK's stdio transport ("sdk") or lava-mcp's ("lava")."""
    from mcp.client.stdio import StdioServerParameters

    parameters = StdioServerParameters(
        command=sys.executable,
        args=[str(Path(__file__).with_name("stdio_floor.py")), "--transport", transport],
        cwd=directory,
    )
    return await time_get_balance(parameters, calls)


async def time_get_balance(parameters: Any, calls: int) -> tuple[float, float, float]:
    """p50, p99 and mean (ms) of `calls` sequential get_balance calls through the SDK's
    stdio client, after 50 to warm up."""
    from mcp.client import Client

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
    parser.add_argument("--callers", default="1,8,32", help="concurrent callers, comma-separated")
    parser.add_argument("--calls", type=int, default=1000, help="get_balance calls over stdio")
    parser.add_argument("--no-stdio", action="store_true", help="skip the get_balance measurement")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    arguments = parser.parse_args()
    concurrency = [int(number) for number in arguments.callers.split(",")]

    for line in machine():
        print(line)
    print()
    print(
        f"hold+settle cycles per second through Metering (one process, spend key with a spend limit,"
        f" {arguments.seconds:g} s each)"
    )
    print(
        f"  {'database':<24}"
        + "".join(f"{f'{callers} caller' + ('s' if callers > 1 else ''):>12}" for callers in concurrency)
    )
    with tempfile.TemporaryDirectory(prefix="lava-bench-") as temporary:
        directory = Path(temporary)
        runs: list[tuple[str, list[tuple[float, float]]]] = []
        for synchronous in ("FULL", "NORMAL"):
            figures = []
            for callers in concurrency:
                url = f"sqlite:///{directory / f'metering-{synchronous}-{callers}.db'}"
                figures.append(asyncio.run(bench_metering(url, synchronous, callers, arguments.seconds)))
            runs.append((f"SQLite {synchronous}", figures))
            print(f"  {runs[-1][0]:<24}" + "".join(f"{rate:>10.0f}/s" for rate, _ in figures))
        if not arguments.no_postgres:
            figures = []
            for callers in concurrency:
                with postgres_schema() as url:
                    figures.append(asyncio.run(bench_metering(url, "FULL", callers, arguments.seconds)))
            runs.append(("PostgreSQL", figures))
            print(f"  {'PostgreSQL':<24}" + "".join(f"{rate:>10.0f}/s" for rate, _ in figures))
        print()
        print("CPU time per cycle (the whole process, every thread)")
        for name, figures in runs:
            print(f"  {name:<24}" + "".join(f"{cpu_us:>9.0f} us" for _, cpu_us in figures))
        print()
        print("holds.reserve + holds.post alone (two Database.write() transactions, sequential)")
        for synchronous in ("FULL", "NORMAL"):
            print(
                f"  SQLite {synchronous:<6}  {bench_holds(directory, synchronous, arguments.seconds):8.0f}/s"
            )
        if not arguments.no_stdio:
            print()
            p50_ms, p99_ms, mean_ms = asyncio.run(bench_stdio(directory, arguments.calls))
            print(f"MCP get_balance over stdio ({arguments.calls} sequential calls to `lava-mcp stdio`)")
            print(f"  p50 {p50_ms:.2f} ms   p99 {p99_ms:.2f} ms   mean {mean_ms:.2f} ms")
            for transport, label in (
                ("sdk", "the SDK's own stdio transport"),
                ("lava", "lava-mcp's stdio transport (transports.stdio_streams)"),
            ):
                p50_ms, p99_ms, mean_ms = asyncio.run(
                    bench_stdio_floor(directory, arguments.calls, transport)
                )
                print(f"  floor: a constant get_balance on {label} (bench/stdio_floor.py)")
                print(f"  p50 {p50_ms:.2f} ms   p99 {p99_ms:.2f} ms   mean {mean_ms:.2f} ms")


if __name__ == "__main__":
    main()
