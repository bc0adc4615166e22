"""Spend keys: scoped API keys backed by a wallet.

A spend key is what a user pastes into a tool that takes an OpenAI or Anthropic key. It
carries its own rules: which providers and models it may use, which request shape, a
spend limit and a request limit per cycle, a rate limit, an expiry and a status.

The secret (`lava_sk_` + 32 random bytes) is shown once, at create and rotate, and stored
only as its SHA-256. The rules a metered call checks live here too: is the key usable,
may it call this provider and model (`check_allowed`), and does its cycle limit cover the
hold (`reserve`, taken in the same transaction as the wallet hold with one conditional
UPDATE, so concurrent calls can never take a key past its limit).

A key change takes effect on every call whose hold is not yet taken: every rotate, update
(pause and resume included) and revoke bumps `version`, and `reserve` takes the hold only
if the key is still at the version, and has the secret, its call was judged by. If it
moved, the key is read again: a new secret or a revocation is 401; anything else is judged
again by the rules of `check_allowed` (so a pause or a narrowed scope refuses the call and
a new name does not) and the hold retried at the new version. A call whose hold was taken
runs, and is charged, under the key as it was.

A key is never made to allow a model it could never call: create and update refuse (400) an
allowed model served in the other request shape, or by a provider the key leaves out
(`_refuse_uncallable_models`), instead of a key whose every call to it is a 403.

That check is what lets the gateway judge calls by a cached key (`cached`,
`core.key_cache`) instead of reading it per call: a key changed on any process since it
was cached is caught by the hold's UPDATE, on the very next call.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import Session, col, select

from lava_mcp.contract.errors import validation_error_message
from lava_mcp.contract.spend_keys import (
    MAX_REQUEST_COUNT,
    MAX_RPM,
    RateLimitInput,
    RequestLimitInput,
    SpendKeyCreate,
    SpendKeyFields,
    SpendKeyUpdate,
    SpendLimitInput,
    parse_expiry,
)
from lava_mcp.core import key_cache, paging
from lava_mcp.core.cycles import cycle_end, cycle_start
from lava_mcp.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    LavaError,
    NotFound,
    RateLimited,
    SpendLimitReached,
    Unauthorized,
)
from lava_mcp.ids import SPEND_KEY_PREFIX, WALLET_KEY_PREFIX, hash_secret, new_id, new_secret, preview
from lava_mcp.money import format_cost, format_dollars
from lava_mcp.providers.catalog import Catalog
from lava_mcp.store import fast
from lava_mcp.store.db import Database
from lava_mcp.store.models import RequestRecord, SpendKey, Wallet, utc_now

ID_PREFIX = "sk_id"
# How often `reserve` judges a call again when the key changed under it before giving up
# (each retry needs yet another change to land in between: only a flood of updates).
MAX_REJUDGEMENTS = 5


@dataclass(frozen=True)
class NewSecret:
    """A key and its secret, which exists only in this value (shown once)."""

    key: SpendKey
    secret: str


@dataclass(frozen=True)
class Figures:
    """A key's counters as of `now`: a cycle that has ended reads as zero."""

    current_spend_micros: int
    current_requests: int
    total_spend_micros: int
    total_requests: int


@dataclass(frozen=True)
class KeyPage:
    keys: list[SpendKey]
    next_cursor: str | None


# -- management ---------------------------------------------------------------------------


def create(
    db: Database,
    wallet_id: str,
    options: SpendKeyCreate | Mapping[str, Any],
    *,
    catalog: Catalog | None = None,
) -> NewSecret:
    """Create a spend key for `wallet_id` from the REST/client/CLI fields of DESIGN §6
    (the contract's `SpendKeyCreate`, or the same fields as a mapping).

    Raises:
        BadRequest: an unknown field, a malformed or out-of-range value, or an allowed model
            the key could never call (another shape's, or a provider's it does not allow).
        NotFound: an unknown wallet.
    """
    now = utc_now()
    changes = parse_options(options, catalog=catalog, now=now)
    secret = new_secret(SPEND_KEY_PREFIX)
    key = SpendKey(
        id=new_id(ID_PREFIX),
        wallet_id=wallet_id,
        key_hash=hash_secret(secret),
        key_preview=preview(secret),
        created_at=now,
    )
    for field, value in changes.items():
        setattr(key, field, value)
    with db.write() as session:
        if session.get(Wallet, wallet_id) is None:
            raise NotFound(f"unknown wallet {wallet_id!r}")
        session.add(key)
    return NewSecret(key, secret)


