"""Gateway overhead for the README: wrk against the fake provider directly, through one
lava-mcp server and (optionally) through a LiteLLM proxy, in the same run, on loopback.

    uv run python bench/gateway.py [--seconds 10] [--synchronous FULL] [--profile]
    LITELLM=/path/to/litellm uv run python bench/gateway.py     # adds LiteLLM's row

Starts the fake OpenAI provider (tests/fake_provider.py) and one `lava-mcp serve` (the
whole app: gateway, REST, MCP; uvicorn with uvloop + httptools when installed) in their
own processes, with a fresh SQLite ledger (migrated beforehand), a funded wallet
and one spend key with a monthly spend limit: every call holds (committed before the
upstream call) and settles (committed before the answer completes). For 1 and 32
connections, JSON and streaming chat completions, it runs `wrk` (Debian's package; POST
bodies from a Lua script) straight at the fake, then through each gateway, and prints the
issue's table:

    target | 1 conn req/s | 1 conn p50 added | 1 conn p99 added | 32 conns req/s |
    streaming 1 / 32 conns | CPU per request | RSS under load (peak)

"added" is the gateway's latency minus the direct latency of the same run, both timed
after the 1-connection wrk run by a sequential raw-socket client (`sequential_latency`:
wrk's own percentiles are unreliable on this kind of VM); CPU per
request is the server process's CPU time (user + system, children included, from
/proc) over the requests wrk completed, as a range over the four runs. Two resident
sets, both of the server's process and its children, from /proc/PID/status:
- RSS under load: the largest VmRSS sampled every 100 ms during the four timed runs
  (issue 11's "RSS under load"); the output also gives VmRSS once they are over.
- peak: VmHWM, the most the process was ever resident, start-up and warm-up included
  (modules compiled from source when there is no bytecode cache, as under
  PYTHONDONTWRITEBYTECODE=1, take transient memory of their own).
With LiteLLM, a last row gives lava-mcp / LiteLLM per column (higher is better for req/s;
for the others lower is).

LiteLLM (not a dependency of this project; install it in its own virtualenv, e.g.
`uv venv /tmp/litellm && uv pip install -p /tmp/litellm 'litellm[proxy]'`): set `LITELLM`
to its `litellm` executable (or the virtualenv's directory). The script writes a proxy
config that routes `gpt-4o-mini` to the fake (`openai/gpt-4o-mini`, `api_base` = the
fake), with no database and no master key — so LiteLLM checks no budget at all, while
lava-mcp holds and settles every call — and starts `litellm --config … --port …
--num_workers 1`. `LITELLM_ARGS` adds arguments.

At the end it checks that every lava-mcp request was settled and `ledger verify` passes.
`--profile` runs py-spy on the lava-mcp server during the 32-connection JSON run and
prints where its CPU time goes (self time and inclusive time per function).

The machine may be shared: figures are noisy; the CPU per request is the steadiest.
Subcommand used internally: `fake PORT`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LITELLM_MASTER_KEY = "sk-bench-" + os.urandom(16).hex()
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
    """What `lava-mcp serve` runs: uvloop and httptools when installed."""
    from lava_mcp.cli.commands import server_speedups

    return {"log_level": "warning", "access_log": False, **server_speedups()}


def run_fake(port: int) -> None:
    import uvicorn

    from tests.fake_provider import FakeProvider

    uvicorn.run(FakeProvider().app(), host="127.0.0.1", port=port, **uvicorn_options())


@dataclass
class WrkResult:
    requests_per_s: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: str
    cpu_s: float = 0.0  # the server's CPU time during the run

    @property
    def cpu_per_request_ms(self) -> float:
        return self.cpu_s * 1000 / self.requests if self.requests else float("nan")


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    assert match, text
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000}[unit]


def process_tree(pid: int) -> list[int]:
    """`pid` and every process descended from it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    tree, grew = {pid}, True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sorted(tree)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and its descendants."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def status_mb(pids: list[int], field: str) -> float:
    """The sum of one /proc/PID/status field (VmRSS, VmHWM) over `pids`, in MB."""
    total_kb = 0
    for member in pids:
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
        total_kb += int(match.group(1)) if match else 0
    return total_kb / 1024


