"""Every code example in the README and `docs/*.md` runs as written, against a real
`lava-mcp serve` started here (DESIGN §13; issue 10).

The server is the installed `lava-mcp serve` on a free loopback port, with a fresh SQLite
ledger, sandbox payments, and the fake provider (`tests/fake_provider.py`) standing in for
the OpenAI and Anthropic upstreams. Its first-run output gives the wallet key, as the README
says; the test then credits that wallet with `lava-mcp wallet credit` (an operator's
adjustment, since the sandbox's card pages need a browser) and runs every block in reading
order (`tests/docs/markdown.py` says which blocks run and the markers for the rest).

What is substituted, and nothing else:
- `127.0.0.1:8787` (the documented default address) becomes the test server's address.
- The environment of each example: `LAVA_WALLET_KEY` (the key the server printed),
  `LAVA_URL`, `LAVA_DATABASE_URL` (the server's ledger, for the CLI), `LAVA_PAYMENTS`, and a
  `HOME` of its own — the examples read them as a user's shell would have them.
- In shell examples, an id placeholder — `sk_id_…`, `wal_…`, `org_…`, `inv_…` — is the id of
  that kind printed most recently, for the first time, by an earlier command (so `keys
  show sk_id_…` shows the key `keys create` just made). A shell block runs one command at a
  time for that reason, each in `bash -e -o pipefail`.

Python examples run with the project's interpreter and `-W error` (a deprecation warning,
such as the Anthropic SDK's for a model past its end of life, fails the example). Each
example runs in its own process with a timeout; the server is stopped at the end, and the
ledger must still verify.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.docs.markdown import PARSE, RUN, SHOW, Block, blocks, documents, output_pattern, shell_commands
from tests.fake_provider import FakeProvider, free_port

BIN = Path(sys.executable).parent
SCRIPT = BIN / "lava-mcp"
DOCUMENTED_ADDRESS = "127.0.0.1:8787"
EXAMPLE_TIMEOUT_S = 120
SERVER_START_TIMEOUT_S = 90
ID = re.compile(r"\b(sk_id|wal|org|inv)_[0-9A-Za-z]+")
PLACEHOLDER = re.compile(r"\b(sk_id|wal|org|inv)_…")
KEY_LINE = re.compile(r"LAVA_WALLET_KEY=(lava_wk_[0-9A-Za-z]+)")
WALLET_LINE = re.compile(r"Created wallet (wal_[0-9A-Za-z]+)")


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in blocks(path)]


@dataclass
class Server:
    """`lava-mcp serve` in its own process group, and everything it printed."""

    process: subprocess.Popen[str]
    address: str
    lines: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("lava-mcp on "):
                self.started.set()
        self.started.set()  # it exited: stop waiting

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        if self.reader is not None:
            self.reader.join(timeout=15)  # the pipe is at its end once the process is gone
        assert self.process.stdout is not None
        self.process.stdout.close()


@dataclass
class Reader:
    """What an example's reader has: the environment, and the ids printed so far."""

    environment: dict[str, str]
    cwd: Path
    address: str
    seen: set[str] = field(default_factory=set)
    latest: dict[str, str] = field(default_factory=dict)  # kind -> the id last printed first

    def note(self, printed: str) -> None:
        for match in ID.finditer(printed):
            if match.group() not in self.seen:
                self.seen.add(match.group())
                self.latest[match.group(1)] = match.group()

    def substitute(self, text: str) -> str:
        text = text.replace(DOCUMENTED_ADDRESS, self.address)

        def earlier(match: re.Match[str]) -> str:
            kind = match.group(1)
            if kind not in self.latest:
                raise LookupError(f"{match.group()} stands for an id no earlier command printed")
            return self.latest[kind]

        return PLACEHOLDER.sub(earlier, text)

    def run(self, arguments: list[str]) -> subprocess.CompletedProcess[str]:
        """Run one example in its own process group; past the timeout the whole group is
        killed (a server an example starts must not outlive it) and it fails (exit -9)."""
        with subprocess.Popen(
            arguments,
            env=self.environment,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as process:
            try:
                stdout, stderr = process.communicate(timeout=EXAMPLE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                stdout, stderr = process.communicate()
                stderr += f"\n(killed after {EXAMPLE_TIMEOUT_S} s)"
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # anything it left running
        self.note(stdout + stderr)
        return subprocess.CompletedProcess(arguments, process.returncode, stdout, stderr)


def start_server(tmp_path: Path, fake: FakeProvider) -> tuple[Server, dict[str, str]]:
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    environment = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LAVA_DATABASE_URL": f"sqlite:///{tmp_path / 'lava.db'}",
        "LAVA_PAYMENTS": "sandbox",
        "LAVA_HOST": "127.0.0.1",
        "LAVA_PORT": str(port),
        "OPENAI_API_KEY": "sk-upstream-openai",
        "OPENAI_BASE_URL": f"{fake.url}/v1",
        "ANTHROPIC_API_KEY": "sk-upstream-anthropic",
        "ANTHROPIC_BASE_URL": fake.url,
        "LAVA_RECONCILE_INTERVAL_S": "3600",
    }
    process = subprocess.Popen(
        [str(SCRIPT), "serve"],
        env=environment,
        cwd=home,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, stopped as one
    )
    server = Server(process, f"127.0.0.1:{port}")
    server.reader = threading.Thread(target=server.read, daemon=True)
    server.reader.start()
    return server, environment


def wait_until_serving(server: Server) -> None:
    assert server.started.wait(SERVER_START_TIMEOUT_S), f"lava-mcp serve did not start:\n{server.output}"
    assert server.process.poll() is None, f"lava-mcp serve exited:\n{server.output}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"http://{server.address}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"/healthz never answered:\n{server.output}"
        time.sleep(0.1)  # polling a server that is starting: nothing to wait on but the socket


@pytest.fixture
def served(tmp_path: Path, fake: FakeProvider) -> Iterator[tuple[Server, Reader]]:
    server, environment = start_server(tmp_path, fake)
    try:
        wait_until_serving(server)
        key = KEY_LINE.search(server.output)
        wallet = WALLET_LINE.search(server.output)
        assert key and wallet, f"the first run printed no wallet key:\n{server.output}"
        reader = Reader(
            environment={
                **{
                    name: environment[name]
                    for name in ("PATH", "HOME", "LANG", "LAVA_DATABASE_URL", "LAVA_PAYMENTS")
                },
                "LAVA_WALLET_KEY": key.group(1),
                "LAVA_URL": f"http://{server.address}",
                "COLUMNS": "100",
            },
            cwd=Path(environment["HOME"]),
            address=server.address,
        )
        credited = reader.run(
            [str(SCRIPT), "wallet", "credit", wallet.group(1), "100.00", "--reason", "docs"]
        )
        assert credited.returncode == 0, credited.stderr
        yield server, reader
    finally:
        server.stop()


def run_block(block: Block, reader: Reader) -> list[str]:
    """Run one example; the failures, each with what it printed."""
    failures: list[str] = []
    if block.language == "python":
        script = reader.cwd / f"example_{block.path.stem}_{block.line}.py"
        script.write_text(reader.substitute(block.text), encoding="utf-8")
        finished = reader.run([sys.executable, "-W", "error", str(script)])
        if finished.returncode != 0:
            failures.append(f"{block.where}: exit {finished.returncode}\n{finished.stdout}{finished.stderr}")
        return failures
    for command in shell_commands(block):
        try:
            substituted = reader.substitute(command)
        except LookupError as error:
            failures.append(f"{block.where}: {command}\n  {error}")
            break
        finished = reader.run(["bash", "-e", "-o", "pipefail", "-c", substituted])
        if finished.returncode != 0:
            failures.append(
                f"{block.where}: {command}\n  ran: {substituted}\n  exit {finished.returncode}\n"
                f"{finished.stdout}{finished.stderr}"
            )
            break  # the commands after it depend on it
    return failures


def test_every_code_example_runs(served: tuple[Server, Reader], fake: FakeProvider) -> None:
    server, reader = served
    ran: list[str] = []
    skipped: list[str] = []
    failures: list[str] = []
    for block in all_blocks():
        if block.marker == "skip":
            skipped.append(f"{block.where}: {block.arguments['reason']}")
            continue
        if block.marker == "output":
            assert block.arguments.get("of") == "lava-mcp serve", f"{block.where}: output of what?"
            printed = server.output
            for line in block.text.splitlines():
                if line.strip() and not output_pattern(reader.substitute(line)).search(printed):
                    failures.append(
                        f"{block.where}: `lava-mcp serve` printed no line like {line!r}:\n{printed}"
                    )
            continue
        if block.language in RUN:
            ran.append(block.where)
            failures.extend(run_block(block, reader))
    print("ran:", *ran, "skipped, with reasons:", *skipped, sep="\n  ")
    assert not failures, "\n\n".join(failures)
    assert len(ran) >= 5, ran  # the README's and docs' examples were found

    # The examples' calls went through the gateway to the provider, with the documented models.
    models = {received.body.get("model") for received in fake.received}
    assert {"gpt-6-luna", "claude-haiku-5-5"} <= models, models
    verified = reader.run([str(SCRIPT), "ledger", "verify"])
    assert verified.returncode == 0 and "ledger ok" in verified.stdout, verified.stdout + verified.stderr


def test_every_block_says_what_it_is() -> None:
    """A block with no language, or an unknown one, would be neither run nor checked."""
    problems: list[str] = []
    for block in all_blocks():
        if block.marker == "skip":
            if len(block.arguments.get("reason", "").split()) < 3:
                problems.append(f'{block.where}: a skip says why, in words (reason="…")')
            if block.language not in RUN:
                problems.append(f"{block.where}: only a runnable block can be skipped")
        elif block.marker == "output":
            if block.language != "text":
                problems.append(f"{block.where}: claimed output is a text block")
        elif block.marker is not None:
            problems.append(f"{block.where}: unknown marker {block.marker!r}")
        elif block.language not in RUN | PARSE | SHOW:
            problems.append(
                f"{block.where}: language {block.language!r} is none of"
                f" {sorted(RUN | PARSE | SHOW)} (no language: say `text` for output)"
            )
    assert not problems, "\n".join(problems)


def test_json_blocks_parse() -> None:
    checked = 0
    for block in all_blocks():
        if block.language == "json":
            try:
                json.loads(block.text)
            except ValueError as error:
                pytest.fail(f"{block.where}: not JSON: {error}")
            checked += 1
    assert checked >= 5