def get(db: Database, wallet_id: str, key_id: str) -> SpendKey:
    """One of the wallet's keys.

    Raises:
        NotFound: an unknown id, or one that belongs to another wallet (indistinguishable).
    """
    with db.read() as session:
        return _owned(session, wallet_id, key_id)


def list_keys(
    db: Database, wallet_id: str, *, limit: object = None, cursor: object = None, status: object = None
) -> KeyPage:
    """The wallet's keys, newest first, `limit` (1..100, default 20) at a time.

    Raises:
        BadRequest: a limit outside 1..100, a cursor this service did not hand out, or an
            unknown status filter.
    """
    page_size = paging.parse_limit(limit)
    after = paging.parse_cursor(cursor, "sk_id")
    query = select(SpendKey).where(SpendKey.wallet_id == wallet_id)
    if status not in (None, ""):
        if status not in ("active", "paused", "revoked"):
            raise BadRequest("status must be one of: active, paused, revoked")
        query = query.where(SpendKey.status == status)
    keys, next_cursor = paging.newest_first(db, query, SpendKey.id, limit=page_size, cursor=after)
    return KeyPage(keys, next_cursor)


def update_key(
    db: Database,
    wallet_id: str,
    key_id: str,
    options: SpendKeyUpdate | Mapping[str, Any],
    *,
    catalog: Catalog | None = None,
) -> SpendKey:
    """Change a key's name, limits, scope or status; the secret stays the same.

    Only the fields given change, down to the parts of a limit (`{"spend_limit":
    {"amount": "5.00"}}` keeps the cycle); a field set to null removes that limit. A
    change applies to every call whose hold is not yet taken (`version` moves). A new
    spend cycle recounts the current spend for it: everything for `total`, otherwise what
    the key's requests cost since that cycle began.

    Raises:
        BadRequest: as for `create`, or the key is revoked (revocation is permanent).
        NotFound: an unknown id or another wallet's key.
    """
    now = utc_now()
    with db.write() as session:
        key = _owned(session, wallet_id, key_id, for_update=True)
        if key.status == "revoked":
            raise BadRequest(
                "this spend key is revoked; revocation is permanent", next_step="create a new key"
            )
        changes = parse_options(options, catalog=catalog, now=now, partial=True, current=key)
        old_cycle = key.spend_cycle or "total"
        old_request_cycle = key.request_cycle or "total"
        for field, value in changes.items():
            setattr(key, field, value)
        if (key.spend_cycle or "total") != old_cycle:
            _recount_spend(session, key, now)
        if (key.request_cycle or "total") != old_request_cycle:
            _recount_requests(session, key, now)
        key.version += 1
        session.add(key)
    return key


def rotate(db: Database, wallet_id: str, key_id: str) -> NewSecret:
    """A new secret for the same key id; the old secret fails from this moment.

    Raises:
        BadRequest: the key is revoked.
        NotFound: an unknown id or another wallet's key.
    """
    secret = new_secret(SPEND_KEY_PREFIX)
    with db.write() as session:
        key = _owned(session, wallet_id, key_id, for_update=True)
        if key.status == "revoked":
            raise BadRequest(
                "this spend key is revoked; revocation is permanent", next_step="create a new key"
            )
        key.key_hash = hash_secret(secret)
        key.key_preview = preview(secret)
        key.version += 1
        session.add(key)
    return NewSecret(key, secret)


def revoke(db: Database, wallet_id: str, key_id: str) -> SpendKey:
    """Revoke a key for good (the record stays for the usage history). Idempotent.

    Raises:
        NotFound: an unknown id or another wallet's key.
    """
    with db.write() as session:
        key = _owned(session, wallet_id, key_id, for_update=True)
        if key.status != "revoked":
            key.status = "revoked"
            key.version += 1
            session.add(key)
    return key


