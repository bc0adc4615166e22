"""`lava-mcp stdio` reads and writes its pipes on the event loop (`transports.stdio_streams`):

- an MCP server run with `run_stdio` on pipes answers through the SDK's client with no
  worker thread at all (the SDK's own transport hops to a thread for every line read,
  written and flushed), while stray prints and reads in the process miss the MCP stream;
- fds 0 and 1 point at the null device and stderr while serving, and are the wire again,
  blocking, afterwards;
- a line longer than the limit is skipped, and the next one read;
- stdin that is a file (or a terminal) is left to the SDK's own transport.

Each case runs a small server script as a child process, as an MCP host would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from mcp.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

# A server with one tool that prints to stdout, writes to fd 1, reads stdin and counts
# the process's threads.
NOISY_SERVER = """
import json, os, sys, threading

import anyio
from mcp.server.mcpserver import MCPServer

from lava_mcp.transports.stdio_streams import run_stdio

server = MCPServer("noisy")


@server.tool()
async def noisy() -> str:
    print("stray print")
    sys.stdout.flush()
    os.write(1, b"stray write\\n")
    return json.dumps({"stdin": sys.stdin.read(), "threads": threading.active_count()})


anyio.run(run_stdio, server)
"""

# Echoes one line through `stdio_pipes`, then reports what fds 0 and 1 are afterwards.
ECHO_ONCE = """
import asyncio, os, stat, sys

from lava_mcp.transports import stdio_streams


async def main():
    async with stdio_streams.stdio_pipes() as pipes:
        assert pipes is not None, "pipes were left to the SDK"
        lines, out = pipes
        during = (os.path.samestat(os.fstat(0), os.stat(os.devnull)), os.path.samestat(os.fstat(1), os.fstat(2)))
        print("stray print")
        sys.stdout.flush()
        async for line in lines:
            await out.write(f"echo {line}")
            await out.flush()
            if line.startswith("last"):
                break
    after = (stat.S_ISFIFO(os.fstat(0).st_mode), stat.S_ISFIFO(os.fstat(1).st_mode))
    blocking = (os.get_blocking(0), os.get_blocking(1))
    os.write(1, f"during {during} after {after} blocking {blocking}\\n".encode())


stdio_streams.LINE_LIMIT_BYTES = int(sys.argv[1]) if len(sys.argv) > 1 else stdio_streams.LINE_LIMIT_BYTES
asyncio.run(main())
"""

# Whether `stdio_pipes` takes the process's stdin and stdout.
TAKES_PIPES = """
import asyncio, sys

from lava_mcp.transports.stdio_streams import stdio_pipes


async def main():
    async with stdio_pipes() as pipes:
        sys.stderr.write("taken" if pipes is not None else "left to the SDK")


asyncio.run(main())
"""


def script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


async def test_a_server_on_pipes_answers_without_worker_threads_and_stray_output_misses_the_stream(
    tmp_path: Path,
) -> None:
    errors = tmp_path / "stderr.txt"
    parameters = StdioServerParameters(
        command=sys.executable, args=[script(tmp_path, "noisy.py", NOISY_SERVER)]
    )
    with errors.open("w") as errlog:
        async with Client(stdio_client(parameters, errlog=errlog)) as client:
            for _ in range(3):
                result = await client.call_tool("noisy", {})
                assert not result.is_error, result.content
                answer = json.loads(result.content[0].text)  # type: ignore[union-attr]
                # stdin reads the null device; the stdio I/O needed no thread (the SDK's does).
                assert answer == {"stdin": "", "threads": 1}
    stray = errors.read_text()
    assert stray.count("stray print") == 3 and stray.count("stray write") == 3


def test_the_pipes_are_diverted_while_serving_and_put_back_blocking_after(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, script(tmp_path, "echo.py", ECHO_ONCE)],
        input=b'{"first": 1}\nlast\n',
        capture_output=True,
        timeout=60,
    )
    assert finished.returncode == 0, finished.stderr.decode()
    assert finished.stdout.decode().splitlines() == [
        'echo {"first": 1}',
        "echo last",
        "during (True, True) after (True, True) blocking (True, True)",
    ]
    assert "stray print" in finished.stderr.decode()


def test_a_line_longer_than_the_limit_is_skipped_and_the_next_one_read(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, script(tmp_path, "echo.py", ECHO_ONCE), "64"],
        input=b"x" * 200 + b"\nlast\n",
        capture_output=True,
        timeout=60,
    )
    assert finished.returncode == 0, finished.stderr.decode()
    assert finished.stdout.decode().splitlines()[:2] == ["echo ", "echo last"]


def test_stdin_from_a_file_is_left_to_the_sdk(tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    source.write_text("{}\n")
    taking = script(tmp_path, "takes.py", TAKES_PIPES)
    with source.open("rb") as stdin:
        from_file = subprocess.run([sys.executable, taking], stdin=stdin, capture_output=True, timeout=60)
    from_pipe = subprocess.run([sys.executable, taking], input=b"{}\n", capture_output=True, timeout=60)
    assert from_file.stderr.decode() == "left to the SDK", from_file.stderr
    assert from_pipe.stderr.decode() == "taken", from_pipe.stderr


def test_one_socket_for_stdin_and_stdout_is_left_to_the_sdk(tmp_path: Path) -> None:
    """inetd, systemd socket activation, socat: asyncio's write pipe would take the socket's
    readability for the peer closing it, so the SDK's transport serves it."""
    import socket

    ours, theirs = socket.socketpair()
    with ours, theirs:
        taken = subprocess.run(
            [sys.executable, script(tmp_path, "takes.py", TAKES_PIPES)],
            stdin=theirs,
            stdout=theirs,
            capture_output=False,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    assert taken.stderr.decode() == "left to the SDK", taken.stderr
