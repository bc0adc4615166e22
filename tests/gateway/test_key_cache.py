"""The gateway judges calls by cached spend keys (`core.key_cache`): a key changed by
another process on the same database — which never touches this process's cache — is
refused (or, widened, served) on the very next call; the cache saves the read; it is
bounded, and forgets unknown secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from lava_mcp.config import Settings
from lava_mcp.core import key_cache, spend_keys
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import SpendKey
from tests.fake_provider import FakeProvider
from tests.gateway.conftest import Gateway

CALL = {"model": "cheap-1", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
CHANGES: dict[str, tuple[str, dict[str, Any] | None]] = {
    "rotate": ("rotate", None),
    "revoke": ("revoke", None),
    "pause": ("update", {"status": "paused"}),
    "narrow_models": ("update", {"allowed_models": ["gpt-4o-mini"]}),
    "request_limit": ("update", {"request_limit": {"count": 1, "cycle": "total"}}),
}
REFUSALS = {"rotate": 401, "revoke": 401, "pause": 403, "narrow_models": 403, "request_limit": 429}

# Run by a separate Python process: change a key with the core, as `lava-mcp keys` would.
CHANGE_SCRIPT = """
import json, sys
from lava_mcp.core import spend_keys
from lava_mcp.store.db import Database
url, wallet_id, key_id, action, fields = sys.argv[1:]
db = Database(url)
if action == "rotate":
    spend_keys.rotate(db, wallet_id, key_id)
elif action == "revoke":
    spend_keys.revoke(db, wallet_id, key_id)
else:
    spend_keys.update_key(db, wallet_id, key_id, json.loads(fields))
"""


def run_change_script(
    url: str, wallet_id: str, key_id: str, action: str, fields: dict[str, Any] | None
) -> None:
    """Change a key from a separate Python process (which shares nothing with this one's cache)."""
    command = [sys.executable, "-c", CHANGE_SCRIPT, url, wallet_id, key_id, action, json.dumps(fields)]
    subprocess.run(command, check=True, timeout=60)


def post(gateway: Gateway, secret: str) -> int:
    import httpx

    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=CALL,
        headers={"authorization": f"Bearer {secret}"},
        timeout=30,
    )
    return response.status_code


def in_cache(gateway: Gateway, secret: str) -> bool:
    from lava_mcp.ids import hash_secret

    return key_cache.keys.key(gateway.runtime.db.url, hash_secret(secret)) is not None


@pytest.fixture
def other_runtime(settings: Settings) -> Iterator[Runtime]:
    """A second Runtime on the same database (as a second server process would have)."""
    runtime = Runtime.build(settings)
    yield runtime
    runtime.db.dispose()


def change_elsewhere(how: str, gateway: Gateway, key_id: str, change: str, other: Runtime) -> None:
    action, fields = CHANGES[change]
    if how == "process":
        run_change_script(gateway.runtime.db.url, gateway.wallet_id, key_id, action, fields)
        return
    if action == "rotate":
        spend_keys.rotate(other.db, gateway.wallet_id, key_id)
    elif action == "revoke":
        spend_keys.revoke(other.db, gateway.wallet_id, key_id)
    else:
        spend_keys.update_key(other.db, gateway.wallet_id, key_id, fields or {})


