"""Idempotency keys for operations a client may retry (funding).

The first request with a key claims it (`begin`) and reserves a reference (the payment
id) before anything moves; its outcome is stored (`finish`) and every retry gets that
outcome back. The same key with a different request is a 409. A request that ended
without an outcome worth keeping (the processor was unreachable, a precondition failed)
`release`s the key, keeping the reserved reference so that a retry reuses it, and with it
the processor-side idempotency key: a charge that did go through is not made twice.

A claim that is still in flight answers 409 until it finishes, or until it is older than
`STALE_CLAIM_S` (its process died): then a retry takes it over.

A key the server chose itself (funding without an idempotency key: the key is the request's
fingerprint) lives for a window only (`window_s`): within it an identical request replays
the first outcome; after it, the same request is a new one with a new reference, unless the
first ended without an outcome (released, or its process died): then it is still that
attempt, with its reference, since its charge may have gone through. `forget`
drops such a key when its outcome moved nothing and should not be replayed (a decline).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from lava_mcp.errors import BadRequest, Conflict
from lava_mcp.store.db import Database
from lava_mcp.store.models import IdempotencyRecord, utc_now

STALE_CLAIM_S = 600
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Claim:
    """This request owns the key; `reference` is reserved for what it creates."""

    wallet_id: str
    scope: str
    key: str
    reference: str


@dataclass(frozen=True)
class Replay:
    """The key's first request already finished: return this again."""

    status_code: int
    body: dict[str, Any]
    first_at: datetime | None = None  # when the request that is replayed was made


def request_hash(params: dict[str, Any]) -> str:
    """A fingerprint of a request's meaning (canonical JSON of its parsed parameters)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def check_key(key: str) -> str:
    """Raises: BadRequest for an empty, overlong or non-printable key."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters")
    return key


def begin(
    db: Database,
    *,
    wallet_id: str,
    scope: str,
    key: str,
    fingerprint: str,
    new_reference: Callable[[], str],
    window_s: float | None = None,
) -> Claim | Replay:
    """Claim `key` for this request, or find the outcome of its first use.

    With `window_s`, a first use older than that no longer counts: this request starts
    afresh, with a new reference.
    Raises: Conflict when the key was used with a different request, or its first
    request is still running; BadRequest for a malformed key.
    """
    check_key(key)
    try:
        with db.write() as session:
            record = session.get(IdempotencyRecord, (wallet_id, scope, key), with_for_update=True)
            if record is None:
                reference = new_reference()
                session.add(
                    IdempotencyRecord(
                        wallet_id=wallet_id,
                        scope=scope,
                        key=key,
                        request_hash=fingerprint,
                        response=_claim_state(reference, "in_flight"),
                    )
                )
                return Claim(wallet_id, scope, key, reference)
            created_at = record.created_at
            if created_at.tzinfo is None:
                created_at = created_at.replace(tzinfo=UTC)
            in_flight = (record.response or {}).get("state") == "in_flight" and record.status_code is None
            fresh = utc_now() - created_at < timedelta(seconds=STALE_CLAIM_S)
            expired = window_s is not None and utc_now() - created_at >= timedelta(seconds=window_s)
            if expired and not (in_flight and fresh):
                # An attempt that ended without an outcome (released, or its process died)
                # keeps its reference: its charge may have gone through, and may still be
                # reconciled, so the retry must be that attempt, not a second charge.
                unfinished = record.status_code is None and (record.response or {}).get("reference")
                reference = str(unfinished) if unfinished else new_reference()
                record.request_hash = fingerprint
                record.status_code = None
                record.response = _claim_state(reference, "in_flight")
                record.created_at = utc_now()
                session.add(record)
                return Claim(wallet_id, scope, key, reference)
            if record.request_hash != fingerprint:
                raise Conflict(
                    "this Idempotency-Key was already used with a different request",
                    next_step="use a new Idempotency-Key for a new request",
                )
            if record.status_code is not None:
                return Replay(record.status_code, dict(record.response or {}), created_at)
            state = dict(record.response or {})
            if in_flight and fresh:
                raise Conflict(
                    "a request with this Idempotency-Key is still in progress",
                    next_step="retry in a few seconds with the same key",
                )
            reference = str(state.get("reference") or new_reference())
            record.response = _claim_state(reference, "in_flight")
            record.created_at = utc_now()
            session.add(record)
            return Claim(wallet_id, scope, key, reference)
    except IntegrityError as error:
        # A concurrent first use inserted the same key between our read and write.
        raise Conflict(
            "a request with this Idempotency-Key is still in progress",
            next_step="retry in a few seconds with the same key",
        ) from error


def finish(db: Database, claim: Claim, *, status_code: int, body: dict[str, Any]) -> None:
    """Store the outcome every retry of `claim`'s key will get."""
    with db.write() as session:
        record = session.get(IdempotencyRecord, (claim.wallet_id, claim.scope, claim.key))
        assert record is not None, claim
        record.status_code = status_code
        record.response = body
        session.add(record)


def release(db: Database, claim: Claim) -> None:
    """The request ended without an outcome to keep: a retry may run it again."""
    with db.write() as session:
        record = session.get(IdempotencyRecord, (claim.wallet_id, claim.scope, claim.key))
        if record is not None and record.status_code is None:
            record.response = _claim_state(claim.reference, "retryable")
            session.add(record)


def forget(db: Database, claim: Claim) -> None:
    """Drop the key: the next request with it is a new one (its outcome moved nothing)."""
    with db.write() as session:
        record = session.get(IdempotencyRecord, (claim.wallet_id, claim.scope, claim.key))
        if record is not None:
            session.delete(record)


def _claim_state(reference: str, state: str) -> dict[str, Any]:
    return {"reference": reference, "state": state}
