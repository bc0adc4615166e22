"""stdin and stdout as event-loop pipes, under the MCP SDK's stdio transport.

The SDK's `stdio_server()` reads and writes the process's stdin and stdout through
`anyio.wrap_file`: every line read, every line written and every flush is a hop to a
worker thread and back, three per tool call — on a small machine about a third of a
`get_balance` round trip, and most of the server's CPU time for it. Where stdin and stdout
are pipes or sockets (as an MCP host runs a stdio server) and the loop is asyncio's on
Linux or macOS, `run_stdio()` hands the SDK's transport the same two streams read and
written by the event loop itself; anywhere else (a terminal, a file, Windows, trio) the
SDK serves them its own way.

Like the SDK, while serving it points fd 0 at the null device and fd 1 at stderr, so that
anything else in the process that reads stdin reads nothing and anything that prints
misses the MCP stream; both are put back (blocking again) on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
from collections.abc import AsyncIterator

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

# The longest line read. A longer one is answered as a parse error and skipped (the SDK's
# own reader has no limit; this one buffers a line in memory, so it keeps one).
LINE_LIMIT_BYTES = 64 * 1024 * 1024


class PipeLines:
    """The SDK transport's `stdin`: text lines from a pipe the loop watches."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> PipeLines:
        return self

    async def __anext__(self) -> str:
        try:
            line = await self._reader.readline()
        except ValueError:  # longer than LINE_LIMIT_BYTES: the reader dropped what it held
            return "\n"  # not JSON: the SDK reports a parse error and reads on
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class PipeWriter:
    """The SDK transport's `stdout`: text written to a pipe the loop drains; `flush` waits
    while the pipe is full (the reader is behind)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


def _loop_can_serve(fd: int) -> bool:
    """A pipe or a socket: the loop can watch it (a terminal is left to the SDK, since
    making it non-blocking would change it for the shell that shares it)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio)
        return None


def _private_copy(fd: int) -> int:
    """A duplicate of `fd` above the standard three, closed in children (as the SDK makes)."""
    import fcntl  # POSIX only, as is everything that calls this

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


def _divert(fd: int, to: int) -> int:
    """Point `fd` at `to`; returns a private duplicate of what `fd` was (the wire)."""
    wire = _private_copy(fd)
    try:
        os.dup2(to, fd)
    except OSError:
        os.close(wire)
        raise
    return wire


@contextlib.asynccontextmanager
async def stdio_pipes() -> AsyncIterator[tuple[PipeLines, PipeWriter] | None]:
    """stdin and stdout as loop-driven streams, with fds 0 and 1 diverted meanwhile; None
    where the loop can't drive them (see the module docstring)."""
    loop = _asyncio_loop()
    if sys.platform == "win32" or loop is None or not (_loop_can_serve(0) and _loop_can_serve(1)):
        yield None
        return
    if os.path.samestat(os.fstat(0), os.fstat(1)):
        # One socket both ways (inetd, systemd socket activation, socat): asyncio's write
        # pipe takes the socket's readability for the peer closing it. The SDK copes.
        yield None
        return
    try:
        os.fstat(2)  # stdout is diverted to stderr: it must be open
    except OSError:
        yield None
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        wire_in = _divert(0, null)
    finally:
        os.close(null)
    try:
        wire_out = _divert(1, 2)
    except OSError:
        os.dup2(wire_in, 0)
        os.close(wire_in)
        raise
    transports: list[asyncio.BaseTransport] = []
    try:
        # The transports own (and close) duplicates; the wire fds stay to put back.
        reader = asyncio.StreamReader(limit=LINE_LIMIT_BYTES)
        reading, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(_private_copy(wire_in), "rb", buffering=0)
        )
        transports.append(reading)
        writing, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(_private_copy(wire_out), "wb", buffering=0)
        )
        transports.append(writing)
        writer = asyncio.StreamWriter(writing, protocol, None, loop)
        yield PipeLines(reader), PipeWriter(writer)
    finally:
        if len(transports) == 2:
            # The last answers still buffered reach the pipe first (up to 5 s: the reader
            # may be gone), while the fds are still non-blocking and the loop still runs.
            with anyio.CancelScope(shield=True):
                for _ in range(5000):
                    if transports[1].is_closing() or not writing.get_write_buffer_size():
                        break
                    await anyio.sleep(0.001)
        for transport in transports:
            transport.close()
        # O_NONBLOCK belongs to the pipe's open file, shared with the wire fds: undo it.
        for wire, fd in ((wire_in, 0), (wire_out, 1)):
            with contextlib.suppress(OSError):
                os.set_blocking(wire, True)
            with contextlib.suppress(OSError):
                os.dup2(wire, fd)
            os.close(wire)


async def run_stdio(server: MCPServer) -> None:
    """Serve `server` on stdin and stdout: `MCPServer.run_stdio_async()`, on loop-driven
    pipes where it can (module docstring)."""
    # mcp 2.3 has no public way to give run_stdio_async streams; a release that renames this
    # attribute gets the SDK's own transport.
    lowlevel = getattr(server, "_lowlevel_server", None)
    if lowlevel is None:
        await server.run_stdio_async()
        return
    async with stdio_pipes() as pipes:
        stdin, stdout = pipes if pipes is not None else (None, None)
        async with stdio_server(stdin, stdout) as (read_stream, write_stream):  # type: ignore[arg-type]
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
