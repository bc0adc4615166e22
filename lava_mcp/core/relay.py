"""A metered stream: relay the provider's events as they arrive, then charge by the rule.

A stream is charged like a JSON answer: the usage the provider reports in the stream, or
the hold when none (usable) arrives. Nothing is estimated from what passed.

When the client leaves early, the provider has usually not stopped: it bills what it
generates. So the upstream is read on, unforwarded, for up to `Metering.stream_drain_s`
for its final usage; if that arrives it is charged, otherwise the hold is.

Voiding: a stream the provider never accepted (no 2xx answer) is voided by the gateway
before a relay starts. Once it answered 2xx it may bill, so whatever ends the stream
afterwards — its end, the client leaving, the upstream breaking off — it is settled by
the rule, shielded from cancellation. The hold is kept alive while the stream lives.

Durable before complete: the stream's last event (OpenAI's `[DONE]`, Anthropic's
`message_stop`) and the end of the body are held back until the settlement has committed.
A client that has the whole answer has therefore been charged for it: a crash (SIGKILL)
at any point before that commit leaves the call unfinished for its client and its hold
pending, which the expiry sweep releases; after it, the charge is in the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp
import anyio

from lava_mcp.core.metering import Metering, Ticket
from lava_mcp.providers import upstream
from lava_mcp.providers.streams import StreamUsage

logger = logging.getLogger("lava_mcp.metering")


class StreamRelay:
    """One upstream stream between `Metering.open()` and its settlement."""

    def __init__(
        self,
        metering: Metering,
        ticket: Ticket,
        response: aiohttp.ClientResponse,
        shape: str,
        exchange: upstream.Exchange,
    ) -> None:
        self.metering = metering
        self.ticket = ticket
        self.response = response
        self.exchange = exchange
        self.meter = StreamUsage(shape)
        self.client_gone = anyio.Event()
        self._settled = False

    async def run(
        self,
        forward: Callable[[bytes], Awaitable[None]],
        end: Callable[[], Awaitable[None]],
        disconnected: Callable[[], Awaitable[None]],
    ) -> None:
        """Relay chunks with `forward`, close with `end`; `disconnected` returns when the
        client has left. Settles the call before returning, whatever happened."""
        try:
            async with anyio.create_task_group() as tasks:

                async def pump() -> None:
                    held: list[bytes] = []  # from the last event on: sent once settled
                    broke_off = False
                    try:
                        async for chunk in self.response.content.iter_any():
                            self.meter.feed(chunk)
                            if self.client_gone.is_set():
                                if self.meter.final:
                                    break  # drained: the usage is in
                            elif held or self.meter.ended:
                                held.append(chunk)
                            else:
                                await self._forward(forward, chunk)
                    except upstream.TRANSPORT_ERRORS as error:
                        broke_off = True
                        logger.warning(
                            "request %s: the upstream stream broke off (%s)",
                            self.ticket.request_id,
                            type(error).__name__,
                        )
                    if not self.client_gone.is_set():
                        await self.settle()  # durable before the answer is complete
                        for chunk in held:
                            await self._forward(forward, chunk)
                        if not broke_off:
                            await self._forward(end)
                    tasks.cancel_scope.cancel()

                async def watch_client() -> None:
                    await disconnected()
                    self.client_gone.set()

                async def drain_deadline() -> None:
                    await self.client_gone.wait()
                    if self.meter.final:
                        tasks.cancel_scope.cancel()
                        return
                    for listener in self.metering.draining_listeners:
                        listener(self.ticket.request_id)
                    await anyio.sleep(self.metering.stream_drain_s)
                    tasks.cancel_scope.cancel()

                tasks.start_soon(pump)
                tasks.start_soon(watch_client)
                tasks.start_soon(drain_deadline)
                tasks.start_soon(self.metering.keep_alive_while, self.ticket)
        finally:
            await self.settle()

    async def settle(self) -> None:
        """Charge the stream by the rule, once, shielded from cancellation (`run` does; so
        does a caller that could not start relaying it)."""
        if self._settled:
            return
        self._settled = True
        with anyio.CancelScope(shield=True):
            self.response.close()
            await self.metering.finish_stream(
                self.ticket, self.meter.usage(), accepted=self.exchange.accepted
            )

    async def _forward(self, send: Callable[..., Awaitable[None]], *chunk: bytes) -> None:
        try:
            await send(*chunk)
        except OSError:  # the client's connection is gone (uvicorn's ClientDisconnected)
            self.client_gone.set()
