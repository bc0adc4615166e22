"""OAuth for remote MCP: clients, the wallet owner's consent, codes and tokens (DESIGN §14).

The rule: a *grant* is one wallet's consent to one client, for a set of scopes and one
resource (RFC 8707). Every code and token is issued under a grant and lives only while it
does, so revoking a grant ends all of them at once, on every surface.

    pending authorization ──approve──▶ grant + code ──exchange (once)──▶ access + refresh
                          └─deny──▶ (nothing)        refresh (once) ──▶ new access + refresh

- Codes, tokens and the pending request's id are random secrets stored only as SHA-256.
- A code and a refresh token are used once: a conditional UPDATE marks them, and a second
  use (a replayed code, a stolen refresh token) revokes the whole grant (OAuth 2.1 §4.3.1,
  §4.1.3 "SHOULD revoke").
- Connecting the same client to the same wallet again replaces the earlier grant, so a
  wallet lists each client once.
- `wallet:read` is always granted: nothing on /mcp works without it. `wallet:fund` and
  `wallet:spend` are what the owner ticks.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlparse

from sqlalchemy import CursorResult, Update, delete, update
from sqlmodel import col, select

from lava_mcp.errors import BadRequest, Forbidden, NotFound
from lava_mcp.ids import hash_secret, new_id, new_secret
from lava_mcp.store.db import Database
from lava_mcp.store.models import (
    OAuthClient,
    OAuthCode,
    OAuthGrant,
    OAuthPendingAuthorization,
    OAuthToken,
    utc_now,
)

READ = "wallet:read"
FUND = "wallet:fund"
SPEND = "wallet:spend"
SCOPES = (READ, FUND, SPEND)
# What the consent page says each scope lets the client do.
SCOPE_WORDS = {
    READ: "See your balance, usage and requests",
    FUND: "Add funds to your wallet (charges your saved card)",
    SPEND: "Make paid calls from your balance",
}

ACCESS_TOKEN_PREFIX = "lava_at_"
REFRESH_TOKEN_PREFIX = "lava_rt_"
CODE_PREFIX = "lava_ac_"

PENDING_TTL_S = 600
CODE_TTL_S = 300
ACCESS_TOKEN_TTL_S = 3600
REFRESH_TOKEN_TTL_S = 30 * 24 * 3600
# last_used_at is written at most this often per grant (a write per MCP request is waste).
LAST_USED_RESOLUTION_S = 60


@dataclass(frozen=True)
class GrantView:
    """What a code or token carries: whose wallet, which client, which scopes and resource."""

    grant_id: str
    wallet_id: str
    client_id: str
    scopes: list[str]
    resource: str
    expires_at: datetime


@dataclass(frozen=True)
class CodeView(GrantView):
    code_challenge: str
    redirect_uri: str
    redirect_uri_provided_explicitly: bool


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in_s: int
    scopes: list[str]


@dataclass(frozen=True)
class ConnectedClient:
    id: str  # the grant's id: what DELETE /v1/oauth/clients/{id} revokes
    client_id: str
    client_name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    # Where its sign-in answers go: the hosts of its registered redirect URIs, each once.
    redirect_hosts: list[str] = field(default_factory=list)


def normalise_scopes(requested: list[str] | None) -> list[str]:
    """The scopes to ask the owner about: the requested ones in a fixed order, read always.

    Raises: BadRequest for a scope this server does not know.
    """
    chosen = set(SCOPES if requested is None else requested)
    unknown = chosen - set(SCOPES)
    if unknown:
        raise BadRequest(f"unknown scope {sorted(unknown)[0]!r}; known: {' '.join(SCOPES)}")
    chosen.add(READ)
    return [scope for scope in SCOPES if scope in chosen]


def _changed(session: Any, statement: Update) -> int:
    """How many rows a conditional UPDATE changed (0: its condition no longer held)."""
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount


# --- clients --------------------------------------------------------------------------


def save_client(
    db: Database, client_id: str, metadata: dict[str, Any], *, metadata_document: bool = False
) -> None:
    """Record a client (dynamic registration), or refresh a metadata document's copy."""
    name = str(metadata.get("client_name") or "")[:200]
    with db.write() as session:
        client = session.get(OAuthClient, client_id)
        if client is None:
            client = OAuthClient(id=client_id, metadata_document=metadata_document)
        client.name = name
        client.client_metadata = metadata
        client.fetched_at = utc_now() if metadata_document else None
        session.add(client)


def load_client(db: Database, client_id: str) -> OAuthClient | None:
    with db.read() as session:
        return session.get(OAuthClient, client_id)


# --- the consent page -----------------------------------------------------------------


