"""Server-side sign-in sessions for the wallet owner's browser (the dashboard).

The rule: the wallet key is typed once, checked by `wallet.authenticate`, and never kept.
What the browser keeps is a fresh random session id (`lava_ws_` + 32 random bytes), in an
HttpOnly cookie; the server keeps only its SHA-256, the wallet and an expiry. So a stolen
database does not sign anyone in, and a stolen session id opens the dashboard only until
it expires or its owner signs out.

    sign_in(wallet key, previous session id?) → a new session id (any previous one deleted:
                                                an id is rotated at every sign-in, so an id
                                                planted before sign-in is worth nothing)
    resolve(session id)                       → the session, or Unauthorized when it is
                                                unknown, signed out or expired
    sign_out(session id)                      → deleted; its id no longer resolves

A session is good for `SESSION_LIFETIME` from sign-in, never extended: a dashboard kept
open longer asks for the key again.

Each session has a form token (`form_token`): the SHA-256 of the session id under a label,
so it is bound to this one session, rotates with it, and can't be worked out by a site
that can't read the cookie. Every state-changing dashboard form carries it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlmodel import col

from lava_mcp.core import wallet
from lava_mcp.errors import Forbidden, Unauthorized
from lava_mcp.ids import hash_secret, new_secret
from lava_mcp.store.db import Database
from lava_mcp.store.models import WebSession, utc_now

SESSION_PREFIX = "lava_ws_"
SESSION_LIFETIME = timedelta(hours=12)
_FORM_TOKEN_LABEL = b"lava-dashboard-form:"


@dataclass(frozen=True)
class SignedIn:
    """A session just created: its id exists only here and in the browser's cookie."""

    session_id: str
    wallet_id: str
    expires_at: datetime


@dataclass(frozen=True)
class ActiveSession:
    wallet_id: str
    expires_at: datetime


def sign_in(
    db: Database,
    wallet_key: str | None,
    *,
    previous_session_id: str | None = None,
    now: datetime | None = None,
) -> SignedIn:
    """Open a session for the wallet a key belongs to; delete the browser's previous one.

    Raises: Unauthorized for a missing, malformed or unknown wallet key (nothing created).
    """
    owner = wallet.authenticate(db, wallet_key.strip() if wallet_key else wallet_key)
    now = now or utc_now()
    session_id = new_secret(SESSION_PREFIX)
    row = WebSession(
        id_hash=hash_secret(session_id),
        wallet_id=owner.id,
        created_at=now,
        expires_at=now + SESSION_LIFETIME,
    )
    with db.write() as session:
        if previous_session_id:
            session.execute(
                delete(WebSession).where(col(WebSession.id_hash) == hash_secret(previous_session_id))
            )
        # Expired sessions of this wallet are of no use to anyone: tidy them while here.
        session.execute(
            delete(WebSession).where(col(WebSession.wallet_id) == owner.id, col(WebSession.expires_at) <= now)
        )
        session.add(row)
    return SignedIn(session_id, owner.id, row.expires_at)


def resolve(db: Database, session_id: str | None, *, now: datetime | None = None) -> ActiveSession:
    """The signed-in session a cookie's id names.

    Raises: Unauthorized when there is no id, or it is unknown, signed out or expired.
    """
    if not session_id or not session_id.startswith(SESSION_PREFIX) or len(session_id) > 100:
        raise Unauthorized("not signed in", next_step="sign in with your wallet key")
    with db.read() as session:
        row = session.get(WebSession, hash_secret(session_id))
    now = now or utc_now()
    if row is None:
        raise Unauthorized("not signed in", next_step="sign in with your wallet key")
    expires_at = _aware(row.expires_at)
    if expires_at <= now:
        raise Unauthorized("your session has expired", next_step="sign in again with your wallet key")
    return ActiveSession(row.wallet_id, expires_at)


def sign_out(db: Database, session_id: str | None) -> None:
    """End a session (idempotent: an unknown or missing id is already signed out)."""
    if not session_id:
        return
    with db.write() as session:
        session.execute(delete(WebSession).where(col(WebSession.id_hash) == hash_secret(session_id)))


def form_token(session_id: str) -> str:
    """The token this session's forms carry (bound to the session; see the module docstring)."""
    return hashlib.sha256(_FORM_TOKEN_LABEL + session_id.encode()).hexdigest()


def check_form_token(session_id: str, submitted: str | None) -> None:
    """Raises: Forbidden unless `submitted` is this session's form token (constant time)."""
    if not submitted or not hmac.compare_digest(form_token(session_id).encode(), submitted.encode()):
        raise Forbidden(
            "this form was not sent by your dashboard page; nothing was changed",
            next_step="reload the dashboard and submit the form again",
        )


def _aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; every time stored here is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