@pytest.mark.parametrize("how", ["process", "runtime"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_key_changed_by_another_process_is_refused_on_the_next_call(
    gateway: Gateway, fake: FakeProvider, other_runtime: Runtime, how: str, change: str
) -> None:
    key = gateway.create_key(allowed_models=["cheap-1", "gpt-4o-mini"])
    assert post(gateway, key["key"]) == 200
    assert in_cache(gateway, key["key"])  # the next call is judged by the cached key
    received = len(fake.received)
    change_elsewhere(how, gateway, key["spend_key_id"], change, other_runtime)
    assert post(gateway, key["key"]) == REFUSALS[change]
    assert post(gateway, key["key"]) == REFUSALS[change]  # and every call after it
    assert len(fake.received) == received  # nothing reached the provider
    with gateway.runtime.db.read() as session:
        row = session.get(SpendKey, key["spend_key_id"])
        assert row is not None and (row.total_requests, row.held_micros) == (1, 0)
    assert gateway.verify() == []


@pytest.mark.parametrize("how", ["process", "runtime"])
def test_a_rate_limit_lowered_by_another_process_judges_the_next_call(
    gateway: Gateway, fake: FakeProvider, other_runtime: Runtime, how: str
) -> None:
    """The call after a rate limit was lowered elsewhere is judged by the new limit, not by
    the cached key's old one: the hold notices the key moved, and the call takes the
    rate-limit step again (eight of ten tokens in use, refilled at one a second: a burst of
    one refuses the next call for a minute; the old burst of ten would let it pass)."""
    key = gateway.create_key(rate_limit={"rpm": 60, "burst": 10})
    for _ in range(8):
        assert post(gateway, key["key"]) == 200
    assert in_cache(gateway, key["key"])
    received = len(fake.received)
    lowered = {"rate_limit": {"rpm": 1, "burst": 1}}
    if how == "process":
        run_change_script(gateway.runtime.db.url, gateway.wallet_id, key["spend_key_id"], "update", lowered)
    else:
        spend_keys.update_key(other_runtime.db, gateway.wallet_id, key["spend_key_id"], lowered)
    assert post(gateway, key["key"]) == 429
    assert post(gateway, key["key"]) == 429
    assert len(fake.received) == received  # nothing reached the provider
    with gateway.runtime.db.read() as session:
        row = session.get(SpendKey, key["spend_key_id"])
        assert row is not None and (row.total_requests, row.held_micros, row.rate_rpm) == (8, 0, 1)
    assert gateway.verify() == []


@pytest.mark.parametrize("how", ["process", "runtime"])
def test_a_key_resumed_or_widened_by_another_process_serves_the_next_call(
    gateway: Gateway, other_runtime: Runtime, how: str
) -> None:
    key = gateway.create_key(allowed_models=["gpt-4o-mini"])
    assert post(gateway, key["key"]) == 403  # cheap-1 not allowed (judged again by a fresh read)
    change_elsewhere(how, gateway, key["spend_key_id"], "pause", other_runtime)
    assert post(gateway, key["key"]) == 403
    action_fields = {"status": "active", "allowed_models": ["cheap-1"]}
    if how == "process":
        run_change_script(
            gateway.runtime.db.url, gateway.wallet_id, key["spend_key_id"], "update", action_fields
        )
    else:
        spend_keys.update_key(other_runtime.db, gateway.wallet_id, key["spend_key_id"], action_fields)
    assert post(gateway, key["key"]) == 200


def test_an_unrelated_change_elsewhere_serves_and_refreshes_the_cache(
    gateway: Gateway, other_runtime: Runtime
) -> None:
    """A rename moves the version: the hold judges the call again, serves it, and puts the
    row it read in the cache, so the call after it takes the hold at the first try."""
    key = gateway.create_key()
    assert post(gateway, key["key"]) == 200
    spend_keys.update_key(other_runtime.db, gateway.wallet_id, key["spend_key_id"], {"name": "renamed"})
    assert post(gateway, key["key"]) == 200
    from lava_mcp.ids import hash_secret

    cached = key_cache.keys.key(gateway.runtime.db.url, hash_secret(key["key"]))
    assert cached is not None and (cached.name, cached.version) == ("renamed", 2)
    assert post(gateway, key["key"]) == 200


def test_a_cached_key_costs_no_read_of_the_key(gateway: Gateway) -> None:
    key = gateway.create_key()
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(gateway.runtime.db.engine, "before_cursor_execute", record)
    try:
        assert post(gateway, key["key"]) == 200
        first = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "spend_key" in s]
        statements.clear()
        assert post(gateway, key["key"]) == 200
        assert post(gateway, key["key"]) == 200
        again = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "spend_key" in s]
    finally:
        event.remove(gateway.runtime.db.engine, "before_cursor_execute", record)
    assert len(first) == 1  # the first call reads the key
    assert again == []  # the next ones are judged by the cached key, checked by the hold