def start_authorization(db: Database, client_id: str, params: dict[str, Any]) -> str:
    """A pending authorization for the consent page; returns the id its URL carries."""
    request_id = secrets.token_urlsafe(32)
    with db.write() as session:
        _purge_expired(session)
        session.add(
            OAuthPendingAuthorization(
                id_hash=hash_secret(request_id),
                client_id=client_id,
                params=params,
                expires_at=utc_now() + timedelta(seconds=PENDING_TTL_S),
            )
        )
    return request_id


def _purge_expired(session: Any) -> None:
    """Expired pending requests, codes and tokens are useless: drop them as new ones come
    (a used refresh token is kept until it expires, to catch its replay)."""
    now = utc_now()
    session.execute(delete(OAuthPendingAuthorization).where(col(OAuthPendingAuthorization.expires_at) < now))
    session.execute(delete(OAuthCode).where(col(OAuthCode.expires_at) < now))
    session.execute(delete(OAuthToken).where(col(OAuthToken.expires_at) < now))


def load_pending(db: Database, request_id: str) -> OAuthPendingAuthorization:
    """Raises: NotFound for an unknown, expired or already answered authorization."""
    with db.read() as session:
        pending = session.get(OAuthPendingAuthorization, hash_secret(request_id))
    if pending is None or pending.used_at is not None or pending.expires_at <= utc_now():
        raise NotFound("this sign-in link has expired or was already used; start again from your app")
    return pending


def new_csrf_token(db: Database, request_id: str) -> str:
    """A fresh token for the consent form, bound to this pending authorization.

    Raises: NotFound (see `load_pending`).
    """
    load_pending(db, request_id)
    token = secrets.token_urlsafe(32)
    with db.write() as session:
        session.execute(
            update(OAuthPendingAuthorization)
            .where(col(OAuthPendingAuthorization.id_hash) == hash_secret(request_id))
            .values(csrf_hash=hash_secret(token))
        )
    return token


def check_csrf(pending: OAuthPendingAuthorization, token: str | None) -> None:
    """Raises: Forbidden unless `token` is the one issued for this pending authorization."""
    if (
        not token
        or pending.csrf_hash is None
        or not secrets.compare_digest(hash_secret(token), pending.csrf_hash)
    ):
        raise Forbidden("the form is stale or came from another page; reload the sign-in page")


def bind_wallet(db: Database, request_id: str, wallet_id: str) -> None:
    """The wallet a sign-up on the page created answers this authorization."""
    with db.write() as session:
        session.execute(
            update(OAuthPendingAuthorization)
            .where(col(OAuthPendingAuthorization.id_hash) == hash_secret(request_id))
            .values(wallet_id=wallet_id)
        )


def _close_pending(session: Any, request_id: str) -> None:
    """Mark the pending authorization answered, exactly once.

    Raises: NotFound if it was answered (or expired) meanwhile.
    """
    now = utc_now()
    closed = _changed(
        session,
        update(OAuthPendingAuthorization)
        .where(col(OAuthPendingAuthorization.id_hash) == hash_secret(request_id))
        .where(col(OAuthPendingAuthorization.used_at).is_(None))
        .where(col(OAuthPendingAuthorization.expires_at) > now)
        .values(used_at=now),
    )
    if closed != 1:
        raise NotFound("this sign-in link has expired or was already used; start again from your app")


def deny(db: Database, request_id: str) -> None:
    """The owner said no: the request is closed, nothing is issued.

    Raises: NotFound (see `load_pending`).
    """
    with db.write() as session:
        _close_pending(session, request_id)


def approve(db: Database, request_id: str, *, wallet_id: str, scopes: list[str]) -> str:
    """The owner said yes for `wallet_id` with `scopes`: a grant and its code (returned once).

    An earlier grant of the same client on the same wallet is replaced (revoked).
    Raises: NotFound (see `load_pending`); BadRequest for scopes outside the request's.
    """
    pending = load_pending(db, request_id)
    asked = list(pending.params.get("scopes") or SCOPES)
    granted = normalise_scopes(scopes)
    if not set(granted) <= set(asked) | {READ}:
        raise BadRequest("a scope was granted that the client did not ask for")
    code = new_secret(CODE_PREFIX)
    now = utc_now()
    with db.write() as session:
        _close_pending(session, request_id)
        session.execute(
            update(OAuthGrant)
            .where(col(OAuthGrant.wallet_id) == wallet_id)
            .where(col(OAuthGrant.client_id) == pending.client_id)
            .where(col(OAuthGrant.revoked_at).is_(None))
            .values(revoked_at=now)
        )
        grant = OAuthGrant(
            id=new_id("oag"),
            wallet_id=wallet_id,
            client_id=pending.client_id,
            scopes=granted,
            resource=str(pending.params["resource"]),
        )
        session.add(grant)
        session.flush()
        session.add(
            OAuthCode(
                code_hash=hash_secret(code),
                grant_id=grant.id,
                code_challenge=str(pending.params["code_challenge"]),
                redirect_uri=str(pending.params["redirect_uri"]),
                redirect_uri_provided_explicitly=bool(
                    pending.params.get("redirect_uri_provided_explicitly", True)
                ),
                expires_at=now + timedelta(seconds=CODE_TTL_S),
            )
        )
    return code