class RssSampler:
    """The largest resident set (VmRSS) of `pid` and its descendants, sampled every 100 ms
    while running (the process tree looked up again every second)."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid, self.interval_s, self.max_mb = pid, interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        samples = 0
        members = process_tree(self.pid)
        while True:
            self.max_mb = max(self.max_mb, status_mb(members, "VmRSS"))
            if self._stop.wait(self.interval_s):
                return
            samples += 1
            if samples % 10 == 0:
                members = process_tree(self.pid)


def wrk(url: str, lua: Path, *, connections: int, seconds: float, pid: int | None = None) -> WrkResult:
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
    before = cpu_s(pid) if pid else 0.0
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    used = cpu_s(pid) - before if pid else 0.0
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = ", ".join(
        line.strip() for line in output.splitlines() if "Non-2xx" in line or "Socket errors" in line
    )
    return WrkResult(rate, count, p50, p99, errors, used)


def sequential_latency(
    url: str, body: dict[str, Any], authorization: str, seconds: float
) -> tuple[float, float]:
    """p50 and p99 in ms of one connection's back-to-back requests, timed by a raw-socket
    client (a prebuilt request, TCP_NODELAY, the answer read to its last byte: the end of a
    Content-Length body or the chunked stream's last chunk). wrk's own percentiles are not
    used for one connection: on this kind of VM they disagree with its own request count
    (e.g. "p99 39.7 ms" against a fake that answered 19,416 requests in 4 s, one at a time,
    when this client sees p99 0.35 ms and latencies that sum to the run's wall time)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        + (f"Authorization: Bearer {authorization}\r\n" if authorization else "")
        + "\r\n"
    )
    request = head.encode() + payload
    latencies: list[float] = []
    with socket.create_connection((parts.hostname, parts.port)) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def exchange() -> None:
            connection.sendall(request)
            answer = b""
            while True:
                chunk = connection.recv(65536)
                assert chunk, "the server closed the connection"
                answer += chunk
                end_of_head = answer.find(b"\r\n\r\n")
                if end_of_head < 0:
                    continue
                headers = answer[:end_of_head].decode("latin-1").lower()
                assert headers.startswith("http/1.1 200"), headers.splitlines()[0]
                if "transfer-encoding: chunked" in headers:
                    if answer.endswith(b"\r\n0\r\n\r\n"):
                        return
                    continue
                length = int(re.search(r"content-length:\s*(\d+)", headers).group(1))  # type: ignore[union-attr]
                if len(answer) - end_of_head - 4 >= length:
                    return

        for _ in range(50):  # warm up
            exchange()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter_ns()
            exchange()
            latencies.append((time.perf_counter_ns() - start) / 1e6)
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return quantiles[49], quantiles[98]


@contextmanager
def process(*args: str, env: dict[str, str], log: Path, command: list[str] | None = None) -> Any:
    with log.open("w") as output:
        child = subprocess.Popen(
            command or [sys.executable, __file__, *args], env=env, cwd=ROOT, stdout=output, stderr=output
        )
        try:
            yield child
        finally:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def machine(argv: list[str]) -> list[str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    version = (
        subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("[")[0].strip()
    )
    speedups = uvicorn_options()
    loop = " + ".join(f"{k}={speedups[k]}" for k in ("loop", "http"))
    load = os.getloadavg()
    return [
        f"command:  {shlex.join(['uv', 'run', 'python', 'bench/gateway.py', *argv])}",
        f"date:     {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {load[0]:.1f}",
        f"machine:  {os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        f"server:   one `lava-mcp serve` process, uvicorn {loop}",
        f"load gen: {version or 'wrk'}, 1 thread per connection up to 2; fake provider in its own process",
    ]


def litellm_command(port: int, fake_port: int, workdir: Path) -> list[str] | None:
    """The command that starts a LiteLLM proxy in front of the fake, if `LITELLM` is set."""
    where = os.environ.get("LITELLM")
    if not where:
        return None
    executable = Path(where)
    if executable.is_dir():
        executable = executable / "bin" / "litellm"
    if not executable.exists():
        sys.exit(f"LITELLM={where}: no litellm executable there")
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: http://127.0.0.1:{fake_port}/v1\n"
        "      api_key: sk-upstream\n"
        "litellm_settings:\n"
        "  set_verbose: false\n"
    )
    extra = shlex.split(os.environ.get("LITELLM_ARGS", ""))
    return [str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1", *extra]  # fmt: skip


@dataclass
class Row:
    name: str
    runs: dict[tuple[int, bool], WrkResult]
    rss_load_mb: float  # the largest VmRSS sampled during the timed runs
    rss_end_mb: float  # VmRSS once they were over
    rss_peak_mb: float  # VmHWM: the most it was ever resident, start-up included

    @property
    def rss(self) -> str:
        return f"{self.rss_load_mb:.0f} MB ({self.rss_peak_mb:.0f} MB)" if self.rss_peak_mb else "—"


def table(rows: list[Row], direct: Row) -> list[str]:
    """The issue's table (Markdown), with lava-mcp / LiteLLM per column when both ran."""
    header = (
        "| target | 1 conn req/s | 1 conn p50 added | 1 conn p99 added | 32 conns req/s"
        " | streaming 1 / 32 conns | CPU per request | RSS under load (peak) |"
    )
    lines = [header, "|" + "---|" * 8]
    figures: dict[str, list[float]] = {}
    for row in rows:
        one, many = row.runs[(1, False)], row.runs[(32, False)]
        stream_one, stream_many = row.runs[(1, True)], row.runs[(32, True)]
        is_direct = row is direct
        p50 = one.p50_ms - direct.runs[(1, False)].p50_ms
        p99 = one.p99_ms - direct.runs[(1, False)].p99_ms
        cpu = [run.cpu_per_request_ms for run in row.runs.values()]
        figures[row.name] = [one.requests_per_s, p50, p99, many.requests_per_s, stream_one.requests_per_s,
                             stream_many.requests_per_s, max(cpu), row.rss_load_mb, row.rss_peak_mb]  # fmt: skip
        lines.append(
            f"| {row.name} | {one.requests_per_s:,.0f} | "
            + ("—" if is_direct else f"{p50:+.2f} ms")
            + " | "
            + ("—" if is_direct else f"{p99:+.2f} ms")
            + f" | {many.requests_per_s:,.0f} | {stream_one.requests_per_s:,.0f} / {stream_many.requests_per_s:,.0f}"
            f" | {min(cpu):.2f}–{max(cpu):.2f} ms | {row.rss} |"
        )
    if "lava-mcp" in figures and "LiteLLM" in figures:
        ours, theirs = figures["lava-mcp"], figures["LiteLLM"]
        ratios = [a / b if b else float("nan") for a, b in zip(ours, theirs, strict=True)]
        lines.append(
            f"| lava-mcp / LiteLLM | {ratios[0]:.2f}× | {ratios[1]:.2f}× | {ratios[2]:.2f}× | {ratios[3]:.2f}×"
            f" | {ratios[4]:.2f}× / {ratios[5]:.2f}× | {ratios[6]:.2f}× | {ratios[7]:.2f}× ({ratios[8]:.2f}×) |"
        )
    return lines


def profile_summary(raw: Path, top: int = 25) -> list[str]:
    """py-spy's raw (collapsed) stacks as self and inclusive time per function."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r" \(/.*?/(site-packages|lava_mcp)/", r" (\1/", frame) for frame in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return ["(no samples)"]
    lines = [f"{total} samples; self time:"]
    lines += [
        f"  {count / total:6.1%}  {name}" for name, count in sorted(own.items(), key=lambda i: -i[1])[:top]
    ]
    lines.append("inclusive time (lava_mcp frames):")
    ours = [(name, count) for name, count in inclusive.items() if "lava_mcp/" in name]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in sorted(ours, key=lambda i: -i[1])[:top]]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--profile", action="store_true", help="py-spy the lava-mcp server during a JSON run")
    parser.add_argument("--profile-connections", type=int, choices=[1, 32], default=32)
    args, _ = parser.parse_known_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")

    from lava_mcp.core import spend_keys, verify, wallet
    from lava_mcp.store.db import Database
    from lava_mcp.store.models import RequestRecord

    workdir = Path(tempfile.mkdtemp(prefix="lava-bench-"))
    fake_port, server_port, litellm_port = free_port(), free_port(), free_port()
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
    litellm = litellm_command(litellm_port, fake_port, workdir)

    targets = ["direct", "lava-mcp"] + (["LiteLLM"] if litellm else [])
    keys = {"direct": "", "lava-mcp": key, "LiteLLM": LITELLM_MASTER_KEY}
    auth = {
        "direct": "",
        "lava-mcp": f'wrk.headers["Authorization"] = "Bearer {key}"',
        "LiteLLM": f'wrk.headers["Authorization"] = "Bearer {LITELLM_MASTER_KEY}"',
    }
    scripts: dict[tuple[str, bool], Path] = {}
    for target in targets:
        for stream in (False, True):
            body = {**BODY, "stream": True} if stream else BODY
            path = workdir / f"{target}-{'stream' if stream else 'json'}.lua"
            path.write_text(LUA.format(auth=auth[target], body=json.dumps(body)))
            scripts[(target, stream)] = path

    print("\n".join(machine(sys.argv[1:])))
    print(f"ledger:   SQLite, synchronous={args.synchronous}, WAL; every lava-mcp call holds and settles\n")
    rows: list[Row] = []
    profile = workdir / f"profile-{args.profile_connections}-json.txt"
    with ExitStack() as stack:
        fake = stack.enter_context(process("fake", str(fake_port), env=env, log=workdir / "fake.log"))
        serve = [sys.executable, "-m", "lava_mcp", "serve", "--host", "127.0.0.1", "--port", str(server_port)]
        server = stack.enter_context(process(env=env, log=workdir / "server.log", command=serve))
        pids = {"direct": fake.pid, "lava-mcp": server.pid}
        urls = {
            "direct": f"http://127.0.0.1:{fake_port}/v1/chat/completions",
            "lava-mcp": f"http://127.0.0.1:{server_port}/v1/chat/completions",
        }
        if litellm:
            # Its bundled price map, not a fetch from GitHub at start (no internet here; a
            # fetch that fails retries for ~10 s first).
            # A master key (checked in memory: no database), which LiteLLM requires to start.
            litellm_env = {
                **env,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
            }
            proxy = stack.enter_context(
                process(env=litellm_env, log=workdir / "litellm.log", command=litellm)
            )
            pids["LiteLLM"] = proxy.pid
            urls["LiteLLM"] = f"http://127.0.0.1:{litellm_port}/v1/chat/completions"
            wait_for_port(litellm_port, timeout_s=120)
        wait_for_port(fake_port)
        wait_for_port(server_port)
        for stream in (False, True):  # warm up every path (connections, caches, imports)
            for target in targets:
                wrk(urls[target], scripts[(target, stream)], connections=4, seconds=2)
        for target in targets:
            runs: dict[tuple[int, bool], WrkResult] = {}
            sampler = RssSampler(pids[target]).start()  # during the timed runs only
            for connections in (1, 32):
                for stream in (False, True):
                    profiler = None
                    if (
                        args.profile
                        and target == "lava-mcp"
                        and connections == args.profile_connections
                        and not stream
                    ):
                        profiler = subprocess.Popen(
                            ["py-spy", "record", "-p", str(server.pid), "-d", str(int(args.seconds)), "-f", "raw",
                             "-o", str(profile), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                    runs[(connections, stream)] = result = wrk(
                        urls[target], scripts[(target, stream)], connections=connections,
                        seconds=args.seconds, pid=pids[target],
                    )  # fmt: skip
                    if connections == 1:  # (see sequential_latency: wrk's percentiles are off)
                        result.p50_ms, result.p99_ms = sequential_latency(
                            urls[target], {**BODY, "stream": True} if stream else BODY,
                            keys[target], args.seconds,
                        )  # fmt: skip
                    if profiler is not None:
                        profiler.wait()
                    print(
                        f"  {target:<9} {connections:>2} conns {'stream' if stream else 'json':<6}"
                        f" {result.requests_per_s:>8,.0f} req/s  p50 {result.p50_ms:.2f} ms"
                        f"  p99 {result.p99_ms:.2f} ms  CPU {result.cpu_per_request_ms:.3f} ms/request"
                        + (f"  [{result.errors}]" if result.errors else ""),
                        flush=True,
                    )
            sampler.stop()
            members = process_tree(pids[target])
            row = Row(target, runs, sampler.max_mb, status_mb(members, "VmRSS"), status_mb(members, "VmHWM"))
            rows.append(row)
            print(
                f"  {target:<9} RSS under load {row.rss_load_mb:.0f} MB (largest VmRSS, sampled every 100 ms"
                f" during the runs), {row.rss_end_mb:.0f} MB after them; peak {row.rss_peak_mb:.0f} MB"
                " (VmHWM, start-up included)",
                flush=True,
            )
    print()
    print("\n".join(table(rows, rows[0])))
    with database.read() as session:
        from sqlalchemy import func
        from sqlmodel import select

        counts = dict(
            session.exec(select(RequestRecord.status, func.count()).group_by(RequestRecord.status)).all()
        )
    problems = verify.verify(database)
    print(f"\nlava-mcp requests recorded: {counts}; ledger verify: {'ok' if not problems else problems[:3]}")
    print(f"logs: {workdir}")
    if args.profile and profile.exists():
        print(f"\nprofile of the lava-mcp server, {args.profile_connections} connections, JSON (py-spy):")
        print("\n".join(profile_summary(profile)))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "fake":
        run_fake(int(sys.argv[2]))
    else:
        main()
