"""Gateway overhead for the README: wrk against the fake provider directly and through one
lava-mcp server, in the same run, on loopback.

    uv run python bench/gateway.py [--seconds 10] [--connections 1,32] [--synchronous FULL]

Starts the fake OpenAI provider (tests/fake_provider.py) and one lava-mcp server (the
whole app: gateway, REST, MCP) in their own processes, with a fresh SQLite ledger, a
funded wallet and one spend key (spend limit, request counting; every call holds and
settles in SQLite). Then, for each connection count and for non-streaming and streaming
chat completions, runs `wrk` (Debian's package; POST bodies from a Lua script) first
straight at the fake, then through the gateway, and prints requests/s and latency
p50/p99 of both and the latency the gateway adds (gateway − direct). At the end it checks
that every request was settled and `ledger verify` passes.

Subcommands used internally: `fake PORT`, `serve PORT` (uvicorn with the fastest loop and
HTTP parser installed: uvloop/httptools when present).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BODY = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hello"}]}
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}
wrk.body = [[{body}]]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def uvicorn_options() -> dict[str, Any]:
    options: dict[str, Any] = {"log_level": "warning", "access_log": False}
    try:
        import uvloop  # noqa: F401

        options["loop"] = "uvloop"
    except ImportError:
        pass
    try:
        import httptools  # noqa: F401

        options["http"] = "httptools"
    except ImportError:
        pass
    return options


def run_fake(port: int) -> None:
    import uvicorn

    from tests.fake_provider import FakeProvider

    uvicorn.run(FakeProvider().app(), host="127.0.0.1", port=port, **uvicorn_options())


def run_server(port: int) -> None:
    import uvicorn

    from lava_mcp.config import Settings
    from lava_mcp.runtime import Runtime
    from lava_mcp.transports.app import build_app

    runtime = Runtime.build(Settings())
    app = build_app(runtime, migrate=False)
    # Per-request INFO lines (httpx logs each upstream call) are not part of the gateway's cost.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn.run(app, host="127.0.0.1", port=port, **uvicorn_options())


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: str


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    assert match, text
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000}[unit]


def wrk(url: str, lua: Path, *, connections: int, seconds: float) -> WrkResult:
    threads = max(1, min(connections, 2))
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = ", ".join(
        line.strip() for line in output.splitlines() if "Non-2xx" in line or "Socket errors" in line
    )
    return WrkResult(rate, p50, p99, errors)


@contextmanager
def process(*args: str, env: dict[str, str], log: Path) -> Any:
    with log.open("w") as output:
        child = subprocess.Popen(
            [sys.executable, __file__, *args], env=env, cwd=ROOT, stdout=output, stderr=output
        )
        try:
            yield child
        finally:
            child.terminate()
            child.wait(timeout=30)


def machine(argv: list[str]) -> list[str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    version = (
        subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("[")[0].strip()
    )
    return [
        f"command:  {shlex.join(['uv', 'run', 'python', 'bench/gateway.py', *argv])}",
        f"machine:  {os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        f"server:   one process, uvicorn {' + '.join(f'{k}={v}' for k, v in uvicorn_options().items() if k in ('loop', 'http')) or 'defaults (asyncio, h11)'}",
        f"load gen: {version or 'wrk'}; fake provider in its own process",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", default="1,32")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the server during the 32-connection run"
    )
    args, _ = parser.parse_known_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")

    from lava_mcp.config import Settings
    from lava_mcp.core import spend_keys, verify, wallet
    from lava_mcp.store.db import Database
    from lava_mcp.store.models import RequestRecord

    workdir = Path(tempfile.mkdtemp(prefix="lava-bench-"))
    fake_port, server_port = free_port(), free_port()
    database_url = f"sqlite:///{workdir / 'lava.db'}"
    env = {
        **os.environ,
        "LAVA_DATABASE_URL": database_url,
        "LAVA_SQLITE_SYNCHRONOUS": args.synchronous,
        "LAVA_PAYMENTS": "sandbox",
        "OPENAI_API_KEY": "sk-upstream",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{fake_port}/v1",
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{fake_port}",
    }
    database = Database(database_url, sqlite_synchronous=args.synchronous)
    database.upgrade()
    owner = wallet.create_wallet(database, name="bench")
    wallet.adjust(database, owner.wallet_id, "10000.00", reason="bench funding")
    key = spend_keys.create(
        database,
        owner.wallet_id,
        {"name": "bench", "spend_limit": {"amount": "9000.00", "cycle": "monthly"}},
    ).secret
    _ = Settings  # the server reads the same variables

    scripts: dict[tuple[str, bool], Path] = {}
    for target in ("direct", "gateway"):
        for stream in (False, True):
            body = {**BODY, "stream": True} if stream else BODY
            auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if target == "gateway" else ""
            path = workdir / f"{target}-{'stream' if stream else 'json'}.lua"
            path.write_text(LUA.format(auth=auth, body=json.dumps(body)))
            scripts[(target, stream)] = path

    print("\n".join(machine(sys.argv[1:])))
    print(f"ledger:   SQLite, synchronous={args.synchronous}, WAL; every gateway call holds and settles\n")
    rows = []
    with (
        process("fake", str(fake_port), env=env, log=workdir / "fake.log"),
        process("serve", str(server_port), env=env, log=workdir / "server.log") as server,
    ):
        wait_for_port(fake_port)
        wait_for_port(server_port)
        urls = {
            "direct": f"http://127.0.0.1:{fake_port}/v1/chat/completions",
            "gateway": f"http://127.0.0.1:{server_port}/v1/chat/completions",
        }
        for stream in (False, True):  # warm up both paths (connections, caches, JIT-free imports)
            for target in ("direct", "gateway"):
                wrk(urls[target], scripts[(target, stream)], connections=4, seconds=2)
        for connections in [int(c) for c in args.connections.split(",")]:
            for stream in (False, True):
                direct = wrk(
                    urls["direct"], scripts[("direct", stream)], connections=connections, seconds=args.seconds
                )
                profiler = None
                if args.profile and connections > 1 and shutil.which("py-spy"):
                    profiler = subprocess.Popen(
                        ["py-spy", "record", "-p", str(server.pid), "-d", str(int(args.seconds)), "-f", "raw",
                         "-o", str(workdir / f"profile-{'stream' if stream else 'json'}.txt"), "--nonblocking"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                through = wrk(
                    urls["gateway"],
                    scripts[("gateway", stream)],
                    connections=connections,
                    seconds=args.seconds,
                )
                if profiler is not None:
                    profiler.wait()
                rows.append((connections, stream, direct, through))
    print(
        f"{'conns':>5} {'mode':<7} {'direct req/s':>12} {'gateway req/s':>13} "
        f"{'direct p50/p99 ms':>18} {'gateway p50/p99 ms':>19} {'added p50/p99 ms':>17}"
    )
    for connections, stream, direct, through in rows:
        print(
            f"{connections:>5} {'stream' if stream else 'json':<7} {direct.requests_per_s:>12,.0f} "
            f"{through.requests_per_s:>13,.0f} {direct.p50_ms:>8.2f} / {direct.p99_ms:<7.2f} "
            f"{through.p50_ms:>8.2f} / {through.p99_ms:<8.2f} "
            f"{through.p50_ms - direct.p50_ms:>7.2f} / {through.p99_ms - direct.p99_ms:<7.2f}"
            + (f"  [{through.errors}]" if through.errors else "")
        )
    with database.read() as session:
        from sqlalchemy import func
        from sqlmodel import select

        counts = dict(
            session.exec(select(RequestRecord.status, func.count()).group_by(RequestRecord.status)).all()
        )
    problems = verify.verify(database)
    print(f"\nrequests recorded: {counts}; ledger verify: {'ok' if not problems else problems[:3]}")
    print(f"server and fake logs: {workdir}")
    if args.profile:
        print(f"profiles (speedscope): {workdir}/profile-*.json")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "fake":
        run_fake(int(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "serve":
        run_server(int(sys.argv[2]))
    else:
        main()