# --- codes and tokens -----------------------------------------------------------------


def _revoke_grant_in(session: Any, grant_id: str) -> None:
    session.execute(
        update(OAuthGrant)
        .where(col(OAuthGrant.id) == grant_id)
        .where(col(OAuthGrant.revoked_at).is_(None))
        .values(revoked_at=utc_now())
    )


def load_code(db: Database, code: str) -> CodeView | None:
    """The code's grant and PKCE challenge, or None for an unknown, revoked or used code.

    A used code presented again revokes its grant: whoever replays it may hold its tokens.
    """
    with db.read() as session:
        row = session.exec(
            select(OAuthCode, OAuthGrant)
            .join(OAuthGrant, col(OAuthGrant.id) == col(OAuthCode.grant_id))
            .where(col(OAuthCode.code_hash) == hash_secret(code))
        ).first()
    if row is None:
        return None
    stored, grant = row
    if stored.used_at is not None:
        with db.write() as session:
            _revoke_grant_in(session, grant.id)
        return None
    if grant.revoked_at is not None:
        return None
    return CodeView(
        grant_id=grant.id,
        wallet_id=grant.wallet_id,
        client_id=grant.client_id,
        scopes=list(grant.scopes),
        resource=grant.resource,
        expires_at=stored.expires_at,
        code_challenge=stored.code_challenge,
        redirect_uri=stored.redirect_uri,
        redirect_uri_provided_explicitly=stored.redirect_uri_provided_explicitly,
    )


def _issue(session: Any, grant_id: str, scopes: list[str]) -> IssuedTokens:
    access = new_secret(ACCESS_TOKEN_PREFIX)
    refresh = new_secret(REFRESH_TOKEN_PREFIX)
    now = utc_now()
    session.add(
        OAuthToken(
            token_hash=hash_secret(access),
            kind="access",
            grant_id=grant_id,
            scopes=scopes,
            expires_at=now + timedelta(seconds=ACCESS_TOKEN_TTL_S),
        )
    )
    session.add(
        OAuthToken(
            token_hash=hash_secret(refresh),
            kind="refresh",
            grant_id=grant_id,
            scopes=scopes,
            expires_at=now + timedelta(seconds=REFRESH_TOKEN_TTL_S),
        )
    )
    return IssuedTokens(access, refresh, ACCESS_TOKEN_TTL_S, scopes)


def exchange_code(db: Database, code: str) -> IssuedTokens:
    """Spend the code (once) for an access and a refresh token.

    Raises: Forbidden if the code was used, expired or revoked meanwhile.
    """
    now = utc_now()
    with db.write() as session:
        stored = session.get(OAuthCode, hash_secret(code))
        grant = session.get(OAuthGrant, stored.grant_id) if stored is not None else None
        spent = _changed(
            session,
            update(OAuthCode)
            .where(col(OAuthCode.code_hash) == hash_secret(code))
            .where(col(OAuthCode.used_at).is_(None))
            .where(col(OAuthCode.expires_at) > now)
            .values(used_at=now),
        )
        if spent != 1 or grant is None or grant.revoked_at is not None:
            raise Forbidden("authorization code is not valid")
        return _issue(session, grant.id, list(grant.scopes))


def _load_token(db: Database, token: str, kind: str) -> tuple[OAuthToken, OAuthGrant] | None:
    with db.read() as session:
        row = session.exec(
            select(OAuthToken, OAuthGrant)
            .join(OAuthGrant, col(OAuthGrant.id) == col(OAuthToken.grant_id))
            .where(col(OAuthToken.token_hash) == hash_secret(token))
            .where(col(OAuthToken.kind) == kind)
        ).first()
    if row is None:
        return None
    return row[0], row[1]


def _view(token: OAuthToken, grant: OAuthGrant) -> GrantView:
    return GrantView(
        grant_id=grant.id,
        wallet_id=grant.wallet_id,
        client_id=grant.client_id,
        scopes=list(token.scopes),
        resource=grant.resource,
        expires_at=token.expires_at,
    )