def authenticate(db: Database, secret: str | None, *, remember: bool = False) -> SpendKey:
    """The key a secret opens (active, paused or expired: `check_allowed` judges those).

    The lookup is an index seek on the secret's SHA-256 (which leaks nothing useful about
    a 256-bit random secret); the stored hash is then compared in constant time.
    `remember`: record what was found in `key_cache` (the gateway; see `cached`).

    Raises:
        Unauthorized: a missing, malformed, unknown or revoked key, or a wallet key
            (the gateway takes spend keys only).
    """
    _refuse_malformed(secret)
    assert secret is not None
    digest = hash_secret(secret)
    with db.read() as session:
        key = session.exec(select(SpendKey).where(SpendKey.key_hash == digest)).first()
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        if remember:
            key_cache.keys.remember(db.url, digest, None)
        raise Unauthorized("unknown spend key")
    if remember:
        key_cache.keys.remember(db.url, digest, key)
    if key.status == "revoked":
        raise Unauthorized("this spend key was revoked")
    return key


def cached(db: Database, secret: str | None) -> SpendKey | None:
    """The key a secret opens, from `key_cache` without a read; None when it isn't cached
    (then `authenticate(..., remember=True)`). Safe because the hold checks the key's
    version and secret (`reserve`): a key changed since it was cached is never held.

    Raises: Unauthorized as `authenticate` does (an unknown secret only while the cache
    still counts it unknown).
    """
    _refuse_malformed(secret)
    assert secret is not None
    digest = hash_secret(secret)
    key = key_cache.keys.key(db.url, digest)
    if key is None:
        if key_cache.keys.is_unknown(db.url, digest):
            raise Unauthorized("unknown spend key")
        return None
    if key.status == "revoked":
        raise Unauthorized("this spend key was revoked")
    return key


async def judge_cached(
    db: Database, key: SpendKey, secret: str | None, *, service_id: str, model: str, shape: str
) -> SpendKey:
    """The key a call from the cache is judged by: the cached `key` when it allows the call;
    otherwise the key as the database has it now (and cached again). A cached key's refusal
    is never trusted — the key may have been resumed or widened since — while its consent
    needs no read: the hold checks its version and secret (`reserve`).

    Raises: Unauthorized as `authenticate` does (on the fresh read).
    """
    try:
        check_allowed(key, service_id=service_id, model=model, now=utc_now(), shape=shape)
    except LavaError:
        return await db.run(read_and_remember, db, secret)
    return key


def read_and_remember(db: Database, secret: str | None) -> SpendKey:
    """`authenticate` with the key cached for the calls after (Raises: as `authenticate`)."""
    return authenticate(db, secret, remember=True)


def _refuse_malformed(secret: str | None) -> None:
    """Raises: Unauthorized for a missing secret, a wallet key, or one that can't be a spend key."""
    if not secret:
        raise Unauthorized(
            "missing spend key: send it as Authorization: Bearer lava_sk_… or x-api-key",
            next_step="create one with `lava-mcp keys create` or POST /v1/spend_keys",
        )
    if secret.startswith(WALLET_KEY_PREFIX):
        raise Unauthorized(
            "this is a wallet key: the gateway takes spend keys only, use a spend key (lava_sk_…)",
            next_step="create one with `lava-mcp keys create` or POST /v1/spend_keys",
        )
    if not secret.startswith(SPEND_KEY_PREFIX) or len(secret) > 200:
        raise Unauthorized("unknown spend key")


def figures(key: SpendKey, now: datetime | None = None) -> Figures:
    """The key's spend and request counters as of `now` (UTC)."""
    now = now or utc_now()
    spend_start = cycle_start(key.spend_cycle or "total", now)
    request_start = cycle_start(key.request_cycle or "total", now)
    return Figures(
        current_spend_micros=0 if _stale(key.cycle_started_at, spend_start) else key.cycle_spend_micros,
        current_requests=0 if _stale(key.request_cycle_started_at, request_start) else key.cycle_requests,
        total_spend_micros=key.total_spend_micros,
        total_requests=key.total_requests,
    )


