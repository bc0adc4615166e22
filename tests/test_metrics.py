"""`GET /metrics`: the Prometheus text format (read back with prometheus-client's own
parser), whose figures agree with the ledger after real calls through the gateway."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func
from sqlmodel import select

from lava_mcp.config import Settings
from lava_mcp.core import wallet
from lava_mcp.core.stats import MEDIA_TYPE, snapshot
from lava_mcp.errors import UpstreamError
from lava_mcp.observability import metrics
from lava_mcp.providers import shapes
from lava_mcp.runtime import Runtime
from lava_mcp.store.db import Database
from lava_mcp.store.models import Hold, RequestRecord, Wallet
from lava_mcp.transports.app import build_app
from tests.conftest import fund
from tests.fake_provider import FakeProvider, serve_in_thread

PROMPT = [{"role": "user", "content": "hello"}]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of `/metrics`."""
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == MEDIA_TYPE and MEDIA_TYPE.startswith("text/plain; version=")
    return parse(response.text)


def parse(text: str) -> Samples:
    """Every sample, by name and labels, read with prometheus-client's own parser."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def change(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def served(runtime: Runtime) -> Iterator[str]:
    with serve_in_thread(build_app(runtime, migrate=False)) as url:
        yield url


def create_key(url: str, wallet_key: str, **options: object) -> str:
    response = httpx.post(
        f"{url}/v1/spend_keys", json=options, headers={"authorization": f"Bearer {wallet_key}"}, timeout=30
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


async def test_the_figures_match_the_ledger_after_calls(runtime: Runtime, served: str) -> None:
    created = wallet.create_wallet(runtime.db, name="metrics")
    fund(runtime, created.wallet_id, "5.00")
    openai_key = create_key(served, created.wallet_key, rate_limit={"rpm": 1, "burst": 3})
    anthropic_key = create_key(served, created.wallet_key, request_shape="anthropic")
    before = scrape(served)

    async with openai.AsyncOpenAI(api_key=openai_key, base_url=f"{served}/v1", max_retries=0) as client:
        for _ in range(3):
            await client.chat.completions.create(model="cheap-1", messages=PROMPT, max_tokens=10)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError):  # the fourth: the burst is spent
            await client.chat.completions.create(model="cheap-1", messages=PROMPT, max_tokens=10)  # type: ignore[arg-type]
    async with anthropic.AsyncAnthropic(api_key=anthropic_key, base_url=served, max_retries=0) as client:
        for _ in range(2):
            await client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=PROMPT)  # type: ignore[arg-type]
    async with openai.AsyncOpenAI(
        api_key="lava_sk_not_a_key", base_url=f"{served}/v1", max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="cheap-1", messages=PROMPT, max_tokens=10)  # type: ignore[arg-type]
    # One call held and not yet settled: the open holds and the amount they hold.
    ticket = await runtime.metering.open(
        wallet_id=created.wallet_id,
        service_id="cheapchat",
        model="cheap-1",
        body={"messages": PROMPT},
        endpoint="test",
    )
    after = scrape(served)

    with runtime.db.read() as session:
        spend_by_service = dict(
            session.exec(
                select(RequestRecord.service, func.sum(RequestRecord.cost_micros))
                .where(RequestRecord.wallet_id == created.wallet_id, RequestRecord.status == "completed")
                .group_by(RequestRecord.service)
            ).all()
        )
        wallets = session.exec(select(func.count()).select_from(Wallet)).one()
        pending = session.exec(select(Hold).where(Hold.status == "pending")).all()
    assert set(spend_by_service) == {"cheapchat", "anthropic"} and all(spend_by_service.values())
    for service, spent_micros in spend_by_service.items():
        assert change(before, after, "lava_spend_micros_total", service=service) == spent_micros
    assert value(after, "lava_wallets") == wallets
    assert value(after, "lava_open_holds") == len(pending) == 1
    assert (
        value(after, "lava_held_micros") == sum(hold.amount_micros for hold in pending) == ticket.hold_micros
    )

    chat, messages = "/v1/chat/completions", "/v1/messages"
    assert change(before, after, "lava_http_requests_total", route=chat, method="POST", status="200") == 3
    assert change(before, after, "lava_http_requests_total", route=chat, method="POST", status="429") == 1
    assert change(before, after, "lava_http_requests_total", route=chat, method="POST", status="401") == 1
    assert change(before, after, "lava_http_requests_total", route=messages, method="POST", status="200") == 2
    assert change(before, after, "lava_http_errors_total", route=chat, status="429") == 1
    assert change(before, after, "lava_http_errors_total", route=chat, status="401") == 1
    assert change(before, after, "lava_http_errors_total", route=messages, status="200") == 0
    assert change(before, after, "lava_rate_limit_decisions_total", decision="allowed") == 3
    assert change(before, after, "lava_rate_limit_decisions_total", decision="refused") == 1
    assert change(before, after, "lava_upstream_latency_seconds_count", service="cheapchat") == 3
    assert change(before, after, "lava_upstream_latency_seconds_count", service="anthropic") == 2
    assert value(after, "process_resident_memory_bytes") > 0
    await runtime.metering.fail(ticket, UpstreamError("the test's held call, voided"))


async def test_unmatched_paths_share_one_label(runtime: Runtime, served: str) -> None:
    # A client can't grow the label set with made-up paths.
    before = scrape(served)
    for path in ("/no/such/page", "/v1/nothing-here", "/another-one"):
        assert httpx.get(f"{served}{path}", timeout=30).status_code == 404
    after = scrape(served)
    assert (
        change(before, after, "lava_http_requests_total", route="unmatched", method="GET", status="404") == 3
    )
    routes = {dict(labels).get("route") for _, labels in after} - {None}
    assert not routes & {"/no/such/page", "/v1/nothing-here", "/another-one"}


class Retries(logging.Handler):
    """Counts metering's "retrying" warnings, and sets an event at the first."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.count += 1
            self.seen.set()


