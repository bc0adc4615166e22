"""Spend keys: scoped API keys backed by a wallet.

This module holds the rules a metered call checks: is the key usable, may it call this
provider and model, and does its cycle limit cover the hold (taken in the same
transaction as the wallet hold, with one conditional UPDATE, so concurrent calls can
never take a key past its limit).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, or_, update
from sqlmodel import Session

from lava_mcp.core.cycles import cycle_end, cycle_start
from lava_mcp.errors import Forbidden, RateLimited, SpendLimitReached
from lava_mcp.store.models import SpendKey


def check_allowed(key: SpendKey, *, service_id: str, model: str | None, now: datetime) -> None:
    """Raises: Forbidden for a paused or expired key, or a provider or model not allowed."""
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


def reserve(session: Session, key: SpendKey, *, hold_micros: int, now: datetime) -> None:
    """Count one request and hold `hold_micros` against the key's cycle limits.

    A cycle that has ended reads as zero: the same statement resets it.
    Raises: SpendLimitReached (402) or RateLimited (429, request limit) naming the reset.
    """
    spend_start = cycle_start(key.spend_cycle or "total", now)
    request_start = cycle_start(key.request_cycle or "total", now)
    spend_stale = or_(SpendKey.cycle_started_at.is_(None), SpendKey.cycle_started_at < spend_start)  # type: ignore[union-attr,operator]
    requests_stale = or_(
        SpendKey.request_cycle_started_at.is_(None),  # type: ignore[union-attr]
        SpendKey.request_cycle_started_at < request_start,  # type: ignore[operator]
    )
    spend_in_cycle = case((spend_stale, 0), else_=SpendKey.cycle_spend_micros)
    requests_in_cycle = case((requests_stale, 0), else_=SpendKey.cycle_requests)
    statement = (
        update(SpendKey)
        .where(SpendKey.id == key.id)  # type: ignore[arg-type]
        .where(
            or_(
                SpendKey.spend_limit_micros.is_(None),  # type: ignore[union-attr]
                spend_in_cycle + SpendKey.held_micros + hold_micros <= SpendKey.spend_limit_micros,
            )
        )
        .where(
            or_(
                SpendKey.request_limit_count.is_(None),  # type: ignore[union-attr]
                requests_in_cycle + 1 <= SpendKey.request_limit_count,
            )
        )
        .values(
            cycle_spend_micros=spend_in_cycle,
            cycle_started_at=spend_start,
            held_micros=SpendKey.held_micros + hold_micros,
            cycle_requests=requests_in_cycle + 1,
            request_cycle_started_at=request_start,
            total_requests=SpendKey.total_requests + 1,
            last_used_at=now,
        )
    )
    if session.execute(statement).rowcount == 1:  # type: ignore[attr-defined]
        return
    current = session.get(SpendKey, key.id, populate_existing=True)
    assert current is not None
    if current.request_limit_count is not None:
        in_cycle = 0 if _stale(current.request_cycle_started_at, request_start) else current.cycle_requests
        if in_cycle + 1 > current.request_limit_count:
            reset = cycle_end(current.request_cycle or "total", now)
            raise RateLimited(
                f"request limit of {current.request_limit_count} per "
                f"{current.request_cycle or 'total'} reached; {_resets(reset)}",
                retry_after_s=int((reset - now).total_seconds()) + 1 if reset else 86_400,
            )
    reset = cycle_end(current.spend_cycle or "total", now)
    raise SpendLimitReached(
        f"spend limit reached for this key's {current.spend_cycle or 'total'} cycle; {_resets(reset)}"
    )


def _stale(started_at: datetime | None, start: datetime) -> bool:
    return started_at is None or started_at < start


def _resets(reset: datetime | None) -> str:
    return f"it resets at {reset.isoformat()}" if reset else "it never resets (cycle 'total')"