def usable_models(key: SpendKey, catalog: Catalog) -> list[tuple[str, str]]:
    """`(model, service id)` for every model the key may call, as `GET /v1/models` lists them.

    With `allowed_models` set: those of them a permitted service serves. Otherwise every
    model a permitted per-token service can price (catalog overrides, then genai-prices
    models matching the service's prefixes) and the models priced in the catalog.
    """
    providers = key.allowed_providers
    found: dict[str, str] = {}
    if key.allowed_models is not None:
        for model in key.allowed_models:
            try:
                service = catalog.for_model(model)
            except NotFound:
                continue
            if providers is None or service.id in providers:
                found[model] = service.id
        return sorted(found.items())
    for service in catalog.services.values():
        if service.shape == "http" or (providers is not None and service.id not in providers):
            continue
        for model in service.models:
            found.setdefault(model, service.id)
        if service.pricing == "per_token":
            for model in _priced_models(service.prices_provider or service.id):
                if any(model.startswith(prefix) for prefix in service.model_prefixes):
                    found.setdefault(model, service.id)
    return sorted(found.items())


# -- the rules a metered call checks ---------------------------------------------------------

# A cycle that has ended reads as zero (the row's figures are from an earlier cycle).
_SPEND_IN_CYCLE = "(CASE WHEN cycle_started_at IS NULL OR cycle_started_at < :spend_start THEN 0 ELSE cycle_spend_micros END)"
_REQUESTS_IN_CYCLE = (
    "(CASE WHEN request_cycle_started_at IS NULL OR request_cycle_started_at < :request_start"
    " THEN 0 ELSE cycle_requests END)"
)
# A cycle's start only moves forward: a reserve whose `now` was read just before midnight
# but that committed after one of the new day must not take the key back a day (and so
# reset the new day's spend at the next reserve).
_LATER_SPEND_START = (
    "(CASE WHEN cycle_started_at IS NULL OR cycle_started_at < :spend_start THEN :spend_start"
    " ELSE cycle_started_at END)"
)
_LATER_REQUEST_START = (
    "(CASE WHEN request_cycle_started_at IS NULL OR request_cycle_started_at < :request_start"
    " THEN :request_start ELSE request_cycle_started_at END)"
)
# One conditional UPDATE, built once (building SQLAlchemy expressions per call costs more
# than running them). Every SET reads the row as it was before the statement.
_RESERVE = fast.Statement(
    f"UPDATE spend_key SET cycle_spend_micros = {_SPEND_IN_CYCLE}, cycle_started_at = {_LATER_SPEND_START},"
    " held_micros = held_micros + :hold,"
    f" cycle_requests = {_REQUESTS_IN_CYCLE} + 1, request_cycle_started_at = {_LATER_REQUEST_START},"
    " total_requests = total_requests + 1, last_used_at = :now"
    " WHERE id = :key_id AND status = 'active' AND version = :version AND key_hash = :key_hash"
    f" AND (spend_limit_micros IS NULL OR {_SPEND_IN_CYCLE} + held_micros + :hold <= spend_limit_micros)"
    f" AND (request_limit_count IS NULL OR {_REQUESTS_IN_CYCLE} + 1 <= request_limit_count)"
)


def check_allowed(
    key: SpendKey, *, service_id: str, model: str | None, now: datetime, shape: str | None = None
) -> None:
    """May this key make this call? `shape` is the API the request came in (gateway only).

    Raises: Forbidden for a paused or expired key, a request in the other shape, or a
    provider or model not allowed.
    """
    if shape is not None and shape != key.request_shape:
        endpoint = "POST /v1/messages" if key.request_shape == "anthropic" else "POST /v1/chat/completions"
        raise Forbidden(
            f"this spend key is for the {key.request_shape} request shape: use {endpoint}",
            next_step="or create a key with request_shape " + repr(shape),
        )
    if key.status == "paused":
        raise Forbidden("this spend key is paused", next_step="resume it with status 'active'")
    if key.expires_at is not None and key.expires_at <= now:
        raise Forbidden(f"this spend key expired at {key.expires_at.isoformat()}")
    if key.allowed_providers is not None and service_id not in key.allowed_providers:
        raise Forbidden(
            f"provider {service_id!r} is not allowed for this spend key",
            next_step=f"allowed providers: {', '.join(key.allowed_providers) or 'none'}",
        )
    if key.allowed_models is not None and model not in key.allowed_models:
        raise Forbidden(
            f"model {str(model)[:80]!r} is not allowed for this spend key",
            next_step=f"allowed models: {', '.join(key.allowed_models) or 'none'}",
        )


