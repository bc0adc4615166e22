"""Load for the scale tests: many concurrent calls through the real SDKs, spread round-robin
over several servers, each outcome recorded (status, body, Retry-After) for the test to judge."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
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
