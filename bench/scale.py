"""Scale-out figures for the README: the gateway with 1, 2 and 3 `lava-mcp serve` processes
on one PostgreSQL and one Redis, loaded with wrk, beside the fake provider measured directly.

    uv run python bench/scale.py [--seconds 10] [--connections 32] [--processes 1,2,3]

Makes a fresh PostgreSQL schema (dropped at the end), a funded wallet and one spend key
with a monthly spend limit and a rate limit (so every call holds and settles in PostgreSQL
and takes its rate-limit step in Redis, as a team's key does), and starts the fake OpenAI
provider in its own process. For each process count it starts that many `python -m
lava_mcp serve` processes (each on its own port, as behind a load balancer) and runs one
wrk per process at the same time — the connections split evenly between them — first with
`--connections` in all, then with one connection per process; it prints the summed
requests/s, the latency p50 and p99 (the worst of the wrk instances) and what the gateway
adds over the fake's own latency at the same connection count, each server's peak RSS
(VmHWM), and the CPU each server used during the loaded run (cores = CPU s / wall s), which
is how the processes shared the machine. At the end every request must be settled and
`ledger verify` must pass.

wrk, the fake provider, PostgreSQL and Redis run on the same machine as the servers, so on
a 2-core machine they compete for the same cores: the figures show what N processes get
out of that machine, not what they would get on N machines. The helpers are
`bench/gateway.py`'s (wrk, its Lua body, the fake provider's process).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway import BODY, LUA, WrkResult, free_port, process, wait_for_port, wrk  # noqa: E402

POSTGRES_URL = os.environ.get("LAVA_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LAVA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# With --wallets N: each request of a wrk connection takes the next wallet's key in turn.
ROTATE_KEYS = """
local keys = {{{keys}}}
local sent = 0
request = function()
  sent = sent + 1
  wrk.headers["Authorization"] = "Bearer " .. keys[sent % #keys + 1]
  return wrk.format()
end
"""


@dataclass
class Run:
    processes: int
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: str
    cores: list[float]  # each server's CPU over the run's wall time
    database_cores: float  # the servers' PostgreSQL backends' CPU over the run's wall time


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_healthy(port: int) -> None:
    import httpx

    wait_for_port(port, timeout_s=90)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        subprocess.run(["sleep", "0.1"], check=True)
    raise RuntimeError(f"serve on {port} never answered /healthz")


def backend_cpu_s(backends: Callable[[], list[int]]) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend `backends()` names (gone ones left out)."""
    spent = {}
    for pid in backends():
        with contextlib.suppress(OSError):  # gone since it was listed
            spent[pid] = cpu_s(pid)
    return spent


def load(
    urls: list[str],
    lua: Path,
    *,
    connections: int,
    seconds: float,
    pids: list[int],
    backends: Callable[[], list[int]],
) -> Run:
    """One wrk per URL at once, `connections` split evenly; CPU of `pids` and of the
    servers' database backends over the run."""
    shares = [
        connections // len(urls) + (1 if index < connections % len(urls) else 0) for index in range(len(urls))
    ]
    before = [cpu_s(pid) for pid in pids]
    database_before = backend_cpu_s(backends)
    started = datetime.datetime.now().timestamp()
    with ThreadPoolExecutor(len(urls)) as pool:
        results: list[WrkResult] = list(
            pool.map(
                lambda pair: wrk(pair[0], lua, connections=pair[1], seconds=seconds),
                [(url, share) for url, share in zip(urls, shares, strict=True) if share],
            )
        )
    wall_s = datetime.datetime.now().timestamp() - started
    cores = [(cpu_s(pid) - start) / wall_s for pid, start in zip(pids, before, strict=True)]
    database_after = backend_cpu_s(backends)
    database_cores = (
        sum(spent - database_before.get(pid, 0.0) for pid, spent in database_after.items()) / wall_s
    )
    return Run(
        processes=len(urls),
        connections=connections,
        requests_per_s=sum(result.requests_per_s for result in results),
        p50_ms=max(result.p50_ms for result in results),
        p99_ms=max(result.p99_ms for result in results),
        errors="; ".join(result.errors for result in results if result.errors),
        cores=cores,
        database_cores=database_cores,
    )


def header(argv: list[str], process_counts: list[int], wallets: int) -> list[str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    wrk_version = (
        subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("[")[0].strip()
    )
    load_average = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return [
        f"command:  {shlex.join(['uv', 'run', 'python', 'bench/scale.py', *argv])}",
        f"date:     {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine:  {os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; load average before the run {load_average}",
        f"servers:  {', '.join(map(str, process_counts))} × `python -m lava_mcp serve` (uvicorn; uvloop/httptools"
        " when installed), one port each, no load balancer: one wrk per server",
        f"shared:   every server, {wrk_version or 'wrk'}, the fake provider (its own process), PostgreSQL and"
        f" Redis on these {os.cpu_count()} cores; the OS schedules them (no pinning)",
        "ledger:   PostgreSQL 127.0.0.1 (a fresh schema); rate limits in Redis; every call holds, settles,"
        f" and takes one Redis step; {wallets} wallet(s), one spend key each, taken in turn",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--processes", default="1,2,3")
    parser.add_argument(
        "--wallets",
        type=int,
        default=1,
        help="spread the calls over this many wallets, one spend key each (default: one wallet and key)",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")
    process_counts = [int(count) for count in args.processes.split(",")]

    from sqlalchemy import create_engine, func, text
    from sqlalchemy.engine import make_url
    from sqlmodel import select

    from lava_mcp.core import spend_keys, verify, wallet
    from lava_mcp.store.db import Database
    from lava_mcp.store.models import RequestRecord

    schema = f"lava_bench_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))

    def named(application_name: str) -> str:
        """The schema's URL, its connections named `application_name` in pg_stat_activity."""
        options = {"options": f"-csearch_path={schema}", "application_name": application_name}
        return make_url(POSTGRES_URL).update_query_dict(options).render_as_string(hide_password=False)

    database_url = named(schema)
    workdir = Path(tempfile.mkdtemp(prefix="lava-bench-scale-"))
    fake_port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("LAVA_")}
    env.update(
        {
            "LAVA_DATABASE_URL": database_url,
            "LAVA_REDIS_URL": REDIS_URL,
            "LAVA_REDIS_KEY_PREFIX": f"{schema}:",
            "LAVA_PAYMENTS": "sandbox",
            "OPENAI_API_KEY": "sk-upstream",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{fake_port}/v1",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{fake_port}",
            "PYTHONPATH": str(ROOT),
        }
    )
    database = Database(named(f"{schema}_bench"))

    def backends() -> list[int]:
        """The servers' PostgreSQL backends (their own application_name)."""
        with database.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"), {"name": schema}
            ).all()
        return [int(row[0]) for row in rows]

    try:
        database.upgrade()
        keys = []
        for number in range(args.wallets):
            owner = wallet.create_wallet(database, name=f"bench-{number}")
            wallet.adjust(database, owner.wallet_id, "100000.00", reason="bench funding")
            created = spend_keys.create(
                database,
                owner.wallet_id,
                {
                    "name": "bench",
                    "spend_limit": {"amount": "90000.00", "cycle": "monthly"},
                    "rate_limit": {"rpm": 1_000_000, "burst": 1_000_000},
                },
            )
            keys.append(created.secret)
        gateway_auth = (
            f'wrk.headers["Authorization"] = "Bearer {keys[0]}"'
            if len(keys) == 1
            else ROTATE_KEYS.format(keys=", ".join(f'"{key}"' for key in keys))
        )
        scripts = {}
        for target, auth in (("direct", ""), ("gateway", gateway_auth)):
            path = workdir / f"{target}.lua"
            path.write_text(LUA.format(auth=auth, body=json.dumps(BODY)))
            scripts[target] = path

        print("\n".join(header(sys.argv[1:], process_counts, args.wallets)), flush=True)
        runs: list[Run] = []
        direct: dict[int, WrkResult] = {}
        rss: dict[int, list[float]] = {}
        with process("fake", str(fake_port), env=env, log=workdir / "fake.log"):
            wait_for_port(fake_port)
            direct_url = f"http://127.0.0.1:{fake_port}/v1/chat/completions"
            wrk(direct_url, scripts["direct"], connections=4, seconds=2)  # warm up
            for connections in sorted({args.connections, *process_counts}):
                direct[connections] = wrk(
                    direct_url, scripts["direct"], connections=connections, seconds=args.seconds
                )
            for count in process_counts:
                servers = []
                try:
                    for _ in range(count):
                        port = free_port()
                        with (workdir / f"serve-{count}-{port}.log").open("wb") as log:
                            servers.append(
                                (
                                    port,
                                    subprocess.Popen(
                                        [sys.executable, "-m", "lava_mcp", "serve", "--port", str(port)],
                                        env=env,
                                        cwd=workdir,
                                        stdout=log,
                                        stderr=subprocess.STDOUT,
                                    ),
                                )
                            )
                    for port, _ in servers:
                        wait_healthy(port)
                    urls = [f"http://127.0.0.1:{port}/v1/chat/completions" for port, _ in servers]
                    pids = [child.pid for _, child in servers]
                    load(
                        urls,
                        scripts["gateway"],
                        connections=4 * count,
                        seconds=2,
                        pids=pids,
                        backends=backends,
                    )  # warm up
                    runs.append(
                        load(
                            urls,
                            scripts["gateway"],
                            connections=args.connections,
                            seconds=args.seconds,
                            pids=pids,
                            backends=backends,
                        )
                    )
                    runs.append(
                        load(
                            urls,
                            scripts["gateway"],
                            connections=count,
                            seconds=args.seconds,
                            pids=pids,
                            backends=backends,
                        )
                    )
                    rss[count] = [peak_rss_mb(pid) for pid in pids]
                finally:
                    for _, child in servers:
                        child.terminate()
                    for _, child in servers:
                        child.wait(timeout=30)

        print(
            f"\n{'procs':>5} {'conns':>5} {'req/s':>8} {'p50 / p99 ms':>15} {'added p50 / p99 ms':>19}"
            f" {'direct req/s':>12}  {'cores: servers':<20} {'database':>8}  peak RSS per server"
        )
        for run in runs:
            base = direct[run.connections]
            print(
                f"{run.processes:>5} {run.connections:>5} {run.requests_per_s:>8,.0f} "
                f"{run.p50_ms:>6.2f} / {run.p99_ms:<6.2f} {run.p50_ms - base.p50_ms:>8.2f} / "
                f"{run.p99_ms - base.p99_ms:<8.2f} {base.requests_per_s:>12,.0f}  "
                f"{', '.join(f'{cores:.2f}' for cores in run.cores):<20} {run.database_cores:>8.2f}  "
                f"{', '.join(f'{mb:.0f} MB' for mb in rss[run.processes])}"
                + (f"  [{run.errors}]" if run.errors else "")
            )
        with database.read() as session:
            counts = dict(
                session.exec(select(RequestRecord.status, func.count()).group_by(RequestRecord.status)).all()
            )
        problems = verify.verify(database)
        print(f"\nrequests recorded: {counts}; ledger verify: {'ok' if not problems else problems[:3]}")
        print(f"server and fake logs: {workdir}")
    finally:
        database.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
