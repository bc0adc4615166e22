"""Load for the scale tests: many concurrent calls through the real SDKs, spread round-robin
over several servers, each outcome recorded (status, body, Retry-After) for the test to judge."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import openai

CHAT = {"model": "gpt-4o", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello"}]}
MESSAGE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 8,
    "messages": [{"role": "user", "content": "Say hello"}],
}


@dataclass(frozen=True)
class Outcome:
    status: int  # 200 for an answer; 0: no HTTP answer at all (the connection failed)
    body: Any = None
    retry_after: str | None = None
    server: str = ""
    request_id: str | None = None  # the gateway's x-lava-request-id
    streamed: bool = False


@dataclass
class Outcomes:
    items: list[Outcome] = field(default_factory=list)

    def statuses(self) -> Counter[int]:
        return Counter(item.status for item in self.items)

    def with_status(self, status: int) -> list[Outcome]:
        return [item for item in self.items if item.status == status]


def _error_outcome(error: openai.APIStatusError | anthropic.APIStatusError, server: str) -> Outcome:
    try:
        body = error.response.json()
    except ValueError:
        body = error.response.text
    headers = error.response.headers
    return Outcome(error.status_code, body, headers.get("retry-after"), server, headers.get(REQUEST_ID))


REQUEST_ID = "x-lava-request-id"


class OpenAIClients:
    """One AsyncOpenAI per server (no SDK retries: every answer is seen as sent)."""

    def __init__(self, urls: Sequence[str], key: str) -> None:
        self.clients = [
            (url, openai.AsyncOpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0, timeout=60))
            for url in urls
        ]
        self._next = itertools.cycle(self.clients)

    async def call(self, **overrides: Any) -> Outcome:
        url, client = next(self._next)
        try:
            raw = await client.chat.completions.with_raw_response.create(**{**CHAT, **overrides})
            if not overrides.get("stream"):
                return Outcome(200, raw.parse().model_dump(), None, url, raw.headers.get(REQUEST_ID))
            words = [
                chunk.choices[0].delta.content or ""
                async for chunk in raw.parse()
                if chunk.choices  # the usage chunk has none
            ]
            return Outcome(200, "".join(words), None, url, raw.headers.get(REQUEST_ID), streamed=True)
        except openai.APIStatusError as error:
            return _error_outcome(error, url)
        except (openai.APIConnectionError, httpx.TransportError) as error:
            return Outcome(0, repr(error), None, url)

    async def aclose(self) -> None:
        for _, client in self.clients:
            await client.close()


class AnthropicClients:
    """One AsyncAnthropic per server (no SDK retries)."""

    def __init__(self, urls: Sequence[str], key: str) -> None:
        self.clients = [
            (url, anthropic.AsyncAnthropic(api_key=key, base_url=url, max_retries=0, timeout=60))
            for url in urls
        ]
        self._next = itertools.cycle(self.clients)

    async def call(self, **overrides: Any) -> Outcome:
        url, client = next(self._next)
        try:
            raw = await client.messages.with_raw_response.create(**{**MESSAGE, **overrides})
        except anthropic.APIStatusError as error:
            return _error_outcome(error, url)
        except anthropic.APIConnectionError as error:
            return Outcome(0, repr(error), None, url)
        return Outcome(200, (await raw.parse()).model_dump(), None, url, raw.headers.get(REQUEST_ID))

    async def aclose(self) -> None:
        for _, client in self.clients:
            await client.close()


class RestClients:
    """The wallet REST API of each server, round-robin."""

    def __init__(self, urls: Sequence[str], wallet_key: str) -> None:
        self.clients = [
            (
                url,
                httpx.AsyncClient(
                    base_url=url, headers={"Authorization": f"Bearer {wallet_key}"}, timeout=60
                ),
            )
            for url in urls
        ]
        self._next = itertools.cycle(self.clients)

    async def get(self, path: str) -> Outcome:
        url, client = next(self._next)
        try:
            answer = await client.get(path)
        except httpx.TransportError as error:
            return Outcome(0, repr(error), None, url)
        try:
            body = answer.json()
        except ValueError:
            body = answer.text
        return Outcome(answer.status_code, body, answer.headers.get("retry-after"), url)

    async def aclose(self) -> None:
        for _, client in self.clients:
            await client.aclose()


async def hammer(
    call: Callable[[], Awaitable[Outcome]], *, calls: int, concurrency: int, into: Outcomes | None = None
) -> Outcomes:
    """`calls` calls of `call`, at most `concurrency` at a time."""
    outcomes = into if into is not None else Outcomes()
    remaining = iter(range(calls))

    async def worker() -> None:
        for _ in remaining:
            outcomes.items.append(await call())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


async def until_refused(call: Callable[[], Awaitable[Outcome]], *, limit: int = 1000) -> tuple[int, Outcome]:
    """Sequential calls (nothing else in flight) until the first refusal: (answered, refusal)."""
    for answered in range(limit):
        outcome = await call()
        if outcome.status != 200:
            return answered, outcome
    raise AssertionError(f"{limit} sequential calls were all answered: the limit never bit")


class McpClients:
    """An MCP client over streamable HTTP (`/mcp`, the wallet key as bearer) per server;
    enter with `async with` in the task that will leave it. Call it from one task at a
    time: a call the HTTP transport refused (the SDK says only "error response") is
    judged by the last error answer its client received."""

    def __init__(self, urls: Sequence[str], wallet_key: str) -> None:
        self.urls = list(urls)
        self.wallet_key = wallet_key
        self._stack = contextlib.AsyncExitStack()
        self.clients: list[tuple[str, Any]] = []
        self._next: Iterator[tuple[str, Any]] = iter(())
        self._refusals: dict[str, Outcome] = {}

    async def __aenter__(self) -> McpClients:
        import httpx2
        from mcp.client import Client
        from mcp.client.streamable_http import streamable_http_client

        for url in self.urls:

            async def refusal(response: Any, url: str = url) -> None:
                if response.status_code >= 400:
                    await response.aread()
                    body = (
                        response.json()
                        if response.headers.get("content-type") == "application/json"
                        else None
                    )
                    self._refusals[url] = Outcome(
                        response.status_code, body, response.headers.get("retry-after"), url
                    )

            http_client = await self._stack.enter_async_context(
                httpx2.AsyncClient(
                    headers={"Authorization": f"Bearer {self.wallet_key}"},
                    timeout=60,
                    event_hooks={"response": [refusal]},
                )
            )
            client = await self._stack.enter_async_context(
                Client(streamable_http_client(f"{url}/mcp", http_client=http_client))
            )
            self.clients.append((url, client))
        self._next = itertools.cycle(self.clients)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def call(self, tool: str, arguments: dict[str, Any]) -> Outcome:
        """A tool call: 200 with its result, or its error JSON's code (0: the transport failed)."""
        url, client = next(self._next)
        self._refusals.pop(url, None)
        try:
            result = await client.call_tool(tool, arguments)
        except Exception as error:  # the MCP session or its HTTP transport failed
            return self._refusals.pop(url, None) or Outcome(0, repr(error), None, url)
        text = "".join(getattr(content, "text", "") for content in result.content)
        body = json.loads(text) if text.startswith("{") else text
        if result.is_error:
            return Outcome(int(body["code"]) if isinstance(body, dict) else 0, body, None, url)
        return Outcome(200, body, None, url)