def load_refresh_token(db: Database, token: str) -> GrantView | None:
    """The refresh token's grant, or None if unknown, expired, revoked or already used.

    A used refresh token presented again revokes its grant (rotation's theft detection).
    """
    found = _load_token(db, token, "refresh")
    if found is None:
        return None
    stored, grant = found
    if stored.used_at is not None:
        with db.write() as session:
            _revoke_grant_in(session, grant.id)
        return None
    if grant.revoked_at is not None or stored.expires_at <= utc_now():
        return None
    return _view(stored, grant)


def rotate_refresh_token(db: Database, token: str, scopes: list[str]) -> IssuedTokens:
    """Spend the refresh token (once) for a new access and refresh token with `scopes`
    (a subset of the grant's).

    Raises: Forbidden if it was used, expired or revoked meanwhile, or for wider scopes.
    """
    now = utc_now()
    with db.write() as session:
        stored = session.get(OAuthToken, hash_secret(token))
        grant = session.get(OAuthGrant, stored.grant_id) if stored is not None else None
        if stored is None or grant is None or stored.kind != "refresh":
            raise Forbidden("refresh token is not valid")
        if not set(scopes) <= set(stored.scopes):
            raise Forbidden("a refresh cannot widen the scopes granted")
        spent = _changed(
            session,
            update(OAuthToken)
            .where(col(OAuthToken.token_hash) == hash_secret(token))
            .where(col(OAuthToken.used_at).is_(None))
            .where(col(OAuthToken.expires_at) > now)
            .values(used_at=now),
        )
        if spent != 1 or grant.revoked_at is not None:
            raise Forbidden("refresh token is not valid")
        kept = [scope for scope in SCOPES if scope in scopes or scope == READ]  # read: always
        return _issue(session, grant.id, kept)


def load_access_token(db: Database, token: str) -> GrantView | None:
    """The access token's grant, or None if unknown, expired or revoked. Records the grant's
    last use (at most once a minute)."""
    found = _load_token(db, token, "access")
    if found is None:
        return None
    stored, grant = found
    now = utc_now()
    if grant.revoked_at is not None or stored.expires_at <= now:
        return None
    if grant.last_used_at is None or grant.last_used_at < now - timedelta(seconds=LAST_USED_RESOLUTION_S):
        with db.write() as session:
            session.execute(update(OAuthGrant).where(col(OAuthGrant.id) == grant.id).values(last_used_at=now))
    return _view(stored, grant)


def revoke_token(db: Database, token: str) -> None:
    """RFC 7009: revoking an access or a refresh token ends its whole grant (both kinds)."""
    with db.write() as session:
        stored = session.get(OAuthToken, hash_secret(token))
        if stored is not None:
            _revoke_grant_in(session, stored.grant_id)


def revoke_grant(db: Database, grant_id: str) -> None:
    """End a grant and every code and token issued under it, at once."""
    with db.write() as session:
        _revoke_grant_in(session, grant_id)


# --- the owner's view -----------------------------------------------------------------


def list_connected_clients(db: Database, wallet_id: str) -> list[ConnectedClient]:
    """The clients this wallet has connected (not revoked), newest first."""
    with db.read() as session:
        rows = session.exec(
            select(OAuthGrant, OAuthClient)
            .join(OAuthClient, col(OAuthClient.id) == col(OAuthGrant.client_id), isouter=True)
            .where(col(OAuthGrant.wallet_id) == wallet_id)
            .where(col(OAuthGrant.revoked_at).is_(None))
            .order_by(col(OAuthGrant.created_at).desc())
        ).all()
    return [
        ConnectedClient(
            id=grant.id,
            client_id=grant.client_id,
            client_name=(client.name if client is not None and client.name else grant.client_id),
            scopes=list(grant.scopes),
            created_at=grant.created_at,
            last_used_at=grant.last_used_at,
            redirect_hosts=_redirect_hosts(client),
        )
        for grant, client in rows
    ]


def _redirect_hosts(client: OAuthClient | None) -> list[str]:
    uris = (client.client_metadata.get("redirect_uris") or []) if client is not None else []
    hosts = [urlparse(str(uri)).netloc or str(uri) for uri in uris]
    return list(dict.fromkeys(hosts))  # each once, in registration order


def revoke_connected_client(db: Database, wallet_id: str, grant_id: str) -> None:
    """The owner disconnects a client: its tokens stop working on the next request.

    Raises: NotFound for an id that is not one of this wallet's connected clients.
    """
    with db.write() as session:
        grant = session.get(OAuthGrant, grant_id)
        if grant is None or grant.wallet_id != wallet_id or grant.revoked_at is not None:
            raise NotFound(f"no connected client {grant_id!r}")
        _revoke_grant_in(session, grant_id)