class RateLimitMoved(Exception):
    """The key's rate limit changed after the call passed the old one (`reserve`): nothing
    was held; the caller judges the call by `current`'s rate limit and takes the hold again."""

    def __init__(self, current: SpendKey) -> None:
        super().__init__("the spend key's rate limit changed while the call was being admitted")
        self.current = current


def reserve(
    session: Session,
    key: SpendKey,
    *,
    hold_micros: int,
    now: datetime,
    service_id: str | None = None,
    model: str | None = None,
    shape: str | None = None,
    max_tokens: int | None = None,
) -> None:
    """Count one request and hold `hold_micros` against the key's cycle limits.

    `key` is the key as the call was judged by (`check_allowed`); `service_id`, `model`
    and `shape` are the call's, to judge it again if the key changed since; `max_tokens`
    (the output bound the hold was priced at) is named in a refusal. A cycle that has
    ended reads as zero: the same statement resets it. The statement takes the hold only
    if the key is still active, at `key.version` and with `key`'s secret; if not, see the
    module docstring.

    Raises: SpendLimitReached (402) naming the limit, what is left and what the call
    needs; RateLimited (429, request limit) naming the reset; Unauthorized (rotated or
    revoked meanwhile); Forbidden (paused, expired or narrowed meanwhile); RateLimitMoved
    (its rate limit changed meanwhile: nothing held, the caller judges the call again).
    """
    judged = key
    for _ in range(MAX_REJUDGEMENTS + 1):
        spend_start = cycle_start(judged.spend_cycle or "total", now)
        request_start = cycle_start(judged.request_cycle or "total", now)
        taken = fast.run(
            session,
            _RESERVE,
            {
                "key_id": judged.id,
                "version": judged.version,
                "key_hash": key.key_hash,
                "hold": hold_micros,
                "spend_start": spend_start,
                "request_start": request_start,
                "now": now,
            },
        )
        if taken.rowcount == 1:
            return
        current = session.get(SpendKey, key.id, populate_existing=True)
        assert current is not None
        # A cached key that moved: the calls after this one are judged by the row as it is
        # (dropped when rotated). A no-op for a key that isn't the cached object.
        key_cache.keys.replace(key, current)
        if current.status == "revoked":
            raise Unauthorized("this spend key was revoked")
        if not hmac.compare_digest(current.key_hash, key.key_hash):
            raise Unauthorized(
                "this spend key's secret was rotated: the secret sent no longer works",
                next_step="use the key's new secret",
            )
        if current.version == judged.version:
            _refuse_over_limit(current, hold_micros=hold_micros, max_tokens=max_tokens, now=now)
        _judge_again(current, service_id=service_id, model=model, shape=shape, now=now)
        if (current.rate_rpm, current.rate_burst) != (judged.rate_rpm, judged.rate_burst):
            # The rate limit the call passed is not the key's any more (changed on another
            # process): the caller takes the rate-limit step again, by the key as it is.
            raise RateLimitMoved(current)
        judged = current
    raise Conflict("this spend key kept changing while the call was being admitted; nothing was done")


def _judge_again(
    key: SpendKey, *, service_id: str | None, model: str | None, shape: str | None, now: datetime
) -> None:
    """`check_allowed` on the key as it is now (status and expiry only, without a service)."""
    if service_id is not None:
        check_allowed(key, service_id=service_id, model=model, now=now, shape=shape)
        return
    if key.status == "paused":
        raise Forbidden("this spend key is paused", next_step="resume it with status 'active'")
    if key.expires_at is not None and key.expires_at <= now:
        raise Forbidden(f"this spend key expired at {key.expires_at.isoformat()}")