async def test_settle_retries_are_counted(settings: Settings, fake: FakeProvider, tmp_path: Path) -> None:
    # Another connection holds SQLite's write lock past the busy timeout: the settle retries.
    runtime = Runtime.build(settings)
    runtime.db = runtime.metering.db = Database(settings.database_url, busy_timeout_s=0.05)
    runtime.db.upgrade()
    created = wallet.create_wallet(runtime.db, name="busy")
    fund(runtime, created.wallet_id, "1.00")
    ticket = await runtime.metering.open(
        wallet_id=created.wallet_id,
        service_id="cheapchat",
        model="cheap-1",
        body={"messages": PROMPT},
        endpoint="test",
    )
    runtime.metering.settle_retry_first_s = runtime.metering.settle_retry_longest_s = 0.01
    counted_before = metrics.REGISTRY.get_sample_value("lava_settle_retries_total", {"operation": "settle"})
    retries = Retries()
    logging.getLogger("lava_mcp.metering").addHandler(retries)
    blocker = sqlite3.connect(str(tmp_path / "lava.db"), isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        settling = asyncio.ensure_future(runtime.metering.settle(ticket, shapes.Usage(3, 6)))
        await asyncio.wait_for(retries.seen.wait(), 30)
        blocker.execute("COMMIT")
        await asyncio.wait_for(settling, 30)
    finally:
        logging.getLogger("lava_mcp.metering").removeHandler(retries)
        blocker.close()
        await runtime.aclose()
    counted = metrics.REGISTRY.get_sample_value("lava_settle_retries_total", {"operation": "settle"})
    assert retries.count >= 1 and (counted or 0) - (counted_before or 0) == retries.count


async def test_the_database_figures_on_postgresql(settings: Settings, postgres_url: str) -> None:
    runtime = Runtime.build(settings.model_copy(update={"database_url": postgres_url}))
    try:
        runtime.db.upgrade()
        created = wallet.create_wallet(runtime.db, name="postgres")
        fund(runtime, created.wallet_id, "1.00")
        tickets = [
            await runtime.metering.open(
                wallet_id=created.wallet_id,
                service_id="cheapchat",
                model="cheap-1",
                body={"messages": PROMPT},
                endpoint="test",
            )
            for _ in range(3)
        ]
        samples = parse(snapshot(runtime.db).decode())
        assert value(samples, "lava_wallets") == 1
        assert value(samples, "lava_open_holds") == 3
        assert value(samples, "lava_held_micros") == sum(ticket.hold_micros for ticket in tickets) > 0
        for ticket in tickets:
            await runtime.metering.fail(ticket, UpstreamError("the test's held call, voided"))
    finally:
        await runtime.aclose()
