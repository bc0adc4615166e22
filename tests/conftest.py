"""Shared fixtures: a fake upstream provider on loopback, a fresh ledger, a runtime, and
the whole HTTP app served on loopback."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from lava_mcp.config import Settings
from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from lava_mcp.store.db import Database
from tests.fake_provider import FakeProvider, serve_in_thread

# Property tests are deterministic (a fixed seed per test) and never fail on a slow,
# busy machine's timing: the suite must give the same answer on every run.
hypothesis_settings.register_profile("lava-mcp", derandomize=True, deadline=None)
hypothesis_settings.load_profile("lava-mcp")

CATALOG_EXTRA = """
[services.weather]
shape = "http"
pricing = "per_call"
price_per_call = "0.002"
base_url_env = "FAKE_DATA_URL"
description = "A data service priced per call (the fake provider echoes its input)."

[services.cheapchat]
shape = "openai"
pricing = "per_token"
base_url_env = "OPENAI_BASE_URL"
api_key_env = "OPENAI_API_KEY"
model_prefixes = ["cheap-"]
[services.cheapchat.models."cheap-1"]
input_per_mtok = "1.00"
output_per_mtok = "2.00"
"""


@pytest.fixture(scope="session")
def fake_provider() -> Iterator[FakeProvider]:
    provider = FakeProvider()
    with serve_in_thread(provider.app()) as url:
        provider.url = url
        yield provider


@pytest.fixture
def fake(fake_provider: FakeProvider) -> Iterator[FakeProvider]:
    """The session's fake provider, reset for each test."""
    fake_provider.reset()
    yield fake_provider


@pytest.fixture
def settings(tmp_path: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> Settings:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG_EXTRA)
    monkeypatch.setenv("FAKE_DATA_URL", f"{fake.url}/data")
    return Settings(
        LAVA_DATABASE_URL=f"sqlite:///{tmp_path / 'lava.db'}",
        LAVA_CATALOG=catalog,
        LAVA_PAYMENTS="sandbox",
        OPENAI_API_KEY="sk-upstream-openai",
        OPENAI_BASE_URL=f"{fake.url}/v1",
        ANTHROPIC_API_KEY="sk-upstream-anthropic",
        ANTHROPIC_BASE_URL=fake.url,
        OLLAMA_BASE_URL=f"{fake.url}/v1",
        LAVA_SQLITE_SYNCHRONOUS="NORMAL",
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """A migrated runtime (no background sweep: tests call `expire_holds` themselves)."""
    built = Runtime.build(settings)
    built.db.upgrade()
    yield built
    await built.aclose()


@pytest.fixture
def new_wallet(runtime: Runtime) -> wallet.NewWallet:
    return wallet.create_wallet(runtime.db, name="test")


def fund(runtime: Runtime, wallet_id: str, amount: str) -> None:
    """Credit a wallet through the operator's adjustment entry (no payments involved)."""
    wallet.adjust(runtime.db, wallet_id, amount, reason="test funding")


# PostgreSQL for the tests that must also hold on it (concurrency, migrations). The CI and
# development machines run it on loopback with trust auth; an unreachable server fails
# those tests loudly rather than skipping them.
POSTGRES_URL = os.environ.get("LAVA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL whose connections work in a fresh schema, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"lava_test_{secrets.token_hex(6)}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as error:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable ({error!r}); these tests need it")
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@dataclass(frozen=True)
class LedgerState:
    """Everything a refused or malformed call must leave unchanged."""

    balance_micros: int
    held_micros: int
    entries: int
    requests: int
    holds: int
    pending_holds: int


def ledger_state(db: Database, wallet_id: str) -> LedgerState:
    from sqlalchemy import func
    from sqlmodel import select

    from lava_mcp.store.models import Hold, LedgerEntry, RequestRecord, Wallet

    with db.read() as session:
        row = session.get(Wallet, wallet_id)
        assert row is not None

        def count(model: Any, *conditions: Any) -> int:
            query = select(func.count()).select_from(model).where(model.wallet_id == wallet_id, *conditions)
            return int(session.exec(query).one())

        return LedgerState(
            balance_micros=row.balance_micros,
            held_micros=row.held_micros,
            entries=count(LedgerEntry),
            requests=count(RequestRecord),
            holds=count(Hold),
            pending_holds=count(Hold, Hold.status == "pending"),
        )


# Redis for the shared rate limiter. As with PostgreSQL, an unreachable server fails the
# tests that need it loudly (CI sets LAVA_TEST_REDIS_URL and starts Redis if it is down).
REDIS_URL = os.environ.get("LAVA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass(frozen=True)
class RedisService:
    url: str
    key_prefix: str  # this test's own: its keys are deleted afterwards


@pytest.fixture
def redis_service() -> Iterator[RedisService]:
    """The test Redis with a key prefix of this test's own, its keys deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as error:
        client.close()
        pytest.fail(f"Redis at {REDIS_URL} is not reachable ({error!r}); these tests need it")
    prefix = f"lava-test-{secrets.token_hex(6)}:"
    try:
        yield RedisService(REDIS_URL, prefix)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