def _refuse_over_limit(key: SpendKey, *, hold_micros: int, max_tokens: int | None, now: datetime) -> None:
    """Why an up-to-date, active key refused the hold: its request or spend limit.

    Raises: RateLimited or SpendLimitReached; Forbidden if it is paused (a status changed
    without a new version: never by this module).
    """
    if key.status == "paused":
        raise Forbidden("this spend key is paused", next_step="resume it with status 'active'")
    if key.request_limit_count is not None:
        request_cycle = key.request_cycle or "total"
        request_start = cycle_start(request_cycle, now)
        in_cycle = 0 if _stale(key.request_cycle_started_at, request_start) else key.cycle_requests
        if in_cycle + 1 > key.request_limit_count:
            reset = cycle_end(request_cycle, now)
            if reset is None:
                # No Retry-After: waiting never helps, and a made-up one would send
                # well-behaved clients back again and again.
                raise RateLimited(
                    f"request limit of {key.request_limit_count} requests reached; it never resets"
                    " (cycle 'total'): raise the limit or use another key",
                    retry_after_s=None,
                )
            raise RateLimited(
                f"request limit of {key.request_limit_count} per {request_cycle} reached; {_resets(reset)}",
                retry_after_s=int((reset - now).total_seconds()) + 1,
            )
    spend_cycle = key.spend_cycle or "total"
    limit = key.spend_limit_micros
    assert limit is not None, key.id  # an unlimited, active, current key refuses no hold
    spent = 0 if _stale(key.cycle_started_at, cycle_start(spend_cycle, now)) else key.cycle_spend_micros
    remaining = max(0, limit - spent - key.held_micros)
    reset = cycle_end(spend_cycle, now)
    extra = {
        "limit": format_cost(limit),
        "remaining": format_cost(remaining),
        "required": format_cost(hold_micros),
        "resets_at": reset.isoformat() if reset else None,
    }
    limit_text = f"spend limit ${format_dollars(limit)} per {spend_cycle} cycle; {_resets(reset)}"
    if remaining == 0:
        raise SpendLimitReached(f"spend limit reached for this key ({limit_text})", extra=extra)
    bound = f" (max_tokens {max_tokens})" if max_tokens else ""
    in_flight = (
        f", with ${format_cost(key.held_micros)} more held by calls in flight" if key.held_micros else ""
    )
    cycle_text = "in total" if spend_cycle == "total" else f"this {spend_cycle} cycle"
    raise SpendLimitReached(
        f"this call may cost up to ${format_cost(hold_micros)}{bound}; the key has"
        f" ${format_cost(remaining)} left {cycle_text}{in_flight} ({limit_text})"
        " — lower max_tokens or raise the limit",
        extra=extra,
    )


def _recount_spend(session: Session, key: SpendKey, now: datetime) -> None:
    """Set the key's current spend for its (new) spend cycle: all of it for `total`,
    otherwise what its requests cost since the cycle began (held calls count at settle)."""
    cycle = key.spend_cycle or "total"
    start = cycle_start(cycle, now)
    if cycle == "total":
        spent = key.total_spend_micros
    else:
        spent = session.exec(
            select(func.coalesce(func.sum(RequestRecord.cost_micros), 0)).where(
                RequestRecord.spend_key_id == key.id, col(RequestRecord.created_at) >= start
            )
        ).one()
    key.cycle_spend_micros = int(spent)
    key.cycle_started_at = start


def _recount_requests(session: Session, key: SpendKey, now: datetime) -> None:
    """Set the key's request count for its (new) request cycle: the calls that ran since
    the cycle began and did not fail upstream (a failed call gives its request back)."""
    cycle = key.request_cycle or "total"
    start = cycle_start(cycle, now)
    counted = session.exec(
        select(func.count()).where(
            RequestRecord.spend_key_id == key.id,
            col(RequestRecord.ran).is_(True),
            col(RequestRecord.status) != "error",
            col(RequestRecord.created_at) >= start,
        )
    ).one()
    key.cycle_requests = int(counted)
    key.request_cycle_started_at = start


# -- turning a create or update body into column values ----------------------------------