def test_an_unknown_secret_is_refused_and_forgotten_after_its_ttl() -> None:
    cache = key_cache.KeyCache(unknown_ttl_s=60)
    cache.remember("sqlite://a", "digest", None)
    assert cache.is_unknown("sqlite://a", "digest")
    assert not cache.is_unknown("sqlite://b", "digest")  # another ledger knows nothing of it
    brief = key_cache.KeyCache(unknown_ttl_s=0)
    brief.remember("sqlite://a", "digest", None)
    assert not brief.is_unknown("sqlite://a", "digest")


def test_the_cache_is_bounded() -> None:
    cache = key_cache.KeyCache(max_keys=3, max_unknown=2)
    for number in range(10):
        cache.remember(
            "sqlite://a", f"key{number}", SpendKey(id=f"k{number}", wallet_id="w", key_hash=f"key{number}")
        )
        cache.remember("sqlite://a", f"unknown{number}", None)
    assert len(cache) == 3 and len(cache._unknown) == 2 and len(cache._entries) == 3
    assert [cache.key("sqlite://a", f"key{n}") is not None for n in range(10)] == [False] * 7 + [True] * 3
    assert cache.is_unknown("sqlite://a", "unknown9") and not cache.is_unknown("sqlite://a", "unknown0")


def test_only_active_keys_are_cached_and_entries_are_read_again_when_old() -> None:
    cache = key_cache.KeyCache(max_age_s=0)
    cache.remember("sqlite://a", "h", SpendKey(id="k", wallet_id="w", key_hash="h"))
    assert cache.key("sqlite://a", "h") is None  # older than max_age_s: read again
    kept = key_cache.KeyCache()
    kept.remember("sqlite://a", "h", SpendKey(id="k", wallet_id="w", key_hash="h", status="paused"))
    assert kept.key("sqlite://a", "h") is None and len(kept) == 0


# -- the same rule through the metering core, on SQLite and PostgreSQL ----------------------


@pytest.fixture
async def backend(settings: Settings) -> Any:
    """A migrated runtime on the database of the test's parameter (`[sqlite]`, `[postgresql]`)."""
    built = Runtime.build(settings)
    built.db.upgrade()
    yield built
    await built.aclose()


@pytest.mark.parametrize("change", ["rotate", "revoke", "pause"])
async def test_a_cached_key_changed_by_another_process_is_never_held(backend: Runtime, change: str) -> None:
    """The gateway's lookup (`cached`, else `authenticate(remember=True)`) hands the
    metering core the cached object; a separate process changes the key; the next call
    judged by that same cached object is refused by the hold, and the cache then holds
    the key as it is (or nothing)."""
    import anyio.to_thread

    from lava_mcp.core import wallet
    from lava_mcp.errors import Forbidden, Unauthorized
    from lava_mcp.ids import hash_secret
    from tests.conftest import fund

    runtime = backend
    owner = wallet.create_wallet(runtime.db, name="cached").wallet_id
    fund(runtime, owner, "5.00")
    created = spend_keys.create(runtime.db, owner, {})
    assert spend_keys.cached(runtime.db, created.secret) is None
    spend_keys.authenticate(runtime.db, created.secret, remember=True)
    cached = spend_keys.cached(runtime.db, created.secret)
    assert cached is not None

    async def call() -> None:
        await runtime.metering.call(
            wallet_id=owner, service_id="weather", model=None, body={"call": 1}, spend_key=cached
        )

    await call()
    action, fields = CHANGES[change]
    await anyio.to_thread.run_sync(run_change_script, runtime.db.url, owner, created.key.id, action, fields)
    with pytest.raises(Forbidden if change == "pause" else Unauthorized):
        await call()
    assert key_cache.keys.key(runtime.db.url, hash_secret(created.secret)) is None  # dropped
    assert spend_keys.get(runtime.db, owner, created.key.id).total_requests == 1
    from lava_mcp.core import verify

    assert verify.verify(runtime.db) == []
