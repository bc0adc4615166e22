"""The OAuth rules without HTTP (core.oauth): codes and refresh tokens are used once even
when raced, on SQLite and PostgreSQL; secrets are stored only as hashes; grants end
everything issued under them; scopes are what the owner ticked."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlmodel import col

from lava_mcp.config import Settings
from lava_mcp.core import oauth, wallet
from lava_mcp.errors import BadRequest, Forbidden, NotFound
from lava_mcp.runtime import Runtime
from lava_mcp.store.db import Database
from lava_mcp.store.models import OAuthCode, OAuthToken, utc_now

RACERS = 16
CALLBACK = "https://claude.ai/api/mcp/auth_callback"
RESOURCE = "http://127.0.0.1:8787/mcp"


@pytest.fixture
async def backend_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """A migrated runtime on the database of the test's parameter (`[sqlite]`, `[postgresql]`)."""
    built = Runtime.build(settings)
    built.db.upgrade()
    yield built
    await built.aclose()


def granted_code(db: Database, wallet_id: str, scopes: list[str] | None = None) -> str:
    oauth.save_client(
        db, "client-1", {"client_id": "client-1", "client_name": "Test app", "redirect_uris": [CALLBACK]}
    )
    params = {
        "scopes": list(oauth.SCOPES),
        "code_challenge": "challenge",
        "redirect_uri": CALLBACK,
        "redirect_uri_provided_explicitly": True,
        "state": "s",
        "resource": RESOURCE,
    }
    request_id = oauth.start_authorization(db, "client-1", params)
    return oauth.approve(
        db, request_id, wallet_id=wallet_id, scopes=list(oauth.SCOPES) if scopes is None else scopes
    )


def race(function: Callable[[], Any]) -> tuple[list[Any], list[Exception]]:
    """Run `function` in RACERS threads released together; their results and errors."""
    start = threading.Barrier(RACERS)
    results: list[Any] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def run() -> None:
        start.wait()
        try:
            outcome = function()
        except Exception as error:
            with lock:
                errors.append(error)
        else:
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def test_a_code_raced_by_many_exchanges_issues_tokens_once(backend_runtime: Runtime) -> None:
    db = backend_runtime.db
    owner = wallet.create_wallet(db)
    code = granted_code(db, owner.wallet_id)
    results, errors = race(lambda: oauth.exchange_code(db, code))
    assert len(results) == 1
    assert len(errors) == RACERS - 1 and all(isinstance(error, Forbidden) for error in errors)
    assert oauth.load_access_token(db, results[0].access_token) is not None


def test_a_refresh_token_raced_by_many_rotations_rotates_once(backend_runtime: Runtime) -> None:
    db = backend_runtime.db
    owner = wallet.create_wallet(db)
    issued = oauth.exchange_code(db, granted_code(db, owner.wallet_id))
    results, errors = race(lambda: oauth.rotate_refresh_token(db, issued.refresh_token, list(oauth.SCOPES)))
    assert len(results) == 1
    assert len(errors) == RACERS - 1 and all(isinstance(error, Forbidden) for error in errors)


def test_codes_and_tokens_are_stored_only_as_hashes(runtime: Runtime, new_wallet: wallet.NewWallet) -> None:
    db = runtime.db
    code = granted_code(db, new_wallet.wallet_id)
    issued = oauth.exchange_code(db, code)
    with db.read() as session:
        dumped = " ".join(
            str(row)
            for table in (
                "oauth_code",
                "oauth_token",
                "oauth_grant",
                "oauth_pending_authorization",
                "oauth_client",
            )
            for row in session.execute(text(f"SELECT * FROM {table}")).all()
        )
    for secret in (code, issued.access_token, issued.refresh_token, new_wallet.wallet_key):
        assert secret not in dumped


def test_an_expired_code_or_access_token_is_refused(runtime: Runtime, new_wallet: wallet.NewWallet) -> None:
    db = runtime.db
    code = granted_code(db, new_wallet.wallet_id)
    with db.write() as session:
        session.execute(update(OAuthCode).values(expires_at=utc_now() - timedelta(seconds=1)))
    with pytest.raises(Forbidden):
        oauth.exchange_code(db, code)
    issued = oauth.exchange_code(db, granted_code(db, new_wallet.wallet_id))
    with db.write() as session:
        session.execute(
            update(OAuthToken)
            .where(col(OAuthToken.kind) == "access")
            .values(expires_at=utc_now() - timedelta(seconds=1))
        )
    assert oauth.load_access_token(db, issued.access_token) is None
    assert oauth.load_refresh_token(db, issued.refresh_token) is not None  # refresh lives on


def test_connecting_again_replaces_the_earlier_connection(
    runtime: Runtime, new_wallet: wallet.NewWallet
) -> None:
    db = runtime.db
    first = oauth.exchange_code(db, granted_code(db, new_wallet.wallet_id))
    second = oauth.exchange_code(db, granted_code(db, new_wallet.wallet_id, scopes=[oauth.SPEND]))
    assert oauth.load_access_token(db, first.access_token) is None
    view = oauth.load_access_token(db, second.access_token)
    assert view is not None and view.scopes == [oauth.READ, oauth.SPEND]
    [connected] = oauth.list_connected_clients(db, new_wallet.wallet_id)
    assert (connected.client_name, connected.scopes) == ("Test app", [oauth.READ, oauth.SPEND])
    assert connected.last_used_at is not None

    other = wallet.create_wallet(db)
    with pytest.raises(NotFound):
        oauth.revoke_connected_client(db, other.wallet_id, connected.id)
    oauth.revoke_connected_client(db, new_wallet.wallet_id, connected.id)
    assert oauth.load_access_token(db, second.access_token) is None
    assert oauth.load_refresh_token(db, second.refresh_token) is None
    assert oauth.list_connected_clients(db, new_wallet.wallet_id) == []


def test_scopes_are_what_the_owner_ticked_and_read_is_always_in(runtime: Runtime, new_wallet) -> None:
    assert oauth.normalise_scopes(None) == list(oauth.SCOPES)
    assert oauth.normalise_scopes([]) == [oauth.READ]
    assert oauth.normalise_scopes([oauth.SPEND, oauth.READ]) == [oauth.READ, oauth.SPEND]
    with pytest.raises(BadRequest):
        oauth.normalise_scopes(["wallet:everything"])
    db = runtime.db
    params = {
        "scopes": [oauth.READ],
        "code_challenge": "c",
        "redirect_uri": CALLBACK,
        "state": None,
        "resource": RESOURCE,
    }
    request_id = oauth.start_authorization(db, "client-1", params)
    # The owner can't grant what the client did not ask for.
    with pytest.raises(BadRequest):
        oauth.approve(db, request_id, wallet_id=new_wallet.wallet_id, scopes=[oauth.FUND])
    # A refresh can narrow the scopes, never widen them.
    issued = oauth.exchange_code(db, granted_code(db, new_wallet.wallet_id, scopes=[]))
    with pytest.raises(Forbidden):
        oauth.rotate_refresh_token(db, issued.refresh_token, [oauth.READ, oauth.FUND])
