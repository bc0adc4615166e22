"""The whole app served on loopback against the fake provider, a funded wallet, and
helpers to make spend keys and SDK clients for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import openai
import pytest

from lava_mcp.config import Settings
from lava_mcp.core import verify, wallet
from lava_mcp.core.rate_limits import InProcessRateLimiter, RedisRateLimiter
from lava_mcp.runtime import Runtime
from lava_mcp.transports.app import build_app
from tests.conftest import RedisService
from tests.fake_provider import FakeProvider, serve_in_thread


@dataclass
class Gateway:
    url: str
    runtime: Runtime
    wallet_id: str
    wallet_key: str
    resolved: dict[str, threading.Event] = field(default_factory=dict)
    resolved_any: threading.Condition = field(default_factory=threading.Condition)
    resolved_ids: list[str] = field(default_factory=list)
    clients: list[Any] = field(default_factory=list)  # SDK clients, closed at teardown

    def _keep(self, client: Any) -> Any:
        self.clients.append(client)
        return client

    def rest(self, wallet_key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"authorization": f"Bearer {wallet_key or self.wallet_key}"},
            timeout=30,
        )

    def create_key(self, **options: Any) -> dict[str, Any]:
        with self.rest() as client:
            response = client.post("/v1/spend_keys", json=options)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def fund(self, amount: str, wallet_id: str | None = None) -> None:
        wallet.adjust(self.runtime.db, wallet_id or self.wallet_id, amount, reason="test funding")

    def balance_micros(self, wallet_id: str | None = None) -> int:
        return wallet.get_balance(self.runtime.db, wallet_id or self.wallet_id).balance_micros

    def openai(self, key: str, **options: Any) -> openai.OpenAI:
        client: openai.OpenAI = self._keep(
            openai.OpenAI(api_key=key, base_url=f"{self.url}/v1", max_retries=0, **options)
        )
        return client

    def async_openai(self, key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=key, base_url=f"{self.url}/v1", max_retries=0, timeout=60
        )  # async with

    def anthropic(self, key: str, **options: Any) -> anthropic.Anthropic:
        client: anthropic.Anthropic = self._keep(
            anthropic.Anthropic(api_key=key, base_url=self.url, max_retries=0, **options)
        )
        return client

    def async_anthropic(self, key: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=key, base_url=self.url, max_retries=0, timeout=60
        )  # async with

    def wait_resolved(self, request_id: str, timeout_s: float = 15) -> None:
        """Block until metering settled or failed `request_id` (an event, not a sleep)."""
        with self.resolved_any:
            assert self.resolved_any.wait_for(lambda: request_id in self.resolved_ids, timeout_s), request_id

    def verify(self) -> list[str]:
        return verify.verify(self.runtime.db)


@pytest.fixture
def limiter(request: pytest.FixtureRequest) -> str:
    """The gateway's rate limiter: "in_process" unless a test is parametrized (indirectly)
    over "in_process" and "redis" (the shared limiter, on this test's own key prefix)."""
    chosen: str = getattr(request, "param", "in_process")
    return chosen


@pytest.fixture
def gateway(
    settings: Settings, fake: FakeProvider, limiter: str, request: pytest.FixtureRequest
) -> Iterator[Gateway]:
    """The app (gateway + REST) on loopback with a wallet funded with $10.00."""
    fake.reset()
    if limiter == "redis":
        redis_service: RedisService = request.getfixturevalue("redis_service")
        settings = settings.model_copy(
            update={"redis_url": redis_service.url, "redis_key_prefix": redis_service.key_prefix}
        )
    runtime = Runtime.build(settings)
    expected = RedisRateLimiter if limiter == "redis" else InProcessRateLimiter
    assert isinstance(runtime.rate_limiter, expected), runtime.rate_limiter
    runtime.db.upgrade()
    created = wallet.create_wallet(runtime.db, name="test")
    served = Gateway("", runtime, created.wallet_id, created.wallet_key)

    def on_resolved(request_id: str) -> None:
        with served.resolved_any:
            served.resolved_ids.append(request_id)
            served.resolved_any.notify_all()

    runtime.metering.resolved_listeners.append(on_resolved)
    served.fund("10.00")
    with serve_in_thread(build_app(runtime)) as url:
        served.url = url
        try:
            yield served
        finally:
            for client in served.clients:
                client.close()
    fake.reset()
