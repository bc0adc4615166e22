"""The composition root: settings → database, catalog, upstream client, metering, payments.

Every transport (MCP server, HTTP app, CLI) builds one `Runtime` and calls the core
through it; nothing else holds process-wide state.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.to_thread

from lava_mcp.config import UPSTREAM_CONNECT_TIMEOUT_S, Settings
from lava_mcp.core.metering import Metering
from lava_mcp.core.rate_limits import InProcessRateLimiter, RateLimiter, build_rate_limiter
from lava_mcp.payments import ProcessorLane, build_payments
from lava_mcp.payments.base import Payments
from lava_mcp.providers.catalog import Catalog, load_catalog
from lava_mcp.providers.upstream import Upstream
from lava_mcp.store.db import Database
from lava_mcp.store.fast import LoopReads

logger = logging.getLogger("lava_mcp")

HOLD_SWEEP_INTERVAL_S = 30.0


@dataclass
class Runtime:
    settings: Settings
    db: Database
    catalog: Catalog
    upstream: Upstream
    metering: Metering
    payments: Payments
    # Spend keys' rpm limits: shared through Redis with LAVA_REDIS_URL, else this process's.
    rate_limiter: RateLimiter = field(default_factory=InProcessRateLimiter)
    # Processor calls run in their own lane of worker threads (see `payments.ProcessorLane`).
    processor_lane: ProcessorLane = field(default_factory=ProcessorLane)
    # On a SQLite file: reads the event loop may run itself (`store.fast.LoopReads`).
    loop_reads: LoopReads | None = None

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        catalog = load_catalog(settings.catalog_path, environment=catalog_environment(settings))
        upstream_client = Upstream(settings.upstream_timeout_s, connect_timeout_s=UPSTREAM_CONNECT_TIMEOUT_S)
        rate_limiter = build_rate_limiter(
            settings.redis_url, key_prefix=settings.redis_key_prefix, timeout_s=settings.redis_timeout_s
        )
        metering = Metering(
            db,
            catalog,
            upstream_client,
            hold_ttl_s=settings.hold_ttl_s,
            default_max_tokens=settings.default_max_tokens,
            rate_limiter=rate_limiter,
            stream_drain_s=settings.stream_drain_s,
            money_mode=settings.money_mode,
        )
        payments = build_payments(settings)
        return cls(
            settings,
            db,
            catalog,
            upstream_client,
            metering,
            payments,
            rate_limiter=rate_limiter,
            loop_reads=LoopReads.for_url(settings.database_url),
        )

    async def aclose(self) -> None:
        await self.upstream.aclose()
        await self.rate_limiter.aclose()
        if self.loop_reads is not None:
            self.loop_reads.close()
        self.db.dispose()


def catalog_environment(settings: Settings) -> dict[str, str | None]:
    """The variables catalog entries may name: the process environment, with the values
    pydantic-settings read (including from `.env`) taking precedence for the known ones."""
    import os

    environment: dict[str, str | None] = dict(os.environ)
    environment.update(
        {
            "OPENAI_API_KEY": settings.openai_api_key,
            "OPENAI_BASE_URL": settings.openai_base_url,
            "ANTHROPIC_API_KEY": settings.anthropic_api_key,
            "ANTHROPIC_BASE_URL": settings.anthropic_base_url,
            "OLLAMA_BASE_URL": settings.ollama_base_url,
        }
    )
    return environment


@asynccontextmanager
async def running(runtime: Runtime, *, migrate: bool = True) -> AsyncIterator[Runtime]:
    """A started runtime: migrated database, a background sweep of expired holds, and one
    of payments still pending (lost card answers, unreported Checkouts).

    Closes the runtime on exit."""
    if migrate:
        await anyio.to_thread.run_sync(runtime.db.upgrade)
    await anyio.to_thread.run_sync(_warn_of_other_mode, runtime)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_sweep_expired_holds, runtime)
            tasks.start_soon(_reconcile_payments, runtime)
            yield runtime
            tasks.cancel_scope.cancel()
    finally:
        await runtime.aclose()


async def _sweep_expired_holds(runtime: Runtime) -> None:
    while True:
        try:
            released = await anyio.to_thread.run_sync(runtime.metering.expire_holds)
            if released:
                logger.info("released %d expired holds", released)
        except Exception:  # keep sweeping; the next pass retries
            logger.exception("expired-hold sweep failed")
        await anyio.sleep(HOLD_SWEEP_INTERVAL_S)


def _warn_of_other_mode(runtime: Runtime) -> None:
    """Wallets of the other Stripe mode are never reconciled here: say so, and how to fix it."""
    from lava_mcp.core import funding

    warning = funding.other_mode_warning(runtime.db, runtime.settings.money_mode)
    if warning:
        logger.warning(warning)


async def _reconcile_payments(runtime: Runtime) -> None:
    """Every `reconcile_interval_s`, ask the processor about pending card payments (lost
    answers, `processing`), Checkouts and 3-D Secure pages (paid with no webhook and no
    success-page visit), in the processor's lane: a hanging processor stalls only this."""
    from lava_mcp.core import funding  # funding builds on Runtime: imported when running

    while True:
        try:
            settled = await funding.reconcile_payments(runtime)
            if settled:
                logger.info("credited %d payments reconciled with the processor", settled)
        except Exception:  # keep sweeping; the next pass retries
            logger.exception("payment reconciliation failed")
        await anyio.sleep(runtime.settings.reconcile_interval_s)