def parse_options(
    options: SpendKeyFields | Mapping[str, Any],
    *,
    catalog: Catalog | None = None,
    now: datetime | None = None,
    partial: bool = False,
    current: SpendKey | None = None,
) -> dict[str, Any]:
    """The `SpendKey` column values a create or update body means.

    `options` is the contract's model (`SpendKeyCreate`, `SpendKeyUpdate`) or the same
    fields as a mapping, validated here by that model. `partial` (an update): only the
    fields given change, and with `current` (the key updated) only the parts of a limit
    given: `{"amount": "5.00"}` keeps its cycle. Otherwise missing fields take their
    defaults (no limits, OpenAI shape, active).

    Raises:
        BadRequest: an unknown field or a malformed value; nothing is changed.
    """
    body = _validated(options, SpendKeyUpdate if partial else SpendKeyCreate)
    now = now or utc_now()
    given = body.model_fields_set if partial else set(SpendKeyFields.model_fields)
    keep = current if partial else None
    changes: dict[str, Any] = {}
    if "name" in given:
        changes["name"] = (body.name or "").strip()
    if "allowed_providers" in given:
        changes["allowed_providers"] = _providers(body.allowed_providers, catalog)
    if "allowed_models" in given:
        changes["allowed_models"] = body.allowed_models
    if "request_shape" in given:
        if body.request_shape is None and partial:
            raise BadRequest("request_shape must be 'openai' or 'anthropic'")
        changes["request_shape"] = body.request_shape or "openai"
    if "spend_limit" in given:
        changes.update(_spend_limit(body.spend_limit, keep))
    if "request_limit" in given:
        changes.update(_request_limit(body.request_limit, keep))
    if "rate_limit" in given:
        changes.update(_rate_limit(body.rate_limit, keep))
    if "expires_at" in given:
        changes["expires_at"] = _expiry(body.expires_at, now)
    if "status" in given:
        if body.status is None and partial:
            raise BadRequest("status must be 'active' or 'paused'")
        changes["status"] = body.status or "active"
    if catalog is not None and changes.keys() & {"allowed_models", "request_shape", "allowed_providers"}:
        _refuse_uncallable_models(changes, keep, catalog)
    return changes


def _validated(options: SpendKeyFields | Mapping[str, Any], model: type[SpendKeyFields]) -> SpendKeyFields:
    if isinstance(options, SpendKeyFields):
        return options
    if not isinstance(options, Mapping):
        raise BadRequest("the request body must be a JSON object")
    try:
        return model.model_validate(dict(options))
    except ValidationError as error:
        raise BadRequest(
            validation_error_message(error, fields=model.model_fields),
        ) from None


def _spend_limit(limit: SpendLimitInput | None, keep: SpendKey | None) -> dict[str, Any]:
    """A spend limit's columns; a part left out of an update keeps the key's."""
    if limit is None:
        return {"spend_limit_micros": None, "spend_cycle": None}
    given = limit.model_fields_set
    if "amount" in given and limit.amount is not None:
        amount = limit.amount
    elif keep is not None and "amount" not in given and keep.spend_limit_micros is not None:
        amount = keep.spend_limit_micros
    elif keep is not None and "amount" not in given:
        raise BadRequest("spend_limit.amount is required: this key has no spend limit yet")
    else:
        raise BadRequest('spend_limit.amount: must be a positive dollar amount like 25 or "25.00"')
    if keep is not None and "cycle" not in given:
        cycle = keep.spend_cycle or "total"
    else:
        cycle = limit.cycle or "total"
    return {"spend_limit_micros": amount, "spend_cycle": cycle}


def _request_limit(limit: RequestLimitInput | None, keep: SpendKey | None) -> dict[str, Any]:
    """A request limit's columns; a part left out of an update keeps the key's."""
    if limit is None:
        return {"request_limit_count": None, "request_cycle": None}
    given = limit.model_fields_set
    if "count" in given and limit.count is not None:
        count = limit.count
    elif keep is not None and "count" not in given and keep.request_limit_count is not None:
        count = keep.request_limit_count
    elif keep is not None and "count" not in given:
        raise BadRequest("request_limit.count is required: this key has no request limit yet")
    else:
        raise BadRequest(f"request_limit.count: must be an integer from 1 to {MAX_REQUEST_COUNT}")
    if keep is not None and "cycle" not in given:
        cycle = keep.request_cycle or "total"
    else:
        cycle = limit.cycle or "total"
    return {"request_limit_count": count, "request_cycle": cycle}


def _rate_limit(limit: RateLimitInput | None, keep: SpendKey | None) -> dict[str, Any]:
    """A rate limit's columns; a part left out of an update keeps the key's (a burst left
    out of a create is the default, burst = rpm)."""
    if limit is None:
        return {"rate_rpm": None, "rate_burst": None}
    given = limit.model_fields_set
    if "rpm" in given and limit.rpm is not None:
        rpm = limit.rpm
    elif keep is not None and "rpm" not in given and keep.rate_rpm is not None:
        rpm = keep.rate_rpm
    elif keep is not None and "rpm" not in given:
        raise BadRequest("rate_limit.rpm is required: this key has no rate limit yet")
    else:
        raise BadRequest(f"rate_limit.rpm: must be an integer from 1 to {MAX_RPM}")
    burst = keep.rate_burst if keep is not None and "burst" not in given else limit.burst
    return {"rate_rpm": rpm, "rate_burst": burst}


def _providers(providers: list[str] | None, catalog: Catalog | None) -> list[str] | None:
    if providers is not None and catalog is not None:
        unknown = [provider for provider in providers if provider not in catalog.services]
        if unknown:
            raise BadRequest(
                f"unknown provider {unknown[0][:60]!r}",
                next_step=f"providers in the catalog: {', '.join(sorted(catalog.services))}",
            )
    return providers


def _refuse_uncallable_models(changes: Mapping[str, Any], keep: SpendKey | None, catalog: Catalog) -> None:
    """Refuse an allowed model the key, as it will be, could never call.

    The gateway serves a model only in its service's shape and a key only in its own
    `request_shape` (`check_allowed`), and only from its `allowed_providers`: a Claude model
    on an `openai` key, or an OpenAI model on a key limited to `anthropic`, would be refused
    on every call. Judged on the key after the change (an update that only narrows the
    providers or switches the shape is judged against the models the key already allows),
    and only when one of those three fields changes, so a key stored before this rule can
    still be renamed or paused. A model no catalog service claims is left alone (a catalog
    file may add its service later).
    """

    def final(field: str, default: Any) -> Any:
        if field in changes:
            return changes[field]
        return getattr(keep, field) if keep is not None else default

    models: list[str] | None = final("allowed_models", None)
    shape: str = final("request_shape", "openai")
    providers: list[str] | None = final("allowed_providers", None)
    for model in models or []:
        try:
            service = catalog.for_model(model)
        except NotFound:
            continue
        if service.shape != shape:
            raise BadRequest(
                f"allowed_models: model {model[:80]!r} is served in the {service.shape} shape,"
                f" and this key's request_shape is {shape!r}: it could never call it",
                next_step=(
                    f"leave it out, or make a key with request_shape {service.shape!r} for it"
                    if service.shape in ("openai", "anthropic")
                    else "leave it out: a data service is called with call_paid_service"
                ),
            )
        if providers is not None and service.id not in providers:
            raise BadRequest(
                f"allowed_models: model {model[:80]!r} is served by provider {service.id!r},"
                f" which this key's allowed_providers ({', '.join(providers) or 'none'}) leaves out",
                next_step=f"leave it out, or add {service.id!r} to allowed_providers",
            )


def _expiry(value: str | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    moment = parse_expiry(value)  # already checked by the model
    if moment <= now:
        raise BadRequest("expires_at must be in the future")
    return moment


def _owned(session: Session, wallet_id: str, key_id: str, *, for_update: bool = False) -> SpendKey:
    key = session.get(SpendKey, key_id, with_for_update=for_update) if isinstance(key_id, str) else None
    if key is None or key.wallet_id != wallet_id:
        raise NotFound(f"no spend key {str(key_id)[:60]!r} in this wallet")
    return key


def _priced_models(provider_id: str) -> Iterable[str]:
    from genai_prices import data_snapshot

    provider = data_snapshot.find_provider_by_id(data_snapshot.get_snapshot().providers, provider_id)
    return [model.id for model in provider.models] if provider is not None else []


def _stale(started_at: datetime | None, start: datetime) -> bool:
    return started_at is None or started_at < start


def _resets(reset: datetime | None) -> str:
    return f"it resets at {reset.isoformat()}" if reset else "it never resets (cycle 'total')"
